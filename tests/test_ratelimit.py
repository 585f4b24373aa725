"""Fleet-wide provider limits: one bucket in the state home for every process, learned limits,
and a provider's wait that every agent honours."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from mythline_cli import ratelimit
from mythline_cli.breaker import Breaker
from mythline_cli.config import load_settings
from mythline_cli.errors import ProviderWait, RateLimited
from mythline_cli.fleet.topics import TOPICS

from factories import record_json
from helpers import MODEL, is_audit, topic_of
from llm_server import completion, error

AGENT_OF = {topic: agent for agent, topics in TOPICS.items() for topic in topics}


def fleet_responder(headers: dict[str, str] | None = None):
    """A valid record for whichever agent's topic the prompt names, and a passing audit."""
    def respond(request):
        if is_audit(request):
            reply = completion(json.dumps({"score": 0.9, "issues": []}), prompt_tokens=300, completion_tokens=20,
                               model=MODEL)
        else:
            topic = topic_of(request)
            reply = completion(record_json(AGENT_OF[topic], topic), prompt_tokens=400, completion_tokens=200,
                               model=MODEL)
        reply.headers.update(headers or {})
        return reply
    return respond


def busiest_minute(times: list[float]) -> int:
    """The most requests the server received in any 60 s that starts at one of them."""
    times = sorted(times)
    return max((sum(1 for u in times if t <= u < t + 60) for t in times), default=0)


def run_fleet(env_extra: dict[str, str] | None = None) -> list[subprocess.CompletedProcess]:
    import os

    env = {**os.environ, **(env_extra or {})}
    procs = [subprocess.Popen([sys.executable, "-m", "mythline_cli", "run", name], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for name in TOPICS]
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=180)
        out.append(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr))
    return out


def test_ten_agents_share_one_requests_per_minute_limit(home, config, llm_server):
    limit = 4
    config(provider={"requests_per_minute": limit, "max_retry_wait": "1s"})
    llm_server.responder = fleet_responder()
    runs = run_fleet()
    chat = [r["time"] for r in llm_server.requests if r["path"].endswith("/chat/completions")]
    # Without the shared bucket the ten agents send 20 requests within seconds.
    assert busiest_minute(chat) <= limit
    assert len(chat) >= limit  # the limit was reached, not avoided by failing early
    codes = sorted(r.returncode for r in runs)
    assert set(codes) <= {0, 5}, [r.stderr for r in runs]
    refused = [r for r in runs if r.returncode == 5]
    assert refused
    for r in refused:
        assert "requests per minute for the whole fleet (provider.requests_per_minute)" in r.stderr
        assert "nothing was called" in r.stderr and r.stderr.count("\n") == 1


