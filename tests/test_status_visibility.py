"""What status says about an agent that waits: its backoff and an open provider breaker
are in the "next" column, the table and --json alike."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

from typer.testing import CliRunner

from mythline_cli import paths
from mythline_cli.cli import app

from helpers import mythline
from llm_server import error

runner = CliRunner()


def rows(data: dict) -> dict[str, dict]:
    return {r["agent"]: r for r in data["agents"]}


def test_next_is_not_before_the_backoff_ends(home: Path) -> None:
    now = datetime.now(timezone.utc)
    until = now + timedelta(hours=2)
    path = paths.heartbeat("world-npcs")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"agent": "world-npcs", "state": "failed", "finished": now.isoformat(),
                                "started": now.isoformat(), "consecutive_failures": 4,
                                "last_error": "world-npcs: HTTP 400", "backoff_until": until.isoformat()}))
    result = runner.invoke(app, ["status", "--json"])
    row = rows(json.loads(result.stdout))["world-npcs"]
    # Its interval (30m) would say half an hour; the backoff says two hours.
    assert row["next_due"] == until.isoformat() and row["backoff_until"] == until.isoformat()
    assert row["note"] == "backing off"
    table = runner.invoke(app, ["status"]).stdout
    line = next(ln.split() for ln in table.splitlines() if ln.split()[:1] == ["world-npcs"])
    assert line[1:4] == ["failed", "(backing", "off)"] and ("1h" in line or "2h" in line)


def test_an_open_breaker_is_named_with_since_until_and_why(home: Path, config, llm_server) -> None:
    config(provider={"max_attempts": 1}, sections={"breaker": {"failures": 2, "cooldown": "10m"}})
    llm_server.default = error(503, "upstream down")
    assert mythline("run", "world-npcs").returncode == 1
    assert mythline("run", "world-zones").returncode == 1  # the second failure in a row opens it
    skipped = mythline("run", "world-lore")
    assert skipped.returncode == 5 and "cooling down until" in skipped.stderr
    import shutil

    for cached in (True, False):  # from the settings cache, then from the config itself
        if not cached:
            shutil.rmtree(home / "cache")
        data = json.loads(mythline("status", "--json").stdout)
        breaker = data["breaker"]
        assert breaker["provider"].startswith("http://127.0.0.1:")
        assert breaker["failures"] == 2 and breaker["cooling_down"] is True
        opened = datetime.fromisoformat(breaker["since"])
        assert datetime.fromisoformat(breaker["until"]) == opened + timedelta(minutes=10)
        assert "2 failed calls in a row" in breaker["reason"]
        lore = rows(data)["world-lore"]
        assert lore["note"] == "breaker open" and lore["next_due"] is not None
        assert datetime.fromisoformat(lore["next_due"]) >= datetime.fromisoformat(breaker["until"])
    table = mythline("status").stdout
    assert "breaker open for http://127.0.0.1" in table and "cooling down until" in table
    assert "2 failed calls in a row across the fleet" in table
    assert "failed (breaker open)" in table


def test_the_table_is_drawn_from_the_json_alone(home: Path, config, llm_server) -> None:
    """Everything the table says is in --json: the table renders the very data --json prints."""
    from mythline_cli import launch
    from mythline_cli.config import load_settings
    from mythline_cli.status import collect
    from mythline_cli.statusview import render

    assert mythline("run", "world-npcs", env={"MYTHLINE_TEST_KEY": ""}).returncode == 2
    mythline("run", "no-such-agent")
    launch.schedule_changed(["world-zones"], now=datetime.now(timezone.utc) - timedelta(hours=2))
    data = collect(load_settings())
    printed = json.loads(json.dumps(data, default=str))

    def drawn(source: dict) -> str:
        import contextlib
        import io

        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            render(source)
        return buffer.getvalue()

    assert drawn(printed) == drawn(data)
    table = drawn(printed)
    assert "world-npcs" in table and "cannot start" in table and "no-such-agent" in table
    assert "down (never ran since the schedule was installed)" in table
