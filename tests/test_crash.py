"""A real SIGKILL in the middle of a cycle costs nothing twice and loses nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from helpers import TEST_KEY, is_audit, lore_responder, mythline, research_recorded, wait_for
from llm_server import Reply

AGENT = "world-npcs"

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")




def start_run() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mythline_cli", "run", AGENT],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize(("kill_when", "backend"), [
    ("research-recorded", "file"), ("audit-in-flight", "file"),
    # The one with money in flight: its reservation is reclaimed across the database.
    ("audit-in-flight", "postgresql"),
], indirect=["backend"])
def test_sigkill_resumes_without_paying_for_research_again(home, config, llm_server, kill_when, backend):
    answer = lore_responder(AGENT)

    def hang_audit(request):
        if is_audit(request):
            return Reply(status=200, json={}, delay=60)  # never answered before the kill
        return answer(request)

    llm_server.responder = hang_audit
    proc = start_run()
    try:
        if kill_when == "audit-in-flight":
            wait_for(lambda: llm_server.count() == 2)  # the audit is sent after research is recorded
        else:
            wait_for(lambda: research_recorded(home))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    backend.gone()

    # Every state file still parses after the kill.
    for path in home.rglob("*.json"):
        json.loads(path.read_text())

    llm_server.responder = answer
    result = mythline("run", AGENT)
    assert result.returncode == 0, result.stderr
    research = [r for r in llm_server.requests if not is_audit(r)]
    assert len(research) == 1  # the recorded research step was not requested again
    assert backend.records(home) == 1

    ledger = backend.state()
    assert ledger["reservations"] == {}
    history = backend.journal() if backend.pg or (home / "ledger-history.jsonl").exists() else []
    if backend.pg:  # never a fallback to the state home's files
        assert not (home / "ledger.json").exists() and not (home / "ledger-history.jsonl").exists()
    reclaims = [h for h in history if h["event"] == "reclaim"]
    if kill_when == "audit-in-flight":
        # The dead run's audit reservation is charged at its estimate and marked unsettled.
        assert len(reclaims) == 1 and reclaims[0]["reason"] == "process gone"
        (day,) = [w for k, w in ledger["windows"].items() if k.startswith("day:")]
        assert day["agents"][AGENT]["unsettled_usd"] == pytest.approx(reclaims[0]["usd"])
        assert reclaims[0]["usd"] > 0
    for path in home.rglob("*"):
        if path.is_file():
            assert TEST_KEY not in path.read_text(errors="replace")


def test_two_runs_of_one_agent_one_wins(home, config, llm_server, backend):
    # The first run's research answer is held until the second run has given up, however long a
    # loaded machine takes to start it: no race on time.
    released = threading.Event()
    answer = lore_responder(AGENT)

    def held(request):
        released.wait(timeout=120)
        return answer(request)

    llm_server.responder = held
    first = start_run()
    wait_for(lambda: llm_server.count() >= 1)
    try:
        second = mythline("run", AGENT)
    finally:
        released.set()
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert second.returncode == 4
    assert second.stderr == "mythline: world-npcs is already running; this run did nothing\n"
    assert llm_server.count() == 2


def test_two_runs_started_in_the_same_instant(tmp_path, config, llm_server, backend):
    """Both processes are started before either can take the lock, five times over: each
    time exactly one runs the cycle and the other exits 4 having touched nothing."""
    llm_server.responder = lore_responder(AGENT)
    go = tmp_path / "go"
    # Each process waits for the same file to appear, then runs: they start within a
    # millisecond of each other, after both interpreters are up.
    launcher = ("import os, sys, time, runpy\n"
                "while not os.path.exists(sys.argv[1]): time.sleep(0.001)\n"
                "sys.argv = ['mythline', 'run', sys.argv[2]]\n"
                "runpy.run_module('mythline_cli', run_name='__main__')\n")
    # Fewer rounds on PostgreSQL, where the race is the server's lock, not two processes' files.
    for round_ in range(2 if backend.pg else 5):
        home = tmp_path / f"home{round_}"
        env = {**os.environ, "MYTHLINE_HOME": str(home)}
        go.unlink(missing_ok=True)
        procs = [subprocess.Popen([sys.executable, "-c", launcher, str(go), AGENT], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        time.sleep(1.0)  # both interpreters are waiting on the file
        start = llm_server.count()
        go.touch()
        results = [(p.wait(timeout=120), p.communicate()[1]) for p in procs]
        codes = sorted(code for code, _ in results)
        assert codes == [0, 4], results
        assert [err for code, err in results if code == 4] == [
            "mythline: world-npcs is already running; this run did nothing\n"]
        assert llm_server.count() - start == 2  # one research, one audit: one cycle
        for path in home.rglob("*.json"):
            json.loads(path.read_text())
        # On PostgreSQL the checkpoint and the store are shared by every round: each round's
        # one cycle takes the next topic and adds its one record.
        assert backend.records(home) == (round_ + 1 if backend.pg else 1)
        assert backend.state(home)["reservations"] == {}  # on PostgreSQL: one database for every round
