"""The ledger on PostgreSQL: the same rules as on files, liveness across hosts, a shared clock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from test_ledger_backends import AGENT, Clock, est, script, settings

from mythline_cli import state
from mythline_cli.ledger import Ledger
from mythline_cli.ledger.postgres import PgStore

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the PostgreSQL tests use POSIX signals")


@pytest.fixture(autouse=True)
def _sessions() -> Any:
    yield
    state.forget_sessions()


def pg_ledger(dsn: str, monkeypatch: pytest.MonkeyPatch, **kwargs: Any) -> Ledger:
    monkeypatch.setenv("MYTHLINE_STATE", dsn)
    return Ledger(settings(), **kwargs)


def test_the_same_script_decides_the_same_on_files_and_on_postgresql(home: Path, pg_dsn: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    file_clock, pg_clock = Clock(), Clock()
    on_file = Ledger(settings(), now=file_clock)
    on_pg = pg_ledger(pg_dsn, monkeypatch, now=pg_clock)
    assert isinstance(on_pg.store, PgStore)
    decided = script(on_file, file_clock)
    assert decided == script(on_pg, pg_clock)
    assert any(d[0] == "refused" for d in decided if isinstance(d, tuple))
    assert on_pg.store.snapshot()["seq"] == len(list(on_pg.store.journal()))
    assert on_pg.repair()["seq"] == on_pg.store.snapshot()["seq"]  # the row is its journal replayed


HOLDER = textwrap.dedent("""
    import sys, time
    from mythline_cli.ledger import Ledger
    sys.path.insert(0, sys.argv[1])
    from test_ledger_backends import settings, est
    ledger = Ledger(settings())
    res = ledger.reserve(ledger.settings.agent("world-npcs"), est(0.4), run_id="r", step="research")
    print(res.id, flush=True)
    time.sleep(600)
""")


def test_a_holder_killed_on_another_host_is_reclaimed_at_its_estimate(home: Path, tmp_path: Path, pg_dsn: str,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    other = tmp_path / "other-host"
    other.mkdir()
    env = {**os.environ, "MYTHLINE_STATE": pg_dsn, "MYTHLINE_HOST": "host-b", "MYTHLINE_HOME": str(other / "home")}
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(Path(__file__).parent)], cwd=other, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        rid = proc.stdout.readline().strip()  # type: ignore[union-attr]
        assert rid, proc.stderr.read()  # type: ignore[union-attr]
        ledger = pg_ledger(pg_dsn, monkeypatch)
        ledger.housekeep()
        held = ledger.snapshot()["reservations"]
        assert held[rid]["host"] == "host-b"  # alive on its host: kept, though its PID means nothing here
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        # The server notices the closed socket at once; the dead session's lock goes with it.
        from helpers import wait_for

        def reclaimed() -> bool:
            ledger.housekeep()
            return rid not in ledger.snapshot()["reservations"]

        wait_for(reclaimed, timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    (entry,) = [e for e in ledger.store.journal() if e["event"] == "reclaim"]
    assert (entry["reservation"], entry["usd"], entry["reason"]) == (rid, 0.4, "process gone")
    assert ledger.report()["agents"][AGENT]["usd"] == {"spent": 0.4, "reserved": 0.0, "cap": 0.5}
    assert not (other / "home" / "ledger.json").exists()  # no file fallback on the other host


def test_a_reservation_lives_as_long_as_its_session(home: Path, pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    ledger = pg_ledger(pg_dsn, monkeypatch)
    agent = ledger.settings.agent(AGENT)
    res = ledger.reserve(agent, est(0.2), run_id="r", step="s")
    import psycopg

    with psycopg.connect(pg_dsn, autocommit=True) as admin:
        other = Ledger(settings(), store=PgStore(state.Session(pg_dsn)))
        other.housekeep()
        assert res.id in other.snapshot()["reservations"]  # this process lives: kept
        # Its backend terminated (a dropped connection): the session, and so the holder, is gone.
        admin.execute("SELECT pg_terminate_backend(%s)", (state.session(pg_dsn).conn.info.backend_pid,))
        from helpers import wait_for

        def reclaimed() -> bool:
            other.housekeep()
            return res.id not in other.snapshot()["reservations"]

        wait_for(reclaimed)
    with pytest.raises(state.StateUnavailable) as lost:
        ledger.settle(res, usd=0.1, tokens=10)
    assert "lost the shared state" in str(lost.value) and "postgresql://mythline@127.0.0.1" in str(lost.value)
    assert "DO-NOT-LEAK" not in str(lost.value)
    assert other.report()["agents"][AGENT]["usd"]["spent"] == pytest.approx(0.2)  # charged at its estimate


def test_windows_only_move_forward_whatever_each_hosts_clock(home: Path, pg_dsn: str,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import timedelta

    ahead, behind = Clock(), Clock()
    ahead.t += timedelta(days=1)  # a host whose clock is a day ahead opens tomorrow's window
    fast = pg_ledger(pg_dsn, monkeypatch, now=ahead)
    slow = Ledger(settings(), now=behind)
    fast.reserve(fast.settings.agent(AGENT), est(0.1), run_id="r", step="s")
    late = slow.reserve(slow.settings.agent(AGENT), est(0.1), run_id="r", step="s")
    # The host behind joins the newest window instead of reopening yesterday's, whose cap
    # would start from zero again.
    assert late.windows == ("day:2026-05-06", "month:2026-05")
    assert "day:2026-05-05" not in slow.snapshot()["windows"]
    assert slow.report()["agents"][AGENT]["usd"]["reserved"] == pytest.approx(0.2)


STUCK = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, sys.argv[1])
    from mythline_cli.ledger import Ledger
    from test_ledger_backends import settings
    ledger = Ledger(settings(), lock_timeout=float(sys.argv[2]))
    with ledger._access() as acc:  # a process frozen with the ledger row locked
        print("in", flush=True)
        time.sleep(600)
""")

