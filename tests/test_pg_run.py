"""`mythline run` on PostgreSQL: one run of an agent across hosts, an unreachable database,
a connection dropped mid-run - each with the real CLI, the real driver and a real server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mythline_cli import state

from helpers import TEST_KEY, delayed, is_audit, lore_responder, mythline, wait_for
from pg import host

AGENT = "world-npcs"

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")


def start(cwd: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "mythline_cli", "run", AGENT, *args], cwd=cwd,
                            env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def journal(dsn: str) -> list[dict[str, Any]]:
    import psycopg

    with psycopg.connect(dsn) as conn:
        return [r[0] for r in conn.execute("SELECT entry FROM mythline_journal ORDER BY seq")]


def backend_of(dsn: str, host_name: str) -> int | None:
    import psycopg

    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT pid FROM pg_stat_activity WHERE application_name LIKE %s",
                           (f"mythline {host_name} %",)).fetchone()
    return row[0] if row else None


@pytest.mark.parametrize("dsn", [
    "postgresql://mythline:{key}@127.0.0.1:1/mythline",  # nothing listens there
    "{server}_missing",  # the server refuses: no such database
])
def test_an_unreachable_or_refusing_database_stops_the_run_before_any_call(home, config, llm_server, pg_server,
                                                                           tmp_path, dsn):
    from pg import with_password

    dsn = dsn.format(key=TEST_KEY, server=with_password(pg_server, TEST_KEY))
    llm_server.responder = lore_responder(AGENT)
    result = mythline("run", AGENT, env={"MYTHLINE_STATE": dsn})
    assert result.returncode == 6, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("mythline: the shared state at postgresql://mythline@127.0.0.1:")
    assert "nothing was called" in line and "docs/many-hosts.md" in line
    assert llm_server.count() == 0
    # Never a silent fallback to the state home's files.
    assert not (home / "ledger.json").exists() and not (home / "ledger-history.jsonl").exists()
    for command in (["status"], ["budget", "show"]):
        other = mythline(*command, env={"MYTHLINE_STATE": dsn})
        assert (other.returncode, other.stderr.splitlines()[0]) == (6, line), command


def test_one_run_of_an_agent_at_a_time_across_hosts(tmp_path, config, llm_server, pg_dsn):
    llm_server.responder = delayed(lore_responder(AGENT), 60, only=lambda r: not is_audit(r))
    cwd_a, env_a = host(tmp_path, "host-a", pg_dsn)
    cwd_b, env_b = host(tmp_path, "host-b", pg_dsn)
    first = start(cwd_a, env_a)
    try:
        wait_for(lambda: llm_server.count() >= 1)
        second = mythline("run", AGENT, cwd=cwd_b, env=env_b)
        assert (second.returncode, second.stderr) == (4, "mythline: world-npcs is already running; this run did nothing\n")
        assert llm_server.count() == 1
        os.kill(first.pid, signal.SIGKILL)  # a pod killed: its session, and so its lock, ends with it
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()
    llm_server.responder = lore_responder(AGENT)
    third = mythline("run", AGENT, cwd=cwd_b, env=env_b)
    assert third.returncode == 0, third.stderr
    # The killed run's reservation was reclaimed at its estimate by host-b's run.
    (reclaim,) = [e for e in journal(pg_dsn) if e["event"] == "reclaim"]
    assert reclaim["reason"] == "process gone" and reclaim["usd"] > 0


def research_recorded(dsn: str) -> bool:
    import psycopg

    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT body FROM mythline_docs WHERE kind = 'checkpoint' AND agent = %s",
                           (AGENT,)).fetchone()
    return row is not None and "research" in ((json.loads(row[0]).get("current") or {}).get("steps") or {})


def test_a_connection_dropped_mid_run_loses_no_money_and_the_run_resumes(home, tmp_path, config, llm_server, pg_dsn):
    answer = lore_responder(AGENT)
    llm_server.responder = delayed(answer, 3, only=is_audit)
    env = {"MYTHLINE_STATE": pg_dsn, "MYTHLINE_HOST": "host-a"}
    run = start(Path.cwd(), env)
    try:
        wait_for(lambda: llm_server.count() >= 2)
        wait_for(lambda: backend_of(pg_dsn, "host-a") is not None)
        assert research_recorded(pg_dsn)
        import psycopg

        # The audit call is in flight. (An answer that arrives after the drop cannot be recorded
        # in the lost state: it is bought again by the next run, and reclaimed at its estimate.)
        with psycopg.connect(pg_dsn, autocommit=True) as admin:
            # No transaction is open across the call, so no lock of the ledger row is held.
            (status,) = admin.execute("SELECT state FROM pg_stat_activity WHERE pid = %s",
                                      (backend_of(pg_dsn, "host-a"),)).fetchone()
            assert status == "idle"
            assert admin.execute("SELECT pg_terminate_backend(%s)", (backend_of(pg_dsn, "host-a"),)).fetchone()[0]
        out, err = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 6, err
    assert "lost the shared state at postgresql://mythline@127.0.0.1" in err and TEST_KEY not in out + err
    reserved = [e for e in journal(pg_dsn) if e["event"] == "reserve"]
    settled = [e for e in journal(pg_dsn) if e["event"] == "settle"]
    assert len(reserved) == 2 and [e["reservation"] for e in settled] == [reserved[0]["reservation"]]

    llm_server.responder = answer
    again = mythline("run", AGENT, env=env)
    assert again.returncode == 0, again.stderr
    research = [r for r in llm_server.requests if not is_audit(r)]
    assert len(research) == 1  # the answer bought before the drop was not bought again
    entries = journal(pg_dsn)
    (reclaim,) = [e for e in entries if e["event"] == "reclaim"]
    assert (reclaim["reservation"], reclaim["usd"]) == (reserved[1]["reservation"], reserved[1]["usd"])
    with psycopg.connect(pg_dsn) as conn:  # the record is in the shared store
        assert conn.execute("SELECT count(*) FROM mythline_records").fetchone()[0] == 1
    state.forget_sessions()


@pytest.mark.parametrize("dsn", [
    "postgresql://mythline:{key}@[::1/mythline",  # libpq quotes the whole URI back
    "postgresql://mythline:{key}%zz@127.0.0.1:1/mythline",  # and a bad token of the password
    "postgresql://mythline@127.0.0.1:1/mythline?password={key}%zz",
])
def test_a_malformed_dsn_is_one_line_without_its_password(home, config, llm_server, dsn):
    # A password that looks like nothing in particular: no key pattern or known value hides it.
    password = "pw-DO-NOT-LEAK-7"
    llm_server.responder = lore_responder(AGENT)
    for command in (["run", AGENT], ["status"], ["budget", "show"]):
        result = mythline(*command, env={"MYTHLINE_STATE": dsn.format(key=password)})
        assert result.returncode == 6, result.stderr
        (line,) = result.stderr.splitlines()
        assert line.startswith("mythline: the shared state at ") and "nothing was called" in line
        assert "DO-NOT-LEAK" not in result.stdout + result.stderr, command
    assert llm_server.count() == 0


def test_sigterm_while_another_session_holds_the_ledger_row_ends_the_wait_at_once(home, config, llm_server,
                                                                                   pg_dsn):
    import psycopg

    llm_server.responder = lore_responder(AGENT)
    state.Session(pg_dsn).close()  # the tables, as a first run would make them
    state.forget_sessions()
    env = {"MYTHLINE_STATE": pg_dsn, "MYTHLINE_HOST": "host-a"}
    with psycopg.connect(pg_dsn) as other:  # a transaction holding the ledger row, for as long as it likes
        other.execute("SELECT 1 FROM mythline_ledger WHERE id = 1 FOR UPDATE")
        run = start(Path.cwd(), env)
        try:
            def waiting() -> bool:
                with psycopg.connect(pg_dsn, autocommit=True) as admin:
                    row = admin.execute("SELECT wait_event_type FROM pg_stat_activity WHERE application_name "
                                        "LIKE 'mythline host-a %'").fetchone()
                return bool(row and row[0] == "Lock")

            wait_for(waiting)  # the run's access queued on the row, in the server
            run.send_signal(signal.SIGTERM)
            _, err = run.communicate(timeout=60)  # the server's lock_timeout (30 s) is not sat out...
            with psycopg.connect(pg_dsn, autocommit=True) as admin:
                # ... and the run's query was cancelled, not left queued behind the row.
                assert admin.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name "
                                     "LIKE 'mythline host-a %'").fetchone()[0] == 0
        finally:
            if run.poll() is None:
                run.kill()
        other.rollback()
    assert run.returncode == 143, err
    assert err.startswith(f"mythline: {AGENT}: stopped by SIGTERM while waiting for the ledger lock;"), err
    assert "Traceback" not in err and "unexpected" not in err
    assert llm_server.count() == 0
    assert not [e for e in journal(pg_dsn) if e["event"] == "reserve"]
    state.forget_sessions()
