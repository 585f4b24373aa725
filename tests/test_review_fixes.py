"""Money and liveness edge cases: odd usage figures, dripping servers, unreadable headers,
clocks in different zones, late bills, and bookkeeping that fails after a paid answer."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers import MODEL, is_audit, lore_responder
from factories import record_json
from llm_server import Reply, completion, error
from mythline_cli.cli import app
from mythline_cli.config import parse_config
from mythline_cli.ledger import Ledger
from mythline_cli.pricing import Estimate

AGENT = "world-npcs"


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def day_bucket(home: Path, agent: str = AGENT) -> dict:
    ledger = json.loads((home / "ledger.json").read_text())
    (day,) = [w for k, w in ledger["windows"].items() if k.startswith("day:")]
    return day["agents"][agent]


def calls(home: Path) -> list[dict]:
    lines = (home / "agents" / AGENT / "events.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["event"] == "llm-call"]


@pytest.mark.parametrize("cost", [float("nan"), -5.0, float("inf"), "lots"])
def test_impossible_provider_costs_fall_back_to_tokens_times_prices(home, config, llm_server, cost):
    def respond(request):
        reply = lore_responder(AGENT)(request)
        reply.json["usage"]["cost"] = cost  # json.dumps writes NaN / Infinity as Python does
        return reply

    llm_server.responder = respond
    assert run("run", AGENT).exit_code == 0
    research = calls(home)[0]
    assert research["cost_source"] == "tokens x prices"
    assert research["usd"] == pytest.approx(400 * 1e-6 + 200 * 2e-6)
    bucket = day_bucket(home)
    assert bucket["usd"] > 0 and bucket["usd"] == bucket["usd"]  # finite, positive, not NaN


def test_an_answer_without_usage_is_charged_its_estimate(home, config, llm_server):
    def respond(request):
        reply = lore_responder(AGENT)(request)
        del reply.json["usage"]
        return reply

    llm_server.responder = respond
    assert run("run", AGENT).exit_code == 0
    research, audit = calls(home)
    assert research["cost_source"] == "estimate (no usage reported)"
    assert research["usd"] == research["estimate"]["usd"] > 0
    bucket = day_bucket(home)
    assert bucket["unsettled_usd"] == pytest.approx(bucket["usd"]) and bucket["tokens"] > 0


def test_a_server_that_drips_bytes_is_cut_off_at_the_timeout(home, config, llm_server):
    config(provider={"timeout": "1s", "max_attempts": 1})
    llm_server.enqueue(Reply(json=completion(record_json(AGENT, "Thrall")).json, drip=0.2))
    result = run("run", AGENT)
    assert result.exit_code == 1
    assert "no complete answer from" in result.stderr and "within 1s" in result.stderr
    assert calls(home)[-1]["kind"] == "timeout"


@pytest.mark.parametrize("header", ["soon", "", "Thu, 99 Foo 2026", "nan", "inf"])
def test_an_unreadable_retry_after_is_ignored_not_fatal(home, config, llm_server, header):
    llm_server.enqueue(error(429, "slow down", headers={"retry-after": header}))
    llm_server.default = lore_responder(AGENT)
    result = run("run", AGENT)
    assert result.exit_code == 0, result.stderr
    assert llm_server.count() == 3


def test_credentials_in_the_base_url_are_not_written_or_shown(home, config, llm_server):
    url = llm_server.base_url.replace("http://", "http://user:s3cretpassw0rd@") + "?key=querysecret123"
    config(provider={"base_url": url, "max_attempts": 1})
    llm_server.enqueue(error(400, "nope"))
    result = run("run", AGENT)
    assert result.exit_code == 1
    for secret in ("s3cretpassw0rd", "querysecret123"):
        assert secret not in result.stderr
        for path in home.rglob("*"):
            if path.is_file():
                assert secret not in path.read_text(errors="replace"), path


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


def test_a_paid_answer_is_saved_even_if_bookkeeping_then_fails(home, config, llm_server, monkeypatch):
    from mythline_cli import breaker

    real = breaker.Breaker.record
    failures = {"left": 1}

    def flaky(self, **kwargs):
        if kwargs.get("ok") and failures["left"]:
            failures["left"] -= 1
            raise OSError(28, "No space left on device")
        return real(self, **kwargs)

    monkeypatch.setattr(breaker.Breaker, "record", flaky)
    llm_server.responder = lore_responder(AGENT)
    assert run("run", AGENT).exit_code == 1
    assert run("run", AGENT, "--force").exit_code == 0
    assert [is_audit(r) for r in llm_server.requests] == [False, True]  # research bought once


def test_a_call_that_is_never_sent_costs_nothing(home, config, llm_server):
    from mythline_cli.config import load_settings
    from mythline_cli.cycle import run_agent

    def listener(event):
        if event["event"] == "llm-request":
            raise BrokenPipeError("the terminal went away")

    llm_server.responder = lore_responder(AGENT)
    with pytest.raises(BrokenPipeError):
        run_agent(load_settings(), AGENT, listener=listener)
    assert llm_server.count() == 0
    ledger = json.loads((home / "ledger.json").read_text())
    assert ledger["reservations"] == {}
    assert all(not w.get("agents") for w in ledger["windows"].values())  # nothing charged

    def no_client():
        raise RuntimeError("cannot build the client")

    with pytest.raises(RuntimeError):
        run_agent(load_settings(), AGENT, client_factory=no_client, force=True)
    ledger = json.loads((home / "ledger.json").read_text())
    assert ledger["reservations"] == {} and all(not w.get("agents") for w in ledger["windows"].values())
