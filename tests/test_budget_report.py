"""`mythline budget report`: spend per step, retries and unsettled, records, cost per record,
over closed days as well as today."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest

from helpers import lore_responder, mythline
from llm_server import error

AGENT = "world-npcs"


def test_the_report_splits_spend_and_counts_records_over_the_days(home, config, llm_server, backend):
    config(sections={"budget": {"timezone": "UTC"}})
    from mythline_cli.config import load_settings
    from mythline_cli.ledger import Ledger

    # Three days ago, an unsettled charge (a call whose answer never came back).
    settings = load_settings()
    old = datetime.now(timezone.utc) - timedelta(days=3)
    ledger = Ledger(settings, now=lambda: old)
    res = ledger.reserve(settings.agent(AGENT), SimpleNamespace(usd=0.05, tokens=100), run_id="old", step="research")
    ledger.settle(res, usd=0.05, tokens=100, unsettled=True)

    # Today: a research call retried once after a 429 (the retry is its own reservation), then the audit.
    llm_server.enqueue(error(429, "slow down", headers={"retry-after": "0"}))
    llm_server.default = lore_responder(AGENT, cost=0.002)
    assert mythline("run", AGENT).returncode == 0

    result = mythline("budget", "report", "--days", "7", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    econ = report["agents"][AGENT]
    assert econ["split"]["unsettled"] == pytest.approx(0.05)
    assert econ["split"]["audit"] == pytest.approx(0.002)
    assert econ["split"]["research"] + econ["split"]["retries"] == pytest.approx(0.002)
    assert econ["stored"] == 1 and econ["quarantined"] == 0
    assert econ["usd_per_record"] == pytest.approx(econ["usd"])
    assert report["fleet"]["usd"] == pytest.approx(econ["usd"])
    days = report["daily_usd"]
    assert len(days) == 7
    assert days[old.date().isoformat()] == pytest.approx(0.05)
    assert days[datetime.now(timezone.utc).date().isoformat()] == pytest.approx(0.004)

    short = json.loads(mythline("budget", "report", "--days", "1", "--json").stdout)
    assert short["fleet"]["split"]["unsettled"] == 0  # the old day is outside one day

    text = mythline("budget", "report")
    assert text.returncode == 0
    assert "Fleet spend per day" in text.stdout and "█" in text.stdout and AGENT in text.stdout


def test_retries_are_counted_apart(home, config, llm_server):
    config(provider={"max_retry_wait": "2s"})
    # The first research attempt fails with a 200 carrying an error and no usage: the provider
    # may have billed it, so it is charged at its estimate (unsettled); the retry is a retry.
    from llm_server import error_in_200

    llm_server.enqueue(error_in_200("upstream hiccup"))
    llm_server.default = lore_responder(AGENT, cost=0.002)
    assert mythline("run", AGENT).returncode == 0
    econ = json.loads(mythline("budget", "report", "--json").stdout)["agents"][AGENT]
    assert econ["split"]["retries"] == pytest.approx(0.002)
    assert econ["split"]["research"] == 0 and econ["split"]["unsettled"] > 0
    assert econ["split"]["audit"] == pytest.approx(0.002)


def test_bad_days_is_one_line_and_exit_2(home, config):
    result = mythline("budget", "report", "--days", "0")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "--days" in result.stderr
