"""What a call is charged when the provider's usage is odd, and which price a model variant gets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mythline_cli import pricing
from mythline_cli.cli import app
from mythline_cli.config import parse_config

from factories import record_json
from helpers import MODEL, is_audit, lore_responder, topic_of
from llm_server import completion

AGENT = "world-npcs"
# test/model costs $1 / $2 per million input / output tokens in the test config.
RESEARCH_USD = 400 * 1e-6 + 200 * 2e-6
AUDIT_USD = 300 * 1e-6 + 20 * 2e-6


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def calls(home: Path) -> list[dict]:
    path = home / "agents" / AGENT / "events.jsonl"
    return [e for e in map(json.loads, path.read_text().splitlines()) if e["event"] == "llm-call"]


def spent_today(home: Path) -> float:
    ledger = json.loads((home / "ledger.json").read_text())
    (day,) = [w for k, w in ledger["windows"].items() if k.startswith("day:")]
    return day["agents"][AGENT]["usd"]


def responder(cost):
    """Valid research and audit answers, each reporting ``usage.cost = cost`` verbatim."""
    def respond(request):
        if is_audit(request):
            return completion(json.dumps({"score": 0.9, "issues": []}), prompt_tokens=300, completion_tokens=20,
                              cost=cost, model=MODEL)
        return completion(record_json(AGENT, topic_of(request)), prompt_tokens=400, completion_tokens=200,
                          cost=cost, model=MODEL)
    return respond


@pytest.mark.parametrize("cost", [True, False, "0.5", [1], {"usd": 1}], ids=["true", "false", "string", "list", "object"])
def test_a_cost_that_is_not_a_number_is_not_taken_as_one(home, config, llm_server, cost):
    llm_server.responder = responder(cost)
    result = run("run", AGENT)
    assert result.exit_code == 0, result.output
    research, audit = calls(home)
    assert research["cost_source"] == "tokens x prices" and audit["cost_source"] == "tokens x prices"
    assert research["usd"] == pytest.approx(RESEARCH_USD) and audit["usd"] == pytest.approx(AUDIT_USD)
    assert spent_today(home) == pytest.approx(RESEARCH_USD + AUDIT_USD)


def test_a_reported_cost_of_zero_does_not_undercut_a_known_price(home, config, llm_server):
    llm_server.responder = responder(0)
    assert run("run", AGENT).exit_code == 0
    research, audit = calls(home)
    assert research["cost_source"] == "tokens x prices"
    assert research["usd"] == pytest.approx(RESEARCH_USD) and audit["usd"] == pytest.approx(AUDIT_USD)
    assert spent_today(home) == pytest.approx(RESEARCH_USD + AUDIT_USD)


def test_a_reported_cost_of_zero_with_no_tokens_is_charged_the_reservation(home, config, llm_server):
    def respond(request):
        if is_audit(request):
            return completion(json.dumps({"score": 0.9, "issues": []}), prompt_tokens=0, completion_tokens=0, cost=0)
        return completion(record_json(AGENT, topic_of(request)), prompt_tokens=0, completion_tokens=0, cost=0)
    llm_server.responder = respond
    assert run("run", AGENT).exit_code == 0
    research, _ = calls(home)
    assert research["cost_source"] == "estimate (no usage reported)" and research["usd"] > 0


def test_a_positive_reported_cost_still_wins(home, config, llm_server):
    # Below tokens x prices (a cache discount, say): the provider's bill is the bill.
    llm_server.responder = responder(0.0001)
    assert run("run", AGENT).exit_code == 0
    research, _ = calls(home)
    assert research["cost_source"] == "provider" and research["usd"] == pytest.approx(0.0001)


def test_a_model_configured_as_free_is_free(home, config, llm_server):
    path = config(provider={"model": "local/free-model"})
    path.write_text(path.read_text() + '[provider.prices."local/free-model"]\n'
                    "input_per_million = 0\noutput_per_million = 0\n")
    llm_server.responder = responder(0)
    assert run("run", AGENT).exit_code == 0
    research, audit = calls(home)
    assert research["usd"] == 0 and audit["usd"] == 0
    assert spent_today(home) == 0


def provider(**prov):
    return parse_config({"provider": prov}).provider


@pytest.mark.parametrize("model", [
    "openai/gpt-4o:extended",      # the table knows openai/gpt-4o, not this variant
    "openai/gpt-4o-mini:thinking",
    "openai/gpt-4o-mini:online",   # web search is billed per request on top of tokens
    "openai/gpt-4o-mini:floor",
    "acme/gpt-4o-mini",            # another vendor's model of the same name
    "openrouter/gpt-4o-mini",
])
def test_a_variant_is_never_priced_as_another_model(model):
    assert pricing.lookup_price(model, provider()) is None


def test_a_vendor_prefix_the_table_agrees_with_is_priced():
    p = provider()
    # The table lists gpt-4o-mini as an openai model: the OpenRouter spelling is the same model.
    assert pricing.lookup_price("openai/gpt-4o-mini", p).source == "tokencost:openai/gpt-4o-mini"
    assert pricing.lookup_price("openai/gpt-4o", p).source == "tokencost:openai/gpt-4o"
    assert pricing.lookup_price("openai/gpt-4-turbo", p).source in ("tokencost:gpt-4-turbo",
                                                                     "tokencost:openai/gpt-4-turbo",
                                                                     "tokencost:openrouter/openai/gpt-4-turbo")


def test_a_variant_with_its_own_price_in_the_config_gets_it():
    p = provider(prices={"openai/gpt-4o:extended": {"input_per_million": 6, "output_per_million": 18}})
    assert pricing.lookup_price("openai/gpt-4o:extended", p).source == "config"


def zero_priced_chat_models() -> list[str]:
    return [name for name, entry in pricing.price_table().items()
            if isinstance(entry, dict) and entry.get("mode") == "chat"
            and entry.get("input_cost_per_token") == 0 and entry.get("output_cost_per_token") == 0]


def test_models_the_table_prices_at_zero_are_unknown_unless_configured_free():
    zeros = zero_priced_chat_models()
    assert len(zeros) >= 40  # the bundled table's experimental, local and :free models
    for name in zeros:
        assert pricing.lookup_price(name, provider()) is None, name
    name = "ollama/llama3"
    assert name in zeros
    free = pricing.lookup_price(name, provider(prices={name: {"input_per_million": 0, "output_per_million": 0}}))
    assert (free.input, free.output, free.source) == (0, 0, "config")


def test_an_unpriced_variant_is_refused_under_a_usd_cap_before_any_call(home, config, llm_server):
    config(provider={"model": "openai/gpt-4o:extended"})
    llm_server.responder = lore_responder(AGENT)
    result = run("run", AGENT)
    assert result.exit_code == 3 and llm_server.count() == 0
    assert '[provider.prices."openai/gpt-4o:extended"]' in result.stderr
    assert result.stderr.count("\n") == 1


def test_a_zero_priced_model_is_refused_under_a_usd_cap(home, config, llm_server):
    config(provider={"model": "gemini/gemini-2.0-flash-exp"})
    result = run("run", AGENT)
    assert result.exit_code == 3 and llm_server.count() == 0
    assert '[provider.prices."gemini/gemini-2.0-flash-exp"]' in result.stderr


def test_doctor_says_why_a_zero_priced_model_has_no_price(home, config, fake_crontab, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(home.parent / "no-tiktoken"))
    config(provider={"model": "gemini/gemini-2.0-flash-exp"})
    result = run("doctor")
    line = next(ln for ln in result.stdout.splitlines() if "prices:" in ln and "gemini" in ln)
    assert line.startswith("FAIL")
    assert "prices it at $0" in line and '[provider.prices."gemini/gemini-2.0-flash-exp"]' in line
    config(provider={"model": "openai/gpt-4o:extended"})
    line = next(ln for ln in run("doctor").stdout.splitlines() if "prices:" in ln and "gpt-4o" in ln)
    assert "variant" in line and "openai/gpt-4o" in line
