"""The ledger's day window across processes in different time zones, and a bill that arrives
after its reservation was reclaimed."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from mythline_cli.config import parse_config
from mythline_cli.ledger import Ledger
from mythline_cli.pricing import Estimate

from helpers import MODEL

AGENT = "world-npcs"


def _settings(tz: str = "UTC"):
    return parse_config({"provider": {"model": MODEL, "prices": {MODEL: {
        "input_per_million": 1.0, "output_per_million": 2.0}}},
        "budget": {"timezone": tz, "daily_usd": 1.0}, "defaults": {"daily_usd": "none"}})


def _est(usd: float) -> Estimate:
    return Estimate(prompt_tokens=10, max_output_tokens=10, usd=usd, counted_by="chars", price=None)


def test_processes_in_different_timezones_cannot_reset_each_others_day(home):
    # 02:00 UTC: already the 26th in UTC, still the 25th in Los Angeles.
    at = datetime(2026, 11, 26, 2, 0, tzinfo=timezone.utc)
    utc = Ledger(_settings("UTC"), now=lambda: at)
    west = Ledger(_settings("America/Los_Angeles"), now=lambda: at)
    agent = utc.settings.agent(AGENT)
    spent = 0.0
    for i in range(40):
        ledger = utc if i % 2 else west
        try:
            res = ledger.reserve(agent, _est(0.3), run_id=f"r{i}", step="research")
        except Exception:
            continue
        ledger.settle(res, usd=0.3, tokens=20)
        spent += 0.3
    # Once the UTC process opens the 26th, the Los Angeles process joins it instead of reopening
    # the 25th: at most one cap for each of the two days, never a reset per alternation.
    assert spent <= 2 * 1.0
    assert west.report()["fleet"]["day"]["usd"]["spent"] <= 1.0


def test_a_late_bill_above_the_reclaimed_estimate_is_still_charged(home):
    clock = [datetime(2026, 5, 1, 12, tzinfo=timezone.utc)]
    settings = _settings()
    ledger = Ledger(settings, now=lambda: clock[0])
    agent = settings.agent(AGENT)
    res = ledger.reserve(agent, _est(0.10), run_id="r", step="research")
    clock[0] = clock[0].replace(hour=13)  # past run_timeout: the next access reclaims it at $0.10
    ledger.release(ledger.reserve(agent, _est(0.01), run_id="s", step="research"))
    assert ledger.settle(res, usd=0.45, tokens=30) is False
    report = ledger.report()
    assert report["agents"][AGENT]["usd"]["spent"] == pytest.approx(0.45)
