"""The cycle raises alerts: quarantines, failure streaks, and budgets crossing warn_at."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from mythline_cli.cli import app

from helpers import lore_responder
from llm_server import error

AGENT = "world-npcs"


def alerts(home: Path, agent: str = AGENT) -> list[dict]:
    path = home / "agents" / agent / "events.jsonl"
    return [e for e in map(json.loads, path.read_text().splitlines()) if e["event"] == "alert"]


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def test_quarantine_alerts_once_and_runs_the_command(home, config, llm_server, tmp_path):
    out = tmp_path / "alert.txt"
    config(sections={"defaults": {"max_attempts": 1},
                     "alerts": {"command": f'printf "%s|%s" "$MYTHLINE_ALERT_KIND" "$MYTHLINE_ALERT_AGENT" > {out}'}})
    llm_server.responder = lore_responder(AGENT, score=0.1, issues=["invented facts"])
    assert run("run", AGENT).exit_code == 0
    (alert,) = alerts(home)
    assert alert["kind"] == "quarantine" and "'Thrall' quarantined" in alert["message"]
    assert out.read_text() == "quarantine|world-npcs"


def test_a_failure_streak_alerts_when_it_reaches_the_threshold(home, config, llm_server):
    config(provider={"max_attempts": 1}, sections={"alerts": {"consecutive_failures": 2}})
    llm_server.default = error(400, "bad request")
    assert run("run", AGENT).exit_code == 1
    assert alerts(home) == []
    assert run("run", AGENT, "--force").exit_code == 1
    (alert,) = alerts(home)
    assert alert["kind"] == "failures" and "failed 2 runs in a row" in alert["message"]
    assert run("run", AGENT, "--force").exit_code == 1
    assert len(alerts(home)) == 1  # once per streak


def test_crossing_warn_at_alerts_once_per_window(home, config, llm_server):
    # research + audit cost about $0.0008 + $0.00034 at $1 / $2 per million tokens; each call's
    # estimate (schema included) is near $0.01, so the cap leaves room for a second run.
    config(sections={"defaults": {"daily_usd": 0.05}, "alerts": {"warn_at": 0.02}})
    llm_server.responder = lore_responder(AGENT)
    assert run("run", AGENT).exit_code == 0
    assert run("run", AGENT).exit_code == 0
    warns = [a for a in alerts(home) if a["kind"] == "budget-warn"]
    assert len(warns) == 1
    assert "agents.world-npcs.daily_usd" in warns[0]["message"]
