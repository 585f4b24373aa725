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

from helpers import mythline
from mythline_cli import paths
from mythline_cli.cli import app
from mythline_cli.files import iter_jsonl
from mythline_cli.status import collect
from mythline_cli.config import load_settings
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
