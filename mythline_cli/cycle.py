"""One research -> validate -> store pass for one agent: the step machine.

Every LLM call is estimated and reserved in the ledger first, settled after, and its
result recorded in the checkpoint before anything else happens. A run that dies at any
point resumes at the first step without a recorded result.
"""

from __future__ import annotations

import os
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from filelock import FileLock, Timeout

from . import checkpoint as ckpt_mod
from . import heartbeat as hb_mod
from . import killswitch, negotiate, paths, pricing, research, validate
from .breaker import Breaker, BreakerOpen, ProviderWait, wait_line
from .checkpoint import Checkpoint
from .config import Agent, Settings
from .errors import (Aborted, AlreadyRunning, BackingOff, BudgetExceeded, ExitCode, Interrupted, LedgerCorrupt,
                     LLMError, MythlineError, UnknownPrice, UsageError)
from .events import EventLog
from .fleet.schemas import RECORD_MODELS
from .heartbeat import Heartbeat
from .ledger import Ledger, Reservation, crossings
from .redact import redact, safe_url
from .stopping import StopFlag
from .store import store_record

Listener = Callable[[dict[str, Any]], None]
# The audit's own steps: when only these fail, the paid research answer is kept.
AUDIT_STEPS = ("audit", "audit-repair")
RESEARCH_STEPS = ("research", "repair")


class _SteppedDown(Exception):
    """The server rejected the structured-output mode; ``auto`` recorded the next one."""


# A repair is sent warmer and with a new seed: at temperature 0 the same request brings back
# the same answer byte for byte.
REPAIR_NUDGE = 0.3
REPEAT = "the repair returned the same answer byte for byte"


class _Rejected(Exception):
    """A call failed in a way tied to this topic's content: the attempt is rejected with
    ``issue`` as its feedback. Not an outage: no backoff, nothing counted by the breaker."""

    def __init__(self, step: str, issue: str) -> None:
        super().__init__(issue)
        self.step = step
        self.issue = issue


Interpretation = tuple[dict[str, Any] | None, str | None]


def interpret(content: Any, model: type[Any]) -> Interpretation:
    """A recorded answer as a valid ``model`` dict, or (None, what is wrong). Never raises:
    an answer nested too deep, not text, or anything else a parser trips on is an answer
    that is not valid, to be repaired or rejected like any other."""
    if not isinstance(content, str):
        return None, f"the recorded answer is not text ({type(content).__name__})"
    try:
        record, error = research.parse(content, model)
    except Exception as exc:  # noqa: BLE001 - whatever it is, the answer gets a verdict
        return None, f"could not be read ({type(exc).__name__}: {str(exc)[:200]})"
    if error is not None or record is None:
        return None, error or "no record"
    return record, None  # parse has replaced lone surrogates already


@dataclass
class Outcome:
    """How a run ended: exit code, heartbeat state, and the one line to show on failure."""

    code: int
    state: str
    agent: str
    topic: str | None = None
    message: str | None = None
    warnings: list[str] = field(default_factory=list)
    result: str | None = None  # stored / unchanged / rejected / quarantined / queue-empty


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def api_key(settings: Settings) -> str | None:
    """The key from the configured environment variable, else the key store; None for keyless servers."""
    from . import keys

    env = settings.provider.api_key_env
    if not env:
        return None
    key, _ = keys.lookup(env)
    if not key:
        raise UsageError(keys.missing(env))
    return key


