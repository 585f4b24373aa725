"""SIGTERM ends a run within a bound whatever it is doing: no phase of a run hangs on it.

The bound each test allows (60 s) is one only a hang would exceed. The call in flight takes
at most provider.timeout (its answer is paid for); every wait that spends nothing - the
ledger lock before a reservation, the hosts lock and the delay between requests to a host,
a source fetch, a local server's slot - ends at once, and the run's line names it
(docs/failing-well.md#signals). Those tests give the wait a limit far past the bound (a lock
held for 600 s, a source timeout of 600 s) or check the line and the event, never the time
taken: a wait sat out fails them however fast or slow the machine is."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from factories import record
from helpers import blocked_waiters, lore_responder, research_recorded, wait_for
from llm_server import completion

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

AGENT = "world-npcs"
BOUND = 60  # seconds: far past every documented limit, so only a hang fails it


def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mythline_cli", "run", AGENT, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


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


def events(home: Path) -> list[dict]:
    return [json.loads(line) for line in (home / "agents" / AGENT / "events.jsonl").read_text().splitlines()]


def assert_interrupted(home: Path, waiting: str | None = None) -> None:
    """Heartbeat ``interrupted`` with no failure counted; the last events ``interrupted`` and
    ``run-end``; ``waiting``: the wait the signal cut short, named in the event."""
    hb = json.loads((home / "agents" / AGENT / "heartbeat.json").read_text())
    assert hb["state"] == "interrupted" and hb["consecutive_failures"] == 0 and hb.get("backoff_until") is None
    evs = events(home)
    assert [e["event"] for e in evs][-2:] == ["interrupted", "run-end"]
    assert evs[-1]["outcome"] == "interrupted"
    if waiting is not None:
        # Cut short, not sat out: a wait that ran out its timeout would leave its error here.
        assert waiting in evs[-2]["waiting"] and "error" not in evs[-2], evs[-2]
    else:
        assert evs[-2]["error"]


def assert_nothing_charged(home: Path) -> None:
    book = ledger(home) if (home / "ledger.json").exists() else {"reservations": {}, "windows": {}}
    assert book["reservations"] == {}
    for window in book["windows"].values():
        bucket = window.get("agents", {}).get(AGENT, {})
        assert not bucket.get("calls") and not bucket.get("usd"), book


def holder(path: Path) -> subprocess.Popen:
    """Another process that takes the lock on ``path`` (as Mythline takes it) and holds it for 600 s."""
    proc = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\n"
        "from mythline_cli import locking\n"
        "held = locking.acquire(sys.argv[1], 10)\n"
        "print('held', flush=True)\n"
        "time.sleep(600)\n"), str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


@pytest.fixture
def silent_listener() -> Iterator[socket.socket]:
    """A server that accepts connections and never answers them."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(BOUND)
    yield listener
    listener.close()


@pytest.fixture
def pages():
    from source_server import SourceServer

    with SourceServer() as server:
        yield server


def test_sigterm_while_a_source_never_answers(home, config, llm_server, silent_listener):
    port = silent_listener.getsockname()[1]
    # A fetch that would wait 600 s for its answer: only cutting it short ends the run in BOUND.
    config(sections={"defaults": {"sources": [f"http://127.0.0.1:{port}/wiki/{{title}}"]},
                     "sources": {"timeout": "600s"}})
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
    assert err.startswith(f"mythline: {AGENT}: stopped by SIGTERM while fetching a source from 127.0.0.1:{port};")
    assert llm_server.count() == 0
    assert_interrupted(home, waiting=f"fetching a source from 127.0.0.1:{port}")
    assert_nothing_charged(home)


def test_sigterm_while_another_process_holds_the_ledger_lock(home, config, llm_server):
    llm_server.responder = lore_responder(AGENT)
    home.mkdir(parents=True, exist_ok=True)
    lock = home / "ledger.lock"
    other = holder(lock)
    try:
        proc = start()
        wait_for(lambda: blocked_waiters(lock) == 1)  # the run is queued on the lock in the kernel
        code, err = stop(proc)
        assert other.poll() is None  # ended while the lock was still held
    finally:
        other.kill()
        other.wait()
    assert code == 143, err
    assert err.startswith(f"mythline: {AGENT}: stopped by SIGTERM while waiting for the ledger lock;")
    assert llm_server.count() == 0
    assert_interrupted(home, waiting="the ledger lock")
    assert_nothing_charged(home)


