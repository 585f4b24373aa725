"""``run --due`` under a one-minute cron: an agent runs on the tick its interval ends on."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from mythline_cli import paths
from mythline_cli.config import load_settings
from mythline_cli.due import due_agents

AGENT = "world-npcs"  # every 30m by default
TICK = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)


def ran(started: datetime, seconds: float) -> None:
    data = {"agent": AGENT, "state": "ok", "started": started.isoformat(),
            "finished": (started + timedelta(seconds=seconds)).isoformat(),
            "updated": (started + timedelta(seconds=seconds)).isoformat()}
    paths.heartbeat(AGENT).parent.mkdir(parents=True, exist_ok=True)
    paths.heartbeat(AGENT).write_text(json.dumps(data), encoding="utf-8")


def test_due_on_the_tick_the_interval_ends_on_not_one_later() -> None:
    settings = load_settings()
    # Started 0.9 s after its tick and took 40 s; this check runs 0.4 s after the tick 30m later.
    ran(TICK + timedelta(seconds=0.9), 40)
    assert AGENT in due_agents(settings, now=TICK + timedelta(minutes=30, seconds=0.4))


def test_not_due_a_tick_early() -> None:
    settings = load_settings()
    ran(TICK + timedelta(seconds=0.9), 40)
    assert AGENT not in due_agents(settings, now=TICK + timedelta(minutes=29, seconds=0.4))
