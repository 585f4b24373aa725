"""What a provider's answer means for the fleet, the agent and the topic: a wait the provider
asks for is kept by every agent, a failure tied to a topic's content is that topic's failed
attempt (never an outage), every recorded answer reaches a verdict, and every bill is in its
event. Real CLI processes against the scripted server."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path

import pytest

from factories import record_json
from helpers import is_audit, lore_responder, mythline, topic_of
from llm_server import Reply, completion, error

AGENT = "world-npcs"
FIRST = "Thrall"


def events(home: Path, agent: str = AGENT) -> list[dict]:
    path = home / "agents" / agent / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def checkpoint(home: Path, agent: str = AGENT) -> dict:
    return json.loads((home / "agents" / agent / "checkpoint.json").read_text())


def heartbeat(home: Path, agent: str = AGENT) -> dict:
    return json.loads((home / "agents" / agent / "heartbeat.json").read_text())


def breaker_entry(home: Path) -> dict:
    (entry,) = json.loads((home / "breaker.json").read_text()).values()
    return entry


def ledger(home: Path) -> dict:
    return json.loads((home / "ledger.json").read_text())


def local_hhmm(iso: str) -> str:
    """The documented clock: local HH:MM, with the date in front when it is not today's."""
    when = datetime.fromisoformat(iso).astimezone()
    return f"{when:%H:%M}" if when.date() == datetime.now().astimezone().date() else f"{when:%Y-%m-%d %H:%M}"


# -- a provider's wait is honoured by the whole fleet --------------------------------------

WAITS = [
    pytest.param({"retry-after": "900"}, "15m", id="retry-after-seconds"),
    pytest.param({"retry-after": "__DATE__"}, "20m", id="retry-after-http-date"),
    pytest.param({"x-ratelimit-reset-requests": "20m0s"}, "20m", id="x-ratelimit-reset-duration"),
    pytest.param({"x-ratelimit-reset": "__EPOCH_MS__"}, "20m", id="x-ratelimit-reset-epoch-ms"),
]


@pytest.mark.parametrize("headers,said", WAITS)
def test_a_long_provider_wait_holds_the_agent_and_the_fleet(home, config, llm_server, headers, said):
    config(provider={"max_retry_wait": "2s", "max_attempts": 3})
    # 1230 s so that rounding down to the minute by the time the run reads it still says 20m.
    values = {"__DATE__": format_datetime(datetime.now(timezone.utc) + timedelta(seconds=1230), usegmt=True),
              "__EPOCH_MS__": str(int((time.time() + 1230) * 1000))}
    headers = {k: values.get(v, v) for k, v in headers.items()}
    llm_server.enqueue(error(429, "rate limited", headers=headers))
    llm_server.default = lore_responder(AGENT)

    first = mythline("run", AGENT)
    assert first.returncode == 1, first.stderr
    entry = breaker_entry(home)
    until = entry["wait_until"]
    assert re.search(rf"the provider asked to wait {said}; next try after {local_hhmm(until)}\n$", first.stderr)
    assert first.stderr.count("\n") == 1
    assert llm_server.count() == 1  # given up at once: the wait is longer than max_retry_wait
    hb = heartbeat(home)
    assert datetime.fromisoformat(hb["backoff_until"]) >= datetime.fromisoformat(until)

    # Another agent, started inside the window: no request, exit 5, the same line.
    other = mythline("run", "world-zones")
    assert other.returncode == 5, other.stderr
    assert other.stderr == (f"mythline: world-zones: the provider asked to wait {said}; next try after "
                            f"{local_hhmm(until)}; nothing was called\n")
    again = mythline("run", AGENT)
    assert again.returncode == 5 and "backing off" in again.stderr
    assert llm_server.count() == 1
    assert not (home / "agents" / "world-zones" / "heartbeat.json").exists()  # a skipped run touches nothing

    # The window passes: the fleet calls again, and a success clears the wait.
    entry["wait_until"] = (datetime.now(timezone.utc) - timedelta(seconds=1)).isoformat()
    (home / "breaker.json").write_text(json.dumps({next(iter(json.loads((home / "breaker.json").read_text()))):
                                                   entry}))
    llm_server.default = lore_responder("world-zones")
    ok = mythline("run", "world-zones")
    assert ok.returncode == 0, ok.stderr
    assert llm_server.count() == 3
    assert breaker_entry(home).get("wait_until") is None