def test_sigterm_while_another_process_holds_the_hosts_lock(home, config, llm_server, pages):
    config(sections={"defaults": {"sources": [pages.base_url + "/wiki/{title}"]}})
    llm_server.responder = lore_responder(AGENT)
    lock = home / "sources" / "hosts.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    other = holder(lock)
    try:
        proc = start()
        wait_for(lambda: blocked_waiters(lock) == 1)
        code, err = stop(proc)
    finally:
        other.kill()
        other.wait()
    assert code == 143, err
    assert err.startswith(f"mythline: {AGENT}: stopped by SIGTERM while waiting for the hosts lock;")
    assert not [r for r in pages.requests if r["path"].startswith("/wiki/")]  # no page was asked for
    assert llm_server.count() == 0
    assert_interrupted(home, waiting="the hosts lock")


def test_sigterm_during_the_delay_between_requests_to_a_host(home, config, llm_server, pages):
    config(sections={"defaults": {"sources": [pages.base_url + "/wiki/{title}"]}})
    llm_server.responder = lore_responder(AGENT)
    host = pages.base_url.split("//", 1)[1]
    state = home / "sources" / "hosts.json"
    state.parent.mkdir(parents=True, exist_ok=True)
    # Another process's request to the host took the next 3000 s: this run's slot comes after.
    taken = time.time() + 3000
    state.write_text(json.dumps({host: {"next": taken}}))
    proc = start()
    try:
        wait_for(lambda: json.loads(state.read_text())[host]["next"] > taken)  # its slot is taken: waiting
        code, err = stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 143, err
    assert err.startswith(f"mythline: {AGENT}: stopped by SIGTERM while waiting out the delay between "
                          f"requests to {host};")
    assert not [r for r in pages.requests if r["path"].startswith("/wiki/")]  # not sent after the signal
    assert llm_server.count() == 0
    assert_interrupted(home, waiting=f"the delay between requests to {host}")


def test_sigterm_while_waiting_for_a_local_servers_slot(home, config, llm_server):
    from local_server import LocalFake, small_model

    LocalFake(llm_server, small_model(AGENT))
    # The slot wait lasts up to provider.timeout: 600 s.
    config(provider={"local": True, "timeout": "600s", "structured_outputs": "json_object_schema"})
    slots = home / "slots"
    slots.mkdir(parents=True, exist_ok=True)
    import hashlib

    from mythline_cli.redact import safe_url

    lock = slots / (hashlib.sha256(safe_url(llm_server.base_url).encode()).hexdigest()[:16] + ".lock")
    other = holder(lock)  # another agent's request is out
    try:
        proc = start()
        wait_for(lambda: blocked_waiters(lock) == 1)  # past the reservation, queued on the slot in the kernel
        code, err = stop(proc)
    finally:
        other.kill()
        other.wait()
    assert code == 143, err
    assert err.startswith(f"mythline: {AGENT}: stopped by SIGTERM while waiting for the local server")
    assert not [r for r in llm_server.requests if r["path"].endswith("/chat/completions")]
    assert_interrupted(home, waiting="the local server")
    assert_nothing_charged(home)  # never sent: the reservation is released, not charged


def test_sigterm_while_waiting_for_the_fleets_rate_limit(home, config, llm_server):
    from mythline_cli import ratelimit
    from mythline_cli.breaker import Breaker
    from mythline_cli.config import load_settings

    llm_server.responder = lore_responder(AGENT)
    # One request a minute for the whole fleet, and a wait of up to 600 s rather than a refusal.
    config(provider={"requests_per_minute": 1, "max_retry_wait": "600s"})
    settings = load_settings()
    other = ratelimit.Limiter(settings, Breaker(settings), agent="world-zones")
    other.call(1000).before_request()  # another agent's request took this minute's place
    other.close()
    proc = start()
    # Reserved and announced; the next thing the call does is wait for the bucket (about 60 s).
    wait_for(lambda: (home / "agents" / AGENT / "events.jsonl").exists()
             and any(e["event"] == "llm-request" for e in events(home)))
    code, err = stop(proc)
    assert code == 143, err
    assert err.startswith(f"mythline: {AGENT}: stopped by SIGTERM"), err
    assert not [r for r in llm_server.requests if r["path"].endswith("/chat/completions")]
    hb = json.loads((home / "agents" / AGENT / "heartbeat.json").read_text())
    assert hb["state"] == "interrupted" and hb["consecutive_failures"] == 0 and hb.get("backoff_until") is None
    stopped, end = events(home)[-2:]
    # The limiter's nap ends at the signal and the run stops at the boundary after it: no wait sat out.
    assert stopped["event"] == "interrupted" and "error" not in stopped and end["outcome"] == "interrupted"
    assert_nothing_charged(home)  # never sent: the reservation is released, not charged


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