def test_a_limit_learned_from_headers_binds_every_agent(home, config, llm_server):
    config(provider={"max_retry_wait": "1s"})
    llm_server.responder = fleet_responder({"x-ratelimit-limit-requests": "3", "x-ratelimit-limit-tokens": "90000"})
    first = subprocess.run([sys.executable, "-m", "mythline_cli", "run", "world-npcs"], capture_output=True,
                           text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    learned = json.loads((home / "ratelimits.json").read_text())
    (entry,) = learned.values()
    assert entry["requests_per_minute"] == 3 and entry["tokens_per_minute"] == 90000
    settings = load_settings()
    assert ratelimit.limits(settings)["requests_per_minute"][0] == 3
    runs = run_fleet()
    chat = [r["time"] for r in llm_server.requests if r["path"].endswith("/chat/completions")]
    assert busiest_minute(chat) <= 3
    assert any("learned from the provider's x-ratelimit headers" in r.stderr for r in runs if r.returncode == 5)


def test_a_configured_limit_below_the_learned_one_counts(home, config, llm_server):
    config(provider={"requests_per_minute": 2})
    (home).mkdir(parents=True, exist_ok=True)
    settings = load_settings()
    (home / "ratelimits.json").write_text(json.dumps({ratelimit.safe_url(settings.provider.base_url):
                                                      {"requests_per_minute": 50}}))
    assert ratelimit.limits(settings) == {"requests_per_minute": (2, "provider.requests_per_minute")}


def test_one_agents_429_is_a_wait_every_agent_honours(home, config, llm_server):
    config(provider={"max_retry_wait": "2s", "max_attempts": 1})
    llm_server.enqueue(error(429, "slow down", headers={"retry-after": "30"}))
    first = subprocess.run([sys.executable, "-m", "mythline_cli", "run", "world-npcs"], capture_output=True,
                           text=True, timeout=60)
    assert first.returncode == 1
    others = run_fleet()
    # The other nine find the wait (30 s, longer than they may sleep) and send nothing.
    assert llm_server.count() == 1
    assert sum(r.returncode == 5 and "the provider asked to wait 30s" in r.stderr for r in others) >= 9


def test_a_short_provider_wait_is_slept_through_and_a_long_one_refuses(home, config):
    config(provider={"max_retry_wait": "10s"})
    settings = load_settings()
    now = datetime.now(timezone.utc)
    breaker = Breaker(settings, now=lambda: now)
    breaker.hold(5, agent="world-zones")
    naps: list[float] = []
    limiter = ratelimit.Limiter(settings, breaker, agent="world-npcs", sleep=naps.append)
    assert limiter.admit(1000) == pytest.approx(5)
    assert naps == [pytest.approx(5)]
    breaker.hold(600, agent="world-zones")
    with pytest.raises(ProviderWait) as caught:
        limiter.admit(1000)
    assert "the provider asked to wait 10m" in str(caught.value)
    forced = ratelimit.Limiter(settings, breaker, agent="world-npcs", sleep=naps.append, force=True)
    assert forced.admit(1000) == 0


def test_a_full_token_bucket_waits_when_short_and_refuses_when_long(home, config):
    config(provider={"tokens_per_minute": 1000, "max_retry_wait": "1s"})
    settings = load_settings()
    limiter = ratelimit.Limiter(settings, Breaker(settings), agent="world-npcs", sleep=lambda s: None)
    assert limiter.admit(900) == 0
    with pytest.raises(RateLimited) as caught:
        limiter.admit(900)
    assert "allows 1,000 tokens per minute for the whole fleet (provider.tokens_per_minute)" in str(caught.value)
    limiter.close()


def test_headers_name_limits_and_a_spent_one(home):
    assert ratelimit.announced({"X-RateLimit-Limit-Requests": "500", "x-ratelimit-limit-tokens": "30000"}) == \
        {"requests_per_minute": 500, "tokens_per_minute": 30000}
    assert ratelimit.announced({"X-RateLimit-Limit": "20"}) == {"requests_per_minute": 20}
    assert ratelimit.announced({"x-ratelimit-limit-requests": "nonsense"}) == {}
    assert ratelimit.exhausted({"x-ratelimit-remaining-requests": "0"})
    assert not ratelimit.exhausted({"x-ratelimit-remaining-requests": "7"})


def test_a_spent_limit_in_a_200_holds_the_fleet_until_it_resets(home, config, llm_server):
    config(provider={"max_retry_wait": "1s"})
    llm_server.responder = fleet_responder({"x-ratelimit-remaining-requests": "0",
                                            "x-ratelimit-reset-requests": "45s"})
    first = subprocess.run([sys.executable, "-m", "mythline_cli", "run", "world-npcs"], capture_output=True,
                           text=True, timeout=60)
    # The research answer said the minute is spent: the audit waits for it, longer than a run may.
    assert first.returncode == 5, first.stderr
    assert "the provider asked to wait 45s" in first.stderr
    assert llm_server.count() == 1
    entry = next(iter(json.loads((home / "breaker.json").read_text()).values()))
    assert datetime.fromisoformat(entry["wait_until"]) > datetime.now(timezone.utc) + timedelta(seconds=30)
    assert Path(home / "ratelimit.sqlite").exists() is False  # no bucket without a limit


def test_an_unreadable_bucket_file_is_moved_aside_and_the_run_goes_on(home, config, llm_server):
    config(provider={"requests_per_minute": 100})
    home.mkdir(parents=True, exist_ok=True)
    (home / "ratelimit.sqlite").write_bytes(b"this is no database, just bytes " * 64)
    llm_server.responder = fleet_responder()
    result = subprocess.run([sys.executable, "-m", "mythline_cli", "run", "world-npcs"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "ratelimit.sqlite was unreadable; moved aside to" in result.stderr
    assert list(home.glob("ratelimit.sqlite.corrupt-*"))
    assert llm_server.count() == 2
