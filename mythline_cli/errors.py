"""Every error Mythline raises. Each carries its data and the exit code the CLI turns it into."""

from __future__ import annotations

from datetime import datetime
from enum import IntEnum
from pathlib import Path
from typing import Any

from .money import usd


class ExitCode(IntEnum):
    """The documented exit codes of every command."""

    OK = 0
    FAILED = 1
    USAGE = 2
    OVER_BUDGET = 3
    ALREADY_RUNNING = 4
    PAUSED = 5
    STATE_UNAVAILABLE = 6
    INTERRUPTED = 130
    TERMINATED = 143


class MythlineError(Exception):
    """Base of every error a user can cause or meet; ``str()`` is the one line shown."""

    exit_code = ExitCode.FAILED


class ConfigError(MythlineError):
    """The configuration cannot be used."""

    exit_code = ExitCode.USAGE

    def __init__(self, message: str, *, path: Path | None = None, key: str | None = None) -> None:
        self.path = path
        self.key = key
        self.problem = message
        where = str(path) if path else "configuration"
        if key:
            where += f": {key}"
        super().__init__(f"{where}: {message}")


class UsageError(MythlineError):
    """A command was called in a way that cannot work (unknown agent, missing key)."""

    exit_code = ExitCode.USAGE


class BudgetExceeded(MythlineError):
    """A reservation would take spend past a cap."""

    exit_code = ExitCode.OVER_BUDGET

    def __init__(self, *, scope: str, unit: str, window: str, spent: float, reserved: float,
                 request: float, cap: float, setting: str, agent: str) -> None:
        self.scope = scope  # "agent <name>" or "fleet"
        self.unit = unit  # "usd" or "tokens"
        self.window = window
        self.spent = spent
        self.reserved = reserved
        self.request = request
        self.cap = cap
        self.setting = setting
        self.agent = agent
        used = _fmt(unit, spent + reserved)
        reset = f"mythline budget reset --agent {agent}" if scope.startswith("agent") else "mythline budget reset"
        super().__init__(
            f"{scope} is over its {window} cap: {used} spent or reserved + {_fmt(unit, request)} "
            f"for this call > {_fmt(unit, cap)}; raise {setting} in mythline.toml, wait for the "
            f"next window, or run: {reset}"
        )


class UnknownPrice(MythlineError):
    """A USD cap is set but the model's price is not known, so spend cannot be bounded."""

    exit_code = ExitCode.OVER_BUDGET

    def __init__(self, model: str) -> None:
        self.model = model
        super().__init__(
            f"no price known for model {model!r}, so its USD caps cannot be enforced; add "
            f'[provider.prices."{model}"] with input_per_million and output_per_million '
            "to mythline.toml (0 for a free local model)"
        )


class LedgerCorrupt(MythlineError):
    """The ledger cannot be read; spend is never silently reset to zero."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        super().__init__(
            f"{path}: the budget ledger is unreadable ({problem}); nothing was called. "
            "Rebuild it from its journal with: mythline budget repair"
        )


class StateUnavailable(MythlineError):
    """The shared state (PostgreSQL) cannot be used: unreachable, refusing, lost mid-run, or of a
    newer schema version."""

    exit_code = ExitCode.STATE_UNAVAILABLE


class AlreadyRunning(MythlineError):
    """Another run of the same agent holds its run lock."""

    exit_code = ExitCode.ALREADY_RUNNING

    def __init__(self, agent: str) -> None:
        self.agent = agent
        super().__init__(f"{agent} is already running; this run did nothing")


class LLMError(MythlineError):
    """A chat-completion call failed for good (after any retries).

    The class attributes are the defaults of what a failure says about itself (``llm.CallFailure``
    sets them per failure), so every reader can use them without knowing the subclass."""

    status: int | None = None
    retryable: bool = False
    kind: str = "error"
    retry_after: float | None = None
    # None: unknown (charge the estimate); else (prompt, completion, provider cost or None).
    billed: tuple[int, int, float | None] | None = (0, 0, 0.0)
    attempts: int = 1
    # Set when the failure is tied to this topic's prompt or answer: the topic's failed
    # attempt (this text is its feedback), not an outage.
    content_issue: str | None = None

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = False) -> None:
        self.status = status
        self.retryable = retryable
        super().__init__(message)


class Interrupted(MythlineError):
    """The run was stopped by a signal at a step boundary."""

    def __init__(self, signame: str, code: int, *, waiting: str | None = None) -> None:
        self.exit_code = ExitCode(code)
        self.signame = signame
        self.waiting = waiting  # the wait it cut short (stopping.cut_short), or None at a step boundary
        where = f" while {waiting}" if waiting else ""
        super().__init__(f"stopped by {signame}{where}; the checkpoint is saved and the next run resumes")


class CutShort(Interrupted, KeyboardInterrupt):
    """The first signal, inside a ``stopping.cut_short`` region: an ``Interrupted`` (the cycle reports it
    as every stop) that is also a ``KeyboardInterrupt``, so that code on the way treats it as
    Ctrl-C: psycopg cancels the query it was waiting on, and cleanup written for Ctrl-C
    (``except BaseException``: close the descriptor, give the request up) runs."""


class Aborted(KeyboardInterrupt):
    """A second signal: the run stops where it is, not at a step boundary.

    A ``KeyboardInterrupt`` so that no ``except Exception`` on the way (in a library, in a
    retry loop) can swallow it."""

    def __init__(self, signame: str, code: int) -> None:
        self.signame = signame
        self.exit_code = code
        super().__init__(f"aborted by a second {signame}; a call in flight is charged at its estimate, and the "
                         "next run resumes at the last recorded step")

    def __str__(self) -> str:
        return str(self.args[0])


def _fmt(unit: str, value: float) -> str:
    return usd(value) if unit == "usd" else f"{int(value):,} tokens"


def _clock(iso: str) -> str:
    """An ISO time from a state file, as local HH:MM (the text itself when it is no time)."""
    from datetime import datetime

    from .durations import local_clock

    try:
        return local_clock(datetime.fromisoformat(iso))
    except (TypeError, ValueError):
        return iso


class BackingOff(MythlineError):
    """The agent failed recently and waits before trying again."""

    exit_code = ExitCode.PAUSED

    def __init__(self, agent: str, until: str, failures: int) -> None:
        self.agent = agent
        self.until = until
        self.failures = failures
        super().__init__(f"{agent} is backing off after {failures} failed run(s) until {_clock(until)}; "
                         f"nothing was called. Use: mythline run {agent} --force to run now")


class Paused(MythlineError):
    """The agent is paused; nothing is called until it is resumed."""

    exit_code = ExitCode.PAUSED

    def __init__(self, agent: str, note: str | None, *, mid_run: bool = False) -> None:
        self.agent = agent
        self.note = note
        where = "stopped at a step boundary, checkpoint saved" if mid_run else "nothing was called"
        about = f" ({note})" if note else ""
        super().__init__(f"{agent} is paused{about}; {where}. Run: mythline resume {agent}")


class BreakerOpen(MythlineError):
    """The provider's breaker is open: skip the call."""

    exit_code = ExitCode.PAUSED

    def __init__(self, base_url: str, until: datetime | None, failures: int, probing: bool) -> None:
        from .redact import safe_url

        self.base_url = base_url
        self.until = until
        if probing:
            why = "another agent is probing it now"
        else:
            why = f"cooling down until {until:%H:%M:%S} UTC" if until else "cooling down"
        super().__init__(f"{safe_url(base_url)} failed {failures} calls in a row across the fleet; {why}. "
                         "Nothing was called; the next scheduled run tries again")


