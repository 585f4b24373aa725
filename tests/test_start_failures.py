"""A scheduled run that ends before its heartbeat (no key, a bad config, an unknown agent, a
refused command line) is still seen by ``status``, ``logs`` and ``watchdog``, and never
touches the files of a run of the same agent that is in flight."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

from mythline_cli import launch, paths

from helpers import KEY_ENV, TEST_KEY, lore_responder, mythline
from llm_server import Reply

AGENT = "world-npcs"


def status(*args: str, env: dict[str, str] | None = None) -> tuple[int, dict]:
    result = mythline("status", "--json", *args, env=env)
    return result.returncode, json.loads(result.stdout)


def row(data: dict, agent: str = AGENT) -> dict:
    return next(r for r in data["agents"] if r["agent"] == agent)


def no_key() -> dict[str, str]:
    env = dict(os.environ)
    env.pop(KEY_ENV, None)
    return env


def run_without_key(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mythline_cli", "run", AGENT, *args], capture_output=True,
                          text=True, env=no_key(), timeout=60)


def test_a_missing_key_is_failed_in_status_with_its_cause_and_log(home: Path, config) -> None:
    first = run_without_key()
    assert first.returncode == 2 and f"{KEY_ENV} is not set" in first.stderr
    assert not paths.heartbeat(AGENT).exists()
    run_without_key()
    code, data = status()
    assert code == 1 and data["failing"] == [AGENT]
    r = row(data)
    assert (r["state"], r["note"], r["consecutive_failures"]) == ("failed", "cannot start", 2)
    assert r["start_failure"]["exit_code"] == 2 and r["start_failure"]["count"] == 2
    assert f"{KEY_ENV} is not set" in r["start_failure"]["error"] and f"{KEY_ENV} is not set" in r["last_error"]
    table = mythline("status")
    assert table.returncode == 1 and "failed (cannot start)" in table.stdout
    assert f"{AGENT}: cannot start (2 time(s) since" in table.stdout


def test_logs_show_the_start_failure(home: Path, config) -> None:
    run_without_key()
    result = mythline("logs", AGENT)
    assert result.returncode == 0
    assert "start-failed" in result.stdout and f"{KEY_ENV} is not set" in result.stdout


def test_a_later_good_run_clears_it(home: Path, config, llm_server) -> None:
    run_without_key()
    llm_server.responder = lore_responder(AGENT)
    assert mythline("run", AGENT).returncode == 0
    code, data = status()
    assert code == 0 and row(data)["state"] == "ok" and row(data)["start_failure"] is None


def test_the_full_path_records_too(home: Path, config) -> None:
    # --json is not on the fast path's list when combined with an unknown option: Typer refuses.
    refused = mythline("run", AGENT, "--jobs", "0")
    assert refused.returncode == 2
    r = row(status()[1])
    assert r["state"] == "failed" and r["note"] == "cannot start"
    # The cause itself, as the refused run printed it, not a pointer to the log.
    cause = refused.stderr.strip().removeprefix("mythline: ")
    assert "refused as a usage error" in r["last_error"] and cause in r["last_error"]


def test_an_unknown_agent_is_a_fleet_start_failure(home: Path, config) -> None:
    result = mythline("run", "old-agent")
    assert result.returncode == 2
    assert not paths.agent_dir("old-agent").exists()  # no folder for a name the config does not know
    code, data = status()
    [stray] = data["start_failures"]
    assert stray["agent"] == "old-agent" and "old-agent" in stray["error"]
    assert "old-agent" in mythline("status").stdout


def test_a_typo_from_a_terminal_suggests_the_name_and_names_no_log_that_is_not_there(home: Path, config) -> None:
    result = mythline("run", "world-npx")
    assert result.returncode == 2
    assert result.stderr.startswith("mythline: unknown agent 'world-npx' (did you mean world-npcs?); the fleet is: ")
    [stray] = status()[1]["start_failures"]
    assert stray["agent"] == "world-npx" and stray["log"] is None
    assert not (home / "logs" / "world-npx.log").exists()
    table = mythline("status", env={"COLUMNS": "400"}).stdout
    line = next(ln for ln in table.splitlines() if "could not start" in ln)
    assert "world-npx.log" not in line and "(log: " not in line


def test_a_typo_in_a_crontab_line_names_the_log_cron_wrote_to(home: Path, config) -> None:
    # Cron's redirect creates the file before the run starts: that log is there, so it is named.
    log = home / "logs" / "world-npx.log"
    log.parent.mkdir(parents=True)
    with log.open("a") as out:
        result = subprocess.run([sys.executable, "-m", "mythline_cli", "run", "world-npx"], stdout=out,
                                stderr=subprocess.STDOUT, timeout=60)
    assert result.returncode == 2
    assert "did you mean world-npcs?" in log.read_text(encoding="utf-8")
    [stray] = status()[1]["start_failures"]
    assert stray["log"] == str(log)
    assert f"(log: {log})" in mythline("status", env={"COLUMNS": "400"}).stdout


def test_a_name_far_from_any_agent_gets_no_guess(home: Path, config) -> None:
    result = mythline("run", "zz-unrelated")
    assert result.returncode == 2 and "did you mean" not in result.stderr


def test_a_bad_config_is_recorded_under_an_agent_that_ran_before(home: Path, tmp_path: Path) -> None:
    bad = tmp_path / "broken.toml"
    bad.write_text("[provider\n", encoding="utf-8")
    assert mythline("--config", str(bad), "run", AGENT).returncode == 2
    # Never run here: no folder is made for a name the config could not confirm.
    assert not paths.agent_dir(AGENT).exists()
    [entry] = [json.loads(line) for line in launch.fleet_failures_path().read_text().splitlines()]
    assert entry["agent"] == AGENT and "broken.toml" in entry["error"]
    paths.agent_dir(AGENT).mkdir(parents=True)
    assert mythline("--config", str(bad), "run", AGENT).returncode == 2
    found = launch.latest_start_failure(AGENT)
    assert found is not None and found["exit_code"] == 2 and "broken.toml" in found["error"]


def test_the_key_never_reaches_the_record(home: Path, config) -> None:
    # A pasted key where the agent's name goes: the record masks it like the stderr line does.
    result = mythline("run", TEST_KEY)
    assert result.returncode == 2 and "[redacted]" in result.stderr
    [stray] = status()[1]["start_failures"]
    assert "[redacted]" in stray["error"]
    for path in home.rglob("*"):
        if path.is_file():
            assert TEST_KEY.encode() not in path.read_bytes()


def test_a_start_failure_never_touches_a_running_agents_files(home: Path, config, llm_server) -> None:
    answer = lore_responder(AGENT)
    entered, release = threading.Event(), threading.Event()

    def held(request: dict) -> Reply:
        entered.set()
        release.wait(30)  # the run stays in flight, its lock held, while the second one starts
        return answer(request)

    llm_server.responder = held
    proc = subprocess.Popen([sys.executable, "-m", "mythline_cli", "run", AGENT], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert entered.wait(30)
        before = {p.name: p.read_bytes() for p in (paths.heartbeat(AGENT), paths.checkpoint(AGENT)) if p.exists()}
        assert run_without_key().returncode == 2
        after = {p.name: p.read_bytes() for p in (paths.heartbeat(AGENT), paths.checkpoint(AGENT)) if p.exists()}
        assert after == before and "heartbeat.json" in before
        assert row(status()[1])["state"] == "running"  # the run in flight is what status shows
    finally:
        release.set()
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert row(status()[1])["state"] == "ok"  # its heartbeat is newer than the failed start


def test_down_once_the_silence_outlasts_interval_and_grace(home: Path, config) -> None:
    run_without_key()
    from mythline_cli.config import load_settings
    from mythline_cli.status import collect

    now = datetime.now(timezone.utc) + timedelta(minutes=46)  # world-npcs: every 30m, grace 15m
    r = row(collect(load_settings(), now=now))
    assert (r["state"], r["note"]) == ("down", "cannot start")
