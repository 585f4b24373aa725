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

from . import negotiate, research, validate
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
# The feedback of an attempt whose repair came back unchanged; the next attempt's first call
# is varied too.
REPEAT = "the repair returned the same answer byte for byte"


def retrieval_step(name: str) -> bool:
    """Whether a recorded step is retrieval (search, sources, summaries): as good for the next
    attempt as for this one, so a rejected attempt hands it on."""
    return name in ("search", "sources") or name.startswith("summary-")


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
    response_format: dict[str, Any] | None
    model: str | None = None  # None: the agent's research model
    extra_body: dict[str, Any] | None = None  # the web plugin, for the search step
    extra_usd: float = 0.0  # a price beyond tokens (search results), reserved with them
    # Sent warmer and with a new seed (a repair): at temperature 0 the same request brings back
    # the same answer byte for byte.
    nudge: bool = False

    @property
    def name(self) -> str:
        return self.step


@dataclass(frozen=True)
class Gather:
    """Retrieve the attempt's sources (no LLM, no money) and record them as the ``sources`` step."""

    specs: tuple[str, ...]

    @property
    def name(self) -> str:
        return "sources"


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
    provenance: dict[str, Any] = field(default_factory=dict)  # grounding: sources, confidence cap

    @property
    def name(self) -> str:
        return "store"


Action = Call | Gather | Reject | Store


@dataclass(frozen=True)
class Context:
    """What the planner needs from the settings."""

    agent: Agent
    prompts_dir: Path | None
    mode: str  # the structured-output mode sent (negotiate.LADDER: ``auto`` resolved)
    sources: Any = None  # config.Sources; None: the defaults

    @classmethod
    def of(cls, settings: Settings, agent: Agent) -> Context:
        return cls(agent, settings.prompts_dir(), negotiate.mode(settings.provider, agent.model),
                   settings.config.sources)

    @property
    def prompt_mode(self) -> str:
        """What the prompts are written for: json_schema, or json_object (the schema in the prompt)."""
        return negotiate.prompt_mode(self.mode)

    def response_format(self, model: type[Any], name: str | None = None) -> dict[str, Any]:
        return negotiate.response_format(model, self.mode, name=name)

    @property
    def cfg(self) -> Any:
        if self.sources is None:
            from .config import Sources

            return Sources()
        return self.sources

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
    found: list[Any] = field(default_factory=list)  # the numbered sources (sources.Source)

    def reject(self, issues: list[str], *, keep: tuple[str, ...] = (), score: float | None = None,
               **verdict: Any) -> Reject:
        keep = keep + tuple(k for k in self.steps if retrieval_step(k) and k not in keep)
        return Reject(issues, {"score": score, **verdict, "passed": False, "issues": issues},
                      quarantines=self.prior_attempts + 1 >= self.ctx.agent.max_attempts, keep=keep)

    @property
    def evidence(self) -> validate.Context:
        cfg = self.ctx.cfg
        return validate.Context(self.found, threshold=cfg.evidence_threshold, min_quote_chars=cfg.min_quote_chars,
                                weights=cfg.weights)


@dataclass(frozen=True)
class Plan:
    """The next step of one agent's run: ``action`` is None when the queue is empty."""

    topic: str | None
    attempt: int | None
    action: Action | None
    notes: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


# -- the stages ---------------------------------------------------------------------------

def _answer(at: Attempt, names: tuple[str, str], messages: Messages, fmt: dict[str, Any],
            model: type[Any], *, llm: str | None = None) -> Call | Interpretation:
    """A step's answer, calling for it unless it is recorded, with one repair call (``names``:
    the step, its repair) when it is unreadable: a call to make, or (answer, last error)."""
    step, fix = names
    if step not in at.steps:
        # After an attempt whose repair came back unchanged, even the first call is varied.
        nudge = step == "research" and any(REPEAT in str(i) for f in at.feedback[-1:] for i in f.get("issues", []))
        return Call(step, research.clean(messages), fmt, model=llm, nudge=nudge)
    content = at.steps[step].get("content")
    record, error = interpret(content, model)
    if error is None:
        return record, None
    at.notes.append(("invalid-output", {"step": step, "error": error}))
    if fix not in at.steps:
        repair = research.repair_messages(messages, str(content), error, at.ctx.prompts_dir)
        return Call(fix, research.clean(repair), fmt, model=llm, nudge=True)
    first = error
    record, error = interpret(at.steps[fix].get("content"), model)
    if error is not None:
        if at.steps[fix].get("content") == content:
            # Paid once for the same text is enough: the attempt ends here.
            at.notes.append(("repeat-answer", {"step": fix, "of": step}))
            error = f"{REPEAT}: {first}"
        at.notes.append(("invalid-output", {"step": fix, "error": error}))
    return record, error


def search_stage(at: Attempt) -> Action | None:
    """Web search (OpenRouter's web plugin) before retrieval, when the agent has it on."""
    if not at.ctx.agent.web_search or "search" in at.steps or "sources" in at.steps:
        return None
    ws = at.ctx.cfg.web_search
    return Call("search", research.search_messages(at.ctx.agent, at.topic), None,
                extra_body={"plugins": [{"id": "web", "max_results": ws.max_results}]},
                extra_usd=ws.max_results * ws.usd_per_result)


