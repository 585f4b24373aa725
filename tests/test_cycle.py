"""The cycle end to end: the real CLI, the real openai SDK, a real local HTTP server."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from mythline_cli.cli import app

from factories import record_json
from helpers import MODEL, TEST_KEY, is_audit, lore_responder, topic_of
from llm_server import completion, error

AGENT = "world-npcs"
FIRST = "Thrall"


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def events(home: Path, agent: str = AGENT) -> list[dict]:
    path = home / "agents" / agent / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def checkpoint(home: Path, agent: str = AGENT) -> dict:
    return json.loads((home / "agents" / agent / "checkpoint.json").read_text())


def stored(home: Path) -> list[Path]:
    return sorted((home / "store").rglob("*.json"))


def test_full_cycle_stores_a_record(home, config, llm_server):
    llm_server.responder = lore_responder(AGENT, cost=0.0005)
    result = run("run", AGENT)
    assert result.exit_code == 0, result.output
    assert result.output == ""  # quiet when not on a terminal
    assert llm_server.count() == 2  # research + audit
    research, audit = (r["body"] for r in llm_server.requests)
    assert research["model"] == MODEL
    assert research["response_format"]["type"] == "json_schema"
    assert research["response_format"]["json_schema"]["strict"] is True
    assert research["max_tokens"] == 500 and research["temperature"] == 0
    assert audit["response_format"]["json_schema"]["name"] == "audit"
    (path,) = stored(home)
    doc = json.loads(path.read_text())
    assert path.parent.name == "npcs" and path.name.startswith("thrall-")
    assert doc["record"]["name"] == FIRST
    prov = doc["provenance"]
    assert prov["agent"] == AGENT and prov["model"] == MODEL and prov["score"] == 0.9
    assert prov["tokens"] == 400 + 200 + 300 + 20
    assert abs(prov["cost_usd"] - 2 * 0.0005) < 1e-12  # the provider-reported cost wins
    assert doc["content_hash"].startswith("sha256:") and doc["history"] == []
    ck = checkpoint(home)
    assert ck["topics"][FIRST]["status"] == "done" and ck["current"] is None
    hb = json.loads((home / "agents" / AGENT / "heartbeat.json").read_text())
    assert hb["state"] == "ok" and hb["consecutive_failures"] == 0 and hb["last_success"]
    assert hb["tokens_today"] == 920 and abs(hb["usd_today"] - 0.001) < 1e-9
    kinds = [e["event"] for e in events(home)]
    assert kinds == ["run-start", "llm-request", "llm-call", "llm-request", "llm-call", "verdict", "store", "run-end"]
    ledger = json.loads((home / "ledger.json").read_text())
    assert ledger["reservations"] == {}
    # The next run takes the next topic in the queue.
    assert run("run", AGENT).exit_code == 0
    assert checkpoint(home)["topics"]["Jaina Proudmoore"]["status"] == "done"


def test_settles_with_tokens_times_prices_without_provider_cost(home, config, llm_server):
    llm_server.responder = lore_responder(AGENT)  # no usage.cost
    assert run("run", AGENT).exit_code == 0
    calls = [e for e in events(home) if e["event"] == "llm-call"]
    assert [c["cost_source"] for c in calls] == ["tokens x prices", "tokens x prices"]
    # test/model costs $1 / $2 per million input / output tokens in the test config.
    assert abs(calls[0]["usd"] - (400 * 1e-6 + 200 * 2e-6)) < 1e-12


def test_failed_validation_retries_with_feedback_then_quarantines(home, config, llm_server):
    config(sections={"defaults": {"max_attempts": 2}})
    llm_server.responder = lore_responder(AGENT, score=0.3, issues=["status: Thrall is alive, not dead"])
    first = run("run", AGENT)
    assert first.exit_code == 0, first.output  # a rejection is an outcome, not a failure
    ck = checkpoint(home)
    assert ck["topics"][FIRST]["status"] == "pending" and ck["topics"][FIRST]["attempts"] == 1
    assert stored(home) == []

    second = run("run", AGENT)
    research_prompts = [r["body"]["messages"][-1]["content"] for r in llm_server.requests if not is_audit(r)]
    assert "Thrall is alive, not dead" not in research_prompts[0]
    assert "attempt 1: status: Thrall is alive, not dead" in research_prompts[1]
    assert second.exit_code == 0
    assert "quarantined after 2 failed attempts" in second.stderr
    ck = checkpoint(home)
    assert ck["topics"][FIRST]["status"] == "quarantined"
    assert [e for e in events(home) if e["event"] == "quarantine"][0]["topic"] == FIRST
    assert stored(home) == []
    # The queue moves on.
    run("run", AGENT)
    assert topic_of(llm_server.requests[-1]) == "Jaina Proudmoore"


def test_invalid_json_gets_one_repair_call(home, config, llm_server):
    llm_server.enqueue(
        completion("this is not json", prompt_tokens=50, completion_tokens=5),
        completion(record_json(AGENT, FIRST)),
        completion(json.dumps({"score": 0.95, "issues": []})),
    )
    assert run("run", AGENT).exit_code == 0
    assert llm_server.count() == 3
    repair = llm_server.requests[1]["body"]["messages"]
    assert repair[-2] == {"role": "assistant", "content": "this is not json"}
    assert "not valid JSON" in repair[-1]["content"]
    assert len(stored(home)) == 1


def test_wrong_shape_twice_fails_the_attempt(home, config, llm_server):
    llm_server.enqueue(completion(json.dumps({"name": FIRST})), completion(json.dumps({"name": FIRST})))
    assert run("run", AGENT).exit_code == 0
    assert llm_server.count() == 2  # no audit for a record that never parsed
    state = checkpoint(home)["topics"][FIRST]
    assert state["attempts"] == 1 and "does not match the schema" in state["feedback"][0]["issues"][0]


def test_rule_failure_skips_the_audit(home, config, llm_server):
    # An ungrounded agent (the test config's sources = []) has nothing it may cite.
    cited = [{"source": 1, "url": "https://warcraft.wiki.gg/wiki/Thrall"}]
    llm_server.enqueue(completion(record_json(AGENT, FIRST, sources=cited)))
    assert run("run", AGENT).exit_code == 0
    assert llm_server.count() == 1
    issues = checkpoint(home)["topics"][FIRST]["feedback"][0]["issues"]
    assert "sources: no sources were retrieved for this agent, so none may be cited" in issues


def test_storing_identical_content_is_a_no_op_and_new_content_keeps_history(home, config, llm_server):
    config(sections={"agents.world-npcs": {"topics": [FIRST]}})
    llm_server.responder = lore_responder(AGENT)
    assert run("run", AGENT).exit_code == 0
    (path,) = stored(home)
    first = json.loads(path.read_text())
    # Research the same topic again (a user re-queues it by clearing the checkpoint).
    (home / "agents" / AGENT / "checkpoint.json").unlink()
    assert run("run", AGENT).exit_code == 0
    assert json.loads(path.read_text()) == first  # unchanged, not rewritten with new provenance
    assert [e["action"] for e in events(home) if e["event"] == "store"] == ["created", "unchanged"]
    (home / "agents" / AGENT / "checkpoint.json").unlink()
    llm_server.responder = None
    llm_server.enqueue(completion(record_json(AGENT, FIRST, summary="A newer summary.")),
                       completion(json.dumps({"score": 1, "issues": []})))
    assert run("run", AGENT).exit_code == 0
    assert stored(home) == [path]
    doc = json.loads(path.read_text())
    assert doc["record"]["summary"] == "A newer summary."
    assert doc["history"][0]["content_hash"] == first["content_hash"]


def test_retry_after_is_honoured(home, config, llm_server):
    llm_server.enqueue(error(429, "slow down", headers={"retry-after": "1"}))
    llm_server.responder = None
    llm_server.default = lore_responder(AGENT)
    assert run("run", AGENT).exit_code == 0
    first, second = llm_server.requests[0], llm_server.requests[1]
    assert second["time"] - first["time"] >= 1.0
    retry = [e for e in events(home) if e["event"] == "llm-retry"]
    assert retry[0]["retry_after"] == 1.0 and retry[0]["kind"] == "http-429"


def test_server_errors_are_retried_and_charged_nothing(home, config, llm_server):
    llm_server.enqueue(error(503, "no provider"), error(502, "model down"))
    llm_server.default = lore_responder(AGENT)
    assert run("run", AGENT).exit_code == 0
    assert llm_server.count() == 4
    ledger = json.loads((home / "ledger.json").read_text())
    (day,) = [w for k, w in ledger["windows"].items() if k.startswith("day:")]
    assert day["agents"][AGENT]["calls"] == 2  # the two 5xx attempts were released, not charged


def test_unauthorized_is_tried_once_with_advice(home, config, llm_server):
    llm_server.enqueue(error(401, "invalid key"))
    result = run("run", AGENT)
    assert result.exit_code == 1
    assert llm_server.count() == 1
    assert result.stderr.count("\n") == 1
    assert "HTTP 401" in result.stderr and "MYTHLINE_TEST_KEY" in result.stderr
    hb = json.loads((home / "agents" / AGENT / "heartbeat.json").read_text())
    assert hb["state"] == "failed" and hb["consecutive_failures"] == 1
    assert TEST_KEY not in result.stderr


def test_payment_required_without_retry_after_is_not_retried(home, config, llm_server):
    llm_server.enqueue(error(402, "insufficient credits"))
    result = run("run", AGENT)
    assert result.exit_code == 1 and llm_server.count() == 1
    assert "out of credits" in result.stderr


def test_budget_refusal_sends_no_request(home, config, llm_server):
    config(sections={"defaults": {"daily_usd": 0.0001}})
    llm_server.responder = lore_responder(AGENT)
    result = run("run", AGENT)
    assert result.exit_code == 3
    assert llm_server.count() == 0
    assert "agents.world-npcs.daily_usd" in result.stderr and "mythline budget reset --agent world-npcs" in result.stderr
    hb = json.loads((home / "agents" / AGENT / "heartbeat.json").read_text())
    assert hb["state"] == "over-budget"


def test_unknown_price_with_usd_cap_refuses_before_calling(home, config, llm_server):
    config(provider={"model": "acme/unknown-model-xyz"})
    llm_server.responder = lore_responder(AGENT)
    result = run("run", AGENT)
    assert result.exit_code == 3 and llm_server.count() == 0
    assert '[provider.prices."acme/unknown-model-xyz"]' in result.stderr


def test_broken_responses_fail_the_call_and_store_nothing(home, config, llm_server):
    from llm_server import empty_choices, error_in_200

    for reply in (error_in_200("upstream exploded"), empty_choices()):
        llm_server.enqueue(reply)
    config(provider={"max_attempts": 1})
    for expected in ("error inside a 200 response", "no choices"):
        result = run("run", AGENT, "--force")  # past the backoff each failure starts
        assert result.exit_code == 1, result.output
        assert expected in result.stderr
    assert stored(home) == []
    ledger = json.loads((home / "ledger.json").read_text())
    assert ledger["reservations"] == {}


def test_missing_key_is_a_usage_error(home, config, llm_server, monkeypatch):
    monkeypatch.delenv("MYTHLINE_TEST_KEY")
    result = run("run", AGENT)
    assert result.exit_code == 2 and llm_server.count() == 0
    assert result.stderr == "mythline: MYTHLINE_TEST_KEY is not set; export MYTHLINE_TEST_KEY=... in your shell, " \
        "or store it for scheduled runs with: mythline keys set MYTHLINE_TEST_KEY (or set provider.api_key_env = " \
        "\"\" for a local server that needs no key)\n"


def test_queue_empty(home, config, llm_server):
    config(sections={"agents.world-npcs": {"topics": [FIRST]}})
    llm_server.responder = lore_responder(AGENT)
    assert run("run", AGENT).exit_code == 0
    assert run("run", AGENT).exit_code == 0
    assert llm_server.count() == 2
    hb = json.loads((home / "agents" / AGENT / "heartbeat.json").read_text())
    assert hb["state"] == "queue-empty"


def test_dry_run_needs_no_key_and_writes_nothing(home, monkeypatch):
    # No config, no key, no server: the built-in defaults point at OpenRouter.
    result = run("run", AGENT, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "Topic: **Thrall**" in result.output and "budget: allowed" in result.output
    assert not home.exists()
    data = json.loads(run("run", AGENT, "--dry-run", "--json").output)
    # The built-in fleet is grounded: the run fetches its sources first, then sends the research
    # call shown and priced here.
    assert data["step"] == "sources" and data["sources"] and data["estimate"]["max_output_tokens"] == 4096
    assert data["budget"]["allowed"] is True and data["estimate"]["usd"] > 0
    assert not home.exists()


def test_dry_run_reports_a_refusal(home, config, llm_server):
    config(sections={"budget": {"daily_tokens": 100}})
    result = run("run", AGENT, "--dry-run")
    assert result.exit_code == 3
    assert "budget: refused" in result.output and "budget.daily_tokens" in result.output
    assert llm_server.count() == 0


def test_already_running_exits_4_and_touches_nothing(home, config, llm_server):
    from filelock import FileLock

    lock_path = home / "agents" / AGENT / "run.lock"
    lock_path.parent.mkdir(parents=True)
    held = FileLock(str(lock_path))
    held.acquire()
    try:
        result = run("run", AGENT)
    finally:
        held.release()
    assert result.exit_code == 4
    assert result.stderr == "mythline: world-npcs is already running; this run did nothing\n"
    assert llm_server.count() == 0
    assert sorted(p.name for p in lock_path.parent.iterdir()) == ["run.lock"]


def test_a_hang_times_out_and_is_charged_at_its_estimate(home, config, llm_server):
    from llm_server import Reply

    config(provider={"timeout": "1s", "max_attempts": 2})
    llm_server.default = Reply(status=200, json={}, delay=5)
    result = run("run", AGENT)
    assert result.exit_code == 1
    assert "no answer from" in result.stderr and "within 1s" in result.stderr
    assert llm_server.count() == 2  # retried once, each attempt budgeted first
    ledger = json.loads((home / "ledger.json").read_text())
    assert ledger["reservations"] == {}
    (day,) = [w for k, w in ledger["windows"].items() if k.startswith("day:")]
    bucket = day["agents"][AGENT]
    # The provider may have billed a request we never saw answered: both count, unsettled.
    assert bucket["calls"] == 2 and bucket["unsettled_usd"] == bucket["usd"] > 0
    assert stored(home) == []
    assert not (home / "agents" / AGENT / "checkpoint.json").exists()  # nothing was recorded


def test_a_corrupt_ledger_stops_the_run_before_any_call_and_shows_in_status(home, config, llm_server):
    llm_server.responder = lore_responder(AGENT)
    home.mkdir(parents=True, exist_ok=True)
    (home / "ledger.json").write_text("{broken")
    result = run("run", AGENT)
    assert result.exit_code == 1 and llm_server.count() == 0
    assert result.stderr.endswith("Rebuild it from its journal with: mythline budget repair\n")
    assert (home / "ledger.json").read_text() == "{broken"  # never reset to zero spend
    hb = json.loads((home / "agents" / AGENT / "heartbeat.json").read_text())
    assert hb["state"] == "failed" and "budget ledger is unreadable" in hb["last_error"]
