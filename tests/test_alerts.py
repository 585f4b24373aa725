"""``alerts.send``: the event line, the webhook (a real server on 127.0.0.1), the command, dedup, secrets."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from mythline_cli import alerts, paths
from mythline_cli.config import parse_config
from mythline_cli.files import iter_jsonl

from helpers import KEY_ENV, TEST_KEY
from webhook_server import Answer, Hang, WebhookServer

HOOK_ENV = "MYTHLINE_TEST_WEBHOOK"
TOKEN = "XyZfAkEtOkEn0123456789secret"
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def hook() -> Iterator[WebhookServer]:
    with WebhookServer() as server:
        yield server


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The backoff waits, recorded instead of slept."""
    recorded: list[float] = []
    monkeypatch.setattr(alerts, "_sleep", recorded.append)
    return recorded


def secret_url(server: WebhookServer) -> str:
    return server.url(f"/services/T0000/B0000/{TOKEN}")


def make_settings(**alert_settings: Any):
    return parse_config({"alerts": alert_settings})


def events(agent: str = "world-npcs") -> list[dict[str, Any]]:
    return list(iter_jsonl(paths.events(agent)))


def of(kind: str, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in entries if e["event"] == kind]


def everything_under(home: Path) -> bytes:
    return b"\n".join(p.read_bytes() for p in sorted(home.rglob("*")) if p.is_file())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- the event line ---------------------------------------------------------------------------

def test_without_channels_an_alert_is_an_event_line(home: Path) -> None:
    result = alerts.send(make_settings(), kind="quarantine", agent="world-npcs", message="Thrall was quarantined",
                         data={"topic": "Thrall", "attempts": 3}, now=NOW)
    assert result is not None
    assert result["event"] is True and result["webhook"] is None and result["command"] is None
    [entry] = events()
    assert entry["event"] == "alert" and entry["kind"] == "quarantine" and entry["agent"] == "world-npcs"
    assert entry["message"] == "Thrall was quarantined"
    assert entry["data"] == {"topic": "Thrall", "attempts": 3}
    assert entry["ts"] == NOW.isoformat() and entry["channels"] == []


def test_a_fleet_alert_goes_to_alerts_jsonl(home: Path) -> None:
    alerts.send(make_settings(), kind="budget-warn", message="the fleet is at 80% of its daily cap", now=NOW)
    [entry] = list(iter_jsonl(home / "alerts.jsonl"))
    assert entry["kind"] == "budget-warn" and entry["agent"] is None
    assert not paths.agent_dir("world-npcs").exists()


def test_a_broken_settings_object_still_gets_the_event_line_and_no_exception(home: Path) -> None:
    result = alerts.send(None, kind="failures", agent="world-npcs", message="3 failures in a row", now=NOW)
    assert result is not None and result["event"] is True
    assert [e["kind"] for e in events()] == ["failures"]


# -- the webhook ------------------------------------------------------------------------------

def test_the_webhook_gets_a_slack_and_discord_body(hook: WebhookServer, monkeypatch: pytest.MonkeyPatch,
                                                   home: Path) -> None:
    monkeypatch.setenv(HOOK_ENV, secret_url(hook))
    settings = make_settings(webhook_url_env=HOOK_ENV)
    result = alerts.send(settings, kind="quarantine", agent="world-npcs", message="Thrall was quarantined",
                         data={"topic": "Thrall"}, now=NOW)
    assert result is not None and result["webhook"] == {"ok": True, "attempts": 1}
    [post] = hook.posts
    assert post["path"] == f"/services/T0000/B0000/{TOKEN}"
    assert post["headers"]["content-type"].startswith("application/json")
    body = post["body"]
    assert body["text"] == "[mythline] quarantine · world-npcs: Thrall was quarantined"
    assert body["content"] == body["text"]
    assert body["kind"] == "quarantine" and body["agent"] == "world-npcs" and body["data"] == {"topic": "Thrall"}
    assert of("alert", events())[0]["channels"] == ["webhook"]
    assert not of("alert-failed", events())


