"""What a call is charged when the provider's figures are odd (an impossible cost, no usage),
when it is never sent, and when the bookkeeping fails after a paid answer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mythline_cli.cli import app

from helpers import is_audit, lore_responder

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