class ProviderWait(MythlineError):
    """The provider asked the fleet to wait, and the wait is not over: skip the call."""

    exit_code = ExitCode.PAUSED

    def __init__(self, agent: str, entry: dict[str, Any]) -> None:
        from .breaker import wait_line

        self.agent = agent
        self.until = datetime.fromisoformat(entry["wait_until"])
        super().__init__(f"{agent}: {wait_line(entry)}; nothing was called")


class RateLimited(MythlineError):
    """The fleet's share of a provider limit is used up for longer than a run may wait."""

    exit_code = ExitCode.PAUSED

    def __init__(self, agent: str, provider: str, what: str, limit: int, wait: float, setting: str) -> None:
        import math

        self.agent = agent
        self.wait = wait
        super().__init__(
            f"{agent}: {provider} allows {limit:,} {what} per minute for the whole fleet ({setting}) and the "
            f"next free place is {math.ceil(wait)}s away, longer than provider.max_retry_wait; nothing was "
            "called, the next scheduled run tries again")


class NoBilling(MythlineError):
    """The provider has no billing endpoints: nothing to reconcile against (not a failure)."""

    exit_code = ExitCode.OK


class StateHomeUnusable(UsageError):
    """A path in the state home is not what mythline writes there (exit 2, nothing written)."""

    def __init__(self, path: Path, problem: str, fix: str) -> None:
        self.path = path
        super().__init__(f"{path} {problem}; {fix}")


class SchedulerError(MythlineError):
    """The system scheduler (crontab, schtasks) could not be read or written."""


# Below: failures one module raises and its caller turns into one of the errors above (or
# into a recorded state); never shown to the user as they are.

class CorruptFile(Exception):
    """A state file exists but does not hold what it should."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class LockTimeout(Exception):
    """The lock stayed held by someone else for the whole timeout."""


class UnknownRecord(UsageError):
    """No stored record has that name (exit 2)."""


class Ambiguous(UsageError):
    """More than one stored record has that name (exit 2)."""


class IndexUnavailable(Exception):
    """The store's index could not be opened or built (a run carries on without it)."""


class SourcesUnavailable(MythlineError):
    """Too few sources this run because hosts are resting or unreachable: a failed run (the
    agent backs off), not a verdict on the topic."""


class WebhookFailed(Exception):
    """The webhook did not accept the alert (after any retries)."""

    def __init__(self, reason: str, *, attempts: int, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.attempts = attempts
        self.status = status


class ContextTooSmall(LLMError):
    """A prompt and its output budget cannot fit the model's context: refused before the call."""

    kind = "context-too-small"

    def __init__(self, *, step: str, model: str, prompt: int, output: int, limit: int, source: str) -> None:
        self.limit = limit
        super().__init__(
            f"the {step} prompt (~{prompt:,} tokens) plus provider.max_output_tokens ({output:,}) does not fit "
            f"the context of {model} ({limit:,} tokens, from {source}); nothing was sent. Lower "
            "provider.max_output_tokens, start the server with a larger context (llama.cpp: --ctx-size), or "
            "correct provider.context_length")


class SlotBusy(Exception):
    """The local server is busy: with another request for longer than ``wait``, or with an
    abandoned one until ``until`` (a Unix time)."""

    def __init__(self, waited: float, until: float | None = None) -> None:
        self.waited = waited
        self.until = until
        super().__init__(f"busy for {waited:.0f}s")