def test_the_variable_beats_the_file_url(hook: WebhookServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(HOOK_ENV, hook.url("/from-env"))
    alerts.send(make_settings(webhook_url_env=HOOK_ENV, webhook_url=hook.url("/from-file")), kind="down",
                agent="world-npcs", message="m", now=NOW)
    monkeypatch.delenv(HOOK_ENV)
    alerts.send(make_settings(webhook_url_env=HOOK_ENV, webhook_url=hook.url("/from-file")), kind="down",
                agent="world-npcs", message="m", now=NOW)
    assert [p["path"] for p in hook.posts] == ["/from-env", "/from-file"]


def test_a_named_variable_that_is_not_set_is_an_alert_failed_event(home: Path) -> None:
    result = alerts.send(make_settings(webhook_url_env=HOOK_ENV), kind="down", agent="world-npcs", message="m",
                         now=NOW)
    assert result is not None and result["webhook"]["ok"] is False
    [failed] = of("alert-failed", events())
    assert failed["error"] == f"alerts.webhook_url_env names ${HOOK_ENV}, which is not set"
    assert len(of("alert", events())) == 1


def test_a_long_message_is_cut_for_discord(hook: WebhookServer) -> None:
    alerts.send(make_settings(webhook_url=hook.url()), kind="down", agent="world-npcs", message="x" * 5000, now=NOW)
    body = hook.posts[0]["body"]
    assert len(body["content"]) == alerts.MAX_TEXT and body["content"].endswith("…")
    assert body["message"] == "x" * 5000


def test_a_500_then_a_200_is_one_retry(hook: WebhookServer, waits: list[float]) -> None:
    hook.enqueue(500, 200)
    result = alerts.send(make_settings(webhook_url=hook.url(), retries=2), kind="down", agent="world-npcs",
                         message="m", now=NOW)
    assert result is not None and result["webhook"] == {"ok": True, "attempts": 2}
    assert len(hook.posts) == 2 and waits == [0.5]
    assert not of("alert-failed", events())


def test_retries_are_bounded_and_the_failure_is_an_event(hook: WebhookServer, waits: list[float]) -> None:
    hook.enqueue(500, 502, 503, 500, 200)
    result = alerts.send(make_settings(webhook_url=hook.url(), retries=2), kind="down", agent="world-npcs",
                         message="m", now=NOW)
    assert len(hook.posts) == 3
    assert waits == [0.5, 1.0]
    assert result is not None and result["webhook"] == {"ok": False, "attempts": 3, "error": "HTTP 503"}
    [failed] = of("alert-failed", events())
    assert failed["kind"] == "down" and failed["channel"] == "webhook" and failed["status"] == 503
    assert failed["attempts"] == 3 and failed["error"] == "HTTP 503"
    assert failed["webhook"] == f"http://127.0.0.1:{hook.url().split(':')[2].split('/')[0]}/[redacted]"


def test_zero_retries_means_one_attempt(hook: WebhookServer, waits: list[float]) -> None:
    hook.enqueue(500, 200)
    alerts.send(make_settings(webhook_url=hook.url(), retries=0), kind="down", agent="world-npcs", message="m",
                now=NOW)
    assert len(hook.posts) == 1 and waits == []


def test_429_waits_for_retry_after_but_not_forever(hook: WebhookServer, waits: list[float]) -> None:
    hook.enqueue(Answer(429, {"Retry-After": "3"}), Answer(429, {"Retry-After": "86400"}), 200)
    result = alerts.send(make_settings(webhook_url=hook.url(), retries=3), kind="down", agent="world-npcs",
                         message="m", now=NOW)
    assert result is not None and result["webhook"]["ok"] is True
    assert waits == [3.0, alerts.MAX_RETRY_AFTER]


def test_429_reads_a_retry_after_http_date(hook: WebhookServer, waits: list[float]) -> None:
    from email.utils import format_datetime

    tomorrow = format_datetime(datetime.now(timezone.utc) + timedelta(days=1), usegmt=True)
    gone = format_datetime(datetime.now(timezone.utc) - timedelta(days=1), usegmt=True)
    hook.enqueue(Answer(429, {"Retry-After": tomorrow}), Answer(503, {"Retry-After": gone}), 200)
    result = alerts.send(make_settings(webhook_url=hook.url(), retries=3), kind="down", agent="world-npcs",
                         message="m", now=NOW)
    assert result is not None and result["webhook"]["ok"] is True
    # A date is a wait like a number of seconds (capped); one already past means now.
    assert waits == [alerts.MAX_RETRY_AFTER, 0.0]


def test_a_4xx_is_not_retried(hook: WebhookServer, waits: list[float]) -> None:
    hook.enqueue(404, 200)
    alerts.send(make_settings(webhook_url=hook.url(), retries=3), kind="down", agent="world-npcs", message="m",
                now=NOW)
    assert len(hook.posts) == 1 and waits == []
    assert of("alert-failed", events())[0]["error"] == "HTTP 404"


def test_a_hang_beyond_the_timeout_fails_once_and_is_not_retried(hook: WebhookServer, waits: list[float]) -> None:
    # The hook may have posted the message before hanging: a retry could post it twice.
    hook.enqueue(Hang(), 200)
    result = alerts.send(make_settings(webhook_url=hook.url(), timeout="0.5s", retries=2), kind="down",
                         agent="world-npcs", message="m", now=NOW)
    assert len(hook.posts) == 1 and waits == []
    assert result is not None and result["webhook"]["ok"] is False
    assert of("alert-failed", events())[0]["error"] == "no answer within 0.5s"


def test_a_refused_connection_is_retried_then_recorded(waits: list[float]) -> None:
    url = f"http://127.0.0.1:{free_port()}/services/{TOKEN}"
    result = alerts.send(make_settings(webhook_url=url, retries=2), kind="down", agent="world-npcs", message="m",
                         now=NOW)
    assert waits == [0.5, 1.0]
    assert result is not None and result["webhook"]["ok"] is False and result["webhook"]["attempts"] == 3
    failed = of("alert-failed", events())[0]
    assert failed["error"].startswith("cannot connect")


# -- dedup ------------------------------------------------------------------------------------

def test_a_once_key_is_sent_once(hook: WebhookServer, home: Path) -> None:
    settings = make_settings(webhook_url=hook.url())
    key = "budget-warn:world-npcs:day:2026-11-25"
    first = alerts.send(settings, kind="budget-warn", agent="world-npcs", message="80%", once_key=key, now=NOW)
    second = alerts.send(settings, kind="budget-warn", agent="world-npcs", message="80%", once_key=key, now=NOW)
    other = alerts.send(settings, kind="budget-warn", agent="world-npcs", message="80%",
                        once_key="budget-warn:world-npcs:day:2026-11-26", now=NOW)
    assert first is not None and first["once_key"] == key
    assert second is None and other is not None
    assert len(hook.posts) == 2 and len(of("alert", events())) == 2
    assert set(json.loads((home / "alerts.json").read_text())["sent"]) == {key, "budget-warn:world-npcs:day:2026-11-26"}


def test_the_key_is_recorded_before_delivery_so_a_failure_is_not_repeated(hook: WebhookServer,
                                                                            waits: list[float]) -> None:
    hook.enqueue(500, 500, 500)
    settings = make_settings(webhook_url=hook.url(), retries=2)
    alerts.send(settings, kind="down", agent="world-npcs", message="m", once_key="k", now=NOW)
    assert alerts.send(settings, kind="down", agent="world-npcs", message="m", once_key="k", now=NOW) is None
    assert len(hook.posts) == 3


def test_keys_older_than_60_days_are_pruned(home: Path) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "alerts.json").write_text(json.dumps({"sent": {
        "old": (NOW - timedelta(days=61)).isoformat(), "recent": (NOW - timedelta(days=59)).isoformat(),
        "garbage": 42}}), encoding="utf-8")
    alerts.send(make_settings(), kind="down", agent="world-npcs", message="m", once_key="new", now=NOW)
    assert set(json.loads((home / "alerts.json").read_text())["sent"]) == {"recent", "new"}
    assert alerts.send(make_settings(), kind="down", agent="world-npcs", message="m", once_key="old", now=NOW)


