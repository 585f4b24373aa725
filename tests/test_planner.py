"""One planner for the real run and ``--dry-run``: for every checkpoint state, what the dry
run predicts is what the real run then does (the call it sends first, or none, and the exit code)."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mythline_cli import planner
from mythline_cli.cli import app

from factories import record_json
from helpers import is_audit, lore_responder
from llm_server import Reply, completion

AGENT = "world-npcs"
FIRST, SECOND = "Thrall", "Jaina Proudmoore"
CALLS = ("research", "repair", "audit", "audit-repair")
# What a real run's outcome says for a step the planner predicts without a call.
RESULTS = {"store": {"stored", "unchanged"}, "reject": {"rejected"}, "quarantine": {"quarantined"},
           None: {"queue-empty"}}


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def step(content: str, tokens: tuple[int, int] = (400, 200)) -> dict[str, Any]:
    return {"content": content, "prompt_tokens": tokens[0], "completion_tokens": tokens[1], "usd": 0.0001,
            "cost_source": "provider", "model": "test/model", "response_id": "r1",
            "recorded": datetime.now(timezone.utc).isoformat()}


def audit(score: float = 0.9, issues: list[str] | None = None) -> str:
    return json.dumps({"score": score, "issues": issues or []})


def respond(request: dict[str, Any]) -> Reply:
    """Valid answers for every step; a repair prompt names no topic, and is about the first."""
    if is_audit(request) or "**" in request["body"]["messages"][-1]["content"]:
        return lore_responder(AGENT)(request)
    return completion(GOOD, prompt_tokens=400, completion_tokens=200)


def write_checkpoint(home: Path, *, steps: dict[str, Any] | None = None, attempts: int = 0,
                     topics: dict[str, Any] | None = None) -> None:
    data: dict[str, Any] = {"version": 1, "agent": AGENT, "current": None,
                            "topics": topics or {FIRST: {"status": "pending", "attempts": attempts, "feedback": []}}}
    if steps is not None:
        data["current"] = {"topic": FIRST, "attempt": attempts + 1, "run_id": "earlier", "started": "x",
                           "steps": steps}
    path = home / "agents" / AGENT / "checkpoint.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


GOOD = record_json(AGENT, FIRST)
# Valid JSON that fails a rule: it cites a source, and the (ungrounded) test config retrieved none.
NO_SOURCES = record_json(AGENT, FIRST, sources=[{"source": 1, "url": "https://warcraft.wiki.gg/wiki/Thrall"}])
DONE = {"status": "done", "attempts": 1, "feedback": []}
QUARANTINED = {"status": "quarantined", "attempts": 3, "feedback": []}

# name: (checkpoint, budget section, the step the dry run must name)
STATES: dict[str, tuple[dict[str, Any], dict[str, Any], str | None]] = {
    "fresh": ({}, {}, "research"),
    "fresh, over budget": ({}, {"daily_tokens": 100}, "research"),
    "research recorded": ({"steps": {"research": step(GOOD)}}, {}, "audit"),
    "research unreadable: repair pending": ({"steps": {"research": step("not json")}}, {}, "repair"),
    "research and repair unreadable": ({"steps": {"research": step("no"), "repair": step("{")}}, {}, "reject"),
    "research rejected by the rules": ({"steps": {"research": step(NO_SOURCES)}}, {}, "reject"),
    "rejected by the rules on the last attempt": ({"steps": {"research": step(NO_SOURCES)}, "attempts": 2}, {},
                                                  "quarantine"),
    "repair recorded": ({"steps": {"research": step("no"), "repair": step(GOOD)}}, {}, "audit"),
    "audit recorded, tight budget": ({"steps": {"research": step(GOOD), "audit": step(audit(), (300, 20))}},
                                     {"daily_tokens": 1000}, "store"),
    "audit recorded, low score": ({"steps": {"research": step(GOOD), "audit": step(audit(0.2, ["thin"]))}}, {},
                                  "reject"),
    "audit unreadable": ({"steps": {"research": step(GOOD), "audit": step("??")}}, {}, "audit-repair"),
    "audit and its repair unreadable": ({"steps": {"research": step(GOOD), "audit": step("?"),
                                                   "audit-repair": step("?")}}, {}, "reject"),
    "first topic quarantined": ({"topics": {FIRST: QUARANTINED}}, {}, "research"),
    "queue empty": ({"topics": {FIRST: DONE, SECOND: QUARANTINED}}, {}, None),
}


@pytest.mark.parametrize("name", list(STATES))
def test_dry_run_predicts_what_the_real_run_does(name, home, config, llm_server):
    state, budget, expected = STATES[name]
    config(sections={"budget": budget, f"agents.{AGENT}": {"topics": [FIRST, SECOND]}})
    write_checkpoint(home, **state)
    before = (home / "agents" / AGENT / "checkpoint.json").read_text()
    llm_server.responder = respond

    dry = run("run", AGENT, "--dry-run", "--json")
    plan = json.loads(dry.stdout)
    assert plan["step"] == expected, plan
    assert (home / "agents" / AGENT / "checkpoint.json").read_text() == before  # a dry run writes nothing
    shown = run("run", AGENT, "--dry-run")
    assert shown.exit_code == dry.exit_code
    if expected in ("store", "reject", "quarantine"):
        assert f"· {expected} (attempt" in shown.output and "call nothing" in shown.output

    real = run("run", AGENT, "--json")
    outcome = json.loads(real.stdout)
    assert real.exit_code == dry.exit_code, (plan, outcome, real.output)
    if plan["step"] in CALLS and plan["budget"]["allowed"]:
        first = llm_server.requests[0]["body"]
        assert first["messages"] == plan["messages"]
        assert is_audit(llm_server.requests[0]) == plan["step"].startswith("audit")
        assert outcome["topic"] == plan["topic"]
    else:
        assert llm_server.count() == 0, (plan, outcome)
        assert outcome["result"] in RESULTS.get(plan["step"], {None}), (plan, outcome)



# -- the planner alone: pure, and open to new stages --------------------------------------

def _ctx_and_checkpoint(steps: dict[str, Any] | None):
    from mythline_cli.checkpoint import Checkpoint
    from mythline_cli.config import parse_config

    settings = parse_config({"defaults": {"sources": []}})  # ungrounded, like the test configs
    data = {"version": 1, "agent": AGENT, "topics": {}, "current": None}
    if steps is not None:
        data["current"] = {"topic": FIRST, "attempt": 1, "run_id": "r", "started": "x", "steps": steps}
    return planner.Context.of(settings, settings.agent(AGENT)), Checkpoint(AGENT, data)


@pytest.mark.parametrize("steps", [None, {"research": step("no")}, {"research": step(GOOD), "audit": step(audit())}])
def test_planning_changes_nothing(steps):
    ctx, ck = _ctx_and_checkpoint(steps)
    before = copy.deepcopy(ck.data)
    first = planner.plan(ctx, ck)
    assert ck.data == before
    assert planner.plan(ctx, ck) == first  # the same state, the same plan


def test_unreadable_answers_are_noted_once_per_step():
    ctx, ck = _ctx_and_checkpoint({"research": step("no"), "repair": step("{")})
    found = planner.plan(ctx, ck)
    assert [(event, data["step"]) for event, data in found.notes] == [("invalid-output", "research"),
                                                                        ("invalid-output", "repair")]
    assert isinstance(found.action, planner.Reject) and found.action.keep == ()
    assert found.action.issues[0].startswith("the answer was not a valid record: ")


def test_a_grounded_attempt_gathers_its_sources_first():
    from mythline_cli.checkpoint import Checkpoint
    from mythline_cli.config import parse_config

    settings = parse_config({})
    ck = Checkpoint(AGENT, {"version": 1, "agent": AGENT, "topics": {}, "current": None})
    found = planner.plan(planner.Context.of(settings, settings.agent(AGENT)), ck)
    assert isinstance(found.action, planner.Gather)
    assert found.action.specs == ("https://warcraft.wiki.gg/wiki/{title}", "https://wowpedia.fandom.com/wiki/{title}")


def test_a_new_stage_is_planned_in_its_place(monkeypatch):
    """A step added to ``STAGES`` runs in its place: here one before research, until recorded."""
    def fetch_stage(at: planner.Attempt) -> planner.Action | None:
        if "fetch" not in at.steps:
            return planner.Call("fetch", [{"role": "user", "content": f"sources for {at.topic}"}], {})
        return None

    monkeypatch.setattr(planner, "STAGES", (fetch_stage, *planner.STAGES))
    ctx, ck = _ctx_and_checkpoint(None)
    assert planner.plan(ctx, ck).action == planner.Call("fetch", [{"role": "user", "content": f"sources for {FIRST}"}],
                                                        {})
    ctx, ck = _ctx_and_checkpoint({"fetch": step("[]")})
    assert planner.plan(ctx, ck).action.name == "research"
