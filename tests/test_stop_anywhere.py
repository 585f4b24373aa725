"""SIGTERM ends a run within a bound whatever it is doing: no phase of a run hangs on it.

The bound each test allows (60 s) is one only a hang would exceed; the documented limits are
tighter (docs/failing-well.md#signals): the call in flight takes at most provider.timeout,
a lock wait at most its timeout, and everything else between calls is cut short."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from factories import record
from helpers import lore_responder, research_recorded, wait_for
from llm_server import completion

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

AGENT = "world-npcs"
BOUND = 60  # seconds: far past every documented limit, so only a hang fails it


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mythline_cli", "run", AGENT, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stop(proc: subprocess.Popen) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=BOUND)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError(f"the run was still going {BOUND}s after SIGTERM") from None
    assert "unexpected" not in err and "Traceback" not in err, err
    return proc.returncode, err


def ledger(home: Path) -> dict:
    return json.loads((home / "ledger.json").read_text())


def assert_interrupted(home: Path) -> None:
    hb = json.loads((home / "agents" / AGENT / "heartbeat.json").read_text())
    assert hb["state"] == "interrupted" and hb["consecutive_failures"] == 0 and hb.get("backoff_until") is None
    events = [json.loads(line) for line in (home / "agents" / AGENT / "events.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events][-2:] == ["interrupted", "run-end"] and events[-2]["error"]


@pytest.fixture
def silent_listener() -> Iterator[socket.socket]:
    """A server that accepts connections and never answers them."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(BOUND)
    yield listener
    listener.close()


def test_sigterm_while_a_source_never_answers(home, config, llm_server, silent_listener):
    port = silent_listener.getsockname()[1]
    config(sections={"defaults": {"sources": [f"http://127.0.0.1:{port}/wiki/{{title}}"]}})
    llm_server.responder = lore_responder(AGENT)
    proc = start()
    try:
        conn, _ = silent_listener.accept()  # the fetch is in flight and will never be answered
        code, err = stop(proc)
        conn.close()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 143, err
    assert err.startswith(f"mythline: {AGENT}: stopped by SIGTERM")
    assert llm_server.count() == 0
    assert_interrupted(home)


def test_sigterm_while_another_process_holds_the_ledger_lock(home, config, llm_server):
    llm_server.responder = lore_responder(AGENT)
    home.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\n"
        "from mythline_cli import locking\n"
        "held = locking.acquire(sys.argv[1], 10)\n"
        "print('held', flush=True)\n"
        "time.sleep(600)\n"), str(home / "ledger.lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        proc = start()
        wait_for(lambda: (home / "agents" / AGENT / "heartbeat.json").exists())
        time.sleep(0.5)  # inside the wait for the lock
        code, err = stop(proc)
    finally:
        holder.kill()
        holder.wait()
    # The lock wait is not cut short (it ends at the ledger's 30 s lock timeout): then the
    # run stops as the signal asked, with nothing called: an interruption, not a failure.
    assert code == 143, err
    assert err.startswith(f"mythline: {AGENT}: stopped by SIGTERM")
    assert llm_server.count() == 0
    assert_interrupted(home)


def test_sigterm_while_a_recorded_poison_answer_is_repaired(home, config, llm_server):
    # A checkpoint holding a 1,000,000-character answer of the shape that once took hours to
    # parse; the repair call it leads to is answered only after the signal.
    config(provider={"timeout": "5s", "max_attempts": 1})
    path = home / "agents" / AGENT / "checkpoint.json"
    path.parent.mkdir(parents=True)
    step = {"content": "```json" + " " * 999_990, "prompt_tokens": 400, "completion_tokens": 200, "usd": 0.0008,
            "cost_source": "tokens x prices", "model": "test/model", "response_id": "r1",
            "recorded": "2026-12-01T00:00:00+00:00"}
    topic = "Thrall"
    path.write_text(json.dumps({"version": 1, "agent": AGENT, "topics": {}, "current": {
        "topic": topic, "attempt": 1, "run_id": "r", "started": "2026-12-01T00:00:00+00:00",
        "steps": {"research": step}}}), encoding="utf-8")

    def respond(request):
        time.sleep(2)
        return completion(json.dumps(record(AGENT, topic)), prompt_tokens=400, completion_tokens=200)

    llm_server.responder = respond
    proc = start()
    try:
        wait_for(lambda: llm_server.count() == 1)  # parsed, rejected, and the repair is in flight
        code, err = stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 143, err
    assert err.startswith(f"mythline: {AGENT}: stopped by SIGTERM")
    assert llm_server.count() == 1 and research_recorded(home)
    assert ledger(home)["reservations"] == {}
