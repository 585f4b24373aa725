"""Estimates: prices from the config or tokencost's table, tokens with an offline fallback."""

from __future__ import annotations

import json
import math
import subprocess
import sys

from mythline_cli import pricing
from mythline_cli.config import parse_config

from helpers import lore_responder, mythline


def provider(**prov):
    return parse_config({"provider": prov}).provider


def test_config_price_beats_the_table():
    p = provider(prices={"openai/gpt-4o-mini": {"input_per_million": 10, "output_per_million": 20}})
    price = pricing.lookup_price("openai/gpt-4o-mini", p)
    assert (price.input, price.output, price.source) == (10e-6, 20e-6, "config")


def test_table_lookup_tries_openrouter_spellings():
    p = provider()
    assert pricing.lookup_price("openai/gpt-4o-mini", p).source == "tokencost:openai/gpt-4o-mini"
    assert pricing.lookup_price("deepseek/deepseek-chat", p).source.startswith("tokencost:")
    # A variant is billed differently from its base: no table price, configure one
    # (tests/test_accounting.py has the rest of the rules).
    assert pricing.lookup_price("openai/gpt-4o-mini:floor", p) is None
    assert pricing.lookup_price("openai/gpt-4o-mini:online", p) is None
    assert pricing.lookup_price("acme/never-heard-of-it", p) is None


def test_estimate_is_margin_times_count_plus_max_tokens():
    p = provider(tokenizer="chars", prices={"m": {"input_per_million": 1, "output_per_million": 2}})
    msgs = [{"role": "user", "content": "x" * 300}]
    est = pricing.estimate(msgs, model="m", max_output_tokens=1000, provider=p)
    counted = pricing.PER_REPLY_TOKENS + pricing.PER_MESSAGE_TOKENS + 300  # one token per byte at most
    assert est.prompt_tokens == math.ceil(counted * 1.25)
    assert est.tokens == est.prompt_tokens + 1000
    assert est.usd == est.prompt_tokens * 1e-6 + 1000 * 2e-6
    assert est.counted_by == "chars"


def test_unknown_price_estimates_no_usd():
    est = pricing.estimate([{"role": "user", "content": "hi"}], model="acme/x", max_output_tokens=10,
                           provider=provider(tokenizer="chars"))
    assert est.usd is None and est.price is None


def test_tokenizer_falls_back_offline_and_never_imports_tokencost(tmp_path):
    # An empty tiktoken cache and a proxy on a closed local port: the download fails at once.
    code = (
        "import json, sys\n"
        "from mythline_cli import pricing\n"
        "from mythline_cli.config import parse_config\n"
        "p = parse_config({}).provider\n"
        "est = pricing.estimate([{'role': 'user', 'content': 'é' * 30}], model='openai/gpt-4o-mini',"
        " max_output_tokens=5, provider=p)\n"
        "print(json.dumps([est.counted_by, est.prompt_tokens, 'tokencost' in sys.modules,"
        " 'anthropic' in sys.modules]))\n"
    )
    env = {"TIKTOKEN_CACHE_DIR": str(tmp_path / "empty"), "HTTPS_PROXY": "http://127.0.0.1:9",
           "MYTHLINE_HOME": str(tmp_path / "home"), "HOME": str(tmp_path / "user-home"),
           "HTTP_PROXY": "http://127.0.0.1:9", "PATH": "/usr/bin:/bin"}
    (tmp_path / "empty").mkdir()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    counted_by, prompt_tokens, has_tokencost, has_anthropic = json.loads(out.stdout)
    assert counted_by == "chars"
    # 30 two-byte characters = 60 bytes = at most 60 tokens, plus the chat overhead, times the margin.
    assert prompt_tokens == math.ceil((60 + pricing.PER_MESSAGE_TOKENS + pricing.PER_REPLY_TOKENS) * 1.25)
    assert has_tokencost is False and has_anthropic is False


def test_the_structured_output_schema_is_counted_as_input():
    p = provider(tokenizer="chars")
    msgs = [{"role": "user", "content": "hi"}]
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "strict": True, "schema": {"d": "y" * 3000}}}
    bare = pricing.estimate(msgs, model="openai/gpt-4o-mini", max_output_tokens=10, provider=p)
    with_schema = pricing.estimate(msgs, model="openai/gpt-4o-mini", max_output_tokens=10, provider=p,
                                   response_format=fmt)
    assert with_schema.prompt_tokens - bare.prompt_tokens >= 3000 * 1.25


def test_a_table_price_is_kept_for_the_next_run_and_only_for_that_table(tmp_path):
    paths_home = tmp_path / "home"
    paths_home.mkdir()
    p = provider()
    cache = paths_home / "cache" / pricing.PRICE_CACHE
    first = pricing.lookup_price("openai/gpt-4o-mini", p)
    assert not cache.exists()  # only a run keeps what it looked up (--dry-run writes nothing)
    assert pricing.lookup_price("openai/gpt-4o-mini", p, remember=True) == first
    assert pricing.lookup_price("acme/never-heard-of-it", p, remember=True) is None
    doc = json.loads(cache.read_text())
    assert doc["table"] == pricing._table_digest()
    assert doc["models"] == {"openai/gpt-4o-mini": [first.input, first.output, first.source],
                             "acme/never-heard-of-it": None}
    # The cached figure is what the next lookup answers (a planted one proves it was read) ...
    doc["models"]["openai/gpt-4o-mini"] = [1e-6, 2e-6, "tokencost:openai/gpt-4o-mini"]
    cache.write_text(json.dumps(doc))
    assert pricing.lookup_price("openai/gpt-4o-mini", p) == pricing.Price(1e-6, 2e-6, "tokencost:openai/gpt-4o-mini")
    # ... but only for the table it came from, and a figure that is no price is looked up again.
    for table, figure in ((doc["table"], [-1.0, 2e-6, "x"]), (doc["table"], ["1", 2e-6, "x"]),
                          (doc["table"], [float("nan"), 0.0, "x"]), ("another table", [1e-6, 2e-6, "x"])):
        cache.write_text(json.dumps({"table": table, "models": {"openai/gpt-4o-mini": figure}}))
        assert pricing.lookup_price("openai/gpt-4o-mini", p) == first
    cache.write_text("{torn")
    assert pricing.lookup_price("openai/gpt-4o-mini", p, remember=True) == first
    assert json.loads(cache.read_text())["models"]["openai/gpt-4o-mini"][0] == first.input


def test_no_state_home_is_made_to_keep_a_price(tmp_path):
    assert pricing.lookup_price("openai/gpt-4o-mini", provider(), remember=True) is not None
    assert not (tmp_path / "home").exists()


def test_a_run_keeps_its_table_price_and_a_dry_run_does_not(home, config, llm_server):
    config(provider={"model": "openai/gpt-4o-mini"})  # priced by the table, not the config
    llm_server.responder = lore_responder("world-npcs")
    home.mkdir(parents=True)
    cache = home / "cache" / pricing.PRICE_CACHE
    dry = mythline("run", "world-npcs", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert not cache.exists()
    run = mythline("run", "world-npcs", "--json")
    assert run.returncode == 0, run.stderr
    price = pricing.lookup_price("openai/gpt-4o-mini", parse_config({}).provider)
    assert json.loads(cache.read_text())["models"] == {"openai/gpt-4o-mini": [price.input, price.output, price.source]}
    again = mythline("run", "world-npcs", "--dry-run", "--json")
    assert json.loads(again.stdout)["estimate"]["price"] == json.loads(dry.stdout)["estimate"]["price"] == price.source