def test_force_calls_inside_the_wait_and_a_success_clears_it(home, config, llm_server):
    config(provider={"max_retry_wait": "2s"})
    llm_server.enqueue(error(429, "rate limited", headers={"retry-after": "900"}))
    assert mythline("run", AGENT).returncode == 1
    llm_server.default = lore_responder("world-zones")
    forced = mythline("run", "world-zones", "--force")
    assert forced.returncode == 0, forced.stderr
    assert llm_server.count() == 3
    assert "wait_until" not in breaker_entry(home)
    llm_server.default = lore_responder("world-items")
    assert mythline("run", "world-items").returncode == 0  # the fleet calls again


def test_a_wait_within_max_retry_wait_is_slept_not_held(home, config, llm_server):
    config(provider={"max_retry_wait": "2s"})
    llm_server.enqueue(error(429, "rate limited", headers={"x-ratelimit-reset-requests": "1s"}))
    llm_server.default = lore_responder(AGENT)
    assert mythline("run", AGENT).returncode == 0
    first, second = llm_server.requests[:2]
    assert second["time"] - first["time"] >= 1.0  # never sooner than the reset
    assert not (home / "breaker.json").exists() or "wait_until" not in breaker_entry(home)


def test_a_provider_wait_is_capped_at_backoff_max(home, config, llm_server):
    config(provider={"max_retry_wait": "2s"}, sections={"backoff": {"max": "1h"}})
    llm_server.enqueue(error(429, "rate limited", headers={"retry-after": str(3 * 86400)}))
    result = mythline("run", AGENT)
    assert result.returncode == 1
    assert "the provider asked to wait 3d; waiting 1h (backoff.max); next try after" in result.stderr
    until = datetime.fromisoformat(breaker_entry(home)["wait_until"])
    assert until <= datetime.now(timezone.utc) + timedelta(hours=1)


@pytest.mark.parametrize("headers,rate_limited,expected", [
    ({"retry-after-ms": "1500", "retry-after": "9"}, False, 1.5),
    ({"retry-after": "garbage"}, False, None),
    ({"retry-after": "-5"}, False, 0.0),
    ({"x-ratelimit-reset-requests": "1h2m3.5s"}, True, 3723.5),
    ({"x-ratelimit-reset-requests": "20ms", "x-ratelimit-reset-tokens": "6m0s"}, True, 360.0),
    ({"x-ratelimit-reset-tokens": "6m0s"}, False, None),  # not a 429: no instruction
    ({"x-ratelimit-reset": "soon"}, True, None),
    ({"x-ratelimit-reset": "nan"}, True, None),
])
def test_one_parser_reads_every_wait_header(headers, rate_limited, expected):
    from mythline_cli.retry_after import retry_after as _retry_after

    assert _retry_after(headers, rate_limited=rate_limited) == expected


# -- poison topics --------------------------------------------------------------------------

POISON = [
    pytest.param(lambda: completion('{"name": "Thr', finish_reason="length"), "cut off at max_tokens=500",
                 id="finish-length"),
    pytest.param(lambda: completion(record_json(AGENT, FIRST), finish_reason="content_filter"),
                 "content filter", id="finish-content-filter"),
    pytest.param(lambda: error(400, "This model's maximum context length is 8192 tokens. However, you requested "
                                    "9000 tokens.", code="context_length_exceeded"),
                 "maximum context length", id="400-context-length"),
    pytest.param(lambda: error(403, "Input was flagged by moderation", code=403,
                               metadata={"reasons": ["violence"], "flagged_input": "..."}),
                 "flagged", id="403-moderation"),
    pytest.param(lambda: error(413, "Request Entity Too Large"), "HTTP 413", id="413-too-large"),
    pytest.param(lambda: error(400, "Invalid prompt: your prompt was flagged as potentially violating our usage "
                                    "policy", code="invalid_prompt"),
                 "usage policy", id="400-invalid-prompt"),
]


