"""``mythline topics``, freshness, proposals between agents and lore-crosscheck's contradictions."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mythline_cli.cli import app

from factories import record, record_json
from helpers import is_audit, lore_responder, mythline, topic_of, wait_for
from llm_server import completion

AGENT = "world-npcs"


def cli(*args: str):
    return CliRunner().invoke(app, list(args))


def checkpoint(home: Path, agent: str = AGENT) -> dict:
    return json.loads((home / "agents" / agent / "checkpoint.json").read_text())


def save_checkpoint(home: Path, data: dict, agent: str = AGENT) -> None:
    path = home / "agents" / agent / "checkpoint.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def events(home: Path, agent: str = AGENT) -> list[dict]:
    path = home / "agents" / agent / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def queue(agent: str = AGENT) -> list[dict]:
    result = mythline("topics", "ls", agent, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["topics"]


def states(agent: str = AGENT) -> dict[str, str]:
    return {row["topic"]: row["state"] for row in queue(agent)}


# -- topics ls / add / rm / requeue -----------------------------------------------------------

def test_ls_shows_each_state_with_the_reason_of_a_quarantine(home, config, llm_server):
    config(sections={"agents.world-npcs": {"topics": ["Thrall", "Jaina Proudmoore", "Khadgar"], "max_attempts": 1}})
    llm_server.responder = lore_responder(AGENT)
    assert cli("run", AGENT).exit_code == 0
    llm_server.responder = lore_responder(AGENT, score=0.2, issues=["the deeds are out of order"])
    assert cli("run", AGENT).exit_code == 0
    assert states() == {"Thrall": "done", "Jaina Proudmoore": "quarantined", "Khadgar": "pending"}
    rows = {r["topic"]: r for r in queue()}
    assert rows["Jaina Proudmoore"]["reason"] == "the deeds are out of order"
    table = mythline("topics", "ls", AGENT)
    assert table.returncode == 0
    assert "world-npcs: 3 topics (1 done, 1 quarantined, 1 pending)" in table.stdout
    assert "the deeds are out of order" in table.stdout


def test_add_rm_and_requeue_change_the_queue_the_next_run_works_on(home, config, llm_server):
    config(sections={"agents.world-npcs": {"topics": ["Thrall"], "max_attempts": 1}})
    llm_server.responder = lore_responder(AGENT, score=0.1)
    assert cli("run", AGENT).exit_code == 0
    assert states() == {"Thrall": "quarantined"}
    added = mythline("topics", "add", AGENT, "Rexxar", "Cairne Bloodhoof")
    assert added.returncode == 0, added.stderr
    assert added.stdout.splitlines() == ["add 'Rexxar' (world-npcs): done", "add 'Cairne Bloodhoof' (world-npcs): done"]
    again = mythline("topics", "add", AGENT, "Rexxar", "--json")
    assert json.loads(again.stdout)[0]["result"] == "already-queued"
    assert mythline("topics", "rm", AGENT, "Cairne Bloodhoof").returncode == 0
    assert list(states()) == ["Thrall", "Rexxar"]
    requeued = mythline("topics", "requeue", AGENT, "Thrall")
    assert requeued.returncode == 0 and "requeue 'Thrall' (world-npcs): done" in requeued.stdout
    ck = checkpoint(home)
    assert ck["topics"]["Thrall"]["status"] == "pending" and ck["topics"]["Thrall"]["attempts"] == 0
    assert ck["topics"]["Thrall"]["feedback"]  # kept for the next prompt
    assert [e["event"] for e in events(home) if e["event"].startswith("topic-")] == [
        "topic-add", "topic-add", "topic-rm", "topic-requeue"]
    llm_server.responder = lore_responder(AGENT)
    assert cli("run", AGENT).exit_code == 0
    assert cli("run", AGENT).exit_code == 0
    assert states() == {"Thrall": "done", "Rexxar": "done"}
    researched = [topic_of(r) for r in llm_server.requests if not is_audit(r)]
    assert researched[-2:] == ["Thrall", "Rexxar"] and "Cairne Bloodhoof" not in researched


@pytest.mark.parametrize("args,line", [
    (["topics", "ls", "world-npc"], "mythline: unknown agent 'world-npc'"),
    (["topics", "add", "world-npc", "Rexxar"], "mythline: unknown agent 'world-npc'"),
    (["topics", "add", AGENT, "../../etc/passwd"], "mythline: '../../etc/passwd' looks like a path"),
    (["topics", "add", AGENT, "lore\\notes.md"], "mythline: 'lore\\\\notes.md' looks like a path"),
    (["topics", "add", AGENT, "Rexxar", "a/b"], "mythline: 'a/b' looks like a path"),
    (["topics", "add", AGENT, "  "], "mythline: topic '  ': a topic is a subject's name and cannot be empty"),
    (["topics", "rm", AGENT, "Rexxar"], "mythline: 'Rexxar' is not in world-npcs's queue"),
    (["topics", "requeue", AGENT, "Thrall"], "mythline: 'Thrall' is pending, not quarantined"),
    (["topics", "requeue", AGENT, "Nobody"], "mythline: 'Nobody' is not in world-npcs's queue"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_bad_input_is_one_line_exit_2_and_changes_nothing(home, args, line):
    result = mythline(*args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(line), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not (home / "agents" / AGENT / "inbox.jsonl").exists()
    assert "Rexxar" not in states()


def test_a_change_made_while_the_agent_runs_applies_to_its_next_run(home, config, llm_server):
    config(sections={"agents.world-npcs": {"topics": ["Thrall"]}})
    import threading

    release = threading.Event()
    answer = lore_responder(AGENT)

    def held(request):
        if not is_audit(request):
            release.wait(60)  # the research answer waits until the change has been made
        return answer(request)

    llm_server.responder = held
    running = subprocess.Popen([sys.executable, "-m", "mythline_cli", "run", AGENT], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: llm_server.count() >= 1, timeout=30)  # the research call is in flight
        ck_file = home / "agents" / AGENT / "checkpoint.json"
        before = ck_file.read_bytes() if ck_file.exists() else None
        result = mythline("topics", "add", AGENT, "Rexxar")
        assert result.returncode == 0, result.stderr
        assert result.stdout == "add 'Rexxar' (world-npcs): the agent is running: applies when its next run starts\n"
        assert (ck_file.read_bytes() if ck_file.exists() else None) == before  # the running agent's is not touched
        waiting = json.loads(mythline("topics", "ls", AGENT, "--json").stdout)["waiting"]
        assert [(w["op"], w["topic"]) for w in waiting] == [("add", "Rexxar")]
        release.set()
        assert running.wait(timeout=60) == 0, running.stderr.read()
    finally:
        release.set()
        if running.poll() is None:
            running.kill()
    assert checkpoint(home)["topics"]["Thrall"]["status"] == "done"
    assert "Rexxar" not in checkpoint(home).get("added", [])  # the run that was going did not take it
    llm_server.responder = lore_responder(AGENT)
    assert cli("run", AGENT).exit_code == 0
    assert states() == {"Thrall": "done", "Rexxar": "done"}
    assert json.loads(mythline("topics", "ls", AGENT, "--json").stdout)["waiting"] == []


def test_a_torn_inbox_line_is_skipped_and_the_next_change_still_applies(home):
    inbox = home / "agents" / AGENT / "inbox.jsonl"
    inbox.parent.mkdir(parents=True)
    inbox.write_bytes(b'{"op": "add", "topic": "Rex')  # its writer was killed mid-append
    assert mythline("topics", "add", AGENT, "Rexxar").returncode == 0
    assert list(states())[-1] == "Rexxar" and "Rex" not in states()


# -- freshness ---------------------------------------------------------------------------------

def age_topic(home: Path, topic: str, days: float, agent: str = AGENT) -> None:
    ck = checkpoint(home, agent)
    old = (datetime.now(timezone.utc) - timedelta(days=days)).isoformat()
    ck["topics"][topic]["checked"] = old
    ck["topics"][topic]["updated"] = old
    save_checkpoint(home, ck, agent)


def test_an_empty_queue_refreshes_the_oldest_stale_record_and_an_unchanged_answer_leaves_it(home, config, llm_server):
    config(sections={"agents.world-npcs": {"topics": ["Thrall", "Jaina Proudmoore"], "refresh_after": "7d"}})
    llm_server.responder = lore_responder(AGENT)
    assert cli("run", AGENT).exit_code == 0 and cli("run", AGENT).exit_code == 0
    assert cli("run", AGENT).exit_code == 0  # queue empty, nothing stale: no call
    assert llm_server.count() == 4
    age_topic(home, "Thrall", 8)
    age_topic(home, "Jaina Proudmoore", 9)
    assert states() == {"Thrall": "stale", "Jaina Proudmoore": "stale"}
    record_file = next((home / "store" / "npcs").glob("jaina-*.json"))
    before = record_file.read_bytes()
    assert cli("run", AGENT).exit_code == 0
    assert topic_of(llm_server.requests[-2]) == "Jaina Proudmoore"  # the oldest first
    assert record_file.read_bytes() == before  # same content hash: the file is untouched
    assert [e for e in events(home) if e["event"] == "refresh"][-1]["topic"] == "Jaina Proudmoore"
    assert states() == {"Thrall": "stale", "Jaina Proudmoore": "done"}
    llm_server.responder = None
    llm_server.enqueue(completion(record_json(AGENT, "Thrall", summary="Thrall now leads the Earthen Ring.")),
                       completion(json.dumps({"score": 1, "issues": []})))
    assert cli("run", AGENT).exit_code == 0
    doc = json.loads(next((home / "store" / "npcs").glob("thrall-*.json")).read_text())
    assert doc["record"]["summary"] == "Thrall now leads the Earthen Ring."
    assert len(doc["history"]) == 1 and doc["history"][0]["record"]["summary"] != doc["record"]["summary"]
    assert states() == {"Thrall": "done", "Jaina Proudmoore": "done"}


def test_refresh_off_and_a_refresh_that_keeps_failing_keeps_the_record(home, config, llm_server):
    config(sections={"agents.world-npcs": {"topics": ["Thrall"], "refresh_after": "none", "max_attempts": 1}})
    llm_server.responder = lore_responder(AGENT)
    assert cli("run", AGENT).exit_code == 0
    age_topic(home, "Thrall", 400)
    assert cli("run", AGENT).exit_code == 0 and llm_server.count() == 2  # off: never refreshed
    config(sections={"agents.world-npcs": {"topics": ["Thrall"], "refresh_after": "1d", "max_attempts": 1}})
    llm_server.responder = lore_responder(AGENT, score=0.1)
    assert cli("run", AGENT).exit_code == 0 and llm_server.count() == 4
    assert states() == {"Thrall": "done"}  # not quarantined: the stored record still stands
    assert next((home / "store" / "npcs").glob("thrall-*.json")).is_file()


def test_refresh_after_is_checked_in_the_config(home, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[defaults]\nrefresh_after = "10s"\n')
    result = mythline("--config", str(bad), "topics", "ls", AGENT)
    assert result.returncode == 2 and "defaults.refresh_after" in result.stderr


# -- proposals ---------------------------------------------------------------------------------

def factions_responder(leader: str, members: list[str]):
    def respond(request):
        if is_audit(request):
            return completion(json.dumps({"score": 0.9, "issues": []}))
        topic = topic_of(request)
        return completion(record_json("world-factions", topic, leader=leader, notable_members=members))
    return respond


def test_subjects_a_record_names_are_proposed_to_the_agent_that_researches_them(home, config, llm_server):
    from mythline_cli.store import store_record

    config(sections={"agents.world-factions": {"topics": ["Kirin Tor"], "max_proposals": 3},
                     "agents.world-npcs": {"topics": ["Thrall", "Jaina Proudmoore"]}})
    # Go'el is already in world-npcs's store as an alias of Thrall.
    store_record(domain="npcs", topic="Thrall", record=record(AGENT, "Thrall", aliases=["Go'el"]),
                 provenance={"agent": AGENT})
    llm_server.responder = factions_responder("Khadgar (archmage)", [
        "jaina proudmoore", "Go'el - shaman", "Rhonin", "Modera", "Antonidas", "various archmagi"])
    assert cli("run", "world-factions").exit_code == 0
    proposed = [e for e in events(home, "world-factions") if e["event"] == "proposed"]
    # Jaina is queued, Go'el is stored as Thrall: neither proposed; at most three.
    assert [(e["topic"], e["to"]) for e in proposed] == [("Khadgar", AGENT), ("Rhonin", AGENT), ("Modera", AGENT)]
    rows = {r["topic"]: r for r in queue()}
    assert "Khadgar" not in rows  # waiting in the inbox until world-npcs runs
    waiting = json.loads(mythline("topics", "ls", AGENT, "--json").stdout)["waiting"]
    assert [w["topic"] for w in waiting] == ["Khadgar", "Rhonin", "Modera"]
    llm_server.responder = lore_responder(AGENT)
    assert cli("run", AGENT).exit_code == 0  # takes the proposals in
    rows = {r["topic"]: r for r in queue()}
    assert rows["Khadgar"]["proposed_by"] == "world-factions" and rows["Khadgar"]["proposed_from"] == "Kirin Tor"
    table = mythline("topics", "ls", AGENT).stdout
    assert "world-factions (Kirin Tor)" in table
    # The same record stored again proposes nothing new.
    (home / "agents" / "world-factions" / "checkpoint.json").unlink()
    llm_server.responder = factions_responder("Khadgar", ["Rhonin", "Vereesa"])
    assert cli("run", "world-factions").exit_code == 0
    again = [e["topic"] for e in events(home, "world-factions") if e["event"] == "proposed"][3:]
    assert again == ["Vereesa"]


def test_max_proposals_zero_proposes_nothing(home, config, llm_server):
    config(sections={"agents.world-factions": {"topics": ["Kirin Tor"], "max_proposals": 0}})
    llm_server.responder = factions_responder("Khadgar", ["Rhonin"])
    assert cli("run", "world-factions").exit_code == 0
    assert not (home / "agents" / AGENT / "inbox.jsonl").exists()


# -- lore-crosscheck ---------------------------------------------------------------------------

def test_crosscheck_records_contradictions_citing_both_records(home, config, llm_server):
    from mythline_cli.store import store_record

    config(sections={"agents.lore-crosscheck": {"topics": ["Thrall was born on Draenor"]}})
    first = record(AGENT, "Cairne Bloodhoof", status="dead")
    store_record(domain="npcs", topic="Cairne Bloodhoof", record=first, provenance={"agent": AGENT})
    # The same subject under another name, with every fact the same but one.
    other = {**first, "name": "Cairne", "aliases": ["Cairne Bloodhoof"], "status": "alive"}
    other["sources"] = [{"url": "https://example.org/cairne", "title": "Cairne", "tier": "community"}]
    store_record(domain="npcs", topic="Cairne", record=other, provenance={"agent": "my-npcs"})
    llm_server.responder = lore_responder("lore-crosscheck")
    assert cli("run", "lore-crosscheck").exit_code == 0
    (found,) = [e for e in events(home, "lore-crosscheck") if e["event"] == "contradiction"]
    (path,) = (home / "store" / "crosschecks").glob("contradiction-*.json")
    doc = json.loads(path.read_text())
    assert doc["kind"] == "contradiction" and doc["record"]["field"] == "status"
    claims = doc["record"]["claims"]
    assert sorted(c["value"] for c in claims) == ["alive", "dead"]
    assert {c["path"] for c in claims} == set(found["records"])
    assert any(s["url"] == "https://example.org/cairne" for c in claims for s in c["sources"])
    shown = mythline("store", "show", "Cairne Bloodhoof", "--domain", "npcs")
    assert shown.returncode == 2  # two npcs records answer to that name
    shown = mythline("store", "show", "Cairne")
    assert shown.returncode == 0 and "Contradictions" in shown.stdout and "'dead'" in shown.stdout
    contradiction = mythline("store", "show", doc["record"]["name"], "--domain", "crosschecks")
    assert contradiction.returncode == 0, contradiction.stderr
    assert "Claims" in contradiction.stdout and "community: https://example.org/cairne" in contradiction.stdout
    # The claim is queued for lore-crosscheck's own research (an ordinary, budgeted attempt).
    rows = {r["topic"]: r for r in queue("lore-crosscheck")}
    claim = next(t for t in rows if t.startswith("Cairne"))
    assert rows[claim]["proposed_by"] == "lore-crosscheck"
    # Found again on the next run: stored once.
    assert cli("run", "lore-crosscheck").exit_code == 0
    assert len(list((home / "store" / "crosschecks").glob("contradiction-*.json"))) == 1
    assert len([e for e in events(home, "lore-crosscheck") if e["event"] == "contradiction"]) == 1
    assert topic_of([r for r in llm_server.requests if not is_audit(r)][-1]) == claim


def test_a_corrupt_checkpoint_keeps_the_topics_added_and_what_they_stored(home, config, llm_server):
    config(sections={"agents.world-npcs": {"topics": ["Thrall"]}})
    llm_server.responder = lore_responder(AGENT)
    assert mythline("topics", "add", AGENT, "Rexxar").returncode == 0
    assert cli("run", AGENT).exit_code == 0 and cli("run", AGENT).exit_code == 0
    calls = llm_server.count()
    (home / "agents" / AGENT / "checkpoint.json").write_text("{torn")
    result = cli("run", AGENT)
    assert result.exit_code == 0, result.output
    assert llm_server.count() == calls  # nothing researched again: both are done
    assert states() == {"Thrall": "done", "Rexxar": "done"}
