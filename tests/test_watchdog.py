"""``mythline watchdog``: one `down` alert per incident, one `recovered` alert, judged like status."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from freezegun import freeze_time
from typer.testing import CliRunner

from mythline_cli import paths
from mythline_cli.cli import app
from mythline_cli.config import load_settings
from mythline_cli.files import iter_jsonl
from mythline_cli.status import collect

from helpers import mythline
from webhook_server import WebhookServer

runner = CliRunner()
T0 = datetime(2026, 11, 25, 10, 0, tzinfo=timezone.utc)
AGENT = "world-npcs"  # interval 30m, grace 15m by default: down 45m after its last run
TOKEN = "T0KEN-in-the-path-0123456789"


@pytest.fixture
def hook(monkeypatch: pytest.MonkeyPatch) -> Iterator[WebhookServer]:
    with WebhookServer() as server:
        monkeypatch.setenv("MYTHLINE_TEST_WEBHOOK", server.url(f"/services/{TOKEN}"))
        Path("mythline.toml").write_text('[alerts]\nwebhook_url_env = "MYTHLINE_TEST_WEBHOOK"\nretries = 0\n',
                                         encoding="utf-8")
        yield server


def beat(agent: str, at: datetime, state: str = "ok", **extra: Any) -> None:
    """A heartbeat of a run that finished (or, with state="running", started) at ``at``."""
    data = {"agent": agent, "run_id": "r", "pid": 999_999_999, "state": state, "started": at.isoformat(),
            "updated": at.isoformat(), "finished": at.isoformat(), "consecutive_failures": 0,
            "topics": {"done": 1, "pending": 14, "quarantined": 0}}
    data.update(extra)
    path = paths.heartbeat(agent)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")


def watchdog(at: datetime, *args: str) -> Any:
    with freeze_time(at):
        return runner.invoke(app, ["watchdog", *args])


def alerts_of(agent: str = AGENT) -> list[dict[str, Any]]:
    return [e for e in iter_jsonl(paths.events(agent)) if e["event"] == "alert"]


def kinds(agent: str = AGENT) -> list[str]:
    return [e["kind"] for e in alerts_of(agent)]


def test_one_alert_per_incident_and_one_recovery(hook: WebhookServer) -> None:
    beat(AGENT, T0)

    result = watchdog(T0 + timedelta(minutes=44))  # late, not down yet
    assert (result.exit_code, result.stdout, kinds()) == (0, "", [])

    result = watchdog(T0 + timedelta(minutes=45, seconds=1))
    assert result.exit_code == 1
    assert kinds() == ["down"]
    [post] = hook.posts
    assert post["body"]["kind"] == "down" and post["body"]["agent"] == AGENT
    assert post["body"]["text"].startswith(f"[mythline] down · {AGENT}: {AGENT} is down: last run 2026-11-25 10:00 UTC")
    assert result.stdout.startswith(f"down {AGENT} is down")

    for minutes in (50, 120, 600):  # still down: a check (exit 1), but silent and no second alert
        result = watchdog(T0 + timedelta(minutes=minutes))
        assert (result.exit_code, result.stdout) == (1, "")
    assert kinds() == ["down"] and len(hook.posts) == 1

    back = T0 + timedelta(minutes=601)
    beat(AGENT, back)
    result = watchdog(back + timedelta(minutes=1))
    assert result.exit_code == 0
    assert kinds() == ["down", "recovered"]
    assert alerts_of()[-1]["message"] == f"{AGENT} recovered: now ok (down since 2026-11-25 10:45 UTC)"
    assert result.stdout.startswith(f"recovered {AGENT} recovered")
    assert [p["body"]["kind"] for p in hook.posts] == ["down", "recovered"]

    result = watchdog(back + timedelta(minutes=2))
    assert (result.exit_code, result.stdout, kinds()) == (0, "", ["down", "recovered"])

    result = watchdog(back + timedelta(minutes=46))  # down again later: a new incident
    assert result.exit_code == 1
    assert kinds() == ["down", "recovered", "down"]
    assert len(hook.posts) == 3
    assert json.loads(paths.alerts_state().read_text())["incidents"][AGENT]["since"] == back.isoformat()


def test_a_healthy_fleet_is_silent(hook: WebhookServer) -> None:
    for minutes, agent in enumerate(("world-npcs", "world-zones", "world-lore")):
        beat(agent, T0 + timedelta(minutes=minutes))
    result = watchdog(T0 + timedelta(minutes=10))
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "")
    assert hook.posts == []
    assert not paths.alerts_state().exists() or json.loads(paths.alerts_state().read_text())["incidents"] == {}


def test_a_hung_run_is_down(hook: WebhookServer) -> None:
    started = T0 - timedelta(hours=2)  # budget.run_timeout is 30m
    beat(AGENT, started, state="running", finished=None, pid=os.getpid(), updated=T0.isoformat())
    result = watchdog(T0)
    assert result.exit_code == 1
    [alert] = alerts_of()
    assert alert["kind"] == "down" and alert["data"]["note"] == "hung"
    assert alert["message"].startswith(f"{AGENT} is down (hung): its run started 2026-11-25 08:00 UTC")


def test_the_watchdog_agrees_with_status_on_every_state(hook: WebhookServer) -> None:
    now = T0 + timedelta(hours=3)
    beat("world-npcs", now - timedelta(minutes=46))                        # down
    beat("world-zones", now - timedelta(minutes=44))                       # late
    beat("world-lore", now - timedelta(hours=2), state="failed")           # failed, not down
    beat("world-items", now - timedelta(hours=5), state="over-budget")     # down
    beat("quest-chains", now - timedelta(hours=5), state="ok")             # disabled: never down
    Path("mythline.toml").write_text(Path("mythline.toml").read_text() + "[agents.quest-chains]\nenabled = false\n",
                                     encoding="utf-8")
    with freeze_time(now):
        expected = collect(load_settings())["failing"]
        result = runner.invoke(app, ["watchdog", "--json"])
    report = json.loads(result.stdout)
    down = sorted(report["down"])
    assert down == ["world-items", "world-npcs"]
    assert sorted(a for a in expected if a != "world-lore") == down
    assert sorted(a["agent"] for a in report["sent"]) == down
    assert result.exit_code == 1


def test_a_pause_is_a_recovery_and_the_same_silence_after_it_a_new_incident(hook: WebhookServer) -> None:
    beat(AGENT, T0)
    watchdog(T0 + timedelta(hours=1))
    paths.paused_flag(AGENT).write_text("maintenance", encoding="utf-8")
    assert watchdog(T0 + timedelta(hours=2)).exit_code == 0
    paths.paused_flag(AGENT).unlink()
    assert watchdog(T0 + timedelta(hours=3)).exit_code == 1
    assert kinds() == ["down", "recovered", "down"]
    assert alerts_of()[1]["message"] == f"{AGENT} recovered: now paused (maintenance) (down since 2026-11-25 11:00 UTC)"


def test_json_reports_what_was_sent(hook: WebhookServer) -> None:
    beat(AGENT, T0)
    report = json.loads(watchdog(T0 + timedelta(hours=1), "--json").stdout)
    assert report["down"] == [AGENT]
    [sent] = report["sent"]
    assert sent["kind"] == "down" and sent["webhook"] == {"ok": True, "attempts": 1}
    report = json.loads(watchdog(T0 + timedelta(hours=1, minutes=5), "--json").stdout)
    assert report["down"] == [AGENT] and report["sent"] == []


def test_a_failing_webhook_is_reported_without_the_url(hook: WebhookServer) -> None:
    hook.enqueue(500)
    beat(AGENT, T0)
    result = watchdog(T0 + timedelta(hours=1))
    assert result.exit_code == 1
    assert "(webhook failed: HTTP 500)" in result.stdout
    assert TOKEN not in result.stdout + result.stderr
    home = Path(os.environ["MYTHLINE_HOME"])
    for path in home.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


def test_a_bad_config_is_exit_2() -> None:
    Path("mythline.toml").write_text("[alerts]\nretries = 99\n", encoding="utf-8")
    result = runner.invoke(app, ["watchdog"])
    assert result.exit_code == 2
    assert result.stderr.startswith("mythline: ") and "alerts.retries" in result.stderr


def test_two_watchdogs_at_once_alert_once(hook: WebhookServer) -> None:
    beat(AGENT, datetime.now(timezone.utc) - timedelta(days=1))
    procs = [subprocess.Popen([sys.executable, "-m", "mythline_cli", "watchdog"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [1, 1, 1], outputs
    assert kinds() == ["down"] and len(hook.posts) == 1
    assert sum(1 for out, _ in outputs if out.startswith("down ")) == 1


def test_the_real_command_under_cron_prints_only_what_it_sent(hook: WebhookServer) -> None:
    beat(AGENT, datetime.now(timezone.utc) - timedelta(days=1))
    first = mythline("watchdog")
    second = mythline("watchdog")
    assert first.returncode == 1 and first.stdout.startswith(f"down {AGENT} is down") and first.stderr == ""
    assert (second.returncode, second.stdout, second.stderr) == (1, "", "")


# -- runs that cannot start, schedules that never ran ------------------------------------------

def failed_start(at: datetime, error: str = "MYTHLINE_TEST_KEY is not set; export your API key in it") -> None:
    from mythline_cli import launch

    assert launch.record_start_failure(AGENT, error, 2, configured=True, now=at) is not None


def test_a_run_that_cannot_start_is_named_with_its_cause_and_log(hook: WebhookServer) -> None:
    beat(AGENT, T0)
    paths.log_dir().mkdir(parents=True)
    paths.agent_log(AGENT).write_text("mythline: MYTHLINE_TEST_KEY is not set\n", encoding="utf-8")
    for minutes in (30, 35, 40):
        failed_start(T0 + timedelta(minutes=minutes))
    # Three failed starts: the streak alert the cycle itself never gets to send.
    result = watchdog(T0 + timedelta(minutes=41))
    assert result.exit_code == 0
    assert kinds() == ["failures"]
    assert "could not start 3 times in a row: MYTHLINE_TEST_KEY is not set" in alerts_of()[0]["message"]
    # Past interval + grace since the last real run: down, and the alert says why and where to look.
    result = watchdog(T0 + timedelta(minutes=46))
    assert result.exit_code == 1 and kinds() == ["failures", "down"]
    message = alerts_of()[1]["message"]
    assert message.startswith(f"{AGENT} is down: the scheduler starts it, but it cannot start (3 time(s) since "
                              "2026-11-25 10:30 UTC")
    assert "MYTHLINE_TEST_KEY is not set" in message and str(paths.agent_log(AGENT)) in message
    assert "still starts it" not in message
    # More failed starts are the same incident and the same streak: nothing more is sent.
    failed_start(T0 + timedelta(minutes=50))
    assert watchdog(T0 + timedelta(minutes=51)).exit_code == 1 and kinds() == ["failures", "down"]


def test_a_down_agents_alert_carries_its_last_error(hook: WebhookServer) -> None:
    beat(AGENT, T0, state="over-budget", last_error="agent world-npcs is over its day cap")
    watchdog(T0 + timedelta(hours=1))
    assert "last error: agent world-npcs is over its day cap" in alerts_of()[0]["message"]


def test_never_run_becomes_late_then_down_once_the_schedule_is_installed(hook: WebhookServer) -> None:
    from mythline_cli import launch

    launch.schedule_changed([AGENT, "world-zones"], now=T0)
    with freeze_time(T0 + timedelta(minutes=10)):
        data = {r["agent"]: r for r in collect(load_settings())["agents"]}
    assert data[AGENT]["state"] == "never-run" and data[AGENT]["next_due"] == (T0 + timedelta(minutes=30)).isoformat()
    assert data["world-lore"]["state"] == "never-run" and data["world-lore"]["next_due"] is None  # not scheduled
    with freeze_time(T0 + timedelta(minutes=31)):
        assert {r["agent"]: r for r in collect(load_settings())["agents"]}[AGENT]["state"] == "late"
    result = watchdog(T0 + timedelta(minutes=46))
    assert result.exit_code == 1 and kinds() == ["down"]
    assert "it has never run, though its schedule was installed" in alerts_of()[0]["message"]
    # A re-install keeps the first install time; a removal forgets the agent.
    launch.schedule_changed([AGENT], now=T0 + timedelta(hours=1))
    assert launch.installed_agents() == {AGENT: T0}
    launch.schedule_changed([AGENT], removed=True, partial=True)
    assert launch.installed_agents() == {}


def test_schedule_cron_install_notes_the_install_time(fake_crontab: Path) -> None:
    from mythline_cli import launch

    assert mythline("schedule", "cron", "--install").returncode == 0
    installed = launch.installed_agents()
    assert AGENT in installed and set(installed) == {a.name for a in load_settings().agents() if a.enabled}
    assert mythline("schedule", "cron", "--uninstall").returncode == 0
    assert launch.installed_agents() == {}


def test_resume_after_a_long_pause_is_no_down_alert(hook: WebhookServer) -> None:
    """The same second cron starts the agent after `resume`, the watchdog must not call it down."""
    beat(AGENT, T0)
    with freeze_time(T0 + timedelta(minutes=5)):
        assert runner.invoke(app, ["pause", AGENT]).exit_code == 0
    with freeze_time(T0 + timedelta(days=2)):
        assert runner.invoke(app, ["resume", AGENT]).exit_code == 0
    # 25 minutes of the interval were used before the pause; the pause itself does not count.
    assert watchdog(T0 + timedelta(days=2, seconds=1)).exit_code == 0
    assert watchdog(T0 + timedelta(days=2, minutes=20)).exit_code == 0
    assert kinds() == []
    # Silent for longer than the rest of the interval + grace after the resume: down after all.
    assert watchdog(T0 + timedelta(days=2, minutes=41)).exit_code == 1
    assert kinds() == ["down"]


def test_json_names_every_failing_agents_cause_and_log(hook: WebhookServer) -> None:
    beat(AGENT, T0)
    paths.log_dir().mkdir(parents=True)
    paths.agent_log(AGENT).write_text("mythline: MYTHLINE_TEST_KEY is not set\n", encoding="utf-8")
    failed_start(T0 + timedelta(minutes=30))
    beat("world-zones", T0, state="failed", last_error="world-zones: HTTP 401 from the provider")
    report = json.loads(watchdog(T0 + timedelta(minutes=31), "--json").stdout)
    failing = {f["agent"]: f for f in report["failing"]}
    assert set(failing) == {AGENT, "world-zones"} and report["down"] == []
    assert failing[AGENT]["note"] == "cannot start" and "MYTHLINE_TEST_KEY is not set" in failing[AGENT]["error"]
    assert failing[AGENT]["log"] == str(paths.agent_log(AGENT))
    assert failing["world-zones"]["error"] == "world-zones: HTTP 401 from the provider"
