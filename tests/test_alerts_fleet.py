"""A fleet-wide alert (the fleet's budget crossing warn_at) is filed under the fleet, in the
state home's alerts.jsonl, not under whichever agent happened to cross it."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from mythline_cli.cli import app

from helpers import lore_responder


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_the_fleet_budget_warning_goes_to_alerts_jsonl(home: Path, config, llm_server, tmp_path: Path) -> None:
    out = tmp_path / "alert.txt"
    # research + audit cost about $0.0011: past 10% of a $0.01 fleet cap, far from any agent cap.
    config(sections={"budget": {"daily_usd": 0.01}, "alerts": {"warn_at": 0.1, "command":
                     f'printf "%s|%s" "$MYTHLINE_ALERT_KIND" "$MYTHLINE_ALERT_AGENT" > {out}'}})
    llm_server.responder = lore_responder("world-npcs")
    assert CliRunner().invoke(app, ["run", "world-npcs"]).exit_code == 0
    [alert] = [e for e in lines(home / "alerts.jsonl") if e["event"] == "alert"]
    assert alert["kind"] == "budget-warn" and alert["agent"] is None
    assert "budget.daily_usd" in alert["message"] and alert["data"]["triggered_by"] == "world-npcs"
    agent_alerts = [e for e in lines(home / "agents" / "world-npcs" / "events.jsonl") if e["event"] == "alert"]
    assert agent_alerts == []
    assert out.read_text() == "budget-warn|"  # MYTHLINE_ALERT_AGENT is empty for a fleet alert