WAITER = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, sys.argv[1])
    from mythline_cli.errors import MythlineError
    from mythline_cli.ledger import Ledger
    from test_ledger_backends import est, settings
    ledger = Ledger(settings(), lock_timeout=1)
    ledger.snapshot()  # connected, without waiting for the row
    while len(sys.argv) > 2 and not os.path.exists(sys.argv[2]):
        time.sleep(0.01)
    try:
        ledger.reserve(ledger.settings.agent("world-npcs"), est(0.1), run_id="r", step="s")
    except MythlineError as exc:
        print(type(exc).__name__, exc)
    else:
        print("reserved")
""")


def test_a_stuck_holder_of_the_ledger_row_times_out_its_waiters_and_loses_its_session(
        home: Path, pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """As with the file lock: a waiter gives up after its lock_timeout with one line, nothing
    called; and the server ends the stuck session after as long, so the fleet is not held."""
    monkeypatch.setenv("MYTHLINE_STATE", pg_dsn)
    tests = str(Path(__file__).parent)
    go = home.parent / "go"
    # Up and connected first: the stuck session's time then starts when the waiter is ready.
    first = subprocess.Popen([sys.executable, "-c", WAITER, tests, str(go)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    stuck = subprocess.Popen([sys.executable, "-c", STUCK, tests, "5"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        assert stuck.stdout.readline().strip() == "in", stuck.stderr.read()  # type: ignore[union-attr]
        go.touch()
        out, err = first.communicate(timeout=60)
        waiter = subprocess.CompletedProcess(first.args, first.returncode, out, err)
        assert waiter.returncode == 0, waiter.stderr
        assert waiter.stdout.startswith("MythlineError the budget ledger in the shared state at "
                                        "postgresql://mythline@127.0.0.1:"), waiter.stdout
        assert "stayed locked for 1s" in waiter.stdout and "nothing was called" in waiter.stdout
        assert "DO-NOT-LEAK" not in waiter.stdout
        from helpers import wait_for

        ledger = pg_ledger(pg_dsn, monkeypatch, lock_timeout=60)

        def through() -> bool:  # once the server has ended the stuck session, the row is free
            again = subprocess.run([sys.executable, "-c", WAITER, tests], capture_output=True, text=True, timeout=60)
            return again.stdout.strip() == "reserved"

        wait_for(through, timeout=60)
    finally:
        for proc in (first, stuck):
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
    # What the stuck access had logged was never committed: the journal starts with the waiter's.
    entries = list(ledger.store.journal())  # type: ignore[attr-defined]
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
    assert [e["event"] for e in entries if e["event"] == "reserve"] == ["reserve"]