@pytest.mark.parametrize("reply,reason", POISON)
def test_a_poison_topic_is_quarantined_and_the_queue_moves_on(home, config, llm_server, reply, reason):
    config(sections={"defaults": {"max_attempts": 2}, "breaker": {"failures": 1}})
    answer = lore_responder(AGENT)
    llm_server.responder = lambda request: reply() if topic_of(request) == FIRST else answer(request)

    first = mythline("run", AGENT)
    assert first.returncode == 0, first.stderr  # a rejected attempt, not a failed run
    state = checkpoint(home)["topics"][FIRST]
    assert state["attempts"] == 1 and state["status"] == "pending"
    assert reason in state["feedback"][0]["issues"][0]
    hb = heartbeat(home)
    assert hb["consecutive_failures"] == 0 and hb["backoff_until"] is None
    assert llm_server.count() == 1  # not retried: the same prompt fails the same way

    second = mythline("run", AGENT)
    assert second.returncode == 0, second.stderr
    assert "topic 'Thrall' quarantined after 2 failed attempts" in second.stderr and reason in second.stderr
    assert checkpoint(home)["topics"][FIRST]["status"] == "quarantined"
    assert [e for e in events(home) if e["event"] == "quarantine"][-1]["issues"][0].count(reason) == 1

    # Not an outage: the breaker (one failure trips it here) stays closed, the next topic runs.
    third = mythline("run", AGENT)
    assert third.returncode == 0, third.stderr
    assert topic_of(llm_server.requests[-2]) == "Jaina Proudmoore"
    assert checkpoint(home)["topics"]["Jaina Proudmoore"]["status"] == "done"
    stored = [json.loads(p.read_text())["topic"] for p in (home / "store").rglob("*.json")]
    assert stored == ["Jaina Proudmoore"]  # a filtered answer is never stored
    assert ledger(home)["reservations"] == {}


def test_a_permission_403_is_still_a_failed_run(home, config, llm_server):
    llm_server.enqueue(error(403, "this key may not use this model"))
    result = mythline("run", AGENT)
    assert result.returncode == 1 and "permissions" in result.stderr
    assert heartbeat(home)["consecutive_failures"] == 1  # the key's problem, not the topic's
    assert not (home / "agents" / AGENT / "checkpoint.json").exists()  # no attempt was counted


# -- the audit is repaired like research, and a failed audit keeps the paid research ------------

def test_an_unreadable_audit_gets_one_repair_call(home, config, llm_server):
    llm_server.enqueue(completion(record_json(AGENT, FIRST)), completion("score: high"),
                       completion(json.dumps({"score": 0.9, "issues": []})))
    result = mythline("run", AGENT)
    assert result.returncode == 0, result.stderr
    assert llm_server.count() == 3
    repair = llm_server.requests[2]["body"]
    assert is_audit(llm_server.requests[2]) and repair["messages"][-2]["content"] == "score: high"
    assert checkpoint(home)["topics"][FIRST]["status"] == "done"


def test_a_failed_audit_keeps_the_paid_research_for_the_next_attempt(home, config, llm_server):
    llm_server.enqueue(completion(record_json(AGENT, FIRST)), completion("no"), completion("still no"))
    first = mythline("run", AGENT)
    assert first.returncode == 0, first.stderr
    ck = checkpoint(home)
    assert ck["topics"][FIRST]["attempts"] == 1
    assert "audit answer was unreadable" in ck["topics"][FIRST]["feedback"][0]["issues"][0]
    assert ck["current"]["topic"] == FIRST and ck["current"]["attempt"] == 2
    assert sorted(ck["current"]["steps"]) == ["research"]

    llm_server.enqueue(completion(json.dumps({"score": 0.9, "issues": []})))
    second = mythline("run", AGENT)
    assert second.returncode == 0, second.stderr
    assert [is_audit(r) for r in llm_server.requests] == [False, True, True, True]  # research bought once
    assert checkpoint(home)["topics"][FIRST]["status"] == "done"