class _CallBudget:
    """The ledger side of one logical call: reserve, pay for lost attempts, settle."""

    def __init__(self, ledger: Ledger, agent: Agent, estimate: pricing.Estimate, *, run_id: str, step: str,
                 events: EventLog, before_send: Callable[[], None] = lambda: None) -> None:
        self.ledger, self.agent, self.estimate = ledger, agent, estimate
        self.before_send = before_send
        self.run_id, self.step, self.events = run_id, step, events
        self.open: Reservation | None = ledger.reserve(agent, estimate, run_id=run_id, step=step)

    def _cost(self, prompt: int, completion: int, provider_cost: float | None) -> tuple[float | None, str]:
        if provider_cost is not None:
            return provider_cost, "provider"
        usd = pricing.cost_of(prompt, completion, self.estimate.price)
        return usd, "tokens x prices" if usd is not None else "unpriced"

    def _overrun(self, res: Reservation, usd: float | None) -> None:
        if usd is not None and res.usd is not None and usd > res.usd:
            self.events.emit("overrun", step=self.step, reserved_usd=res.usd, usd=usd,
                             note="the provider billed more than the reservation; caps may be exceeded by the "
                                  "difference")

    def charge_failure(self, billed: tuple[int, int, float | None] | None) -> float | None:
        """Close the open reservation for an attempt that failed; returns what it was charged."""
        if self.open is None:
            return None
        res, self.open = self.open, None
        if billed == (0, 0, None):
            billed = None  # usage that says nothing at all is no evidence of a free call
        if billed is None:
            # The provider may have billed a call we never saw the end of: count the estimate.
            self.ledger.settle(res, usd=res.usd, tokens=res.tokens, unsettled=True)
            return res.usd
        if billed == (0, 0, 0.0):
            self.ledger.release(res)
            return 0.0
        usd, _ = self._cost(*billed)
        self.ledger.settle(res, usd=usd, tokens=billed[0] + billed[1])
        self._overrun(res, usd)
        return usd

    def before_retry(self, failure: LLMError) -> None:
        usd = self.charge_failure(failure.billed)
        self.events.emit("llm-retry", step=self.step, error=str(failure), kind=failure.kind,
                         retry_after=failure.retry_after, usd=usd)

    def before_attempt(self) -> None:
        """A retry is a new call: stop here if asked to, else reserve it like the first."""
        self.before_send()
        self.open = self.ledger.reserve(self.agent, self.estimate, run_id=self.run_id, step=self.step)

    def cost(self, prompt: int, completion: int, provider_cost: float | None) -> tuple[float | None, str, bool]:
        """(USD, where the figure comes from, whether it is only an estimate) of an answer."""
        if prompt + completion == 0 and provider_cost is None:
            # An answer with no usage is not free: charge the reservation, marked unsettled.
            return self.estimate.usd, "estimate (no usage reported)", True
        usd, source = self._cost(prompt, completion, provider_cost)
        return usd, source, False

    def settle(self, usd: float | None, tokens: int, *, unsettled: bool) -> None:
        assert self.open is not None
        res, self.open = self.open, None
        if unsettled:
            tokens = max(tokens, res.tokens)
        self.ledger.settle(res, usd=usd, tokens=tokens, unsettled=unsettled)
        self._overrun(res, usd)


