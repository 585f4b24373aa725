"""Backoff between runs, the circuit breaker, the kill switch, signals, and run --due."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from freezegun import freeze_time
from typer.testing import CliRunner

from mythline_cli import backoff
from mythline_cli.breaker import Breaker, BreakerOpen
from mythline_cli.cli import app
from mythline_cli.config import parse_config
from mythline_cli.due import due_agents
from mythline_cli.errors import BackingOff, ExitCode

from helpers import delayed, is_audit, lore_responder, mythline, research_recorded, wait_for, write_tiktoken_cache
from llm_server import error

AGENT = "world-npcs"


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def hb(home: Path, agent: str = AGENT) -> dict:
    return json.loads((home / "agents" / agent / "heartbeat.json").read_text())


def write_hb(home: Path, agent: str, **fields) -> None:
    path = home / "agents" / agent / "heartbeat.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"agent": agent, "state": "ok", **fields}))


def ledger(home: Path) -> dict:
    return json.loads((home / "ledger.json").read_text())




# -- backoff -----------------------------------------------------------------------------

@pytest.mark.parametrize("streak,expected", [(1, 300), (2, 600), (3, 1200), (10, 3600)])
def test_backoff_doubles_with_jitter_and_is_capped(streak, expected):
    settings = parse_config({"backoff": {"base": "5m", "max": "1h", "jitter": 0.2}})
    with freeze_time("2026-03-01 12:00:00"):
        waits = {(datetime.fromisoformat(backoff.until(settings.config.backoff, streak))
                  - datetime(2026, 3, 1, 12, tzinfo=timezone.utc)).total_seconds() for _ in range(200)}
    assert max(waits) <= min(expected * 1.2, 3600) and min(waits) >= expected * 0.8
    assert len(waits) > 1 or expected == 3600  # jitter spreads a fleet that failed together


def test_backoff_never_ends_before_the_provider_asked():
    cfg = parse_config({"backoff": {"base": "5m", "jitter": 0}}).config.backoff
    later = (datetime.now(timezone.utc) + timedelta(hours=2)).isoformat()
    assert backoff.until(cfg, 1, not_before=later) == later
    sooner = (datetime.now(timezone.utc) + timedelta(minutes=1)).isoformat()
    assert datetime.fromisoformat(backoff.until(cfg, 1, not_before=sooner)) > datetime.fromisoformat(sooner)


@pytest.mark.parametrize("until,waiting", [("2026-03-01T12:30:00+00:00", True), ("2026-03-01T11:30:00+00:00", False),
                                           ("not a time", False), (None, False), (17, False)])
def test_backoff_check_reads_the_last_heartbeat(until, waiting):
    with freeze_time("2026-03-01 12:00:00"):
        if waiting:
            with pytest.raises(BackingOff) as info:
                backoff.check(AGENT, {"backoff_until": until, "consecutive_failures": 2})
            assert info.value.exit_code == ExitCode.PAUSED and "after 2 failed run(s)" in str(info.value)
        else:
            backoff.check(AGENT, {"backoff_until": until})


def test_failed_run_backs_off_and_force_overrides(home, config, llm_server):
    config(sections={"backoff": {"base": "10m", "jitter": 0}})
    llm_server.enqueue(error(401, "bad key"))
    before = datetime.now(timezone.utc)
    assert run("run", AGENT).exit_code == 1
    until = datetime.fromisoformat(hb(home)["backoff_until"])
    assert timedelta(minutes=10) <= until - before <= timedelta(minutes=10, seconds=30)

    second = run("run", AGENT)
    assert second.exit_code == 5
    assert "backing off after 1 failed run(s)" in second.stderr and "--force" in second.stderr
    # When, as the user reads a clock: local time, no ISO stamp with microseconds.
    assert f"until {until.astimezone():%H:%M}" in second.stderr or f"until {until.astimezone():%Y-%m-%d %H:%M}" in \
        second.stderr
    assert hb(home)["backoff_until"] not in second.stderr
    assert llm_server.count() == 1  # nothing was called

    llm_server.responder = lore_responder(AGENT)
    assert run("run", AGENT, "--force").exit_code == 0
    state = hb(home)
    assert state.get("backoff_until") is None and state["consecutive_failures"] == 0


def test_backoff_in_the_past_lets_the_run_go(home, config, llm_server):
    write_hb(home, AGENT, consecutive_failures=2,
             backoff_until=(datetime.now(timezone.utc) - timedelta(seconds=1)).isoformat())
    llm_server.responder = lore_responder(AGENT)
    assert run("run", AGENT).exit_code == 0


# -- kill switch ---------------------------------------------------------------------------

def paused_since(home: Path, agent: str = AGENT) -> str:
    """When the flag says the pause began, as local HH:MM (what status and run show)."""
    from mythline_cli.durations import local_clock

    stamp = (home / "agents" / agent / "paused").read_text(encoding="utf-8").splitlines()[-1]
    assert stamp.startswith("paused at ")
    return local_clock(datetime.fromisoformat(stamp.removeprefix("paused at ")))


def test_a_pause_without_a_note_shows_when_it_began_not_a_raw_timestamp(home, config):
    assert run("pause", AGENT).exit_code == 0
    since = paused_since(home)
    stamp = (home / "agents" / AGENT / "paused").read_text(encoding="utf-8").splitlines()[-1]
    table = mythline("status", env={"COLUMNS": "200"})
    row = next(line for line in table.stdout.splitlines() if line.strip().startswith(AGENT))
    assert f"paused (since {since})" in row
    data = json.loads(mythline("status", "--json").stdout)
    assert next(r for r in data["agents"] if r["agent"] == AGENT)["note"] is None
    assert stamp.removeprefix("paused at ") not in table.stdout + table.stderr
    result = mythline("run", AGENT)
    assert result.returncode == 5
    assert result.stderr == (f"mythline: {AGENT} is paused (since {since}); nothing was called. "
                             f"Run: mythline resume {AGENT}\n")

def test_paused_run_sends_no_request(home, config, llm_server):
    llm_server.responder = lore_responder(AGENT)
    assert run("pause", AGENT, "--note", "checking sources").exit_code == 0
    since = paused_since(home)
    result = run("run", AGENT)
    assert result.exit_code == 5 and llm_server.count() == 0
    assert result.stderr == (f"mythline: world-npcs is paused (checking sources, since {since}); nothing was "
                             "called. Run: mythline resume world-npcs\n")
    status = json.loads(run("status", "--json").stdout)
    row = next(r for r in status["agents"] if r["agent"] == AGENT)
    assert row["state"] == "paused" and row["note"] == "checking sources"
    stamp = (home / "agents" / AGENT / "paused").read_text(encoding="utf-8").splitlines()[-1]
    assert row["paused_at"] == stamp.removeprefix("paused at ")
    assert run("resume", AGENT).exit_code == 0
    assert run("run", AGENT).exit_code == 0 and llm_server.count() == 2


def test_pause_all_and_resume_all(home, config):
    assert run("pause", "--all").exit_code == 0
    assert all((home / "agents" / a / "paused").exists() for a in parse_config({}).agent_names)
    assert run("resume", "--all").stdout.startswith("Resumed world-zones, world-npcs")
    assert not list(home.rglob("paused"))
    bad = run("pause")
    assert bad.exit_code == 2 and bad.stderr == "mythline: name one agent, or use --all\n"
    assert run("pause", "world-dragons").exit_code == 2


def test_pause_mid_run_stops_at_the_next_call_with_the_checkpoint_saved(home, config, llm_server):
    answer = lore_responder(AGENT)

    def research_then_pause(request):
        if not is_audit(request):
            (home / "agents" / AGENT / "paused").write_text("stop now\n")
        return answer(request)

    llm_server.responder = research_then_pause
    result = run("run", AGENT)
    assert result.exit_code == 5
    assert "stopped at a step boundary, checkpoint saved" in result.stderr
    assert llm_server.count() == 1 and research_recorded(home)
    assert hb(home)["state"] == "paused" and ledger(home)["reservations"] == {}
    run("resume", AGENT)
    llm_server.responder = answer
    assert run("run", AGENT).exit_code == 0
    assert [is_audit(r) for r in llm_server.requests] == [False, True]


# -- signals --------------------------------------------------------------------------------

@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("signame,code", [("SIGTERM", 143), ("SIGINT", 130)])
def test_signal_mid_call_finishes_the_call_saves_and_exits(home, config, llm_server, signame, code):
    answer = lore_responder(AGENT)
    llm_server.responder = delayed(answer, 1.5, only=lambda request: not is_audit(request))
    proc = subprocess.Popen([sys.executable, "-m", "mythline_cli", "run", AGENT],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: llm_server.count() == 1)
    proc.send_signal(getattr(signal, signame))
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == code, err
    assert err.startswith(f"mythline: world-npcs: stopped by {signame}; the checkpoint is saved")
    assert err.count("\n") == 1  # off a terminal, the first signal prints nothing of its own
    assert llm_server.count() == 1  # the audit was never sent
    assert research_recorded(home)  # the paid research answer was kept
    assert ledger(home)["reservations"] == {}
    assert hb(home)["state"] == "interrupted" and hb(home)["consecutive_failures"] == 0

    llm_server.responder = answer
    result = mythline("run", AGENT)
    assert result.returncode == 0, result.stderr
    assert [is_audit(r) for r in llm_server.requests] == [False, True]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigterm_during_a_retry_wait_stops_without_another_request(home, config, llm_server):
    config(provider={"max_retry_wait": "30s", "max_retry_time": "60s", "max_attempts": 3})
    llm_server.enqueue(error(429, "slow down", headers={"retry-after": "20"}))
    proc = subprocess.Popen([sys.executable, "-m", "mythline_cli", "run", AGENT],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: llm_server.count() == 1)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=15)  # far less than the 20 s wait
    assert proc.returncode == 143, err
    assert llm_server.count() == 1
    assert ledger(home)["reservations"] == {}


class _TtyRun:
    """A real ``mythline run`` whose stderr is a terminal (a pty), as in a user's shell."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        import pty

        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen([sys.executable, "-m", "mythline_cli", *args], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=slave, env={**os.environ, **(env or {})})
        os.close(slave)
        self.text = ""

    def read(self) -> str:
        import select

        while select.select([self.master], [], [], 0)[0]:
            try:
                chunk = os.read(self.master, 4096)
            except OSError:  # the child closed its side
                break
            if not chunk:
                break
            self.text += chunk.decode(errors="replace")
        return self.text

    def wait(self) -> int:
        self.proc.communicate(timeout=60)
        self.read()
        os.close(self.master)
        return self.proc.returncode


