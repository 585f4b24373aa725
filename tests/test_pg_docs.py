"""The per-agent state on PostgreSQL, across "hosts" (own working dirs, state homes and host
names, only the DSN in common): checkpoints, heartbeats, events, the breaker, the kill switch
and start failures, with real processes, the real CLI and the scripted LLM server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from helpers import TEST_KEY, delayed, is_audit, lore_responder, mythline, wait_for
from llm_server import Reply, error
from pg import host

AGENT = "world-npcs"

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")


def start(cwd: Path, env: dict[str, str], agent: str = AGENT) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "mythline_cli", "run", agent], cwd=cwd,
                            env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def sql(dsn: str, query: str, *args: Any) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(query, args)
        return cur.fetchall() if cur.description else []


def doc(dsn: str, kind: str, agent: str = AGENT) -> Any:
    rows = sql(dsn, "SELECT body FROM mythline_docs WHERE kind = %s AND agent = %s", kind, agent)
    return json.loads(rows[0][0]) if rows else None


def events(dsn: str, agent: str = AGENT) -> list[dict[str, Any]]:
    rows = sql(dsn, "SELECT entry FROM mythline_events WHERE log = 'events' AND agent = %s ORDER BY id", agent)
    return [json.loads(r[0]) for r in rows]


def research_recorded(dsn: str) -> bool:
    try:
        ck = doc(dsn, "checkpoint")
    except Exception:  # noqa: BLE001 - the schema may not be there yet
        return False
    return bool(ck) and "research" in ((ck.get("current") or {}).get("steps") or {})


def files_of(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_a_run_killed_on_one_host_resumes_on_another_without_buying_the_answer_again(tmp_path, config,
                                                                                    llm_server, pg_dsn):
    answer = lore_responder(AGENT)

    def hang_audit(request: dict[str, Any]) -> Reply:
        if is_audit(request):
            return Reply(status=200, json={}, delay=60)  # never answered before the kill
        return answer(request)

    llm_server.responder = hang_audit
    cwd_a, env_a = host(tmp_path, "host-a", pg_dsn)
    cwd_b, env_b = host(tmp_path, "host-b", pg_dsn)
    pod = start(cwd_a, env_a)
    try:
        wait_for(lambda: research_recorded(pg_dsn))
        wait_for(lambda: llm_server.count() == 2)  # the audit is in flight, its reservation open
        os.kill(pod.pid, signal.SIGKILL)  # the pod is gone, and its state home with it
        pod.wait(timeout=10)
    finally:
        if pod.poll() is None:
            pod.kill()
    home_a = tmp_path / "host-a" / "home"
    # Nothing of the run's own state was on host-a's disk to lose.
    for name in ("checkpoint.json", "heartbeat.json", "events.jsonl"):
        assert not (home_a / "agents" / AGENT / name).exists()

    llm_server.responder = answer
    result = mythline("run", AGENT, cwd=cwd_b, env=env_b)
    assert result.returncode == 0, result.stderr
    research = [r for r in llm_server.requests if not is_audit(r)]
    assert len(research) == 1  # host-b resumed from host-a's recorded answer
    runs = [e for e in events(pg_dsn) if e["event"] == "run-start"]
    assert len(runs) == 2
    stored = [e for e in events(pg_dsn) if e["event"] == "store"]
    assert [e["run_id"] for e in stored] == [runs[1]["run_id"]]
    assert doc(pg_dsn, "checkpoint")["topics"][stored[0]["topic"]]["status"] == "done"
    assert doc(pg_dsn, "heartbeat")["state"] == "ok"
    # host-a's audit reservation, left open by the kill, was reclaimed by host-b's run.
    (reclaim,) = [r[0] for r in sql(pg_dsn, "SELECT entry FROM mythline_journal ORDER BY seq")
                  if r[0]["event"] == "reclaim"]
    assert reclaim["reason"] == "process gone" and reclaim["usd"] > 0
    for row in sql(pg_dsn, "SELECT body FROM mythline_docs UNION ALL SELECT entry FROM mythline_events"):
        assert TEST_KEY not in row[0]


def test_status_watchdog_and_logs_on_one_host_show_another_hosts_runs(tmp_path, config, llm_server, pg_dsn):
    config(provider={"max_attempts": 1})
    llm_server.default = error(503, "no provider available")
    cwd_a, env_a = host(tmp_path, "host-a", pg_dsn)
    cwd_b, env_b = host(tmp_path, "host-b", pg_dsn)
    failed = mythline("run", AGENT, cwd=cwd_a, env=env_a)
    assert failed.returncode == 1, failed.stderr

    status = mythline("status", "--json", cwd=cwd_b, env=env_b)
    assert status.returncode == 1, status.stderr  # an agent is failing
    rows = {r["agent"]: r for r in json.loads(status.stdout)["agents"]}
    assert rows[AGENT]["state"] == "failed" and "503" in rows[AGENT]["last_error"]
    assert rows[AGENT]["consecutive_failures"] == 1 and rows[AGENT]["last_run"] is not None
    watchdog = mythline("watchdog", "--json", cwd=cwd_b, env=env_b)
    assert watchdog.returncode in (0, 1), watchdog.stderr
    failing = {f["agent"]: f for f in json.loads(watchdog.stdout)["failing"]}
    assert "503" in failing[AGENT]["error"]
    logs = mythline("logs", AGENT, "--json", cwd=cwd_b, env=env_b)
    assert logs.returncode == 0, logs.stderr
    seen = [json.loads(line)["event"] for line in logs.stdout.splitlines()]
    assert seen[0] == "run-start" and "error" in seen and seen[-1] == "run-end"
    assert files_of(tmp_path / "host-b" / "home" / "agents") == []


def test_a_start_failure_on_one_host_is_seen_on_another(tmp_path, config, llm_server, pg_dsn):
    from helpers import KEY_ENV

    cwd_a, env_a = host(tmp_path, "host-a", pg_dsn)
    cwd_b, env_b = host(tmp_path, "host-b", pg_dsn)
    env = {k: v for k, v in os.environ.items() if k != KEY_ENV}
    refused = subprocess.run([sys.executable, "-m", "mythline_cli", "run", AGENT], cwd=cwd_a,
                             env={**env, **env_a}, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2, refused.stderr
    assert doc(pg_dsn, "start-failure")["exit_code"] == 2
    status = mythline("status", "--json", cwd=cwd_b, env=env_b)
    row = next(r for r in json.loads(status.stdout)["agents"] if r["agent"] == AGENT)
    assert row["start_failure"] is not None and row["start_failure"]["exit_code"] == 2
    assert row["last_error"].startswith("cannot start (1 time(s) since")


def test_pause_on_one_host_stops_a_run_on_another(tmp_path, config, llm_server, pg_dsn):
    answer = lore_responder(AGENT)
    llm_server.responder = delayed(answer, 4, only=lambda r: not is_audit(r))
    cwd_a, env_a = host(tmp_path, "host-a", pg_dsn)
    cwd_b, env_b = host(tmp_path, "host-b", pg_dsn)
    run = start(cwd_a, env_a)
    try:
        wait_for(lambda: llm_server.count() >= 1)
        paused = mythline("pause", AGENT, "--note", "checking sources", cwd=cwd_b, env=env_b)
        assert paused.returncode == 0, paused.stderr
        out, err = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 5, err
    assert "stopped at a step boundary, checkpoint saved" in err
    assert llm_server.count() == 1 and research_recorded(pg_dsn)  # the audit was never called
    again = mythline("run", AGENT, cwd=cwd_a, env=env_a)
    assert again.returncode == 5 and "is paused (checking sources, since " in again.stderr
    row = next(r for r in json.loads(mythline("status", "--json", cwd=cwd_a, env=env_a).stdout)["agents"]
               if r["agent"] == AGENT)
    assert row["state"] == "paused" and row["note"] == "checking sources"
    assert mythline("resume", AGENT, cwd=cwd_a, env=env_a).returncode == 0
    llm_server.responder = answer
    assert mythline("run", AGENT, cwd=cwd_b, env=env_b).returncode == 0
    assert [is_audit(r) for r in llm_server.requests] == [False, True]


def test_a_breaker_opened_by_one_hosts_failures_holds_another(tmp_path, config, llm_server, pg_dsn):
    config(provider={"max_attempts": 1}, sections={"breaker": {"failures": 2, "cooldown": "1h"}})
    llm_server.default = error(503, "no provider available")
    cwd_a, env_a = host(tmp_path, "host-a", pg_dsn)
    cwd_b, env_b = host(tmp_path, "host-b", pg_dsn)
    assert mythline("run", "world-npcs", cwd=cwd_a, env=env_a).returncode == 1
    assert mythline("run", "world-zones", cwd=cwd_a, env=env_a).returncode == 1
    assert llm_server.count() == 2
    skipped = mythline("run", "world-items", cwd=cwd_b, env=env_b)
    assert skipped.returncode == 5 and llm_server.count() == 2
    assert "failed 2 calls in a row across the fleet; cooling down until" in skipped.stderr
    status = json.loads(mythline("status", "--json", cwd=cwd_b, env=env_b).stdout)
    assert status["breaker"]["failures"] == 2 and status["breaker"]["cooling_down"]
    assert not (tmp_path / "host-a" / "home" / "breaker.json").exists()


@pytest.mark.parametrize("body", ["not json {", '{"state": "ok", "consecutive_failures": -3}', ""])
def test_a_bad_value_in_a_shared_document_is_moved_aside_as_a_bad_file_is(tmp_path, config, llm_server, pg_dsn,
                                                                         body):
    llm_server.responder = lore_responder(AGENT)
    cwd_a, env_a = host(tmp_path, "host-a", pg_dsn)
    assert mythline("state", "init", cwd=cwd_a, env=env_a).returncode == 0
    for kind in ("heartbeat", "checkpoint", "breaker"):
        sql(pg_dsn, "INSERT INTO mythline_docs (kind, agent, body) VALUES (%s, %s, %s)", kind,
            "" if kind == "breaker" else AGENT, body if kind != "checkpoint" else '{"topics": []}')
    status = mythline("status", "--json", cwd=cwd_a, env=env_a)
    assert status.returncode == 1 and status.stderr == ""  # failing, said in the row, no crash
    row = next(r for r in json.loads(status.stdout)["agents"] if r["agent"] == AGENT)
    assert row["state"] == "failed" and "heartbeat" in row["last_error"]

    result = mythline("run", AGENT, cwd=cwd_a, env=env_a)
    assert result.returncode == 0, result.stderr
    assert "heartbeat was unreadable; moved aside to postgresql://mythline@127.0.0.1" in result.stderr
    assert "checkpoint was unreadable; moved aside to postgresql://mythline@127.0.0.1" in result.stderr
    assert "breaker.json was unreadable" in result.stderr and "Traceback" not in result.stderr
    kinds = sorted(k.split(".corrupt-")[0] for (k,) in sql(pg_dsn, "SELECT kind FROM mythline_docs "
                                                             "WHERE kind LIKE '%%.corrupt-%%'"))
    assert kinds == ["breaker", "checkpoint", "heartbeat"]  # kept, as a bad file is, under a new name
    assert doc(pg_dsn, "heartbeat")["state"] == "ok"
    repaired = {e["file"] for e in events(pg_dsn) if e["event"] == "corrupt-state"}
    assert repaired == {"heartbeat", "checkpoint", "breaker"}


def test_a_queue_change_on_one_host_waits_for_the_run_on_another_then_applies(tmp_path, config, llm_server,
                                                                              pg_dsn):
    import threading

    config(sections={"agents.world-npcs": {"topics": ["Thrall"]}})
    release = threading.Event()
    answer = lore_responder(AGENT)

    def held(request: dict[str, Any]) -> Reply:
        if not is_audit(request):
            release.wait(60)  # the research answer waits until the change has been made
        return answer(request)

    llm_server.responder = held
    cwd_a, env_a = host(tmp_path, "host-a", pg_dsn)
    cwd_b, env_b = host(tmp_path, "host-b", pg_dsn)
    running = start(cwd_a, env_a)
    try:
        wait_for(lambda: llm_server.count() >= 1)
        result = mythline("topics", "add", AGENT, "Rexxar", cwd=cwd_b, env=env_b)
        assert result.returncode == 0, result.stderr
        # host-b's file lock is free, but the run on host-a holds the agent's lock: not applied now.
        assert result.stdout == "add 'Rexxar' (world-npcs): the agent is running: applies when its next run starts\n"
        waiting = json.loads(mythline("topics", "ls", AGENT, "--json", cwd=cwd_a, env=env_a).stdout)["waiting"]
        assert [(w["op"], w["topic"]) for w in waiting] == [("add", "Rexxar")]
        release.set()
        assert running.wait(timeout=60) == 0, running.stderr.read() if running.stderr else ""
    finally:
        release.set()
        if running.poll() is None:
            running.kill()
    assert "Rexxar" not in (doc(pg_dsn, "checkpoint").get("added") or [])
    llm_server.responder = answer
    assert mythline("run", AGENT, cwd=cwd_b, env=env_b).returncode == 0  # applies it, and researches it
    rows = json.loads(mythline("topics", "ls", AGENT, "--json", cwd=cwd_a, env=env_a).stdout)
    assert {r["topic"]: r["state"] for r in rows["topics"]} == {"Thrall": "done", "Rexxar": "done"}
    assert rows["waiting"] == []


def test_logs_follow_on_one_host_prints_the_events_of_a_run_on_another(tmp_path, config, llm_server, pg_dsn):
    llm_server.responder = lore_responder(AGENT)
    cwd_a, env_a = host(tmp_path, "host-a", pg_dsn)
    cwd_b, env_b = host(tmp_path, "host-b", pg_dsn)
    assert mythline("state", "init", cwd=cwd_b, env=env_b).returncode == 0
    printed = tmp_path / "followed.jsonl"
    with printed.open("w") as fh:
        follower = subprocess.Popen([sys.executable, "-m", "mythline_cli", "logs", AGENT, "--follow", "--json",
                                     "--poll", "0.1"], cwd=cwd_b, env={**os.environ, **env_b}, stdout=fh,
                                    stderr=subprocess.PIPE, text=True)
        try:
            assert mythline("run", AGENT, cwd=cwd_a, env=env_a).returncode == 0
            wait_for(lambda: '"run-end"' in printed.read_text())
            follower.send_signal(signal.SIGINT)
            assert follower.wait(timeout=30) == 130
        finally:
            if follower.poll() is None:
                follower.kill()
    seen = [json.loads(line) for line in printed.read_text().splitlines()]
    assert seen == events(pg_dsn)  # every event of host-a's run, once, in order
    assert seen[0]["event"] == "run-start" and seen[-1]["event"] == "run-end"
