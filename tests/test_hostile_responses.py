"""Whatever a provider sends back, it is a failed call with a clear event, nothing stored, and
the reservation settled (charged) or released — never left open. (An answer cut off at
max_tokens or stopped by a content filter is the topic's failed attempt instead:
tests/test_provider_faults.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mythline_cli.cli import app

from helpers import TEST_KEY
from llm_server import Reply, completion, empty_choices, error_in_200

AGENT = "world-npcs"
HUGE = "x" * (10 * 1024 * 1024)


def last_call(home: Path) -> dict:
    lines = (home / "agents" / AGENT / "events.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if json.loads(line)["event"] == "llm-call"][-1]


CASES = [
    pytest.param(Reply(status=200, raw=b"this is not json", headers={"content-type": "application/json"}),
                 "bad-response", "unreadable response", True, id="not-json"),
    pytest.param(Reply(status=200, json={"weird": 1}), "empty", "no choices", True, id="wrong-shape"),
    pytest.param(Reply(status=200, json={"choices": [{"index": 0}]}), "empty", "empty answer", True,
                 id="choice-without-message"),
    pytest.param(completion(HUGE), "too-large", "larger than", False, id="10-MB-answer"),
    pytest.param(Reply(status=200, raw=b"{" + b" " * (10 * 1024 * 1024) + b"}", headers={"content-type": "application/json"}),
                 "empty", "no choices", True, id="10-MB-body"),
    pytest.param(empty_choices(), "empty", "no choices", False, id="empty-choices"),
    pytest.param(error_in_200("upstream exploded"), "error-in-200", "error inside a 200", True, id="error-in-200"),
    pytest.param(Reply(status=200, json=completion("{}").json, cut_after=40), "connection", "connection to", True,
                 id="body-cut-off"),
    pytest.param(Reply(drop=True), "connection", "connection to", True, id="connection-dropped"),
    pytest.param(Reply(status=200, json=completion("{}").json, delay=3), "timeout", "no answer from", True,
                 id="hang-past-timeout"),
]


@pytest.mark.parametrize("reply,kind,message,unknown_bill", CASES)
def test_hostile_response_is_a_failed_call(home, config, llm_server, reply, kind, message, unknown_bill):
    config(provider={"max_attempts": 1, "timeout": "1s"})
    llm_server.enqueue(reply)
    result = CliRunner().invoke(app, ["run", AGENT])
    assert result.exit_code == 1, result.output
    assert message in result.stderr and result.stderr.count("\n") == 1
    assert TEST_KEY not in result.stderr
    call = last_call(home)
    assert call["ok"] is False and call["kind"] == kind
    assert not (home / "store").exists()
    ledger = json.loads((home / "ledger.json").read_text())
    assert ledger["reservations"] == {}
    (day,) = [w for k, w in ledger["windows"].items() if k.startswith("day:")]
    bucket = day["agents"][AGENT]
    if unknown_bill:
        # The provider may have billed it and told us nothing: charged at the estimate, unsettled.
        assert bucket["calls"] == 1 and bucket["unsettled_usd"] == bucket["usd"] > 0
    else:
        # It reported usage: charged exactly that (100 prompt + 50 completion tokens at $1 / $2 per M).
        assert bucket["unsettled_usd"] == 0
        assert bucket["tokens"] == (100 + (0 if kind == "empty" else 50))
    hb = json.loads((home / "agents" / AGENT / "heartbeat.json").read_text())
    assert hb["state"] == "failed" and hb["last_error"]


def test_a_provider_that_echoes_the_key_does_not_leak_it(home, config, llm_server):
    from llm_server import error

    config(provider={"max_attempts": 1})
    llm_server.enqueue(error(400, f"invalid request for key {TEST_KEY}"))
    result = CliRunner().invoke(app, ["run", AGENT])
    assert result.exit_code == 1
    assert "invalid request for key [redacted]" in result.stderr
    for path in home.rglob("*"):
        if path.is_file():
            assert TEST_KEY not in path.read_text(errors="replace"), path
    assert "[redacted]" in (home / "agents" / AGENT / "events.jsonl").read_text()