def test_a_corrupt_alerts_json_is_moved_aside_and_the_alert_still_goes(home: Path) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "alerts.json").write_text("{torn", encoding="utf-8")
    assert alerts.send(make_settings(), kind="down", agent="world-npcs", message="m", once_key="k", now=NOW)
    assert list(home.glob("alerts.json.corrupt-*"))
    assert json.loads((home / "alerts.json").read_text())["sent"] == {"k": NOW.isoformat()}


SEND = """
import sys, time
from pathlib import Path
from mythline_cli import alerts
from mythline_cli.config import parse_config
go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.005)
settings = parse_config({"alerts": {"webhook_url": sys.argv[1]}})
result = alerts.send(settings, kind="budget-warn", agent="world-npcs", message="80% of the daily cap",
                     once_key="budget-warn:world-npcs:day:2026-11-25")
print("sent" if result else "skipped")
"""


def test_two_processes_at_once_deliver_exactly_once(hook: WebhookServer, tmp_path: Path) -> None:
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", SEND, hook.url(), str(go)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    go.touch()  # release them together
    outputs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    assert sorted(o[0].strip() for o in outputs) == ["sent", "skipped", "skipped", "skipped"]
    assert len(hook.posts) == 1
    assert len(of("alert", events())) == 1


HANGING_SEND = """
import sys
from mythline_cli import alerts
from mythline_cli.config import parse_config
settings = parse_config({"alerts": {"webhook_url": sys.argv[1], "timeout": "1h"}})
alerts.send(settings, kind="down", agent="world-npcs", message="m", once_key="down:world-npcs:1")
"""


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_a_crash_mid_delivery_does_not_deliver_again(hook: WebhookServer) -> None:
    hook.enqueue(Hang())
    proc = subprocess.Popen([sys.executable, "-c", HANGING_SEND, hook.url()])
    try:
        while not hook.posts:  # once the POST has arrived, the process is mid-delivery
            assert proc.poll() is None, "the sender exited before delivering"
            time.sleep(0.02)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    settings = parse_config({"alerts": {"webhook_url": hook.url()}})
    assert alerts.send(settings, kind="down", agent="world-npcs", message="m", once_key="down:world-npcs:1") is None
    assert len(hook.posts) == 1