def _gated(home: Path, gate) -> object:
    """Research answers wait for ``gate``: the call stays in flight until the test says."""
    answer = lore_responder(AGENT)

    def respond(request):
        if not is_audit(request):
            gate.wait(120)
        return answer(request)

    return respond


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and ptys")
def test_the_first_ctrl_c_on_a_terminal_says_at_once_what_happens(home, config, llm_server):
    import threading

    gate = threading.Event()
    llm_server.responder = _gated(home, gate)
    run = _TtyRun("run", AGENT)
    try:
        wait_for(lambda: llm_server.count() == 1)
        run.proc.send_signal(signal.SIGINT)
        # Said while the call is still in flight (the server has not answered yet).
        wait_for(lambda: "stopping after this call; Ctrl-C again to abort" in run.read())
        assert not research_recorded(home)
    finally:
        gate.set()
    assert run.wait() == 130, run.text
    assert research_recorded(home) and hb(home)["state"] == "interrupted"
    assert llm_server.count() == 1


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and ptys")
@pytest.mark.parametrize("signame,code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_second_signal_aborts_at_once_as_an_interruption(home, config, llm_server, signame, code):
    import threading

    gate = threading.Event()
    llm_server.responder = _gated(home, gate)
    run = _TtyRun("run", AGENT)
    try:
        wait_for(lambda: llm_server.count() == 1)
        run.proc.send_signal(getattr(signal, signame))
        wait_for(lambda: "stopping after this call;" in run.read())
        run.proc.send_signal(getattr(signal, signame))
        assert run.wait() == code, run.text  # while the call is still in flight
    finally:
        gate.set()
    assert f"aborted by a second {signame}" in run.text and "unexpected" not in run.text
    state = hb(home)
    assert state["state"] == "interrupted" and state["consecutive_failures"] == 0
    assert state.get("backoff_until") is None
    assert not research_recorded(home)
    book = ledger(home)
    assert book["reservations"] == {}
    (day,) = [w for k, w in book["windows"].items() if k.startswith("day:")]
    # The call cut off may still be billed: charged at its estimate, marked unsettled.
    bucket = day["agents"][AGENT]
    assert bucket["calls"] == 1 and bucket["unsettled_usd"] == bucket["usd"] > 0
    evs = [json.loads(line) for line in (home / "agents" / AGENT / "events.jsonl").read_text().splitlines()]
    assert [e["event"] for e in evs][-2:] == ["interrupted", "run-end"] and evs[-2]["signal"] == signame
    assert evs[-1]["outcome"] == "interrupted" and evs[-1]["exit_code"] == code

    llm_server.responder = lore_responder(AGENT)
    again = mythline("run", AGENT)  # no backoff: an interruption is not a failure
    assert again.returncode == 0, again.stderr


FAKE_TIKTOKEN = """
import os, socket

def get_encoding(name):
    # A tokenizer whose files come from a server that never answers (a dead proxy).
    sock = socket.create_connection(("127.0.0.1", int(os.environ["FAKE_TOKENIZER_PORT"])))
    sock.recv(1)
    raise OSError("no tokenizer files")
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigterm_interrupts_while_the_tokenizer_loads(home, config, llm_server, tmp_path):
    import socket

    fake = tmp_path / "fake-tokenizer"
    (fake / "tiktoken").mkdir(parents=True)
    (fake / "tiktoken" / "__init__.py").write_text(FAKE_TIKTOKEN)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(60)
    config(provider={"tokenizer": "auto"})
    llm_server.responder = lore_responder(AGENT)
    # tiktoken is loaded only when its file is cached: give it one, then a load that never ends.
    cache = write_tiktoken_cache(tmp_path / "tiktoken-cache")
    env = {**os.environ, "PYTHONPATH": str(fake), "FAKE_TOKENIZER_PORT": str(listener.getsockname()[1]),
           "TIKTOKEN_CACHE_DIR": str(cache)}
    proc = subprocess.Popen([sys.executable, "-m", "mythline_cli", "run", AGENT], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        conn, _ = listener.accept()  # the tokenizer is loading, and will never finish
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        listener.close()
    assert proc.returncode == 143, err
    assert err.startswith("mythline: world-npcs: stopped by SIGTERM")
    assert llm_server.count() == 0
    assert hb(home)["state"] == "interrupted" and ledger(home)["reservations"] == {}
    conn.close()


# -- circuit breaker ------------------------------------------------------------------------

def test_breaker_opens_after_k_failures_across_agents_then_probes(home, config, llm_server):
    config(provider={"max_attempts": 1}, sections={"breaker": {"failures": 2, "cooldown": "1h"}})
    llm_server.default = error(503, "no provider available")
    assert run("run", "world-npcs").exit_code == 1
    assert run("run", "world-zones").exit_code == 1  # second failure in a row: open
    assert llm_server.count() == 2

    skipped = run("run", "world-items")
    assert skipped.exit_code == 5 and llm_server.count() == 2
    assert "failed 2 calls in a row across the fleet; cooling down until" in skipped.stderr

    # The cooldown passes: one probe goes out, and its success closes the breaker.
    state = json.loads((home / "breaker.json").read_text())
    (entry,) = state.values()
    entry["opened_at"] = (datetime.now(timezone.utc) - timedelta(hours=2)).isoformat()
    (home / "breaker.json").write_text(json.dumps(state))
    llm_server.default = None
    llm_server.responder = lore_responder("world-items")
    assert run("run", "world-items").exit_code == 0
    (entry,) = json.loads((home / "breaker.json").read_text()).values()
    assert entry == {"failures": 0, "opened_at": None, "probe": None}


def test_a_failed_probe_reopens_and_only_one_probe_at_a_time(home):
    settings = parse_config({"breaker": {"failures": 3, "cooldown": "10m"}})
    clock = [datetime(2026, 5, 1, 12, tzinfo=timezone.utc)]
    breaker = Breaker(settings, now=lambda: clock[0])
    for _ in range(3):
        breaker.before_call("world-npcs")
        breaker.record(ok=False, kind="http-503", status=503)
    with pytest.raises(BreakerOpen):
        breaker.before_call("world-npcs")
    clock[0] += timedelta(minutes=11)
    breaker.before_call("world-npcs")  # the probe
    with pytest.raises(BreakerOpen, match="another agent is probing"):
        breaker.before_call("world-zones")
    breaker.record(ok=False, kind="timeout")
    with pytest.raises(BreakerOpen, match="cooling down until 12:21:00"):
        breaker.before_call("world-zones")


def test_auth_errors_do_not_trip_the_breaker(home):
    settings = parse_config({"breaker": {"failures": 1}})
    breaker = Breaker(settings)
    breaker.record(ok=False, kind="http-401", status=401)
    breaker.before_call("world-npcs")  # still closed


# -- run --due -----------------------------------------------------------------------------

def test_due_agents_follow_interval_backoff_and_pause(home):
    settings = parse_config({"defaults": {"interval": "30m"}, "budget": {"run_timeout": "2h"}})
    with freeze_time("2026-06-01 12:00:00+00:00"):
        now = datetime.now(timezone.utc)
        write_hb(home, "world-zones", finished=(now - timedelta(minutes=10)).isoformat())
        write_hb(home, "world-npcs", finished=(now - timedelta(minutes=31)).isoformat())
        write_hb(home, "world-items", finished=(now - timedelta(hours=3)).isoformat(),
                 backoff_until=(now + timedelta(minutes=5)).isoformat())
        write_hb(home, "world-lore", state="running", started=(now - timedelta(minutes=40)).isoformat(),
                 pid=os.getpid())  # alive, within run_timeout: still running
        write_hb(home, "quest-chains", state="running", started=(now - timedelta(hours=3)).isoformat(),
                 pid=os.getpid())  # past run_timeout: hung, so due again
        write_hb(home, "faction-dynamics", state="running", started=(now - timedelta(minutes=40)).isoformat(),
                 pid=2 ** 22 + 12345)  # its process is gone: a crashed run, due again
        (home / "agents" / "world-factions").mkdir(parents=True)
        (home / "agents" / "world-factions" / "paused").write_text("")
        due = due_agents(settings)
    assert "world-zones" not in due and "world-npcs" in due
    assert "world-items" not in due and "world-lore" not in due and "world-factions" not in due
    assert "quest-chains" in due and "faction-dynamics" in due
    assert "narrative-history" in due  # never run
    with freeze_time("2026-06-01 12:20:01+00:00"):
        assert "world-zones" in due_agents(settings)


def test_run_due_runs_each_due_agent_in_its_own_process(home, config, llm_server):
    others = [a for a in parse_config({}).agent_names if a not in ("world-npcs", "world-zones")]
    config(sections={f"agents.{a}": {"enabled": False} for a in others})
    answers = {a: lore_responder(a) for a in ("world-npcs", "world-zones")}

    def respond(request):
        text = json.dumps(request["body"]["messages"])
        agent = "world-zones" if "zone" in text.lower() else "world-npcs"
        return answers[agent](request)

    llm_server.responder = respond
    result = mythline("run", "--due", "--jobs", "2", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert sorted(report["due"]) == ["world-npcs", "world-zones"]
    assert {r["agent"]: r["exit_code"] for r in report["results"]} == {"world-npcs": 0, "world-zones": 0}
    assert len(list((home / "store").rglob("*.json"))) == 2
    # Both just ran: nothing is due now.
    again = mythline("run", "--due")
    assert again.returncode == 0 and again.stdout == "" and again.stderr == ""


@pytest.mark.skipif(sys.platform != "linux", reason="POSIX sessions, read from /proc")
def test_a_ctrl_c_reaches_a_due_child_once(home, config, llm_server):
    llm_server.responder = delayed(lore_responder(AGENT), 3)
    parent = subprocess.Popen([sys.executable, "-m", "mythline_cli", "run", "--due", "--jobs", "1"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_for(lambda: llm_server.count() == 1)
        children = Path(f"/proc/{parent.pid}/task/{parent.pid}/children").read_text().split()
        assert children
        # A terminal signals its foreground process group: the child must not be in it, or it
        # gets the Ctrl-C twice (from the terminal and forwarded by the parent) and aborts.
        assert all(os.getpgid(int(pid)) != os.getpgid(parent.pid) for pid in children)
        os.killpg(parent.pid, signal.SIGINT)
        _, err = parent.communicate(timeout=60)
    finally:
        if parent.poll() is None:
            parent.kill()
    assert parent.returncode == 130, err
    assert any(research_recorded(home, d.name) for d in (home / "agents").iterdir())  # stopped after its call


def test_run_needs_an_agent_or_due(home):
    result = run("run")
    assert result.exit_code == 2
    assert result.stderr == ("mythline: name an agent (see: mythline agents), or use --due for every agent "
                             "that is due\n")
    assert run("run", AGENT, "--due").exit_code == 2
