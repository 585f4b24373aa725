"""Servers that misbehave without failing outright: an answer that drips in, a Retry-After
that cannot be read, credentials in the base URL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mythline_cli.cli import app

from factories import record_json
from helpers import lore_responder
from llm_server import Reply, completion, error

AGENT = "world-npcs"


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def calls(home: Path) -> list[dict]:
    lines = (home / "agents" / AGENT / "events.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["event"] == "llm-call"]


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
    # A password in the URL is refused (tests/test_secrets.py); a key in the query is used.
    for url, code in ((llm_server.base_url.replace("http://", "http://user:s3cretpassw0rd@"), 2),
                      (llm_server.base_url + "?key=querysecret123", 1)):
        config(provider={"base_url": url, "max_attempts": 1})
        llm_server.enqueue(error(400, "nope"))
        result = run("run", AGENT)
        assert result.exit_code == code, result.stderr
        for secret in ("s3cretpassw0rd", "querysecret123"):
            assert secret not in result.stderr
            for path in home.rglob("*"):
                if path.is_file():
                    assert secret not in path.read_text(errors="replace"), path
