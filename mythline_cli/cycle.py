"""One research -> validate -> store pass for one agent.

``Cycle`` holds the run lock and the LLM client, asks the planner for the next step and
carries it out, and turns every way a run can end into an ``Outcome``. Every LLM call is
estimated and reserved in the ledger first, settled after, and its result recorded in the
checkpoint before anything else happens.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

from . import backoff, collector, killswitch, negotiate, notify, paths, planner, pricing, recovery, state
from . import checkpoint as ckpt_mod
from . import heartbeat as hb_mod
from .breaker import Breaker, BreakerOpen, ProviderWait, wait_line
from .checkpoint import Checkpoint
from .config import Agent, Settings
from .errors import (
    Aborted,
    BudgetExceeded,
    ExitCode,
    Interrupted,
    LedgerCorrupt,
    LLMError,
    MythlineError,
    RateLimited,
    SourcesUnavailable,
    UnknownPrice,
    UsageError,
)
from .events import EventLog
from .fleet import crosscheck
from .fleet import topics as fleet_topics
from .heartbeat import Heartbeat
from .ledger import Ledger, Reservation
from .planner import AUDIT_STEPS, RESEARCH_STEPS, Call, Gather, Reject, Store
from .ratelimit import Limiter
from .redact import redact, safe_url
from .stopping import StopFlag, code_of
from .store import store_record

Listener = Callable[[dict[str, Any]], None]
Result = Literal["stored", "unchanged", "rejected", "quarantined", "queue-empty"]


class _SteppedDown(Exception):
    """The server rejected the structured-output mode; ``auto`` recorded the next one."""


# How much warmer a nudged call (planner.Call.nudge: a repair) is sent, with a new seed.
REPAIR_NUDGE = 0.3


class _Rejected(Exception):
    """A call failed in a way tied to this topic's content: the attempt is rejected with
    ``issue`` as its feedback. Not an outage: no backoff, nothing counted by the breaker."""

    def __init__(self, step: str, issue: str) -> None:
        super().__init__(issue)
        self.step = step
        self.issue = issue


@dataclass
class Outcome:
    """How a run ended: exit code, heartbeat state, and the one line to show on failure."""

    code: int  # an ExitCode
    state: str  # the heartbeat's: ok, queue-empty, failed, over-budget, paused, interrupted
    agent: str
    topic: str | None = None
    message: str | None = None
    warnings: list[str] = field(default_factory=list)
    result: Result | None = None  # what became of the topic, when the run got that far


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
                 events: EventLog, before_send: Callable[[], None] = lambda: None, extra_usd: float = 0.0) -> None:
        self.ledger, self.agent, self.estimate = ledger, agent, estimate
        self.before_send = before_send
        self.run_id, self.step, self.events = run_id, step, events
        self.extra_usd = extra_usd
        self.open: Reservation | None = ledger.reserve(agent, estimate, run_id=run_id, step=step)

    def _cost(self, prompt: int, completion: int, provider_cost: float | None) -> tuple[float | None, str]:
        if provider_cost is not None:
            return provider_cost, "provider"
        usd = pricing.cost_of(prompt, completion, self.estimate.price)
        if usd is not None and self.extra_usd:
            usd += self.extra_usd  # web search results, billed per result
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

    def settle(self, usd: float | None, tokens: int, *, unsettled: bool, generation: str | None = None) -> None:
        assert self.open is not None
        res, self.open = self.open, None
        if unsettled:
            tokens = max(tokens, res.tokens)
        self.ledger.settle(res, usd=usd, tokens=tokens, unsettled=unsettled, generation=generation)
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
        self.limiter = Limiter(settings, self.breaker, agent=agent.name, sleep=self._nap, check=self._boundary,
                               force=force, on_repair=self._ratelimit_repaired)
        self.agent = agent
        self.key = key
        self.run_id = new_run_id()
        self.listener = listener
        self.ledger = ledger or Ledger(settings)
        self.events = EventLog(agent.name, self.run_id, secrets=(key,) if key else ())
        self._client_factory = client_factory
        self._client: Any = None
        self.plan_ctx = planner.Context.of(settings, agent)
        self._noted: set[tuple[str, str]] = set()  # planner notes already emitted this run

    # -- plumbing ------------------------------------------------------------------------
    def emit(self, event: str, **data: Any) -> None:
        entry = self.events.emit(event, **data)
        if self.listener:
            self.listener(entry)

    def _ratelimit_repaired(self, moved: Any) -> None:
        self.warnings.append(f"ratelimit.sqlite was unreadable; moved aside to {moved} and started afresh")
        self.emit("corrupt-state", file="ratelimit", moved_to=str(moved), problem="not an SQLite database")

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
            collector.resume()  # start-up's imports are done
        return self._client

    def today(self) -> dict[str, Any]:
        tokens, usd = self.ledger.agent_today(self.agent.name)
        return {"tokens_today": tokens, "usd_today": round(usd, 6)}

    # -- the run -----------------------------------------------------------------------
    def run(self) -> Outcome:
        paths.prepare_agent(self.agent.name, domain=self.agent.domain)
        name = self.agent.name
        try:
            # First, before any call: on PostgreSQL this connects, and an unreachable database
            # ends the run here.
            with state.run_lock(self.settings, name, paths.run_lock(name)):
                return self._run_locked()
        finally:
            self.limiter.close()
            if self._client is not None:
                self._client.close()

    def _run_locked(self) -> Outcome:
        agent = self.agent
        t0 = time.monotonic()
        warnings = self.warnings
        killswitch.check(agent.name)
        previous, hb_moved = hb_mod.read(agent.name)
        if not self.force:
            # Before the heartbeat: a run skipped for a backoff or the provider's wait leaves no trace.
            backoff.check(agent.name, previous)
            # A short wait is waited out; a long one ends the run with no request (exit 5).
            self.breaker.check_wait(agent.name, max_wait=self.settings.provider.max_retry_wait, sleep=self._nap)
        ck = Checkpoint.load(agent.name)
        self.hb = Heartbeat(agent.name, self.run_id, previous=previous, pid=os.getpid(), secrets=self.events.secrets)
        self.hb.beat()
        try:
            return self._run_started(t0, ck, hb_moved)
        except Interrupted as exc:
            # Stopped before the attempt began (the ledger lock at start, a cut_short wait).
            self._interrupted(exc)
            return self._end(t0, "interrupted", exc.exit_code, self.hb.data.get("topic"), f"{agent.name}: {exc}",
                             ck, warnings, failure=False)
        except Aborted as exc:
            # A second signal: stopped where it was. An interruption, not a failure: no backoff.
            self.emit("interrupted", step=self.hb.data.get("step"), signal=exc.signame, aborted=True)
            return self._end(t0, "interrupted", exc.exit_code, self.hb.data.get("topic"), f"{agent.name}: {exc}",
                             ck, warnings, failure=False)
        except MythlineError as exc:
            if not self.stop:
                raise
            # Failed after the signal (a wait that ran out its timeout): the stop it asked for.
            return self._end(t0, "failed", exc.exit_code, self.hb.data.get("topic"), f"{agent.name}: {exc}",
                             ck, warnings, error=exc)

    def _run_started(self, t0: float, ck: Checkpoint, hb_moved: Any) -> Outcome:
        agent = self.agent
        warnings = self.warnings
        self.emit("run-start", pid=os.getpid(), model=agent.model, base_url=safe_url(self.settings.provider.base_url))
        self._started = True
        for event in self._early:
            self.emit("corrupt-state", **event)
        try:
            repairs = recovery.at_start(self.ledger, ck, agent, hb_moved)
        except LedgerCorrupt as exc:
            self.emit("error", step="start", error=str(exc))
            # No backoff: nothing was called, and the fix (budget repair) is the operator's.
            return self._end(t0, "failed", exc.exit_code, None, str(exc), ck, warnings, failure=False)
        for repair in repairs:
            warnings.append(repair.warning)
            self.emit("corrupt-state", **repair.event)
        agent = self.agent = fleet_topics.fold(ck, agent, self.emit, self.settings)
        if agent.kind == "lore-crosscheck":
            agent = self.agent = crosscheck.scan(self.settings, agent, ck, self.emit)
        self.plan_ctx = planner.Context.of(self.settings, agent)  # the queue as changed above
        topic = ck.next_topic(agent.topics)
        if topic is None:
            topic = fleet_topics.stale_topic(ck, agent)
            if topic is not None:
                self.emit("refresh", topic=topic, refresh_after_s=agent.refresh_after)
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
            self._interrupted(exc)
            return self._end(t0, "interrupted", exc.exit_code, topic, f"{agent.name}: {exc}", ck, warnings,
                             failure=False)
        except BreakerOpen as exc:
            self.emit("breaker-open", step=self.hb.data.get("step"), error=str(exc))
            return self._end(t0, "failed", exc.exit_code, topic, f"{agent.name}: {exc}", ck, warnings,
                             failure=False)
        except ProviderWait as exc:
            self.emit("provider-wait", step=self.hb.data.get("step"), until=exc.until.isoformat())
            return self._end(t0, "failed", exc.exit_code, topic, str(exc), ck, warnings, failure=False)
        except RateLimited as exc:
            self.emit("rate-limited", step=self.hb.data.get("step"), wait_s=round(exc.wait, 3), error=str(exc))
            return self._end(t0, "failed", exc.exit_code, topic, str(exc), ck, warnings, failure=False)
        except LLMError as exc:
            self.emit("error", step=self.hb.data.get("step"), error=str(exc), status=exc.status)
            line = f"{agent.name}: {exc}"
            if self._wait_line:
                line += f"; {self._wait_line}"
            return self._end(t0, "failed", ExitCode.FAILED, topic, line, ck, warnings)
        except (LedgerCorrupt, SourcesUnavailable) as exc:
            self.emit("error", step=self.hb.data.get("step"), error=str(exc))
            return self._end(t0, "failed", exc.exit_code, topic, str(exc), ck, warnings)
        except Aborted:
            raise  # recorded as an interruption by the caller
        except (MythlineError, KeyboardInterrupt, Exception) as exc:
            self.emit("error", step=self.hb.data.get("step"), error=f"{type(exc).__name__}: {exc}")
            out = self._end(t0, "failed", ExitCode.FAILED, topic, f"{agent.name}: {exc}", ck, warnings)
            if out.state == "interrupted":
                return out
            raise
        message: str | None = None
        if result == "quarantined":
            message = notify.quarantined(self.settings, agent, self.emit, topic, self._issues)
        out = self._end(t0, "ok", ExitCode.OK, topic, None, ck, warnings, result=result)
        out.message = message
        return out

    def _interrupted(self, exc: Interrupted) -> None:
        """The ``interrupted`` event of a stop at a step boundary or in a wait it cut short."""
        waiting = {"waiting": exc.waiting} if exc.waiting else {}
        self.emit("interrupted", step=self.hb.data.get("step"), signal=self.stop.signame, **waiting)

    def _today_safe(self) -> dict[str, Any]:
        try:
            return self.today()
        except LedgerCorrupt:
            return {}

    def _end(self, t0: float, state: str, code: int, topic: str | None, message: str | None, ck: Checkpoint,
             warnings: list[str], *, failure: bool = True, result: Result | None = None,
             error: BaseException | None = None) -> Outcome:
        if state == "failed" and failure and self.stop.signame is not None:
            # A step that failed after a signal (a wait that is not cut short, such as the
            # ledger lock for a settle, running out its timeout) ends as the stop the signal
            # asked for: no failure, no backoff.
            stopped = Interrupted(self.stop.signame, code_of(self.stop.signame))
            self.emit("interrupted", step=self.hb.data.get("step"), signal=self.stop.signame,
                      error=redact(message if error is None else str(error), self.events.secrets))
            state, code, message, failure = "interrupted", stopped.exit_code, f"{self.agent.name}: {stopped}", False
        now = datetime.now(timezone.utc).isoformat()
        fields: dict[str, Any] = {"topics": ck.counts(self.agent.topics), **self._today_safe()}
        if state == "ok":
            fields.update(last_success=now, consecutive_failures=0, last_outcome=result, step=None, backoff_until=None)
        else:
            fields.update(last_error=message, last_outcome=state)
            if failure:
                streak = int(self.hb.data.get("consecutive_failures") or 0) + 1
                fields["consecutive_failures"] = streak
                fields["backoff_until"] = backoff.until(self.settings.config.backoff, streak,
                                                        not_before=self._wait_until)
        self.hb.finish(state, started_at=t0, ended_at=time.monotonic(), **fields)
        if failure and state == "failed":
            notify.failure_streak(self.settings, self.agent.name, self.emit, fields["consecutive_failures"], message,
                                  self.run_id)
        self.emit("run-end", outcome=result or state, exit_code=code, duration_s=round(time.monotonic() - t0, 3))
        message = redact(message, self.events.secrets)
        return Outcome(code, state, self.agent.name, topic=topic, message=message, warnings=warnings, result=result)

    # -- one attempt at one topic --------------------------------------------------------
    def _attempt(self, ck: Checkpoint, topic: str) -> Result:
        """Carry out the planner's steps until it ends the attempt: each call is recorded in the
        checkpoint, and the planner, asked again, moves past it."""
        ck.current(topic, self.run_id)
        called: set[str] = set()
        try:
            while True:
                step = planner.plan(self.plan_ctx, ck)
                for event, data in step.notes:
                    if (event, data["step"]) not in self._noted:
                        self._noted.add((event, data["step"]))
                        self.emit(event, **data)
                action = step.action
                assert step.topic == topic and step.attempt is not None
                if isinstance(action, Call):
                    if action.step in called:  # a recorded answer always moves the plan on
                        raise RuntimeError(f"the planner asked for step {action.step!r} twice")
                    called.add(action.step)
                    try:
                        self._call(ck, action, step.attempt)
                    except _SteppedDown:
                        # Nothing was recorded: the same step, planned again in the structured-output
                        # mode the server takes.
                        called.discard(action.step)
                elif isinstance(action, Gather):
                    if "sources" in called:
                        raise RuntimeError("the planner asked for the sources twice")
                    called.add("sources")
                    verdict = self._gather(ck, topic, action, step.attempt)
                    if verdict is not None:
                        return verdict
                elif isinstance(action, Reject):
                    return self._reject(ck, topic, action.issues, verdict=action.verdict, keep=action.keep)
                elif isinstance(action, Store):
                    return self._store(ck, topic, action, step.attempt)
                else:
                    raise AssertionError(f"no executor for {action!r}")
        except _Rejected as exc:
            # Only the audit failed: the paid research answer waits for the next attempt.
            keep = RESEARCH_STEPS if exc.step in AUDIT_STEPS else ()
            return self._reject(ck, topic, [exc.issue], verdict={"score": None, "passed": False,
                                                                 "issues": [exc.issue]}, keep=keep)

    def _store(self, ck: Checkpoint, topic: str, action: Store, attempt: int) -> Result:
        agent = self.agent
        steps = ck.data["current"]["steps"]
        self.emit("verdict", topic=topic, attempt=attempt, **action.verdict)
        self.hb.beat(step="store")
        calls = [s for s in steps.values() if "prompt_tokens" in s]
        provenance = {
            "agent": agent.name, "model": steps["research"].get("model", agent.model), "run_id": self.run_id,
            "attempt": attempt, "score": action.score, "audit_issues": action.issues,
            "tokens": sum(s["prompt_tokens"] + s["completion_tokens"] for s in calls),
            "cost_usd": round(sum(s.get("usd") or 0.0 for s in calls), 8),
            **action.provenance,
            "researched_at": steps["research"]["recorded"], "validated_at": action.validated_at,
        }
        stored = store_record(domain=agent.domain, topic=topic, record=action.record, provenance=provenance,
                              settings=self.settings)
        self.emit("store", topic=topic, **stored)
        ck.finish_attempt(passed=True, feedback=[], max_attempts=agent.max_attempts, stored=stored)
        if stored["action"] != "unchanged":
            fleet_topics.after_store(self.settings, agent, topic, action.record, self.emit)
        return "stored" if stored["action"] != "unchanged" else "unchanged"

    # -- retrieval ---------------------------------------------------------------------------
    def _gather(self, ck: Checkpoint, topic: str, action: Gather, attempt: int) -> Result | None:
        """Retrieve the attempt's sources and record them (no LLM money); a verdict instead when
        too few are usable: the topic is rejected (quarantined at ``max_attempts``) when they are
        gone, ``SourcesUnavailable`` when a host is only resting or unreachable."""
        from . import fetch
        from . import sources as sources_mod

        agent, cfg = self.agent, self.settings.config.sources
        self._boundary()
        self.hb.beat(step="sources")
        policy = fetch.Policy(timeout=cfg.timeout, max_bytes=cfg.max_bytes, max_redirects=cfg.max_redirects,
                              host_delay=cfg.host_delay, cache_max_age=cfg.cache_max_age, contact=cfg.contact)
        base = self.settings.source.parent if self.settings.source is not None else None
        with fetch.Fetcher(policy, sleep=self._nap) as fetcher:
            found, outcomes = sources_mod.gather(action.specs, topic, fetcher=fetcher, base_dir=base,
                                                 domains=dict[str, str](cfg.tiers), max_bytes=cfg.max_bytes)
        for out in outcomes:
            self.emit("source", topic=topic, spec=out.spec, url=out.url, status=out.status,
                      **({"reason": out.reason} if out.reason else {}), **({"cached": out.cached} if out.cached else {}))
        need = max(1, agent.min_sources)
        if len(found) < need:
            dropped = "; ".join(f"{o.url}: {o.reason}" for o in outcomes if o.status != "ok") or "no source specs"
            issue = (f"only {len(found)} of the {need} sources needed could be retrieved for {topic!r} ({dropped}); "
                     "nothing was sent to the model")
            if any(o.status in ("backoff", "failed", "blocked") for o in outcomes):
                raise SourcesUnavailable(f"{agent.name}: {issue}; the next run tries again")
            keep = tuple(k for k in ck.data["current"]["steps"] if planner.retrieval_step(k))
            return self._reject(ck, topic, [issue], verdict={"score": None, "passed": False, "issues": [issue]},
                                keep=keep)
        ck.record_step("sources", {"content": json.dumps({"sources": [s.meta() for s in found]}),
                                   "prompt_tokens": 0, "completion_tokens": 0, "usd": 0.0})
        return None

    # -- failing well ----------------------------------------------------------------------
    def _reject(self, ck: Checkpoint, topic: str, issues: list[str], *, verdict: dict[str, Any],
                keep: tuple[str, ...] = ()) -> Result:
        attempt = ck.data["current"]["attempt"]
        self._issues = issues
        # Retrieval (search, sources, summaries) is as good for the next attempt.
        keep = keep + tuple(k for k in ck.data["current"]["steps"] if planner.retrieval_step(k) and k not in keep)
        self.emit("verdict", topic=topic, attempt=attempt, **verdict)
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

    def _estimate(self, call: Call) -> pricing.Estimate:
        """The call's estimate, computed where a stop signal can still end the run: loading
        the tokenizer may block in C code (a download that never answers) for ever, and a
        Python signal handler cannot run there, so the work is done in a helper thread while
        this one waits, a fraction of a second at a time, for it or for a stop."""
        box: dict[str, Any] = {}

        def work() -> None:
            try:
                box["est"] = estimate(self.settings, self.agent, call, remember=True)
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

    def _call(self, ck: Checkpoint, call: Call, attempt: int) -> None:
        """Estimate, reserve, call; record the answer in the checkpoint at once; then settle."""
        p = self.settings.provider
        step, messages, fmt = call.step, call.messages, call.response_format
        self._boundary()
        self.hb.beat(step=step)
        self.breaker.before_call(self.agent.name, force=self.force)
        est = self._estimate(call)
        negotiate.check_fits(p, call.model or self.agent.model, est, key=self.key, step=call.step)
        vary: dict[str, Any] = {}
        if call.nudge:
            vary = {"temperature": min(2.0, p.temperature + REPAIR_NUDGE), "seed": random.randrange(1, 2**31)}
        estimate = {"prompt_tokens": est.prompt_tokens, "max_output_tokens": est.max_output_tokens,
                    "usd": est.usd, "counted_by": est.counted_by,
                    "price": est.price.source if est.price else None}
        if call.extra_usd:
            estimate["search_usd"] = call.extra_usd
        client = self.client()  # built before reserving: a client that cannot be built costs nothing
        budget = _CallBudget(self.ledger, self.agent, est, run_id=self.run_id, step=step, events=self.events,
                             before_send=self._boundary, extra_usd=call.extra_usd)
        try:
            self.stop.check()
            self.emit("llm-request", step=step, attempt=attempt, topic=ck.data["current"]["topic"],
                      estimate=estimate)
        except BaseException:
            budget.charge_failure((0, 0, 0.0))  # never sent: release the hold
            raise
        sent = datetime.now(timezone.utc)
        try:
            result = client.chat(messages, model=call.model or self.agent.model, max_tokens=p.max_output_tokens,
                                 response_format=fmt, guard=budget, limiter=self.limiter.call(est.tokens), **vary,
                                 **({"extra_body": call.extra_body} if call.extra_body else {}))
        except (ProviderWait, RateLimited, Interrupted):
            # Refused, or stopped in a wait (the rate limiter, a local server's slot) before it
            # was sent: release the hold. (A call in flight is never cut short by the first signal.)
            budget.charge_failure((0, 0, 0.0))
            raise
        except LLMError as exc:
            usd = budget.charge_failure(exc.billed)
            kind, issue = exc.kind, exc.content_issue
            # A failure tied to the topic's content says nothing about the provider's health:
            # it neither counts toward the breaker nor clears it.
            self.breaker.record(ok=False, kind=None if issue else kind, status=None if issue else exc.status)
            self.emit("llm-call", step=step, attempt=attempt, ok=False, estimate=estimate, error=str(exc),
                      kind=kind, status=exc.status, attempts=exc.attempts, usd=usd)
            if kind == "response-format":
                rejected = self.plan_ctx.mode
                nxt = negotiate.step_down(p, self.agent.model, rejected, str(exc))
                if nxt is not None:
                    self.emit("structured-outputs", rejected=rejected, chosen=nxt)
                    self.plan_ctx = dataclasses.replace(self.plan_ctx, mode=nxt)
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
                              "model": result.model, "response_id": result.response_id,
                              **({"citations": result.citations} if call.extra_body else {})})
        budget.settle(usd, result.prompt_tokens + result.completion_tokens, unsettled=unsettled,
                      generation=result.response_id or None)
        self.emit("llm-call", step=step, attempt=attempt, ok=True, estimate=estimate,
                  prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens, usd=usd,
                  cost_source=source, latency_s=round(result.latency, 3), attempts=result.attempts,
                  response_id=result.response_id, model=result.model)
        self.breaker.record(ok=True, started=sent)
        if fmt is not None:
            negotiate.accepted(p, self.agent.model, self.plan_ctx.mode)
        notify.budget_crossings(self.settings, self.ledger, self.agent, self.emit)
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


def estimate(settings: Settings, agent: Agent, call: Call, *, remember: bool = False) -> pricing.Estimate:
    """What ``call`` may cost at most: the figure reserved before it is sent (``remember``: the
    real run keeps a table price in the cache; a dry run writes nothing)."""
    p = settings.provider
    est = pricing.estimate(call.messages, model=call.model or agent.model, max_output_tokens=p.max_output_tokens,
                           provider=p, response_format=call.response_format, remember=remember)
    if call.extra_usd and est.usd is not None:
        est = dataclasses.replace(est, usd=est.usd + call.extra_usd)  # search results are paid per result
    return est


def dry_run(settings: Settings, name: str) -> dict[str, Any]:
    """What the next run would do and, for a call, whether the budget allows it; calls and
    writes nothing."""
    agent = settings.agent(name)
    ck = Checkpoint.load(agent.name, repair=False)
    agent = dataclasses.replace(agent, topics=ck.queue(agent.topics))  # with the topics added and removed
    step = planner.plan(planner.Context.of(settings, agent), ck)
    out: dict[str, Any] = {"agent": agent.name, "model": agent.model, "base_url": safe_url(settings.provider.base_url),
                           "topic": step.topic, "topics": ck.counts(agent.topics)}
    action = step.action
    out["step"] = action.name if action is not None else None
    if action is None:
        return out
    out["attempt"] = step.attempt
    if isinstance(action, Gather):
        # Retrieval is not run here (it writes the page cache): the run fetches these first,
        # then sends the research call shown (and estimated) with a note where they will be.
        from . import research
        from . import sources as sources_mod

        out["sources"] = [sources_mod.expand(spec, step.topic or "") for spec in action.specs]
        ctx = planner.Context.of(settings, agent)
        ck_topic = ck.peek(step.topic or "")
        msgs = research.messages(agent, step.topic or "", ck_topic.get("feedback") or [], ctx.prompts_dir,
                                 ctx.schema, ctx.prompt_mode)
        pending = ("[the run retrieves these sources first and lists them here, numbered: "
                   + ", ".join(out["sources"] or ["web search results"]) + "]")
        msgs = [{**m, "content": m["content"].replace(research.UNGROUNDED, pending)} for m in msgs]
        action = Call("research", research.clean(msgs), ctx.response_format(ctx.schema))
    if isinstance(action, Reject):
        out["issues"] = action.issues
    elif isinstance(action, Store):
        out["score"] = action.score
    else:
        assert isinstance(action, Call)
        est = estimate(settings, agent, action)
        too_big: negotiate.ContextTooSmall | None = None
        try:
            # Only a configured or recorded context length: a dry run asks the server nothing.
            negotiate.check_fits(settings.provider, action.model or agent.model, est, key=None, step=action.step,
                                 ask=False)
        except negotiate.ContextTooSmall as exc:
            too_big = exc
        out["context"] = {"fits": too_big is None, "reason": str(too_big) if too_big else None}
        refusal = Ledger(settings).check(agent, est)
        out.update(messages=action.messages, response_format=action.response_format,
                   estimate={"prompt_tokens": est.prompt_tokens, "max_output_tokens": est.max_output_tokens,
                             "tokens": est.tokens, "usd": est.usd, "counted_by": est.counted_by,
                             "price": est.price.source if est.price else None},
                   budget={"allowed": refusal is None, "reason": str(refusal) if refusal else None})
    return out
