"""No answer and no state value wedges an agent: text no encoding can write, recorded poison
answers, and well-formed state files holding values that make no sense."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mythline_cli.cli import app
from mythline_cli.fleet.topics import TOPICS

from factories import record
from helpers import is_audit, lore_responder, mythline, topic_of
from llm_server import Reply, completion

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


# -- state values validated like state files ------------------------------------------------

def _checkpoint(topics: object = None, current: object = None) -> dict:
    return {"version": 1, "agent": AGENT, "topics": {} if topics is None else topics, "current": current}


def _current(**step_changes: object) -> dict:
    step = {"content": json.dumps(record(AGENT, FIRST)), "prompt_tokens": 400, "completion_tokens": 200,
            "usd": 0.0008, "cost_source": "tokens x prices", "model": "test/model", "response_id": "r1",
            "recorded": "2026-12-01T00:00:00+00:00", **step_changes}
    return {"topic": FIRST, "attempt": 1, "run_id": "r", "started": "2026-12-01T00:00:00+00:00",
            "steps": {"research": step}}


BAD_CHECKPOINTS = {
    "topic-state-a-string": _checkpoint(topics={FIRST: "done"}),
    "attempts-a-string": _checkpoint(topics={FIRST: {"status": "pending", "attempts": "three", "feedback": []}}),
    "status-unknown": _checkpoint(topics={FIRST: {"status": "finished", "attempts": 0, "feedback": []}}),
    "feedback-not-a-list": _checkpoint(topics={FIRST: {"status": "pending", "attempts": 1, "feedback": "bad"}}),
    "steps-a-list": _checkpoint(current={**_current(), "steps": []}),
    "content-a-number": _checkpoint(current=_current(content=42)),
    "tokens-a-string": _checkpoint(current=_current(prompt_tokens="400")),
    "usd-negative": _checkpoint(current=_current(usd=-1.0)),
    "attempt-a-bool": _checkpoint(current={**_current(), "attempt": True}),
    "current-topic-a-number": _checkpoint(current={**_current(), "topic": 7}),
}


@pytest.mark.parametrize("name", list(BAD_CHECKPOINTS))
def test_a_checkpoint_with_a_bad_value_is_moved_aside_and_rebuilt(home, config, llm_server, name):
    llm_server.responder = lore_responder(AGENT)
    path = checkpoint_path(home)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(BAD_CHECKPOINTS[name]), encoding="utf-8")
    for _ in range(2):
        result = run()
        assert result.exit_code == 0, result.output
    assert len(list(path.parent.glob("checkpoint.json.corrupt-*"))) == 1
    # Rebuilt and working: two topics researched once each and stored, nothing bought twice.
    assert research_asked(llm_server, FIRST) == 1 and research_asked(llm_server, SECOND) == 1
    assert stored(home, FIRST) is not None and stored(home, SECOND) is not None
    ck = json.loads(path.read_text(encoding="utf-8"))
    assert ck["topics"][FIRST]["status"] == "done" and ck["topics"][SECOND]["status"] == "done"


def test_the_first_run_after_a_bad_checkpoint_value_says_so_in_one_line(home, config, llm_server):
    llm_server.responder = lore_responder(AGENT)
    path = checkpoint_path(home)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(BAD_CHECKPOINTS["steps-a-list"]), encoding="utf-8")
    result = run()
    assert result.exit_code == 0, result.output
    line, = result.stderr.splitlines()
    assert line.startswith(f"mythline: {AGENT}: checkpoint was unreadable; moved aside to ")


def test_a_checkpoint_missing_keys_of_an_older_format_is_read_with_defaults(home, config, llm_server):
    llm_server.responder = lore_responder(AGENT)
    path = checkpoint_path(home)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"topics": {FIRST: {"status": "done"}}}), encoding="utf-8")
    result = run()
    assert result.exit_code == 0, result.output and not result.stderr
    assert not list(path.parent.glob("checkpoint.json.corrupt-*"))
    assert research_asked(llm_server, FIRST) == 0 and research_asked(llm_server, SECOND) == 1


BAD_HEARTBEATS = {
    "failures-a-word": {"consecutive_failures": "many"},
    "failures-negative": {"consecutive_failures": -3},
    "backoff-not-a-time": {"consecutive_failures": 2, "backoff_until": "soon"},
    "backoff-without-offset": {"consecutive_failures": 2, "backoff_until": "2999-01-01T00:00:00"},
    "tokens-a-word": {"tokens_today": "lots"},
    "usd-infinite": {"usd_today": 1e999},
    "topics-a-list": {"topics": [1, 2]},
    "state-a-number": {"state": 3},
    "last-error-an-object": {"last_error": {"x": 1}},
}


@pytest.mark.parametrize("name", list(BAD_HEARTBEATS))
def test_a_heartbeat_with_a_bad_value_is_moved_aside_and_the_run_carries_on(home, config, llm_server, name):
    llm_server.responder = lore_responder(AGENT)
    path = home / "agents" / AGENT / "heartbeat.json"
    path.parent.mkdir(parents=True)
    good = {"agent": AGENT, "run_id": "r", "pid": 1, "state": "failed", "started": "2026-12-01T00:00:00+00:00",
            "updated": "2026-12-01T00:00:01+00:00", "finished": "2026-12-01T00:00:01+00:00",
            "consecutive_failures": 0, "tokens_today": 0, "usd_today": 0.0,
            "topics": {"done": 0, "pending": 0, "quarantined": 0}}
    path.write_text(json.dumps({**good, **BAD_HEARTBEATS[name]}), encoding="utf-8")
    status = CliRunner().invoke(app, ["status", "--json"])
    assert status.exit_code == 1, status.output  # an agent is failed: status says so, it does not crash
    row = next(r for r in json.loads(status.stdout)["agents"] if r["agent"] == AGENT)
    assert row["state"] == "failed" and "heartbeat.json holds a bad value" in row["last_error"]
    result = run()
    assert result.exit_code == 0, result.output
    line, = result.stderr.splitlines()
    assert line.startswith(f"mythline: {AGENT}: heartbeat was unreadable; moved aside to ")
    assert len(list(path.parent.glob("heartbeat.json.corrupt-*"))) == 1
    hb = json.loads(path.read_text())
    assert hb["state"] == "ok" and hb["consecutive_failures"] == 0


def test_a_hand_edited_negative_spend_does_not_switch_the_caps_off(home, config, llm_server):
    llm_server.responder = lore_responder(AGENT)
    assert run().exit_code == 0
    ledger = home / "ledger.json"
    data = json.loads(ledger.read_text())
    day = next(k for k in data["windows"] if k.startswith("day:"))
    spent = data["windows"][day]["agents"][AGENT]["usd"]
    data["windows"][day]["agents"][AGENT]["usd"] = -1e300
    ledger.write_text(json.dumps(data))
    show = CliRunner().invoke(app, ["budget", "show"])
    assert show.exit_code != 0 and "impossible spend" in show.stderr and "mythline budget repair" in show.stderr
    result = run()
    assert result.exit_code == 0, result.output
    line, = result.stderr.splitlines()
    assert line.startswith("mythline: ledger.json was unreadable (window ") and "impossible spend" in line
    after = json.loads(ledger.read_text())["windows"][day]["agents"][AGENT]["usd"]
    assert after > spent > 0  # the journal's figure, and the second run's spend on top of it


@pytest.mark.parametrize("edit", [
    pytest.param(("agent", "interval", "soon"), id="interval-a-word"),
    pytest.param(("agent", "daily_usd", -1.0), id="cap-negative"),
    pytest.param(("agent", "topics", "Thrall"), id="topics-a-string"),
    pytest.param(("budget", "run_timeout", None), id="run-timeout-null"),
    pytest.param(("budget", "timezone", "Mars/Olympus"), id="timezone-unknown"),
])
def test_a_settings_cache_with_a_bad_value_is_not_used_and_is_rewritten(home, config, llm_server, edit):
    llm_server.responder = lore_responder(AGENT)
    assert run().exit_code == 0  # leaves state, and the settings cache status starts from
    first = mythline("status", "--json")  # a process, as the settings cache is its fast path
    (cache,) = (home / "cache").glob("settings-*.json")
    good = json.loads(cache.read_text())
    doc = json.loads(cache.read_text())
    where, name, value = edit
    (doc["agents"][1] if where == "agent" else doc["budget"])[name] = value
    cache.write_text(json.dumps(doc))
    again = mythline("status", "--json")
    assert again.returncode == first.returncode, again.stderr
    assert json.loads(again.stdout)["agents"] == json.loads(first.stdout)["agents"]
    assert json.loads(cache.read_text()) == good


# -- the state home itself --------------------------------------------------------------------

def _one_line(result, code: int) -> str:
    assert result.exit_code == code, result.output
    line, = result.stderr.splitlines()
    assert line.startswith("mythline: ") and "unexpected" not in line and "Traceback" not in result.output
    return line


def test_a_state_home_that_is_a_file_is_one_line(home, config, llm_server, monkeypatch):
    home.parent.mkdir(parents=True, exist_ok=True)
    home.write_text("not a directory")
    line = _one_line(run(), 2)
    assert f"{home} is not a directory" in line and "MYTHLINE_HOME" in line
    assert "MYTHLINE_HOME" in _one_line(CliRunner().invoke(app, ["pause", AGENT]), 2)
    assert llm_server.requests == []


def test_an_agent_directory_that_is_a_file_is_one_line(home, config, llm_server):
    (home / "agents").mkdir(parents=True)
    (home / "agents" / AGENT).write_text("x")
    assert "is not a directory; move it away" in _one_line(run(), 2)
    assert llm_server.requests == []


def test_a_run_lock_that_is_a_directory_is_one_line(home, config, llm_server):
    (home / "agents" / AGENT / "run.lock").mkdir(parents=True)
    line = _one_line(run(), 2)
    assert "run.lock is a directory, not a lock file; remove that directory" in line
    assert llm_server.requests == []


@pytest.mark.parametrize("link", ["events.jsonl", "heartbeat.json", "checkpoint.json", "store", "agent-dir"])
def test_a_symbolic_link_out_of_the_state_home_is_refused(home, config, llm_server, tmp_path, link):
    llm_server.responder = lore_responder(AGENT)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    victim = outside / "precious.txt"
    victim.write_text("keep me")
    agent_dir = home / "agents" / AGENT
    if link == "store":
        home.mkdir(parents=True)
        (home / "store").symlink_to(outside, target_is_directory=True)
    elif link == "agent-dir":
        (home / "agents").mkdir(parents=True)
        agent_dir.symlink_to(outside, target_is_directory=True)
    else:
        agent_dir.mkdir(parents=True)
        (agent_dir / link).symlink_to(victim)
    line = _one_line(run(), 2)
    assert "is a symbolic link to " in line and "outside the state home" in line
    assert victim.read_text() == "keep me" and sorted(p.name for p in outside.iterdir()) == ["precious.txt"]
    assert llm_server.requests == []


def test_links_that_stay_inside_the_state_home_are_followed(home, config, llm_server):
    llm_server.responder = lore_responder(AGENT)
    (home / "archive" / "store").mkdir(parents=True)
    (home / "store").symlink_to(home / "archive" / "store", target_is_directory=True)
    assert run().exit_code == 0
    assert stored(home, FIRST) is not None and list((home / "archive" / "store").rglob("*.json"))


def test_temp_files_of_killed_writers_are_removed_by_the_next_run(home, config, llm_server):
    import os
    import subprocess
    import sys
    import time

    llm_server.responder = lore_responder(AGENT)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a writer that is dead and reaped: its pid names no process
    agent_dir = home / "agents" / AGENT
    agent_dir.mkdir(parents=True)
    dead = agent_dir / f".heartbeat.json.k3j9x0aq-{gone.pid}.tmp"
    old = agent_dir / ".checkpoint.json.a1b2c3d4.tmp"  # an older release's name, without a pid
    live = agent_dir / f".paused.q8w7e6r5-{os.getppid()}.tmp"  # a live process may be mid-write
    fresh = agent_dir / ".checkpoint.json.z9y8x7w6.tmp"
    other = agent_dir / "notes.tmp"  # not one of ours
    ledger_temp = home / f".ledger.json.m5n4b3v2-{gone.pid}.tmp"  # written after the ledger lock
    for path in (dead, old, live, fresh, other, ledger_temp):
        path.write_text("{")
    hour_ago = time.time() - 2 * 3600
    os.utime(old, (hour_ago, hour_ago))
    assert run().exit_code == 0
    assert not dead.exists() and not old.exists() and not ledger_temp.exists()
    assert live.exists() and fresh.exists() and other.exists()


def test_a_pause_note_is_one_printable_line_whatever_the_flag_holds(home, config):
    flag = home / "agents" / AGENT / "paused"
    flag.parent.mkdir(parents=True)
    flag.write_bytes(b"\x1b[2Jdisk \x00full\x07 \xff\n" + b"x" * 10_000_000)
    from mythline_cli import killswitch

    assert killswitch.note(AGENT) == "[2Jdisk full \ufffd"
    line = _one_line(run(), 5)
    assert "\x1b" not in line and "\x00" not in line


def test_a_pause_flag_that_is_a_directory_still_pauses_and_resume_says_what_to_do(home, config, llm_server):
    flag = home / "agents" / AGENT / "paused"
    flag.mkdir(parents=True)
    assert "is paused" in _one_line(run(), 5)
    line = _one_line(CliRunner().invoke(app, ["resume", AGENT]), 2)
    assert "paused is a directory, not the pause flag; remove that directory" in line
    assert llm_server.requests == []


@pytest.mark.parametrize("args", [["status"], ["status", "--json"], ["budget", "show"], ["watchdog"],
                                  ["logs", AGENT], ["resume", "--all"], ["agents"]])
def test_every_command_says_a_state_home_that_is_a_file_is_one(home, config, args):
    home.parent.mkdir(parents=True, exist_ok=True)
    home.write_text("not a directory")
    result = mythline(*args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "unexpected" not in result.stderr
    assert f"{home} is not a directory, so it cannot be the state home" in result.stderr


# -- fleet-wide files: alerts.json, and the kill switch's resumed.json ------------------------

def _beat(home: Path, agent: str, minutes_ago: float) -> None:
    from datetime import datetime, timedelta, timezone

    at = (datetime.now(timezone.utc) - timedelta(minutes=minutes_ago)).isoformat()
    path = home / "agents" / agent / "heartbeat.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"agent": agent, "run_id": "r", "pid": 999_999_999, "state": "ok", "started": at,
                                "updated": at, "finished": at, "consecutive_failures": 0,
                                "topics": {"done": 1, "pending": 14, "quarantined": 0}}), encoding="utf-8")


GOOD_INCIDENT = {"since": "2026-12-01T00:00:00+00:00", "opened": "2026-12-01T01:00:00+00:00", "note": None,
                 "key": "down:world-zones:2026-12-01T00:00:00+00:00:2026-12-01T01:00:00+00:00"}
BAD_INCIDENTS = {
    "opened-a-number": {**GOOD_INCIDENT, "opened": 42},
    "opened-a-list": {**GOOD_INCIDENT, "opened": ["yesterday"]},
    "opened-a-word": {**GOOD_INCIDENT, "opened": "yesterday"},
    "key-a-number": {**GOOD_INCIDENT, "key": 7},
    "since-an-object": {**GOOD_INCIDENT, "since": {"x": 1}},
    "note-a-number": {**GOOD_INCIDENT, "note": 3},
    "incident-a-string": "down",
}


@pytest.mark.parametrize("name", list(BAD_INCIDENTS))
def test_a_bad_incident_in_alerts_json_stops_no_watchdog_and_no_other_agent(home, config, name):
    # Two agents were down and are back: one incident holds a bad value, the other is sound.
    _beat(home, AGENT, 1)
    _beat(home, "world-zones", 1)
    good = {**GOOD_INCIDENT}
    (home / "alerts.json").write_text(json.dumps({
        "sent": {"budget-warn:world-npcs:day:2026-12-01": "2026-12-01T00:00:00+00:00"},
        "incidents": {AGENT: BAD_INCIDENTS[name], "world-zones": good}}), encoding="utf-8")
    result = mythline("watchdog", "--json")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    sent = json.loads(result.stdout)["sent"]
    # The sound incident is closed with its recovery alert; the bad one is forgotten, not fatal.
    assert [(s["kind"], s["agent"]) for s in sent] == [("recovered", "world-zones")]
    state = json.loads((home / "alerts.json").read_text())
    assert state["incidents"] == {}
    assert "budget-warn:world-npcs:day:2026-12-01" in state["sent"]  # the rest of the file is kept
    assert mythline("status").returncode == 0


@pytest.mark.parametrize("content", [
    pytest.param(["sent"], id="not-an-object"),
    pytest.param({"sent": "everything", "incidents": {}}, id="sent-a-string"),
    pytest.param({"sent": {}, "incidents": [AGENT]}, id="incidents-a-list"),
])
def test_an_alerts_json_of_the_wrong_shape_is_moved_aside_and_alerts_still_go(home, config, content):
    _beat(home, AGENT, 24 * 60)  # down: the watchdog opens an incident and alerts
    (home / "alerts.json").write_text(json.dumps(content), encoding="utf-8")
    result = mythline("watchdog", "--json")
    assert result.returncode == 1, result.stderr  # an agent is down: a check, not a crash
    assert result.stderr == ""
    assert [(s["kind"], s["agent"]) for s in json.loads(result.stdout)["sent"]] == [("down", AGENT)]
    (moved,) = home.glob("alerts.json.corrupt-*")
    assert json.loads(moved.read_text()) == content
    assert list(json.loads((home / "alerts.json").read_text())["incidents"]) == [AGENT]


@pytest.mark.parametrize("content", [
    pytest.param({"paused_at": 42, "resumed_at": ["now"]}, id="times-not-text"),
    pytest.param({"paused_at": "2026-12-01T00:00:00+00:00", "resumed_at": "soon"}, id="resumed-a-word"),
    pytest.param({"paused_at": "2026-12-02T00:00:00+00:00", "resumed_at": "2026-12-01T00:00:00+00:00"},
                 id="resumed-before-paused"),
    pytest.param([1, 2], id="not-an-object"),
])
def test_a_resumed_json_with_bad_values_is_ignored_by_status_and_the_watchdog(home, config, content):
    _beat(home, AGENT, 24 * 60)
    (home / "agents" / AGENT / "resumed.json").write_text(json.dumps(content), encoding="utf-8")
    from mythline_cli import killswitch

    assert killswitch.last_pause(AGENT) is None  # no pause can be read from it
    status = mythline("status", "--json")
    row = next(r for r in json.loads(status.stdout)["agents"] if r["agent"] == AGENT)
    assert row["state"] == "down", status.stderr  # a day of silence, no pause to excuse it
    watch = mythline("watchdog")
    assert watch.returncode == 1 and watch.stderr == "" and watch.stdout.startswith(f"down {AGENT} is down")


@pytest.mark.parametrize("junk", [b"\xff\xfe", b"\xc3", b"\xed\xa0\x80"], ids=["not-utf8", "cut-sequence",
                                                                                "encoded-surrogate"])
def test_an_answer_with_invalid_utf8_bytes_is_recorded_once_with_replacements(home, config, llm_server, junk):
    # The body's bytes themselves are not UTF-8 (a gateway that cut a character, or encoded a
    # lone surrogate as CESU-8), with a NUL escape beside them.
    marker = "MARK"
    body = completion(json.dumps(record(AGENT, FIRST, summary=f"{FIRST} {marker} \u0000 rallies the Horde.")))
    raw = json.dumps(body.json).encode("utf-8").replace(marker.encode(), b"bad " + junk + b" bytes")
    normal = lore_responder(AGENT)

    def respond(request):
        if not is_audit(request) and topic_of(request) == FIRST:
            return Reply(status=200, raw=raw, headers={"content-type": "application/json"})
        return normal(request)

    llm_server.responder = respond
    for _ in range(3):
        result = run()
        assert result.exit_code == 0, result.output
        assert "unexpected" not in result.output
    assert research_asked(llm_server, FIRST) == 1  # paid once, never bought again
    doc = stored(home, FIRST)
    assert doc is not None and "bad \ufffd" in doc["record"]["summary"] and "bytes" in doc["record"]["summary"]
