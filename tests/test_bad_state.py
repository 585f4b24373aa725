"""No answer and no state value wedges an agent: text no encoding can write, recorded poison
answers, and well-formed state files holding values that make no sense."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import is_audit, lore_responder, topic_of
from factories import record
from llm_server import completion
from mythline_cli.cli import app
from mythline_cli.fleet.topics import TOPICS

AGENT = "world-npcs"
FIRST, SECOND = TOPICS[AGENT][:2]


def run() -> object:
    return CliRunner().invoke(app, ["run", AGENT])


def is_repair(request) -> bool:
    return any(m["role"] == "assistant" for m in request["body"]["messages"])


def research_asked(server, topic: str) -> int:
    return sum(1 for r in server.requests if not is_audit(r) and not is_repair(r) and topic_of(r) == topic)


def responder(topic: str):
    """Valid records and passing audits; a repair request gets ``topic``'s valid record."""
    normal = lore_responder(AGENT)

    def respond(request):
        if not is_audit(request) and is_repair(request):
            return completion(json.dumps(record(AGENT, topic)), prompt_tokens=400, completion_tokens=200)
        return normal(request)
    return respond


def checkpoint_path(home: Path) -> Path:
    return home / "agents" / AGENT / "checkpoint.json"


def stored(home: Path, topic: str) -> dict | None:
    for path in (home / "store").rglob("*.json"):
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc["topic"] == topic:
            return doc
    return None


# -- a paid answer is always recorded -------------------------------------------------------

def test_an_answer_with_a_lone_surrogate_is_recorded_once_and_reaches_a_verdict(home, config, llm_server):
    # A split emoji: the body carries the escape "\ud83d" with no second half.
    split = json.dumps(record(AGENT, FIRST, summary=f"{FIRST} smiles \ud83d at the Horde."), ensure_ascii=False)
    normal = lore_responder(AGENT)

    def respond(request):
        if not is_audit(request) and topic_of(request) == FIRST:
            return completion(split, prompt_tokens=400, completion_tokens=200)
        return normal(request)

    llm_server.responder = respond
    for _ in range(3):
        result = run()
        assert result.exit_code == 0, result.output
    assert research_asked(llm_server, FIRST) == 1  # paid once, never bought again
    doc = stored(home, FIRST)
    assert doc is not None and "smiles \ufffd at the Horde" in doc["record"]["summary"]
    # The checkpoint kept the answer as it came: the escape reads back to the same text.
    events = (home / "agents" / AGENT / "events.jsonl").read_text(encoding="utf-8")
    assert '"event":"store"' in events


# -- recorded poison answers ----------------------------------------------------------------

def _recorded(home: Path, topic: str, content: object) -> None:
    path = checkpoint_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    step = {"content": content, "prompt_tokens": 400, "completion_tokens": 200, "usd": 0.0008,
            "cost_source": "tokens x prices", "model": "test/model", "response_id": "r1",
            "recorded": "2026-12-01T00:00:00+00:00"}
    path.write_text(json.dumps({
        "version": 1, "agent": AGENT, "topics": {},
        "current": {"topic": topic, "attempt": 1, "run_id": "r", "started": "2026-12-01T00:00:00+00:00",
                    "steps": {"research": step}},
    }), encoding="utf-8")


@pytest.mark.parametrize("content", [
    "[" * 5000 + "]" * 5000,
    '{"a":' * 5000 + "1" + "}" * 5000,
    "```json" + " " * 20_000,
], ids=["nested-arrays", "nested-objects", "fence-and-spaces"])
def test_a_recorded_poison_answer_is_repaired_not_a_crash(home, config, llm_server, content):
    llm_server.responder = responder(FIRST)
    _recorded(home, FIRST, content)
    result = run()
    assert result.exit_code == 0, result.output
    # The poison answer was read as an invalid record, and one repair call fixed it.
    assert research_asked(llm_server, FIRST) == 0
    assert sum(1 for r in llm_server.requests if is_repair(r)) == 1
    assert stored(home, FIRST) is not None


def test_a_lone_surrogate_in_a_recorded_record_is_stored_with_a_replacement(home, config, llm_server):
    llm_server.responder = lore_responder(AGENT)
    text = json.dumps(record(AGENT, FIRST, summary="half \ud800 a character"))  # the escape, in the text
    assert "\\ud800" in text
    _recorded(home, FIRST, text)
    result = run()
    assert result.exit_code == 0, result.output
    assert research_asked(llm_server, FIRST) == 0  # the recorded answer was used, not bought again
    assert stored(home, FIRST)["record"]["summary"] == "half \ufffd a character"
