"""Money on screen: one formatter, enough digits for sub-cent figures, bounded width for absurd ones."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from mythline_cli.money import usd

from helpers import lore_responder, mythline


@pytest.mark.parametrize("value,text", [
    (0, "$0.00"), (0.0, "$0.00"), (5, "$5.00"), (0.5, "$0.50"), (1234.5, "$1,234.50"),
    (0.025, "$0.025"), (0.0028, "$0.0028"), (0.00012344, "$0.0001234"), (0.01, "$0.01"),
    (4.999, "$4.999"), (12.3456, "$12.35"), (0.12346, "$0.1235"),
    (999_999_999.0, "$999,999,999.00"), (1e9, "$1.00e+09"), (1e300, "$1.00e+300"),
    (3e-9, "$3.00e-09"), (-0.025, "-$0.025"), (float("inf"), "$inf"), (float("nan"), "$nan"),
])
def test_usd(value: float, text: str) -> None:
    assert usd(value) == text


def test_usd_without_the_symbol_is_the_same_figure() -> None:
    assert usd(0.025, symbol=False) == "0.025"
    assert usd(1e300, symbol=False) == "1.00e+300"


@pytest.mark.parametrize("value", [0.025, 1e300, 1e-12, 123456.789, 0.1 + 0.2, 7e-5, 999.9999])
def test_usd_is_never_wide(value: float) -> None:
    assert len(usd(value)) <= 16


LONG_NUMBER = re.compile(r"\d{12,}")


def test_an_absurd_cost_and_a_sub_cent_cap_read_sanely_everywhere(config, llm_server, home: Path) -> None:
    """A provider billing $1e300 for a call, under a $0.025 agent cap: status, budget show, the
    run's error on the next try and the budget alert show both figures as they are."""
    config(sections={"agents.world-npcs": {"daily_usd": 0.025}})
    llm_server.responder = lore_responder("world-npcs", cost=1e300)
    first = mythline("run", "world-npcs")
    outputs = {"first run": first.stdout + first.stderr}
    second = mythline("run", "world-npcs")
    assert second.returncode == 3, second.stderr
    outputs["second run"] = second.stderr
    for args in (["status"], ["budget", "show"], ["logs", "world-npcs"], ["agents"]):
        proc = mythline(*args, env={"COLUMNS": "200"})
        outputs[" ".join(args)] = proc.stdout + proc.stderr
    alerts = [json.loads(line) for line in (home / "agents" / "world-npcs" / "events.jsonl").read_text().splitlines()
              if '"alert"' in line]
    outputs["alerts"] = " ".join(a.get("message", "") for a in alerts)
    for name, text in outputs.items():
        assert not LONG_NUMBER.search(text), f"{name} prints a long figure: {text}"
    assert "$1.00e+300" in outputs["status"] and "/0.025" in outputs["status"]
    assert "$1.00e+300" in outputs["budget show"] and "$0.025" in outputs["budget show"]
    assert "> $0.025" in outputs["second run"] and "$1.00e+300" in outputs["second run"]
    assert "$0.025" in outputs["agents"]
    assert "cost=$1.00e+300" in outputs["logs world-npcs"]


def test_a_cap_under_a_cent_is_not_rounded_in_status(config) -> None:
    config(sections={"agents.world-npcs": {"daily_usd": 0.025}, "agents.world-zones": {"daily_usd": 0.004}})
    proc = mythline("status", env={"COLUMNS": "200"})
    assert "$0.00/0.025" in proc.stdout and "$0.00/0.004" in proc.stdout
    assert "0.03" not in proc.stdout
