"""``mythline status``: every state, the exit code, the table, and damaged heartbeats."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from freezegun import freeze_time
from typer.testing import CliRunner

from mythline_cli import paths
from mythline_cli.cli import app
from mythline_cli.config import load_settings
from mythline_cli.fleet.topics import TOPICS
from mythline_cli.status import agent_state, collect

from helpers import mythline

runner = CliRunner()
AGENTS = list(TOPICS)


def iso(moment: datetime) -> str:
    return moment.isoformat()


def write_heartbeat(agent: str, data: dict[str, Any] | str | bytes) -> Path:
    path = paths.heartbeat(agent)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        path.write_bytes(data)
    elif isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_text(json.dumps(data), encoding="utf-8")
    return path


def finished(agent: str, state: str, ago: timedelta, now: datetime | None = None, **extra: Any) -> None:
    """A heartbeat of a run that ended ``ago`` before now."""
    now = now or datetime.now(timezone.utc)
    end = now - ago
    data = {"agent": agent, "run_id": "r1", "pid": 999_999_999, "state": state, "step": None, "topic": "Thrall",
            "started": iso(end - timedelta(seconds=20)), "updated": iso(end), "finished": iso(end),
            "last_success": iso(end) if state == "ok" else None, "last_error": None, "last_outcome": None,
            "consecutive_failures": 0, "duration_s": 20.0, "tokens_today": 0, "usd_today": 0.0,
            "topics": {"done": 2, "pending": 13, "quarantined": 1}}
    data.update(extra)
    write_heartbeat(agent, data)


def running(agent: str, started_ago: timedelta, *, pid: int | None = None, updated_ago: timedelta = timedelta(0),
            **extra: Any) -> None:
    now = datetime.now(timezone.utc)
    data = {"agent": agent, "run_id": "r2", "pid": os.getpid() if pid is None else pid, "state": "running",
            "step": "research", "topic": "Thrall", "started": iso(now - started_ago),
            "updated": iso(now - updated_ago), "finished": None, "consecutive_failures": 0}
    data.update(extra)
    write_heartbeat(agent, data)


def pause(agent: str, note: str = "") -> None:
    path = paths.agent_dir(agent) / "paused"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(note, encoding="utf-8")


def status_json(*args: str) -> tuple[int, dict[str, Any]]:
    result = runner.invoke(app, ["status", "--json", *args])
    assert result.stderr == "", result.stderr
    return result.exit_code, json.loads(result.stdout)


def rows(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["agent"]: row for row in data["agents"]}


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# -- every state through the command ---------------------------------------------------------

def test_all_never_run_exits_0() -> None:
    code, data = status_json()
    assert code == 0
    assert [r["agent"] for r in data["agents"]] == AGENTS
    assert {r["state"] for r in data["agents"]} == {"never-run"}
    assert data["failing"] == []
    assert data["home"] == os.environ["MYTHLINE_HOME"]
    row = rows(data)["world-zones"]
    assert row["topics"] == {"done": 0, "pending": len(TOPICS["world-zones"]), "quarantined": 0}
    assert row["last_run"] is None and row["next_due"] is None


def test_every_state_at_once() -> None:
    minutes = lambda n: timedelta(minutes=n)  # noqa: E731
    finished("world-zones", "ok", minutes(5))
    running("world-npcs", minutes(1))
    finished("world-factions", "ok", minutes(40))          # due 10m ago, grace 15m
    finished("world-lore", "ok", minutes(120))             # past due + grace
    running("world-items", minutes(120), updated_ago=minutes(1))  # older than run_timeout (30m)
    finished("quest-chains", "failed", minutes(2), last_error="quest-chains: HTTP 500", consecutive_failures=3)
    finished("character-archetypes", "ok", minutes(5))
    pause("character-archetypes", "manual stop: bad sources\nsecond line")
    finished("faction-dynamics", "over-budget", minutes(3), last_error="fleet is over its day cap")
    finished("narrative-history", "queue-empty", minutes(5))
    code, data = status_json()
    states = {name: (row["state"], row["note"]) for name, row in rows(data).items()}
    assert states == {
        "world-zones": ("ok", None),
        "world-npcs": ("running", None),
        "world-factions": ("late", None),
        "world-lore": ("down", None),
        "world-items": ("down", "hung"),
        "quest-chains": ("failed", None),
        "character-archetypes": ("paused", "manual stop: bad sources"),
        "faction-dynamics": ("over-budget", None),
        "narrative-history": ("queue-empty", None),
        "lore-crosscheck": ("never-run", None),
    }
    assert code == 1
    assert sorted(data["failing"]) == ["quest-chains", "world-items", "world-lore"]
    by = rows(data)
    assert by["quest-chains"]["last_error"] == "quest-chains: HTTP 500"
    assert by["quest-chains"]["consecutive_failures"] == 3
    assert by["faction-dynamics"]["last_error"] == "fleet is over its day cap"
    assert by["world-zones"]["last_error"] is None
    assert by["world-zones"]["topics"] == {"done": 2, "pending": len(TOPICS["world-zones"]) - 3, "quarantined": 1}
    due = datetime.fromisoformat(by["world-zones"]["next_due"])
    last = datetime.fromisoformat(by["world-zones"]["last_run"])
    assert due - last == timedelta(minutes=30)


@pytest.mark.parametrize("state,ago,code", [
    ("ok", timedelta(minutes=1), 0),
    ("late", timedelta(minutes=35), 0),
    ("down", timedelta(hours=3), 1),
    ("failed", timedelta(minutes=1), 1),
    ("over-budget", timedelta(minutes=1), 0),
    ("queue-empty", timedelta(minutes=1), 0),
])
def test_exit_code_per_state(state: str, ago: timedelta, code: int) -> None:
    written = state if state in ("failed", "over-budget", "queue-empty") else "ok"
    finished("world-lore", written, ago)
    exit_code, data = status_json()
    assert rows(data)["world-lore"]["state"] == state
    assert exit_code == code
    assert data["failing"] == (["world-lore"] if code else [])


@pytest.mark.parametrize("written", ["over-budget", "queue-empty"])
def test_silent_over_budget_or_empty_agents_go_down(written: str) -> None:
    # They still run on schedule; two days of silence means the scheduler stopped.
    finished("world-lore", written, timedelta(days=2))
    exit_code, data = status_json()
    assert rows(data)["world-lore"]["state"] == "down"
    assert exit_code == 1


def test_running_is_not_failing() -> None:
    running("world-npcs", timedelta(minutes=10))
    code, data = status_json()
    assert rows(data)["world-npcs"]["state"] == "running" and code == 0


def test_hung_is_measured_from_the_start_of_the_run() -> None:
    # Heartbeats still arriving do not make a run that began long ago healthy.
    running("world-npcs", timedelta(minutes=31), updated_ago=timedelta(seconds=1))
    code, data = status_json()
    row = rows(data)["world-npcs"]
    assert (row["state"], row["note"]) == ("down", "hung") and code == 1


def test_run_timeout_comes_from_the_config() -> None:
    Path("mythline.toml").write_text('[budget]\nrun_timeout = "3h"\n', encoding="utf-8")
    running("world-npcs", timedelta(hours=2))
    assert rows(status_json()[1])["world-npcs"]["state"] == "running"


def test_running_with_a_dead_pid_is_failed() -> None:
    pid = dead_pid()
    running("world-npcs", timedelta(minutes=2), pid=pid)
    code, data = status_json()
    row = rows(data)["world-npcs"]
    assert row["state"] == "failed" and str(pid) in row["note"] and code == 1


def test_paused_wins_over_a_down_heartbeat() -> None:
    finished("world-lore", "ok", timedelta(days=3))
    pause("world-lore")
    code, data = status_json()
    row = rows(data)["world-lore"]
    assert row["state"] == "paused" and row["note"] is None and code == 0


def test_paused_without_a_heartbeat() -> None:
    pause("world-items", "  \n")
    assert rows(status_json()[1])["world-items"]["state"] == "paused"


def test_agent_interval_and_grace_come_from_the_config() -> None:
    Path("mythline.toml").write_text('[defaults]\ngrace = "1h"\n[agents.world-npcs]\ninterval = "2h"\n',
                                     encoding="utf-8")
    finished("world-npcs", "ok", timedelta(minutes=100))    # due in 20m
    finished("world-zones", "ok", timedelta(minutes=80))    # due 50m ago, grace 1h
    finished("world-lore", "ok", timedelta(minutes=100))    # due 70m ago, grace 1h
    by = rows(status_json()[1])
    assert by["world-npcs"]["state"] == "ok"
    assert by["world-zones"]["state"] == "late"
    assert by["world-lore"]["state"] == "down"


def test_disabled_agent_is_never_late_or_down() -> None:
    Path("mythline.toml").write_text("[agents.world-lore]\nenabled = false\n", encoding="utf-8")
    finished("world-lore", "ok", timedelta(days=5))
    code, data = status_json()
    row = rows(data)["world-lore"]
    assert (row["state"], row["note"], row["next_due"]) == ("ok", "disabled", None)
    assert code == 0


# -- damaged heartbeats ------------------------------------------------------------------------

@pytest.mark.parametrize("content", [b"{not json", b"", b"\xff\xfe\x00", b"   \n"],
                         ids=["truncated", "empty", "binary", "blank"])
def test_corrupt_heartbeat_is_reported_not_fatal(content: bytes) -> None:
    path = write_heartbeat("world-npcs", content)
    code, data = status_json()
    row = rows(data)["world-npcs"]
    assert row["state"] == "failed" and "unreadable" in row["last_error"]
    assert code == 1
    assert path.read_bytes() == content  # status only reads
    assert rows(data)["world-zones"]["state"] == "never-run"


@pytest.mark.parametrize("content", [
    [1, 2, 3],
    "just a string",
    {"state": "ok", "finished": "2020-01-01T00:00:00"},  # no UTC offset
    {"state": "ok", "finished": 12345, "started": None, "topics": "many", "consecutive_failures": "x"},
    {"state": "running", "started": "yesterday", "pid": "abc"},
    {"state": ["ok"], "finished": "not a time"},
    {"state": "exploded", "finished": datetime.now(timezone.utc).isoformat()},
    {"state": "ok", "topics": {"done": "lots", "quarantined": None}, "last_error": {"deep": 1}},
    {},
], ids=["list", "string", "naive time", "wrong types", "bad running", "state list", "unknown state",
        "bad counts", "empty object"])
def test_odd_heartbeat_does_not_crash_status(content: Any) -> None:
    write_heartbeat("world-npcs", content)
    result = runner.invoke(app, ["status", "--json"])
    assert result.exit_code in (0, 1), result.stderr
    assert result.stderr == ""
    row = rows(json.loads(result.stdout))["world-npcs"]
    assert row["state"] in ("never-run", "ok", "running", "late", "down", "failed")
    assert isinstance(row["topics"]["done"], int)
    table = runner.invoke(app, ["status"])
    assert table.exit_code == result.exit_code and table.stderr == ""
    assert "world-npcs" in table.stdout


def test_naive_timestamp_is_read_as_utc() -> None:
    past = (datetime.now(timezone.utc) - timedelta(days=2)).replace(tzinfo=None)
    write_heartbeat("world-npcs", {"state": "ok", "finished": past.isoformat()})
    code, data = status_json()
    assert rows(data)["world-npcs"]["state"] == "down" and code == 1


def test_unknown_state_counts_as_failed() -> None:
    finished("world-npcs", "exploded", timedelta(minutes=1))
    code, data = status_json()
    assert rows(data)["world-npcs"]["state"] == "failed" and code == 1


def test_corrupt_ledger_still_shows_heartbeats() -> None:
    finished("world-zones", "ok", timedelta(minutes=1))
    paths.ledger().parent.mkdir(parents=True, exist_ok=True)
    paths.ledger().write_text("{broken", encoding="utf-8")
    result = runner.invoke(app, ["status", "--json"])
    data = json.loads(result.stdout)
    assert rows(data)["world-zones"]["state"] == "ok"
    assert data["ledger_error"]


# -- the human table ---------------------------------------------------------------------------

def test_table_lists_every_agent_and_exit_0() -> None:
    finished("world-zones", "ok", timedelta(minutes=5))
    result = runner.invoke(app, ["status"])
    assert result.exit_code == 0, result.stderr
    for name in AGENTS:
        assert name in result.stdout
    assert "never-run" in result.stdout and "ok" in result.stdout
    assert "5m ago" in result.stdout
    assert "fleet today" in result.stdout


def test_table_shows_failures_and_exits_1() -> None:
    finished("quest-chains", "failed", timedelta(minutes=2), last_error="quest-chains: provider said no")
    running("world-items", timedelta(hours=2))
    result = runner.invoke(app, ["status"])
    assert result.exit_code == 1
    assert "quest-chains: provider said no" in result.stdout
    assert "quest-chains: quest-chains:" not in result.stdout  # the agent's name once
    assert "down (hung)" in result.stdout


def test_status_in_a_real_process() -> None:
    finished("world-lore", "ok", timedelta(hours=5))
    proc = mythline("status")
    assert proc.returncode == 1
    assert "world-lore" in proc.stdout and "down" in proc.stdout
    assert proc.stderr == ""
    proc = mythline("status", "--json")
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["failing"] == ["world-lore"]


# -- frozen clock ------------------------------------------------------------------------------

@freeze_time("2030-06-01 12:00:00+00:00")
def test_status_under_a_frozen_clock() -> None:
    now = datetime(2030, 6, 1, 12, tzinfo=timezone.utc)
    finished("world-zones", "ok", timedelta(minutes=30), now=now)               # exactly due: ok
    finished("world-npcs", "ok", timedelta(minutes=30, seconds=1), now=now)     # 1s past due: late
    finished("world-lore", "ok", timedelta(minutes=45), now=now)                # exactly due + grace: late
    finished("world-items", "ok", timedelta(minutes=45, seconds=1), now=now)    # 1s past: down
    code, data = status_json()
    by = rows(data)
    assert data["now"] == now.isoformat()
    assert [by[a]["state"] for a in ("world-zones", "world-npcs", "world-lore", "world-items")] == [
        "ok", "late", "late", "down"]
    assert by["world-zones"]["next_due"] == now.isoformat()
    assert code == 1


# -- the state function itself -----------------------------------------------------------------

NOW = datetime(2030, 1, 1, 12, tzinfo=timezone.utc)


def judge(hb: dict[str, Any] | None, **kw: Any) -> tuple[str, datetime | None, str | None]:
    args = {"interval": 3600.0, "grace": 600.0, "run_timeout": 1800.0, "now": NOW, "paused": False}
    args.update(kw)
    return agent_state(hb, **args)


def test_agent_state_boundaries() -> None:
    def ok_at(ago: timedelta) -> dict[str, Any]:
        return {"state": "ok", "finished": iso(NOW - ago)}
    assert judge(ok_at(timedelta(hours=1)))[0] == "ok"
    assert judge(ok_at(timedelta(hours=1, seconds=1)))[0] == "late"
    assert judge(ok_at(timedelta(hours=1, minutes=10)))[0] == "late"
    assert judge(ok_at(timedelta(hours=1, minutes=10, seconds=1)))[0] == "down"
    assert judge(ok_at(timedelta(minutes=1)))[1] == NOW + timedelta(minutes=59)


def test_agent_state_running_boundaries() -> None:
    def run_for(age: timedelta) -> dict[str, Any]:
        return {"state": "running", "started": iso(NOW - age), "updated": iso(NOW), "pid": os.getpid()}
    assert judge(run_for(timedelta(minutes=30)))[0] == "running"
    assert judge(run_for(timedelta(minutes=30, seconds=1)))[::2] == ("down", "hung")


def test_agent_state_paused_and_never_run() -> None:
    assert judge(None) == ("never-run", None, None)
    assert judge(None, paused=True)[0] == "paused"
    assert judge({"state": "failed"}, paused=True)[0] == "paused"


def test_collect_uses_the_given_clock() -> None:
    finished("world-zones", "ok", timedelta(minutes=20), now=NOW)
    data = collect(load_settings(), now=NOW + timedelta(hours=1))
    assert rows(data)["world-zones"]["state"] == "down"
    data = collect(load_settings(), now=NOW)
    assert rows(data)["world-zones"]["state"] == "ok"


def test_table_shows_brackets_literally() -> None:
    message = 'no price known for model \'m\'; add [provider.prices."m"] to mythline.toml [/b]'
    finished("world-items", "over-budget", timedelta(minutes=1), last_error=message)
    pause("world-lore", "[/red] [bold]stop[/bold]")
    result = runner.invoke(app, ["status"])
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    assert message in " ".join(result.stdout.split())
    assert "[/red] [bold]stop[/bold]" in result.stdout


# -- the fleet footer ---------------------------------------------------------------------------

def test_the_fleet_footer_counts_every_agents_spend() -> None:
    """status's footer is the ledger's fleet part: built-in and custom agents, settled and reserved."""
    from mythline_cli.config import parse_config
    from mythline_cli.ledger import Ledger
    from mythline_cli.pricing import Estimate

    settings = parse_config({"budget": {"monthly_usd": 40, "daily_tokens": 900_000},
                             "agents": {"eastern-zones": {"kind": "world-zones", "topics": ["Durotar"]}}})
    ledger = Ledger(settings)
    for i, name in enumerate(("world-npcs", "eastern-zones", "world-lore")):
        res = ledger.reserve(settings.agent(name), Estimate(1000 * (i + 1), 500, 0.01 * (i + 1), "chars", None),
                             run_id=f"r{i}", step="research")
        ledger.settle(res, usd=0.004 * (i + 1), tokens=700 * (i + 1))
    ledger.reserve(settings.agent("eastern-zones"), Estimate(2000, 500, 0.02, "chars", None), run_id="open",
                   step="audit")
    data = ledger.snapshot()
    fleet = ledger.fleet(data)
    assert fleet["day"]["tokens"] == {"spent": 700 * 6, "reserved": 2500, "cap": 900_000}
    assert fleet["month"]["usd"]["cap"] == 40
    out = collect(settings)
    assert out["fleet"] == fleet and out["open_reservations"] == 1
    assert {r["agent"]: r["tokens_today"] for r in out["agents"]}["eastern-zones"] == 1400