def search_urls(at: Attempt) -> tuple[str, ...]:
    cites = (at.steps.get("search") or {}).get("citations") or []
    urls = [c["url"] for c in cites if isinstance(c, dict) and str(c.get("url", "")).startswith(("http://", "https://"))]
    return tuple(dict.fromkeys(urls))[:at.ctx.cfg.web_search.max_results]


def sources_stage(at: Attempt) -> Action | None:
    """The attempt's sources: recorded ones (their texts read back by hash), else a Gather."""
    import json

    from . import sources as sources_mod

    agent = at.ctx.agent
    if not agent.grounded:
        return None
    recorded = at.steps.get("sources")
    if recorded is not None:
        try:
            restored = sources_mod.restore(json.loads(recorded["content"])["sources"])
        except (ValueError, KeyError, TypeError):
            restored = None
        if restored is not None:
            at.found = restored
            return None
    return Gather(agent.sources + search_urls(at))


def summary_stage(at: Attempt) -> Action | None:
    """Each source too long for its excerpt, summarised chunk by chunk (map), the partial
    summaries joined in order (reduce); every chunk is its own recorded, reserved call.
    Only passages found in the chunk are offered for quoting."""
    from dataclasses import replace

    from . import evidence
    from . import sources as sources_mod

    cfg = at.ctx.cfg
    if not cfg.summarise:
        return None
    fmt = at.ctx.response_format(research.Summary, name="summary")
    out = []
    for src in at.found:
        if len(src.text) <= cfg.max_excerpt_chars:
            out.append(src)
            continue
        parts = sources_mod.chunks(src.text, cfg.chunk_chars)[:cfg.max_chunks]
        # Each partial gets its share of the excerpt (about six characters a word).
        words = max(30, cfg.max_excerpt_chars // (6 * len(parts)) // 2)
        partials: list[tuple[str, list[str]]] = []
        for i, part in enumerate(parts, 1):
            step = f"summary-{src.n}-{i}"
            if step not in at.steps:
                return Call(step, research.clean(research.summary_messages(
                    at.topic, src, i, len(parts), part, at.ctx.prompts_dir, words=words, passages=3,
                    mode=at.ctx.prompt_mode)), fmt)
            got, error = interpret(at.steps[step].get("content"), research.Summary)
            if error is not None or got is None:
                at.notes.append(("invalid-output", {"step": step, "error": error}))
                partials.append(("", []))
                continue
            kept = [p for p in got["passages"] if evidence.check(p, part, threshold=cfg.evidence_threshold,
                                                                  min_chars=cfg.min_quote_chars).found]
            partials.append((got["summary"], kept))
        out.append(replace(src, digest=research.digest(partials)))
    at.found = out
    return None


def research_stage(at: Attempt) -> Action | None:
    ctx = at.ctx
    msgs = research.messages(ctx.agent, at.topic, at.feedback, ctx.prompts_dir, ctx.schema, ctx.prompt_mode,
                             sources=at.found, max_excerpt_chars=ctx.cfg.max_excerpt_chars)
    found = _answer(at, RESEARCH_STEPS, msgs, ctx.response_format(ctx.schema), ctx.schema)
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
        problems = validate.check_rules(at.record, at.ctx.agent, at.evidence)
    except Exception as exc:  # noqa: BLE001 - a record the rules cannot read is not a valid one
        problems = [f"the record could not be checked ({type(exc).__name__}: {str(exc)[:200]})"]
    return at.reject(problems) if problems else None


def audit_stage(at: Attempt) -> Action | None:
    ctx = at.ctx
    assert at.record is not None
    msgs = validate.audit_messages(ctx.agent, at.topic, at.record, ctx.prompts_dir, ctx.prompt_mode, sources=at.found,
                                   max_excerpt_chars=ctx.cfg.max_excerpt_chars)
    fmt = ctx.response_format(validate.Audit, name="audit")
    # Repaired like research: one call that shows the model its unreadable answer.
    found = _answer(at, AUDIT_STEPS, msgs, fmt, validate.Audit, llm=ctx.agent.auditor)
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
    ev = at.evidence
    cap = validate.confidence_cap(at.record, ev)
    record, claimed = at.record, at.record.get("confidence")
    if isinstance(claimed, (int, float)) and claimed > cap:
        record = {**record, "confidence": cap}  # no more trust than the best supporting source earns
    provenance = {"grounded": ev.grounded, "sources": validate.provenance_sources(at.record, ev),
                  "confidence_claimed": claimed, "confidence_cap": cap,
                  "audit_model": at.steps[at.audit_step].get("model", agent.auditor)}
    return Store(record, score, issues, at.steps[at.audit_step]["recorded"], verdict, provenance)


Stage = Callable[[Attempt], "Action | None"]
# In order: retrieval (search, sources, summaries) before research; the rules (citations,
# evidence quotes, tiers) before the audit, which judges against the same excerpts.
STAGES: tuple[Stage, ...] = (search_stage, sources_stage, summary_stage, research_stage, rules_stage, audit_stage,
                             score_stage)


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