# -- the command ------------------------------------------------------------------------------

DUMP_ENV = """
import json, os, sys
json.dump({k: v for k, v in os.environ.items() if k.startswith("MYTHLINE_ALERT")}, open(sys.argv[1], "w"))
"""


def py_command(script: Path, *args: str) -> str:
    parts = [sys.executable, str(script), *args]
    return " ".join(f'"{p}"' for p in parts)


def test_the_command_gets_the_alert_in_its_environment(tmp_path: Path) -> None:
    script = tmp_path / "dump_env.py"
    script.write_text(DUMP_ENV, encoding="utf-8")
    dump = tmp_path / "env.json"
    settings = make_settings(command=py_command(script, str(dump)))
    result = alerts.send(settings, kind="failures", agent="world-npcs", message="3 failed runs in a row",
                         data={"consecutive_failures": 3}, once_key="failures:world-npcs:1", now=NOW)
    assert result is not None and result["command"] == {"ok": True, "exit_code": 0}
    env = json.loads(dump.read_text())
    assert env["MYTHLINE_ALERT_KIND"] == "failures"
    assert env["MYTHLINE_ALERT_AGENT"] == "world-npcs"
    assert env["MYTHLINE_ALERT_MESSAGE"] == "3 failed runs in a row"
    assert json.loads(env["MYTHLINE_ALERT_JSON"]) == {
        "kind": "failures", "agent": "world-npcs", "message": "3 failed runs in a row",
        "data": {"consecutive_failures": 3}, "once_key": "failures:world-npcs:1", "ts": NOW.isoformat()}
    assert of("alert", events())[0]["channels"] == ["command"]


def test_a_failing_command_is_an_alert_failed_event(tmp_path: Path) -> None:
    script = tmp_path / "fail.py"
    script.write_text("import sys\nsys.stderr.write('no route to pager\\n')\nsys.exit(3)\n", encoding="utf-8")
    result = alerts.send(make_settings(command=py_command(script)), kind="down", agent="world-npcs", message="m",
                         now=NOW)
    assert result is not None and result["command"] == {
        "ok": False, "exit_code": 3, "error": "alerts.command exited 3: no route to pager"}
    [failed] = of("alert-failed", events())
    assert failed["channel"] == "command" and failed["exit_code"] == 3
    assert failed["error"] == "alerts.command exited 3: no route to pager"