class Cycle:
    """One run of one agent. Build it, then call ``run()``."""

    def __init__(self, settings: Settings, agent: Agent, *, key: str | None, listener: Listener | None = None,
                 ledger: Ledger | None = None, client_factory: Callable[[], Any] | None = None,
                 force: bool = False, stop: StopFlag | None = None) -> None:
        self.settings = settings
        self.force = force
        self.stop = stop if stop is not None else StopFlag()
        self.warnings: list[str] = []
        self._early: list[dict[str, Any]] = []  # events from before run-start, written after it
        self._started = False
        self._wait_until: str | None = None  # a provider's requested wait, when a call got one
        self._wait_line: str | None = None
        self._issues: list[str] = []
        self.breaker = Breaker(settings, on_repair=self._breaker_repaired)
        self.agent = agent
        self.key = key
        self.run_id = new_run_id()
        self.listener = listener
        self.ledger = ledger or Ledger(settings)
        self.events = EventLog(agent.name, self.run_id, secrets=(key,) if key else ())
        self.prompts_dir = settings.prompts_dir()
        self._client_factory = client_factory
        self._client: Any = None
        self.schema = RECORD_MODELS[agent.kind]
        # What response_format sends (``auto`` resolved), and what the prompts are written for.
        self.wire = negotiate.mode(settings.provider, agent.model)
        self.mode = negotiate.prompt_mode(self.wire)

    # -- plumbing ------------------------------------------------------------------------
    def emit(self, event: str, **data: Any) -> None:
        entry = self.events.emit(event, **data)
        if self.listener:
            self.listener(entry)

    def _breaker_repaired(self, moved: Any, problem: str) -> None:
        self.warnings.append(f"breaker.json was unreadable ({problem}); moved aside to {moved} and started afresh")
        event = {"file": "breaker", "moved_to": str(moved), "problem": problem}
        if self._started:
            self.emit("corrupt-state", **event)
        else:
            self._early.append(event)

    def client(self) -> Any:
        if self._client is None:
            if self._client_factory is not None:
                self._client = self._client_factory()
            else:
                from .llm import LLMClient  # the openai import costs a second: only when calling

                self._client = LLMClient(self.settings.provider, self.key, sleep=self._nap, check=self.stop.check)
        return self._client

    def today(self) -> dict[str, Any]:
        tokens, usd = self.ledger.agent_today(self.agent.name)
        return {"tokens_today": tokens, "usd_today": round(usd, 6)}

    # -- the run -----------------------------------------------------------------------
    def run(self) -> Outcome:
        paths.prepare_agent(self.agent.name, domain=self.agent.domain)
        lock = FileLock(str(paths.run_lock(self.agent.name)), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise AlreadyRunning(self.agent.name) from None
        try:
            return self._run_locked()
        finally:
            lock.release()
            if self._client is not None:
                self._client.close()

    def _run_locked(self) -> Outcome:
        agent = self.agent
        t0 = time.monotonic()
        warnings = self.warnings
        killswitch.check(agent.name)
        previous, hb_moved = hb_mod.read(agent.name)
        self._check_backoff(previous)
        if not self.force:
            # Before the heartbeat: a run skipped for the provider's wait leaves no trace, like backoff.
            self.breaker.check_wait(agent.name)
        ck = Checkpoint.load(agent.name)
        self.hb = Heartbeat(agent.name, self.run_id, previous=previous, pid=os.getpid(), secrets=self.events.secrets)
        self.hb.beat()
        try:
            return self._run_started(t0, ck, hb_moved)
        except Aborted as exc:
            # A second signal: stopped where it was. An interruption, not a failure: no backoff.
            self.emit("interrupted", step=self.hb.data.get("step"), signal=exc.signame, aborted=True)
            return self._end(t0, "interrupted", exc.exit_code, self.hb.data.get("topic"), f"{agent.name}: {exc}",
                             ck, warnings, failure=False)

    def _run_started(self, t0: float, ck: Checkpoint, hb_moved: Any) -> Outcome:
        agent = self.agent
        warnings = self.warnings
        self.emit("run-start", pid=os.getpid(), model=agent.model, base_url=safe_url(self.settings.provider.base_url))
        self._started = True
        for event in self._early:
            self.emit("corrupt-state", **event)
        try:
            # Every run settles the books first: a crashed run's reservation is reclaimed even
            # when this run has nothing left to call.
            rebuilt = self.ledger.housekeep()
        except LedgerCorrupt as exc:
            self.emit("error", step="start", error=str(exc))
            # No backoff: nothing was called, and the fix (budget repair) is the operator's.
            return self._end(t0, "failed", exc.exit_code, None, str(exc), ck, warnings, failure=False)
        if rebuilt is not None:
            warnings.append(f"ledger.json was unreadable ({rebuilt['problem']}); copied aside to "
                            f"{rebuilt['moved_aside']} and rebuilt from its journal ({rebuilt['seq']} entries)")
            self.emit("corrupt-state", file="ledger", moved_to=str(rebuilt["moved_aside"]), seq=rebuilt["seq"])
        if hb_moved is not None:
            warnings.append(f"{agent.name}: heartbeat was unreadable; moved aside to {hb_moved} and started afresh")
            self.emit("corrupt-state", file="heartbeat", moved_to=str(hb_moved))
        if ck.moved_aside is not None:
            found = ck.recover(agent.topics, domain=agent.domain)
            warnings.append(f"{agent.name}: checkpoint was unreadable; moved aside to {ck.moved_aside}, rebuilt from "
                            f"the store and the event log ({found['done']} topics done, {found['quarantined']} "
                            "quarantined); the attempt in progress starts again")
            self.emit("corrupt-state", file="checkpoint", moved_to=str(ck.moved_aside), recovered=found)
        topic = ck.next_topic(agent.topics)
        counts = ck.counts(agent.topics)
        if topic is None:
            self.hb.finish("queue-empty", started_at=t0, ended_at=time.monotonic(), step=None, topics=counts,
                           consecutive_failures=0, **self._today_safe())
            self.emit("run-end", outcome="queue-empty", duration_s=round(time.monotonic() - t0, 3))
            return Outcome(ExitCode.OK, "queue-empty", agent.name, result="queue-empty", warnings=warnings)
        self.hb.beat(topic=topic, topics=counts)
        try:
            result = self._attempt(ck, topic)
        except (BudgetExceeded, UnknownPrice) as exc:
            return self._end(t0, "over-budget", exc.exit_code, topic, str(exc), ck, warnings, failure=False)
        except killswitch.Paused as exc:
            self.emit("paused", step=self.hb.data.get("step"), note=exc.note)
            return self._end(t0, "paused", exc.exit_code, topic, str(exc), ck, warnings, failure=False)
        except Interrupted as exc:
            self.emit("interrupted", step=self.hb.data.get("step"), signal=self.stop.signame)
            return self._end(t0, "interrupted", exc.exit_code, topic, f"{agent.name}: {exc}", ck, warnings,
                             failure=False)
        except BreakerOpen as exc:
            self.emit("breaker-open", step=self.hb.data.get("step"), error=str(exc))
            return self._end(t0, "failed", exc.exit_code, topic, f"{agent.name}: {exc}", ck, warnings,
                             failure=False)
        except ProviderWait as exc:
            self.emit("provider-wait", step=self.hb.data.get("step"), until=exc.until.isoformat())
            return self._end(t0, "failed", exc.exit_code, topic, str(exc), ck, warnings, failure=False)
        except LLMError as exc:
            self.emit("error", step=self.hb.data.get("step"), error=str(exc), status=exc.status)
            message = f"{agent.name}: {exc}"
            if self._wait_line:
                message += f"; {self._wait_line}"
            return self._end(t0, "failed", ExitCode.FAILED, topic, message, ck, warnings)
        except LedgerCorrupt as exc:
            self.emit("error", step=self.hb.data.get("step"), error=str(exc))
            return self._end(t0, "failed", exc.exit_code, topic, str(exc), ck, warnings)
        except Aborted:
            raise  # recorded as an interruption by the caller
        except (MythlineError, KeyboardInterrupt, Exception) as exc:
            self.emit("error", step=self.hb.data.get("step"), error=f"{type(exc).__name__}: {exc}")
            self._end(t0, "failed", ExitCode.FAILED, topic, f"{agent.name}: {exc}", ck, warnings)
            raise
        message = None
        if result == "quarantined":
            message = f"{agent.name}: topic {topic!r} quarantined after {agent.max_attempts} failed attempts"
            if self._issues:
                message += f"; last problem: {self._issues[0]}"
            self._alert("quarantine", message, once_key=f"quarantine:{agent.name}:{topic}", topic=topic)
        out = self._end(t0, "ok", ExitCode.OK, topic, None, ck, warnings, result=result)
        out.message = message
        return out

    def _today_safe(self) -> dict[str, Any]:
        try:
            return self.today()
        except LedgerCorrupt:
            return {}

    def _end(self, t0: float, state: str, code: int, topic: str | None, message: str | None, ck: Checkpoint,
             warnings: list[str], *, failure: bool = True, result: str | None = None) -> Outcome:
        now = datetime.now(timezone.utc).isoformat()
        fields: dict[str, Any] = {"topics": ck.counts(self.agent.topics), **self._today_safe()}
        if state == "ok":
            fields.update(last_success=now, consecutive_failures=0, last_outcome=result, step=None, backoff_until=None)
        else:
            fields.update(last_error=message, last_outcome=state)
            if failure:
                streak = int(self.hb.data.get("consecutive_failures") or 0) + 1
                fields["consecutive_failures"] = streak
                until = self._backoff_until(streak)
                if self._wait_until and datetime.fromisoformat(self._wait_until) > datetime.fromisoformat(until):
                    until = self._wait_until  # never sooner than the provider asked
                fields["backoff_until"] = until
        self.hb.finish(state, started_at=t0, ended_at=time.monotonic(), **fields)
        if failure and state == "failed":
            streak = fields["consecutive_failures"]
            if streak == self.settings.config.alerts.consecutive_failures:
                self._alert("failures", f"{self.agent.name} failed {streak} runs in a row: {message}",
                            once_key=f"failures:{self.agent.name}:{self.run_id}", failures=streak)
        self.emit("run-end", outcome=result or state, exit_code=code, duration_s=round(time.monotonic() - t0, 3))
        message = redact(message, self.events.secrets)
        return Outcome(code, state, self.agent.name, topic=topic, message=message, warnings=warnings, result=result)

    # -- one attempt at one topic --------------------------------------------------------
    def _attempt(self, ck: Checkpoint, topic: str) -> str:
        try:
            while True:
                try:
                    return self._steps(ck, topic)
                except _SteppedDown:
                    continue  # the same steps, asked in the structured-output mode the server takes
        except _Rejected as exc:
            # Only the audit failed: the paid research answer waits for the next attempt.
            keep = RESEARCH_STEPS if exc.step in AUDIT_STEPS else ()
            return self._reject(ck, topic, [exc.issue], score=None, keep=keep)

    def _interpret(self, step: str, steps: dict[str, Any], model: type[Any]) -> Interpretation:
        return interpret((steps.get(step) or {}).get("content"), model)

    def _ask(self, ck: Checkpoint, steps: dict[str, Any], names: tuple[str, str], messages: list[dict[str, str]],
             fmt: dict[str, Any], model: type[Any], attempt: int) -> Interpretation:
        """A step's answer as a valid ``model`` dict, calling for it unless it is recorded, with
        one repair call (``names``: the step, its repair) when it is unreadable; else the last
        error."""
        step, fix = names
        if step not in steps:
            self._call(ck, step, messages, fmt, attempt, nudge=step == "research" and self._nudge_first)
        record, error = self._interpret(step, steps, model)
        if error is None:
            return record, None
        self.emit("invalid-output", step=step, error=error)
        if fix not in steps:
            repair = research.repair_messages(messages, str(steps[step].get("content")), error, self.prompts_dir)
            self._call(ck, fix, repair, fmt, attempt, nudge=True)
        first = error
        record, error = self._interpret(fix, steps, model)
        if error is not None:
            if steps[fix].get("content") == steps[step].get("content"):
                # Paid once for the same text is enough: the attempt ends here, and the next
                # one starts nudged too.
                self.emit("repeat-answer", step=fix, of=step)
                error = f"{REPEAT}: {first}"
            self.emit("invalid-output", step=fix, error=error)
        return record, error

    def _steps(self, ck: Checkpoint, topic: str) -> str:
        agent = self.agent
        cur = ck.current(topic, self.run_id)
        steps = cur["steps"]
        feedback = ck.peek(topic).get("feedback") or []
        msgs = research.messages(agent, topic, feedback, self.prompts_dir, self.schema, self.mode)
        fmt = negotiate.response_format(self.schema, self.wire)
        # After an attempt whose repair came back unchanged, even the first call is varied.
        self._nudge_first = any(REPEAT in str(i) for f in feedback[-1:] for i in f.get("issues", []))

        record, error = self._ask(ck, steps, ("research", "repair"), msgs, fmt, self.schema, cur["attempt"])
        if error is not None:
            return self._reject(ck, topic, [f"the answer was not a valid record: {error}"], score=None)
        assert record is not None

        try:
            problems = validate.check_rules(record, agent)
        except Exception as exc:  # noqa: BLE001 - a record the rules cannot read is not a valid one
            problems = [f"the record could not be checked ({type(exc).__name__}: {str(exc)[:200]})"]
        if problems:
            return self._reject(ck, topic, problems, score=None)

        amsgs = validate.audit_messages(agent, topic, record, self.prompts_dir, self.mode)
        afmt = negotiate.response_format(validate.Audit, self.wire, name="audit")
        # Repaired like research: one call that shows the model its unreadable answer.
        audit, error = self._ask(ck, steps, ("audit", "audit-repair"), amsgs, afmt, validate.Audit, cur["attempt"])
        if error is not None:
            return self._reject(ck, topic, [f"the audit answer was unreadable: {error}"], score=None,
                                keep=RESEARCH_STEPS)
        assert audit is not None
        validated_at = (steps.get("audit-repair") or steps["audit"])["recorded"]
        score, issues = float(audit["score"]), list(audit["issues"])
        passed = score >= agent.min_score
        self.emit("verdict", topic=topic, attempt=cur["attempt"], score=score, min_score=agent.min_score,
                  passed=passed, issues=issues)
        if not passed:
            return self._reject(ck, topic, issues or [f"audit score {score:.2f} is below {agent.min_score:.2f}"],
                                score=score, verdict_sent=True)

        self.hb.beat(step="store")
        calls = [s for s in steps.values() if "prompt_tokens" in s]
        provenance = {
            "agent": agent.name, "model": steps["research"].get("model", agent.model), "run_id": self.run_id,
            "attempt": cur["attempt"], "score": score, "audit_issues": issues,
            "tokens": sum(s["prompt_tokens"] + s["completion_tokens"] for s in calls),
            "cost_usd": round(sum(s.get("usd") or 0.0 for s in calls), 8),
            "sources": record.get("sources", []),
            "researched_at": steps["research"]["recorded"], "validated_at": validated_at,
        }
        stored = store_record(domain=agent.domain, topic=topic, record=record, provenance=provenance)
        self.emit("store", topic=topic, **stored)
        ck.finish_attempt(passed=True, feedback=[], max_attempts=agent.max_attempts, stored=stored)
        return "stored" if stored["action"] != "unchanged" else "unchanged"

    # -- failing well ----------------------------------------------------------------------
    def _check_backoff(self, previous: dict[str, Any] | None) -> None:
        until = (previous or {}).get("backoff_until")
        if self.force or not isinstance(until, str):
            return
        try:
            when = datetime.fromisoformat(until)
        except ValueError:
            return
        if datetime.now(timezone.utc) < when:
            raise BackingOff(self.agent.name, until, int((previous or {}).get("consecutive_failures") or 0))

    def _backoff_until(self, streak: int) -> str:
        cfg = self.settings.config.backoff
        wait = min(cfg.max, cfg.base * 2 ** (streak - 1))
        wait *= 1 + cfg.jitter * (2 * random.random() - 1)
        return (datetime.now(timezone.utc) + timedelta(seconds=min(wait, cfg.max))).isoformat()

    def _alert(self, kind: str, message: str, *, once_key: str, **data: Any) -> None:
        try:
            from . import alerts

            alerts.send(self.settings, kind=kind, message=message, agent=self.agent.name, once_key=once_key,
                        data=data)
        except Exception as exc:  # noqa: BLE001 - an alert must never break a run
            self.emit("alert-failed", kind=kind, error=f"{type(exc).__name__}: {exc}")

    def _warn_budget(self) -> None:
        warn_at = self.settings.config.alerts.warn_at
        try:
            hits = crossings(self.ledger, self.agent, warn_at)
        except MythlineError:
            return
        from .money import usd

        for hit in hits:
            scope = hit["scope"]
            spent = usd(hit['spent']) if hit["unit"] == "usd" else f"{int(hit['spent']):,} tokens"
            cap = usd(hit['cap']) if hit["unit"] == "usd" else f"{int(hit['cap']):,} tokens"
            self._alert("budget-warn", f"{scope} has spent {spent} of its {cap} cap ({hit['setting']}) "
                        f"in {hit['window']}", once_key=f"budget-warn:{scope}:{hit['unit']}:{hit['window']}", **hit)

    def _reject(self, ck: Checkpoint, topic: str, issues: list[str], *, score: float | None,
                verdict_sent: bool = False, keep: tuple[str, ...] = ()) -> str:
        attempt = ck.data["current"]["attempt"]
        self._issues = issues
        if not verdict_sent:
            self.emit("verdict", topic=topic, attempt=attempt, score=score, passed=False, issues=issues)
        status = ck.finish_attempt(passed=False, feedback=issues, max_attempts=self.agent.max_attempts,
                                   keep_steps=keep)
        if status == ckpt_mod.QUARANTINED:
            self.emit("quarantine", topic=topic, attempts=attempt, issues=issues)
            return "quarantined"
        return "rejected"

    def _nap(self, seconds: float) -> None:
        """A retry wait that a stop signal cuts short."""
        end = time.monotonic() + seconds
        while not self.stop and time.monotonic() < end:
            time.sleep(min(0.2, max(0.0, end - time.monotonic())))

    def _boundary(self) -> None:
        """Where a run may stop cleanly: a signal arrived, or the kill switch was thrown."""
        self.stop.check()
        killswitch.check(self.agent.name, mid_run=True)

    def _estimate(self, messages: list[dict[str, str]], fmt: dict[str, Any]) -> pricing.Estimate:
        """The call's estimate, computed where a stop signal can still end the run: loading
        the tokenizer may block in C code (a download that never answers) for ever, and a
        Python signal handler cannot run there, so the work is done in a helper thread while
        this one waits, a fraction of a second at a time, for it or for a stop."""
        p = self.settings.provider
        box: dict[str, Any] = {}

        def work() -> None:
            try:
                box["est"] = pricing.estimate(messages, model=self.agent.model, max_output_tokens=p.max_output_tokens,
                                              provider=p, response_format=fmt)
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
                box["exc"] = exc

        worker = threading.Thread(target=work, name="mythline-estimate", daemon=True)
        worker.start()
        while worker.is_alive():
            worker.join(0.1)
            self.stop.check()
        if "exc" in box:
            raise box["exc"]
        return box["est"]

    def _call(self, ck: Checkpoint, step: str, messages: list[dict[str, str]], fmt: dict[str, Any],
              attempt: int, *, nudge: bool = False) -> None:
        """Estimate, reserve, call; record the answer in the checkpoint at once; then settle."""
        p = self.settings.provider
        self._boundary()
        self.hb.beat(step=step)
        self.breaker.before_call(self.agent.name, force=self.force)
        messages = research.clean(messages)
        est = self._estimate(messages, fmt)
        negotiate.check_fits(p, self.agent.model, est, key=self.key, step=step)
        vary: dict[str, Any] = {}
        if nudge:
            vary = {"temperature": min(2.0, p.temperature + REPAIR_NUDGE), "seed": random.randrange(1, 2**31)}
        estimate = {"prompt_tokens": est.prompt_tokens, "max_output_tokens": est.max_output_tokens,
                    "usd": est.usd, "counted_by": est.counted_by,
                    "price": est.price.source if est.price else None}
        client = self.client()  # built before reserving: a client that cannot be built costs nothing
        budget = _CallBudget(self.ledger, self.agent, est, run_id=self.run_id, step=step, events=self.events,
                             before_send=self._boundary)
        try:
            self.stop.check()
            self.emit("llm-request", step=step, attempt=attempt, topic=ck.data["current"]["topic"],
                      estimate=estimate)
        except BaseException:
            budget.charge_failure((0, 0, 0.0))  # never sent: release the hold
            raise
        try:
            result = client.chat(messages, model=self.agent.model, max_tokens=p.max_output_tokens,
                                 response_format=fmt, guard=budget, **vary)
        except LLMError as exc:
            usd = budget.charge_failure(exc.billed)
            kind, issue = exc.kind, exc.content_issue
            # A failure tied to the topic's content says nothing about the provider's health:
            # it neither counts toward the breaker nor clears it.
            self.breaker.record(ok=False, kind=None if issue else kind, status=None if issue else exc.status)
            self.emit("llm-call", step=step, attempt=attempt, ok=False, estimate=estimate, error=str(exc),
                      kind=kind, status=exc.status, attempts=exc.attempts, usd=usd)
            if kind == "response-format":
                nxt = negotiate.step_down(p, self.agent.model, self.wire, str(exc))
                if nxt is not None:
                    self.emit("structured-outputs", rejected=self.wire, chosen=nxt)
                    self.wire, self.mode = nxt, negotiate.prompt_mode(nxt)
                    raise _SteppedDown() from None
            after = exc.retry_after
            if after is not None and after > p.max_retry_wait:
                # The provider asked for longer than a run may wait: the whole fleet waits.
                entry = self.breaker.hold(after, agent=self.agent.name)
                self._wait_until, self._wait_line = entry["wait_until"], wait_line(entry)
            if issue:
                raise _Rejected(step, issue) from None
            raise
        except BaseException:
            budget.charge_failure(None)  # interrupted mid-call: the provider may still bill it
            raise
        usd, source, unsettled = budget.cost(result.prompt_tokens, result.completion_tokens, result.provider_cost)
        # The paid answer is saved before any bookkeeping that could fail: if the ledger or an
        # alert breaks now, the open reservation is reclaimed at its estimate, and the answer
        # is never bought again.
        ck.record_step(step, {"content": result.content, "prompt_tokens": result.prompt_tokens,
                              "completion_tokens": result.completion_tokens, "usd": usd, "cost_source": source,
                              "model": result.model, "response_id": result.response_id})
        budget.settle(usd, result.prompt_tokens + result.completion_tokens, unsettled=unsettled)
        self.emit("llm-call", step=step, attempt=attempt, ok=True, estimate=estimate,
                  prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens, usd=usd,
                  cost_source=source, latency_s=round(result.latency, 3), attempts=result.attempts,
                  response_id=result.response_id, model=result.model)
        self.breaker.record(ok=True)
        negotiate.accepted(p, self.agent.model, self.wire)
        self._warn_budget()
        self.hb.beat(**self.today())


def run_agent(settings: Settings, name: str, *, listener: Listener | None = None,
              client_factory: Callable[[], Any] | None = None, force: bool = False) -> Outcome:
    """Run one cycle of agent ``name``; SIGTERM / SIGINT stop it at the next step boundary."""
    from .stopping import graceful

    agent = settings.agent(name)
    key = api_key(settings)
    from . import settings_cache

    # Leaves what `mythline status` needs (caps, intervals, queues) so it can skip validation.
    settings_cache.save(settings)
    with graceful(StopFlag()) as stop:
        return Cycle(settings, agent, key=key, listener=listener, client_factory=client_factory, force=force,
                     stop=stop).run()


def dry_run(settings: Settings, name: str) -> dict[str, Any]:
    """What the next run would send and whether the budget allows it; calls and writes nothing."""
    agent = settings.agent(name)
    ck = Checkpoint.load(agent.name, repair=False)
    topic = ck.next_topic(agent.topics)
    out: dict[str, Any] = {"agent": agent.name, "model": agent.model, "base_url": safe_url(settings.provider.base_url),
                           "topic": topic, "topics": ck.counts(agent.topics)}
    if topic is None:
        out["step"] = None
        return out
    schema = RECORD_MODELS[agent.kind]
    wire = negotiate.mode(settings.provider, agent.model)
    mode = negotiate.prompt_mode(wire)
    feedback = ck.peek(topic).get("feedback") or []
    msgs = research.messages(agent, topic, feedback, settings.prompts_dir(), schema, mode)
    cur = ck.data.get("current") or {}
    steps = cur.get("steps", {}) if cur.get("topic") == topic else {}
    step = "research"
    fmt = negotiate.response_format(schema, wire)
    if "research" in steps:
        record, _ = interpret((steps.get("repair") or steps["research"]).get("content"), schema)
        step = "audit" if record is not None else "repair"
        if record is not None:
            msgs = validate.audit_messages(agent, topic, record, settings.prompts_dir(), mode)
            fmt = negotiate.response_format(validate.Audit, wire, name="audit")
    p = settings.provider
    msgs = research.clean(msgs)
    est = pricing.estimate(msgs, model=agent.model, max_output_tokens=p.max_output_tokens, provider=p,
                           response_format=fmt)
    refusal = Ledger(settings).check(agent, est)
    out.update(step=step, attempt=(ck.peek(topic)["attempts"] + 1), messages=msgs,
               estimate={"prompt_tokens": est.prompt_tokens, "max_output_tokens": est.max_output_tokens,
                         "tokens": est.tokens, "usd": est.usd, "counted_by": est.counted_by,
                         "price": est.price.source if est.price else None},
               budget={"allowed": refusal is None, "reason": str(refusal) if refusal else None})
    return out