def test_an_audit_that_fails_for_good_quarantines_with_research_bought_once(home, config, llm_server):
    config(sections={"defaults": {"max_attempts": 2}})
    llm_server.enqueue(completion(record_json(AGENT, FIRST)))
    llm_server.default = completion("not an audit")
    assert mythline("run", AGENT).returncode == 0
    result = mythline("run", AGENT)
    assert result.returncode == 0, result.stderr
    assert "quarantined after 2 failed attempts" in result.stderr
    assert [is_audit(r) for r in llm_server.requests] == [False, True, True, True, True]


# -- every recorded answer reaches a verdict -------------------------------------------------

DEEP = "[" * 5000 + "]" * 5000
SURROGATE = record_json(AGENT, FIRST, summary="A split emoji: \ud83d").replace("\\ud83d", "\\ud800")

RECORDED = [
    pytest.param(DEEP, id="json-nested-5000-deep"),
    pytest.param('{"name": ' * 3000, id="unterminated-nesting"),
]


@pytest.mark.parametrize("content", RECORDED)
def test_an_unreadable_recorded_answer_is_repaired_then_rejected(home, config, llm_server, content):
    config(sections={"defaults": {"max_attempts": 2}})
    llm_server.enqueue(completion(content), completion(content))
    first = mythline("run", AGENT)
    assert first.returncode == 0, first.stderr
    assert llm_server.count() == 2  # the answer and its repair
    state = checkpoint(home)["topics"][FIRST]
    assert state["attempts"] == 1 and "not a valid record" in state["feedback"][0]["issues"][0]
    assert not any("unexpected" in e.get("error", "") for e in events(home))


def test_a_recorded_answer_with_a_lone_surrogate_is_audited_and_stored(home, config, llm_server):
    assert "\\ud800" in SURROGATE
    llm_server.enqueue(completion(SURROGATE), completion(json.dumps({"score": 0.9, "issues": []})))
    result = mythline("run", AGENT)
    assert result.returncode == 0, result.stderr
    (path,) = (home / "store").rglob("*.json")
    assert json.loads(path.read_text())["record"]["summary"] == "A split emoji: \ufffd"
    audit = llm_server.requests[1]["body"]["messages"][-1]["content"]
    assert "A split emoji: \ufffd" in audit


def test_a_recorded_answer_that_is_not_text_is_repaired(home, config, llm_server):
    ck = {"version": 1, "agent": AGENT, "topics": {},
          "current": {"topic": FIRST, "attempt": 1, "run_id": "r", "started": "2026-01-01T00:00:00+00:00",
                      "steps": {"research": {"content": 42, "prompt_tokens": 1, "completion_tokens": 1,
                                             "usd": 0.0, "recorded": "2026-01-01T00:00:00+00:00"}}}}
    path = home / "agents" / AGENT / "checkpoint.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(ck))
    llm_server.enqueue(completion(record_json(AGENT, FIRST)), completion(json.dumps({"score": 0.9, "issues": []})))
    result = mythline("run", AGENT)
    assert result.returncode == 0, result.stderr
    assert "unexpected" not in result.stderr
    assert checkpoint(home)["topics"][FIRST]["status"] == "done"


# -- every bill is in its event ------------------------------------------------------------------

