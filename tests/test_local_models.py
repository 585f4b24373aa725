"""A llama.cpp-family server with the config `init` writes: structured outputs, context length,
one request at a time, repairs that can differ (against tests/local_server.py's fake)."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from local_server import LocalFake, small_model

from mythline_cli.fleet.schemas import NpcRecord
from mythline_cli.validate import Audit

from helpers import mythline
from llm_server import error

AGENT = "world-npcs"


def chats(server) -> list[dict]:
    return [r["body"] for r in server.requests if r["path"].endswith("/chat/completions")]


def events(home: Path, agent: str = AGENT) -> list[dict]:
    path = home / "agents" / agent / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def breaker_failures(home: Path) -> int:
    path = home / "breaker.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    return sum(int(e.get("failures") or 0) for e in data.values())


def test_the_default_config_steps_down_to_the_schema_in_the_servers_field_and_remembers(
        home, config, llm_server) -> None:
    LocalFake(llm_server, small_model(AGENT))
    config(provider={"local": True})  # structured_outputs unset: the default, auto
    first = mythline("run", AGENT)
    assert first.returncode == 0, first.stderr
    sent = [b.get("response_format", {}).get("type") for b in chats(llm_server)]
    # One rejected json_schema, then research and audit with the schema the server enforces.
    assert sent == ["json_schema", "json_object", "json_object"]
    assert chats(llm_server)[1]["response_format"]["schema"] == NpcRecord.model_json_schema()
    assert chats(llm_server)[2]["response_format"]["schema"] == Audit.model_json_schema()
    assert chats(llm_server)[1]["format"] == chats(llm_server)[1]["response_format"]["schema"]
    assert breaker_failures(home) == 0
    facts = json.loads((home / "providers.json").read_text())
    assert [e["structured_outputs"] for e in facts.values()] == ["json_object_schema"]
    assert any(e["event"] == "structured-outputs" and e["chosen"] == "json_object_schema" for e in events(home))

    second = mythline("run", AGENT)
    assert second.returncode == 0, second.stderr
    assert [b["response_format"]["type"] for b in chats(llm_server)[3:]] == ["json_object", "json_object"]


def test_a_changed_provider_setting_asks_the_server_again(home, config, llm_server) -> None:
    LocalFake(llm_server, small_model(AGENT))
    config(provider={"local": True})
    assert mythline("run", AGENT).returncode == 0
    config(provider={"local": True, "max_output_tokens": 400})
    assert mythline("run", AGENT).returncode == 0
    assert chats(llm_server)[3]["response_format"]["type"] == "json_schema"


@pytest.mark.parametrize("status", [400, 422, 500])
def test_a_response_format_rejection_is_not_an_outage_and_names_the_setting(home, config, llm_server,
                                                                            status) -> None:
    llm_server.default = error(status, "response_format: Input should be 'text' or 'json_object'")
    config(provider={"structured_outputs": "json_schema"})
    result = mythline("run", AGENT)
    assert result.returncode == 1
    assert llm_server.count() == 1  # never retried
    assert "provider.structured_outputs" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert breaker_failures(home) == 0


def test_auto_stops_at_the_last_rung_with_one_line(home, config, llm_server) -> None:
    llm_server.default = error(500, "grammar support is off: response_format not supported")
    config()
    result = mythline("run", AGENT)
    assert result.returncode == 1
    assert llm_server.count() == 3  # one per rung of the ladder
    assert [b["response_format"]["type"] for b in chats(llm_server)] == ["json_schema", "json_object", "json_object"]
    assert "provider.structured_outputs" in result.stderr
    assert breaker_failures(home) == 0


def test_no_usage_cost_settles_at_tokens_times_prices(home, config, llm_server) -> None:
    LocalFake(llm_server, small_model(AGENT))
    config(provider={"structured_outputs": "json_object_schema"})
    assert mythline("run", AGENT).returncode == 0
    calls = [e for e in events(home) if e["event"] == "llm-call" and e["ok"]]
    assert {c["cost_source"] for c in calls} == {"tokens x prices"}
    first = calls[0]
    assert first["usd"] == pytest.approx(first["prompt_tokens"] * 1e-6 + first["completion_tokens"] * 2e-6)


@pytest.mark.parametrize("where", ["props", "models"])
def test_a_prompt_that_cannot_fit_the_learned_context_is_refused_before_the_call(home, config, llm_server,
                                                                                where) -> None:
    LocalFake(llm_server, small_model(AGENT), n_ctx=1024, props=where == "props")
    config(provider={"local": True, "max_output_tokens": 1000})
    result = mythline("run", AGENT)
    assert result.returncode == 1
    assert llm_server.count() == 0
    assert "1,024 tokens" in result.stderr and "provider.max_output_tokens (1,000)" in result.stderr
    assert ("/props" if where == "props" else "/models") in result.stderr


def test_dry_run_reports_the_context_refusal_without_asking_the_server(home, config, llm_server) -> None:
    config(provider={"context_length": 600, "max_output_tokens": 500})
    result = mythline("run", AGENT, "--dry-run")
    assert result.returncode == 1, result.stderr
    assert "context: refused" in result.stdout and "600 tokens, from provider.context_length" in result.stdout
    report = json.loads(mythline("run", AGENT, "--dry-run", "--json").stdout)
    assert report["context"]["fits"] is False and "does not fit" in report["context"]["reason"]
    assert llm_server.requests == []


def test_dry_run_asks_a_local_server_nothing_about_its_context(home, config, llm_server) -> None:
    LocalFake(llm_server, small_model(AGENT), n_ctx=1024, props=True)
    config(provider={"local": True, "max_output_tokens": 1000})
    result = mythline("run", AGENT, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "context: refused" not in result.stdout
    assert llm_server.requests == []  # not even /props: a dry run writes and asks nothing


def test_a_configured_context_length_wins_and_needs_no_server(home, config, llm_server) -> None:
    config(provider={"context_length": 600, "max_output_tokens": 500})
    result = mythline("run", AGENT)
    assert result.returncode == 1 and llm_server.count() == 0
    assert "600 tokens, from provider.context_length" in result.stderr


def test_context_overflow_is_a_failed_attempt_of_the_topic_and_quarantines(home, config, llm_server) -> None:
    # The prompt fits; the answer does not: llama-cpp-python's 500.
    LocalFake(llm_server, lambda body, enforced: "x" * 40_000, n_ctx=9000, props=False, models_meta=False)
    config(provider={"structured_outputs": "json_object", "max_output_tokens": 500},
           sections={"defaults": {"max_attempts": 2}})
    for _ in range(2):
        result = mythline("run", AGENT)
        assert result.returncode == 0, result.stderr
    assert llm_server.count() == 2  # not retried: one call per attempt
    ck = json.loads((home / "agents" / AGENT / "checkpoint.json").read_text())
    assert "overflowed the model's context" in json.dumps(ck)
    assert any(e["event"] == "quarantine" for e in events(home))
    assert breaker_failures(home) == 0


def test_the_repair_differs_and_quotes_the_parse_error(home, config, llm_server) -> None:
    from factories import record_json

    def answer(body, enforced):
        if not any(m["role"] == "system" for m in body["messages"]):
            return json.dumps({"score": 0.9, "issues": []})
        varied = body.get("varied")
        return record_json(AGENT, "x") if varied else '{"name": '

    LocalFake(llm_server, answer)
    config(provider={"structured_outputs": "json_object"})
    assert mythline("run", AGENT).returncode == 0
    research, repair = chats(llm_server)[:2]
    assert research["temperature"] == 0 and "seed" not in research
    assert repair["temperature"] > 0 and isinstance(repair["seed"], int)
    assert "not valid JSON: Expecting value" in repair["messages"][-1]["content"]


def test_an_identical_repeat_answer_ends_the_attempt_and_the_next_one_is_varied(home, config, llm_server) -> None:
    LocalFake(llm_server, lambda body, enforced: '{"name": ')  # the same text, however asked
    config(provider={"structured_outputs": "json_object"})
    assert mythline("run", AGENT).returncode == 0
    assert llm_server.count() == 2  # research and one repair, nothing more
    assert any(e["event"] == "repeat-answer" for e in events(home))
    assert mythline("run", AGENT).returncode == 0
    assert chats(llm_server)[2]["temperature"] > 0  # the next attempt's first call is nudged


def test_one_request_at_a_time_per_local_server_across_the_fleet(home, config, llm_server, tmp_path) -> None:
    LocalFake(llm_server, small_model(AGENT), delay=0.5)
    config(provider={"local": True, "structured_outputs": "json_object_schema"})
    agents = ["world-npcs", "world-zones", "world-factions"]
    import os

    procs = [subprocess.Popen([sys.executable, "-m", "mythline_cli", "run", a], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=dict(os.environ)) for a in agents]
    for proc in procs:
        proc.communicate(timeout=120)
    assert llm_server.count() >= len(agents)
    assert llm_server.arrived_busy == 0  # each request found the server idle


def test_a_timed_out_local_request_is_not_sent_again_while_the_server_works_on_it(home, config,
                                                                                  llm_server) -> None:
    LocalFake(llm_server, small_model(AGENT), delay=8)
    config(provider={"local": True, "timeout": "3s", "max_attempts": 3, "structured_outputs": "json_object_schema"})
    first = mythline("run", AGENT)
    assert first.returncode == 1
    assert llm_server.count() == 1
    assert "not sent the request again" in first.stderr
    assert breaker_failures(home) == 1  # the timeout counts once


def test_the_next_request_waits_for_an_abandoned_one(home, llm_server) -> None:
    from mythline_cli.config import Provider
    from mythline_cli.llm import CallFailure, LLMClient

    LocalFake(llm_server, small_model(AGENT), delay=8)
    provider = Provider(base_url=llm_server.base_url, model="test/model", api_key_env="", timeout=3,
                        max_attempts=3)
    assert provider.is_local
    messages = [{"role": "user", "content": "hi"}]
    for expected in ("timeout", "busy"):
        client = LLMClient(provider, None, sleep=lambda s: None)
        with pytest.raises(CallFailure) as failed:
            client.chat(messages, model="test/model", max_tokens=10, response_format=None)
        client.close()
        assert failed.value.kind == expected and failed.value.attempts == 1
    assert llm_server.count() == 1  # the second request was never sent
    assert "may still be working on a request that timed out" in str(failed.value)


def test_init_with_a_localhost_base_url_writes_a_config_for_local_inference(home, config, llm_server,
                                                                            tmp_path) -> None:
    LocalFake(llm_server, small_model(AGENT))
    path = tmp_path / "local" / "mythline.toml"
    path.parent.mkdir()
    made = mythline("init", "--path", str(path), "--base-url", llm_server.base_url, "--model", "qwen2.5-0.5b")
    assert made.returncode == 0, made.stderr
    data = tomllib.loads(path.read_text())
    assert data["provider"]["api_key_env"] == "" and data["provider"]["timeout"] == "30m"
    assert data["provider"]["prices"]["qwen2.5-0.5b"] == {"input_per_million": 0, "output_per_million": 0}
    # The wikis are not reachable from the tests: this run rests on the model alone.
    path.write_text(path.read_text().replace("\n[defaults]\n", "\n[defaults]\nsources = []\n", 1))
    result = mythline("--config", str(path), "run", AGENT)
    assert result.returncode == 0, result.stderr
    assert [b["response_format"]["type"] for b in chats(llm_server)] == ["json_schema", "json_object", "json_object"]


def test_doctor_probe_reports_key_model_mode_and_context_and_pays_through_the_ledger(home, config,
                                                                                     llm_server) -> None:
    def answer(body, enforced):
        return '{"ok": true}'

    LocalFake(llm_server, answer, n_ctx=8192)
    config(provider={"local": True})
    result = mythline("doctor", "--probe", "--json")
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["probe"]["status"] == "ok", checks["probe"]
    assert "auto chose json_object_schema" in checks["structured outputs"]["message"]
    assert "rejected json_schema" in checks["structured outputs"]["message"]
    assert checks["context"]["message"].startswith("8,192 tokens (from the server's /props")
    assert llm_server.count() == 2  # json_schema rejected, then the probe itself
    ledger = json.loads((home / "ledger.json").read_text())
    assert not ledger["reservations"]
    assert sum(b["tokens"] for w in ledger["windows"].values() for b in w["agents"].values()) > 0


def test_doctor_without_probe_sends_nothing(home, config, llm_server) -> None:
    mythline("doctor", "--json")
    assert llm_server.requests == []


def test_doctor_probe_fails_with_the_servers_line(home, config, llm_server) -> None:
    llm_server.default = error(401, "bad key")
    result = mythline("doctor", "--probe", "--json")
    assert result.returncode == 1
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["probe"]["status"] == "fail" and "API key was refused" in checks["probe"]["message"]


def test_init_with_a_remote_base_url_sets_it_and_keeps_the_remote_policy(tmp_path) -> None:
    path = tmp_path / "mythline.toml"
    made = mythline("init", "--path", str(path), "--base-url", "https://api.example.com/v1/", "--model", "m")
    assert made.returncode == 0, made.stderr
    data = tomllib.loads(path.read_text())
    assert data["provider"] == {"base_url": "https://api.example.com/v1", "model": "m"}


def test_init_refuses_a_bad_base_url_with_one_line(tmp_path) -> None:
    made = mythline("init", "--path", str(tmp_path / "x.toml"), "--base-url", "localhost:8080")
    assert made.returncode == 2
    assert made.stderr.strip() == "mythline: configuration: --base-url: must start with http:// or https://"
    assert not (tmp_path / "x.toml").exists()


def test_a_server_that_is_not_up_is_asked_for_its_context_again_later(home, llm_server) -> None:
    from mythline_cli import negotiate
    from mythline_cli.config import Provider

    provider = Provider(base_url=llm_server.base_url, model="m", api_key_env="")
    llm_server.stop()  # nothing listens on the port now
    assert negotiate.context_length(provider, "m", key=None) == (None, "unknown")
    assert not (home / "providers.json").exists()
    llm_server.start()
    provider = Provider(base_url=llm_server.base_url, model="m", api_key_env="")
    LocalFake(llm_server, small_model(AGENT), n_ctx=4096)
    assert negotiate.context_length(provider, "m", key=None) == (4096, "the server's /props (n_ctx)")
    assert negotiate.context_length(provider, "m", key=None)[0] == 4096  # now from the record
    assert [r["path"] for r in llm_server.requests] == ["/props"]
