"""The step planner: from an agent's checkpoint, the next thing its run does.

One pure function, :func:`plan`, used by the real run (which carries out the step and asks
again) and by ``run --dry-run`` (which reports it), so the two cannot disagree. It reads
the checkpoint and never writes, calls or spends.

The attempt at a topic is the table :data:`STAGES`, walked in order. Each stage looks at
what the attempt has recorded so far and either settles (returns ``None``, leaving what it
found for the stages after it) or returns the action that decides this run's next move. A
new step is a new stage function in its place in the table; see docs/how-it-works.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import research, validate
from .fleet.schemas import RECORD_MODELS

if TYPE_CHECKING:
    from .checkpoint import Checkpoint
    from .config import Agent, Settings

Messages = list[dict[str, str]]
Interpretation = tuple[dict[str, Any] | None, str | None]
# The audit's own steps: when only these fail, the paid research answer is kept.
AUDIT_STEPS = ("audit", "audit-repair")
RESEARCH_STEPS = ("research", "repair")
CALL_STEPS = RESEARCH_STEPS + AUDIT_STEPS


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


# -- actions: what a plan can ask for ---------------------------------------------------

@dataclass(frozen=True)
class Call:
    """Send ``messages`` to the model and record the answer as ``step``."""

    step: str
    messages: Messages
    response_format: dict[str, Any]

    @property
    def name(self) -> str:
        return self.step


@dataclass(frozen=True)
class Reject:
    """End the attempt as failed with ``issues`` as its feedback; ``keep``: recorded steps
    the next attempt reuses. ``verdict``: the verdict event's fields."""

    issues: list[str]
    verdict: dict[str, Any]
    quarantines: bool  # this was the topic's last attempt
    keep: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return "quarantine" if self.quarantines else "reject"


@dataclass(frozen=True)
class Store:
    """Store ``record``: every check passed."""

    record: dict[str, Any]
    score: float
    issues: list[str]
    validated_at: str
    verdict: dict[str, Any]

    @property
    def name(self) -> str:
        return "store"


Action = Call | Reject | Store


@dataclass(frozen=True)
class Context:
    """What the planner needs from the settings."""

    agent: Agent
    prompts_dir: Path | None
    mode: str  # structured outputs: json_schema or json_object

    @classmethod
    def of(cls, settings: Settings, agent: Agent) -> Context:
        return cls(agent, settings.prompts_dir(), settings.provider.structured_outputs)

    @property
    def schema(self) -> type[Any]:
        return RECORD_MODELS[self.agent.kind]


@dataclass
class Attempt:
    """The attempt being planned, and what the stages have found in it so far."""

    ctx: Context
    topic: str
    number: int
    prior_attempts: int
    steps: Mapping[str, dict[str, Any]]
    feedback: list[dict[str, Any]]
    record: dict[str, Any] | None = None
    audit: dict[str, Any] | None = None
    audit_step: str | None = None
    notes: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # events seen on the way

    def reject(self, issues: list[str], *, keep: tuple[str, ...] = (), score: float | None = None,
               **verdict: Any) -> Reject:
        return Reject(issues, {"score": score, **verdict, "passed": False, "issues": issues},
                      quarantines=self.prior_attempts + 1 >= self.ctx.agent.max_attempts, keep=keep)


@dataclass(frozen=True)
class Plan:
    """The next step of one agent's run: ``action`` is None when the queue is empty."""

    topic: str | None
    attempt: int | None
    action: Action | None
    notes: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


# -- the stages ---------------------------------------------------------------------------