def test_a_command_past_its_timeout_is_stopped(tmp_path: Path) -> None:
    script = tmp_path / "slow.py"
    script.write_text("import time\ntime.sleep(600)\n", encoding="utf-8")
    result = alerts.send(make_settings(command=py_command(script), timeout="1s"), kind="down",
                         agent="world-npcs", message="m", now=NOW)
    assert result is not None and result["command"] == {"ok": False,
                                                         "error": "alerts.command did not finish within 1s"}
    assert of("alert-failed", events())[0]["error"] == "alerts.command did not finish within 1s"


SLOW_CHILD = """
import os, sys, time
open(sys.argv[1], "w").write(str(os.getpid()))
time.sleep(600)
"""

COMPOUND_SEND = """
import sys
from mythline_cli import alerts
from mythline_cli.config import parse_config
settings = parse_config({"alerts": {"command": sys.argv[1], "timeout": "1s"}})
print(alerts.send(settings, kind="down", agent="world-npcs", message="m")["command"]["error"])
"""


@pytest.mark.skipif(sys.platform == "win32", reason="a POSIX shell command line")
def test_a_timeout_stops_the_commands_children_too(tmp_path: Path) -> None:
    # `a; b` makes the shell fork: killing only the shell would leave the child holding us up.
    script, pidfile = tmp_path / "slow_child.py", tmp_path / "child.pid"
    script.write_text(SLOW_CHILD, encoding="utf-8")
    command = py_command(script, str(pidfile)) + "; echo never"
    proc = subprocess.run([sys.executable, "-c", COMPOUND_SEND, command], capture_output=True, text=True,
                          timeout=120)
    assert proc.stdout.strip() == "alerts.command did not finish within 1s", proc.stderr
    pid = int(pidfile.read_text())
    for _ in range(500):  # the killed child may take a moment to be reaped by init
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.02)
    else:
        pytest.fail(f"the command's child {pid} is still running")


def test_a_nul_in_the_message_does_not_stop_the_command(tmp_path: Path) -> None:
    script, dump = tmp_path / "dump_env.py", tmp_path / "env.json"
    script.write_text(DUMP_ENV, encoding="utf-8")
    result = alerts.send(make_settings(command=py_command(script, str(dump))), kind="down", agent="world-npcs",
                         message="a NUL \x00 in the message", now=NOW)
    assert result is not None and result["event"] is True and result["command"] == {"ok": True, "exit_code": 0}
    assert json.loads(dump.read_text())["MYTHLINE_ALERT_MESSAGE"] == "a NUL  in the message"


# -- secrets ----------------------------------------------------------------------------------

def test_the_webhook_url_never_reaches_a_file_or_the_result(hook: WebhookServer, tmp_path: Path, home: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            waits: list[float]) -> None:
    monkeypatch.setenv(HOOK_ENV, secret_url(hook))
    monkeypatch.setenv(KEY_ENV, TEST_KEY)
    # A command that prints the URL on its way out, as a careless curl wrapper might.
    script = tmp_path / "leaky.py"
    script.write_text(f"import os, sys\nsys.stderr.write('posting to ' + os.environ[{HOOK_ENV!r}])\nsys.exit(1)\n",
                      encoding="utf-8")
    settings = parse_config({"provider": {"api_key_env": KEY_ENV},
                             "alerts": {"webhook_url_env": HOOK_ENV, "command": py_command(script), "retries": 1}})
    results = []
    hook.enqueue(500, 500, 200)
    for message in (f"failed with key {TEST_KEY}", f"hook {secret_url(hook)} broke", "plain"):
        results.append(alerts.send(settings, kind="down", agent="world-npcs", message=message, now=NOW))
    refused = parse_config({"alerts": {"webhook_url": f"http://127.0.0.1:{free_port()}/x/{TOKEN}", "retries": 0}})
    results.append(alerts.send(refused, kind="down", message="fleet", now=NOW))

    assert len(hook.posts) == 4 and len(of("alert-failed", events())) >= 4
    written = everything_under(home)
    shown = json.dumps(results)
    for secret in (TOKEN, TEST_KEY):
        assert secret.encode() not in written
        assert secret not in shown
    for post in hook.posts:
        assert TEST_KEY not in json.dumps(post["body"])
    assert b"[redacted]" in written
