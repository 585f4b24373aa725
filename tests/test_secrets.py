"""Credentials never reach a file, an event or an output: URL passwords, Basic credentials, the key in an answer."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from mythline_cli import redact, settings_cache
from mythline_cli.config import load_settings

from factories import record
from helpers import KEY_ENV, TEST_KEY, is_audit, mythline, topic_of
from llm_server import completion, error

AGENT = "world-npcs"
PASSWORD = "pw-NEVER-SHOWN-7f3a9c"
USERINFO = f"mythuser:{PASSWORD}"
BASIC = base64.b64encode(USERINFO.encode()).decode()
SECRETS = (TEST_KEY, PASSWORD, BASIC)


def assert_nowhere(root: Path, *outputs: str) -> None:
    """No secret in any output, nor in any file under ``root`` (the state home and the test's files)."""
    for text in outputs:
        for secret in SECRETS:
            assert secret not in text, f"{secret!r} leaked into an output"
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for secret in SECRETS:
                assert secret.encode() not in data, f"{secret!r} leaked into {path}"


def with_userinfo(url: str) -> str:
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{USERINFO}@{rest}"


def test_a_password_in_mythline_base_url_is_refused_in_one_line(tmp_path, config, llm_server):
    env = {"MYTHLINE_BASE_URL": with_userinfo(llm_server.base_url)}
    for args in (("run", AGENT), ("run", AGENT, "--dry-run"), ("status",), ("doctor",)):
        result = mythline(*args, env=env)
        assert_nowhere(tmp_path, result.stdout, result.stderr)
        if args[0] != "doctor":
            assert result.returncode == 2, (args, result.stderr)
            assert result.stderr.count("\n") == 1
            assert "MYTHLINE_BASE_URL" in result.stderr and "user name or password" in result.stderr
    assert llm_server.count() == 0


def test_a_password_in_the_config_base_url_is_refused(tmp_path, config, llm_server):
    config(provider={"base_url": with_userinfo(llm_server.base_url)})
    result = mythline("run", AGENT)
    assert result.returncode == 2 and "provider.base_url" in result.stderr
    assert "user name or password" in result.stderr and llm_server.count() == 0
    assert_nowhere(tmp_path / "home", result.stdout, result.stderr)


def test_the_settings_cache_keeps_no_environment_value(home, config, llm_server, monkeypatch):
    # A gateway key in the query string is not a URL password, but no less a secret.
    monkeypatch.setenv("MYTHLINE_BASE_URL", f"{llm_server.base_url}?key={PASSWORD}")
    settings_cache.save(load_settings())
    (cached,) = (home / "cache").glob("settings-*.json")
    assert PASSWORD.encode() not in cached.read_bytes()
    assert settings_cache.load(None) is not None  # the copy still serves status
    monkeypatch.setenv("MYTHLINE_BASE_URL", llm_server.base_url)
    assert settings_cache.load(None) is None  # and still notices the variable changed


def echoing_server(llm_server, *, fail_first: bool) -> None:
    """Echoes the request's Authorization header (and a Basic credential a gateway in front
    might add) into an error body once, then into the answers."""
    state = {"failed": not fail_first}

    def respond(request):
        echo = f"authorization: {request['headers'].get('authorization')}; upstream authorization: Basic {BASIC}"
        if not state["failed"]:
            state["failed"] = True
            return error(503, f"gateway says no ({echo})")
        if is_audit(request):
            return completion(json.dumps({"score": 0.9, "issues": []}))
        rec = record(AGENT, topic_of(request))
        field = next(k for k, v in rec.items() if isinstance(v, str) and k != "name")
        rec[field] = f"{rec[field]} ({echo})"
        return completion(json.dumps(rec))

    llm_server.responder = respond


@pytest.mark.parametrize("fail_first", [True, False], ids=["error-then-answer", "answer"])
def test_an_echoed_authorization_header_is_redacted_everywhere(tmp_path, home, config, llm_server, fail_first):
    config(provider={"max_attempts": 2, "max_retry_wait": "1s"})
    echoing_server(llm_server, fail_first=fail_first)
    result = mythline("run", AGENT, env={KEY_ENV: TEST_KEY})
    assert result.returncode == 0, result.stderr
    assert llm_server.requests[0]["headers"]["authorization"] == f"Bearer {TEST_KEY}"
    (stored,) = (home / "store").rglob("*.json")
    assert "[redacted]" in stored.read_text()
    if fail_first:
        events = (home / "agents" / AGENT / "events.jsonl").read_text()
        assert "gateway says no" in events and "[redacted]" in events
    status = mythline("status", "--json")
    logs = mythline("logs", AGENT)
    assert_nowhere(tmp_path, result.stdout, result.stderr, status.stdout, status.stderr, logs.stdout, logs.stderr)


def test_an_echo_on_a_failed_run_is_redacted_in_stderr_and_heartbeat(tmp_path, home, config, llm_server):
    config(provider={"max_attempts": 1})
    llm_server.responder = lambda request: error(
        400, f"bad request; authorization: {request['headers'].get('authorization')}, Basic {BASIC}")
    result = mythline("run", AGENT, env={KEY_ENV: TEST_KEY})
    assert result.returncode == 1
    assert "bad request" in result.stderr and "[redacted]" in result.stderr
    heartbeat = json.loads((home / "agents" / AGENT / "heartbeat.json").read_text())
    assert "[redacted]" in heartbeat["last_error"]
    assert_nowhere(tmp_path, result.stdout, result.stderr)


@pytest.mark.parametrize("text,expected", [
    (f"Authorization: Basic {BASIC}", "Authorization: Basic [redacted]"),
    (f'{{"authorization": "basic {BASIC}"}}', '{"authorization": "basic [redacted]"}'),
    ("Basic training of the Horde grunts", "Basic training of the Horde grunts"),
    ("Basic dGhyYWxs", "Basic dGhyYWxs"),  # base64 of a word with no colon: no credential
])
def test_basic_credentials_are_masked_without_knowing_them(text, expected):
    assert redact.redact(text, ()) == expected


def test_after_every_hostile_server_case_no_secret_is_in_any_file_or_output(tmp_path, home, config, llm_server):
    """One state home through every way a credential reaches us (a URL password, a key in the
    URL's query, an echoed Bearer and Basic header, the key echoed in an error, in an error
    inside a 200 and in an answer's record), then every file and every output is searched."""
    from llm_server import error_in_200

    config(provider={"max_attempts": 2, "max_retry_wait": "1s"})
    outputs: list[str] = []

    def cli(*args: str, env: dict[str, str] | None = None):
        result = mythline(*args, env={KEY_ENV: TEST_KEY, **(env or {})})
        outputs.extend((result.stdout, result.stderr))
        return result

    # A password in MYTHLINE_BASE_URL: refused, never sent, never written.
    for args in (("run", AGENT), ("status",), ("doctor",)):
        cli(*args, env={"MYTHLINE_BASE_URL": with_userinfo(llm_server.base_url)})
    assert llm_server.count() == 0
    # The provider echoes the Authorization header (and an upstream Basic credential) in an
    # error, then in the record it answers with.
    echoing_server(llm_server, fail_first=True)
    assert cli("run", AGENT, "--force").returncode == 0
    # The key echoed in an error, and in an error inside a 200.
    llm_server.responder = None
    llm_server.enqueue(error(400, f"invalid request for key {TEST_KEY} (authorization: Basic {BASIC})"),
                       error(400, f"invalid request for key {TEST_KEY} (authorization: Basic {BASIC})"))
    assert cli("run", AGENT, "--force").returncode == 1
    llm_server.enqueue(error_in_200(f"upstream refused {TEST_KEY}"), error_in_200(f"upstream refused {TEST_KEY}"))
    assert cli("run", AGENT, "--force").returncode == 1

    # The key echoed in the record of an answer, which is stored; a key in the base URL's query.
    def echo_key(request):
        if is_audit(request):
            return completion(json.dumps({"score": 0.9, "issues": []}))
        rec = record(AGENT, topic_of(request))
        field = next(k for k, v in rec.items() if isinstance(v, str) and k != "name")
        rec[field] = f"{rec[field]} (as the key {TEST_KEY} says; authorization: Basic {BASIC})"
        return completion(json.dumps(rec))

    llm_server.responder = echo_key
    assert cli("run", AGENT, "--force").returncode == 0
    # (The scripted server knows no route with a query: a 404, whose line names the URL.)
    assert cli("run", AGENT, "--force", env={"MYTHLINE_BASE_URL": f"{llm_server.base_url}?key={PASSWORD}"}
               ).returncode == 1
    for args in (("status",), ("status", "--json"), ("logs", AGENT), ("budget", "show"), ("agents",),
                 ("watchdog",), ("doctor",), ("run", AGENT, "--dry-run")):
        cli(*args)
    assert len(list((home / "store").rglob("*.json"))) == 2
    assert "[redacted]" in (home / "agents" / AGENT / "events.jsonl").read_text()
    assert any((home / "cache").glob("settings-*.json"))
    assert_nowhere(tmp_path, *outputs)