def test_a_failed_calls_bill_is_in_its_event_with_an_overrun(home, config, llm_server):
    llm_server.enqueue(completion('{"name": "Thr', finish_reason="length", cost=9.0))
    assert mythline("run", AGENT).returncode == 0
    evs = events(home)
    (call,) = [e for e in evs if e["event"] == "llm-call"]
    assert call["ok"] is False and call["usd"] == 9.0
    (over,) = [e for e in evs if e["event"] == "overrun"]
    assert over["usd"] == 9.0 and over["reserved_usd"] == call["estimate"]["usd"] < 9.0


def test_a_retried_attempts_bill_is_in_its_event_with_an_overrun(home, config, llm_server):
    billed = Reply(json={**completion("").json, "error": {"message": "upstream died", "code": 502},
                         "usage": {"prompt_tokens": 10, "completion_tokens": 5, "cost": 9.0}})
    llm_server.enqueue(billed)
    llm_server.default = lore_responder(AGENT)
    result = mythline("run", AGENT)
    # The $9 bill used up the agent's daily cap: the retry is refused before it is sent.
    assert result.returncode == 3 and "daily_usd" in result.stderr
    assert llm_server.count() == 1
    evs = events(home)
    (retry,) = [e for e in evs if e["event"] == "llm-retry"]
    assert retry["usd"] == 9.0
    (over,) = [e for e in evs if e["event"] == "overrun"]
    assert over["usd"] == 9.0 and over["step"] == "research"
    (day,) = [w for k, w in ledger(home)["windows"].items() if k.startswith("day:")]
    assert day["agents"][AGENT]["usd"] == 9.0  # the bill, charged in full


# -- breaker.json values --------------------------------------------------------------------------

BAD_BREAKERS = [
    pytest.param({"__KEY__": {"failures": 3, "opened_at": "yesterday", "probe": None}}, id="opened-at-yesterday"),
    pytest.param({"__KEY__": {"failures": "many", "opened_at": None, "probe": None}}, id="failures-many"),
    pytest.param({"__KEY__": {"failures": 5, "opened_at": "2026-01-01T00:00:00+00:00",
                              "probe": {"pid": "x", "started": 3}}}, id="probe-garbage"),
    pytest.param({"__KEY__": "open"}, id="entry-not-an-object"),
    pytest.param({"__KEY__": {"failures": 0, "opened_at": None, "probe": None, "wait_until": "soon"}},
                 id="wait-until-soon"),
    pytest.param(["open"], id="not-an-object"),
]


@pytest.mark.parametrize("data", BAD_BREAKERS)
def test_a_breaker_file_with_a_bad_value_is_moved_aside_not_fatal(home, config, llm_server, data):
    key = llm_server.base_url
    data = {key: v for v in data.values()} if isinstance(data, dict) else data  # noqa: B035 - one entry, at this server
    home.mkdir(parents=True, exist_ok=True)
    (home / "breaker.json").write_text(json.dumps(data))
    llm_server.responder = lore_responder(AGENT)
    result = mythline("run", AGENT)
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"mythline: breaker\.json was unreadable \(.+\); moved aside to .+breaker\.json\.corrupt-"
                        r"\S+ and started afresh\n", result.stderr), result.stderr
    (moved,) = home.glob("breaker.json.corrupt-*")
    assert json.loads(moved.read_text()) == data
    assert [e for e in events(home) if e["event"] == "corrupt-state"][0]["file"] == "breaker"
    assert llm_server.count() == 2
    # The fleet carries on: the next agent reads the fresh file without a word.
    llm_server.responder = lore_responder("world-zones")
    other = mythline("run", "world-zones")
    assert other.returncode == 0 and other.stderr == ""


def test_rate_limit_windows_on_other_answers_are_no_wait(home, config, llm_server):
    # Providers send x-ratelimit-reset* on every answer: only a 429 makes them a wait.
    llm_server.enqueue(error(503, "busy", headers={"x-ratelimit-reset-tokens": "20m"}))
    llm_server.default = lore_responder(AGENT)
    result = mythline("run", AGENT)
    assert result.returncode == 0, result.stderr
    assert llm_server.count() == 3
    assert not (home / "breaker.json").exists() or "wait_until" not in breaker_entry(home)