def _answer(at: Attempt, names: tuple[str, str], messages: Messages, fmt: dict[str, Any],
            model: type[Any]) -> Call | Interpretation:
    """A step's answer, calling for it unless it is recorded, with one repair call (``names``:
    the step, its repair) when it is unreadable: a call to make, or (answer, last error)."""
    step, fix = names
    if step not in at.steps:
        return Call(step, research.clean(messages), fmt)
    content = at.steps[step].get("content")
    record, error = interpret(content, model)
    if error is None:
        return record, None
    at.notes.append(("invalid-output", {"step": step, "error": error}))
    if fix not in at.steps:
        repair = research.repair_messages(messages, str(content), error, at.ctx.prompts_dir)
        return Call(fix, research.clean(repair), fmt)
    record, error = interpret(at.steps[fix].get("content"), model)
    if error is not None:
        at.notes.append(("invalid-output", {"step": fix, "error": error}))
    return record, error


def research_stage(at: Attempt) -> Action | None:
    ctx = at.ctx
    msgs = research.messages(ctx.agent, at.topic, at.feedback, ctx.prompts_dir, ctx.schema, ctx.mode)
    found = _answer(at, RESEARCH_STEPS, msgs, research.response_format(ctx.schema, ctx.mode), ctx.schema)
    if isinstance(found, Call):
        return found
    record, error = found
    if error is not None:
        return at.reject([f"the answer was not a valid record: {error}"])
    at.record = record
    return None


def rules_stage(at: Attempt) -> Action | None:
    """Before the audit, so that a record that cannot pass costs no audit call."""
    assert at.record is not None
    try:
        problems = validate.check_rules(at.record, at.ctx.agent)
    except Exception as exc:  # noqa: BLE001 - a record the rules cannot read is not a valid one
        problems = [f"the record could not be checked ({type(exc).__name__}: {str(exc)[:200]})"]
    return at.reject(problems) if problems else None


def audit_stage(at: Attempt) -> Action | None:
    ctx = at.ctx
    assert at.record is not None
    msgs = validate.audit_messages(ctx.agent, at.topic, at.record, ctx.prompts_dir, ctx.mode)
    fmt = research.response_format(validate.Audit, ctx.mode, name="audit")
    # Repaired like research: one call that shows the model its unreadable answer.
    found = _answer(at, AUDIT_STEPS, msgs, fmt, validate.Audit)
    if isinstance(found, Call):
        return found
    audit, error = found
    if error is not None:
        return at.reject([f"the audit answer was unreadable: {error}"], keep=RESEARCH_STEPS)
    at.audit = audit
    at.audit_step = "audit-repair" if "audit-repair" in at.steps else "audit"
    return None


def score_stage(at: Attempt) -> Action | None:
    assert at.record is not None and at.audit is not None and at.audit_step is not None
    agent = at.ctx.agent
    score, issues = float(at.audit["score"]), list(at.audit["issues"])
    if score < agent.min_score:
        return at.reject(issues or [f"audit score {score:.2f} is below {agent.min_score:.2f}"], score=score,
                         min_score=agent.min_score)
    verdict = {"score": score, "min_score": agent.min_score, "passed": True, "issues": issues}
    return Store(at.record, score, issues, at.steps[at.audit_step]["recorded"], verdict)


Stage = Callable[[Attempt], "Action | None"]
# In order. Retrieval would go before research_stage, evidence checks after rules_stage.
STAGES: tuple[Stage, ...] = (research_stage, rules_stage, audit_stage, score_stage)


def plan(ctx: Context, ck: Checkpoint) -> Plan:
    """The next step of ``ctx.agent``'s run for checkpoint ``ck`` (read, never changed)."""
    agent = ctx.agent
    topic = ck.next_topic(agent.topics)
    if topic is None:
        return Plan(None, None, None)
    state = ck.peek(topic)
    cur = ck.data.get("current") or {}
    steps = cur.get("steps", {}) if cur.get("topic") == topic else {}
    number = cur["attempt"] if cur.get("topic") == topic else state["attempts"] + 1
    at = Attempt(ctx, topic, number, state["attempts"], steps, state.get("feedback") or [])
    for stage in STAGES:
        action = stage(at)
        if action is not None:
            return Plan(topic, number, action, at.notes)
    raise AssertionError("the last stage always decides")  # score_stage stores or rejects
