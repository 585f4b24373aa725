"""A corrupt checkpoint is moved aside and rebuilt from the store and the event log, so
finished topics are not researched (and paid for) again."""

from __future__ import annotations

import json

from mythline_cli.fleet.topics import TOPICS

from helpers import lore_responder, mythline, topic_of

AGENT = "world-npcs"
FIRST, SECOND, THIRD, FOURTH = TOPICS[AGENT][:4]


def test_a_corrupt_checkpoint_keeps_finished_topics_finished(home, config, llm_server):
    config(sections={"defaults": {"max_attempts": 1}})
    good = lore_responder(AGENT)
    bad = lore_responder(AGENT, score=0.2, issues=["wrong"])
    # FIRST is stored, SECOND quarantined (one attempt allowed), THIRD stored.
    llm_server.responder = lambda request: (bad if topic_of(request) == SECOND else good)(request)
    for _ in range(3):
        assert mythline("run", AGENT).returncode == 0
    path = home / "agents" / AGENT / "checkpoint.json"
    before = json.loads(path.read_text())["topics"]
    assert [before[t]["status"] for t in (FIRST, SECOND, THIRD)] == ["done", "quarantined", "done"]

    path.write_bytes(b'{"topics": {"Thr')  # torn
    asked_before = len(llm_server.requests)
    result = mythline("run", AGENT)
    assert result.returncode == 0, result.stderr
    line, = result.stderr.splitlines()
    assert line.startswith(f"mythline: {AGENT}: checkpoint was unreadable; moved aside to ")
    assert "(2 topics done, 1 quarantined)" in line
    # The run went on to the next topic: nothing finished was asked for again.
    assert {topic_of(r) for r in llm_server.requests[asked_before:]} == {FOURTH}
    after = json.loads(path.read_text())["topics"]
    assert [after[t]["status"] for t in (FIRST, SECOND, THIRD, FOURTH)] == ["done", "quarantined", "done", "done"]
    assert after[FIRST]["stored"]["hash"] == before[FIRST]["stored"]["hash"]
    assert len(list((home / "store" / "npcs").glob("*.json"))) == 3
    assert len(list(path.parent.glob("checkpoint.json.corrupt-*"))) == 1
    corrupt = [json.loads(line) for line in (path.parent / "events.jsonl").read_text().splitlines()
               if '"corrupt-state"' in line]
    assert corrupt[-1]["recovered"] == {"done": 2, "quarantined": 1}


def test_a_run_rebuilds_a_torn_ledger_from_its_journal_and_says_so(home, config, llm_server):
    llm_server.responder = lore_responder(AGENT)
    assert mythline("run", AGENT).returncode == 0
    ledger = home / "ledger.json"
    spent = json.loads(ledger.read_text())
    ledger.write_bytes(ledger.read_bytes()[:20])  # what a power cut can leave of a file not yet fsynced
    result = mythline("run", AGENT)
    assert result.returncode == 0, result.stderr
    line, = result.stderr.splitlines()
    assert line.startswith("mythline: ledger.json was unreadable (") and "rebuilt from its journal" in line
    after = json.loads(ledger.read_text())
    day = next(k for k in spent["windows"] if k.startswith("day:"))
    # The spend before the tear is still there, and the second run's on top of it.
    assert after["windows"][day]["agents"][AGENT]["usd"] > spent["windows"][day]["agents"][AGENT]["usd"] > 0
    assert len(list(home.glob("ledger.json.corrupt-*"))) == 1
