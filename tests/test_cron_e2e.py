"""The generated crontab under a real cron daemon, for a few minutes, with the key only in the key store.

    python -m pytest -q -m slow tests/test_cron_e2e.py

Needs root, Debian's cron (apt-get install cron) and a sendmail (an MTA such as exim4, or
none: then a stub that keeps the mail is put at /usr/sbin/sendmail for the test's
duration). It replaces root's crontab while it runs and puts the old one back. Takes 4 to
12 minutes: it waits for cron's minutes and for two of the watchdog's five-minute ticks.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from filelock import FileLock

from helpers import KEY_ENV, MODEL, lore_responder, write_config

ROOT = Path(__file__).resolve().parent.parent
GOOD, BROKEN = "world-npcs", "world-lore"
SENDMAIL = Path("/usr/sbin/sendmail")
MAIL_SPOOL = Path("/var/mail")  # root's mail may be aliased to another mailbox: read them all

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform != "linux" or os.geteuid() != 0 or shutil.which("cron") is None
                       or shutil.which("crontab") is None,
                       reason="needs root and Debian cron (apt-get install cron); .ci/run installs it"),
]


def cli(*args: str, env: dict[str, str], **kwargs):
    return subprocess.run([str(Path(sys.executable).with_name("mythline")), *args], env=env, capture_output=True,
                          text=True, timeout=120, **kwargs)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _running_cron() -> int | None:
    for pidfile in (Path("/run/crond.pid"), Path("/var/run/crond.pid")):
        try:
            pid = int(pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        if _pid_alive(pid) and "cron" in Path(f"/proc/{pid}/comm").read_text():
            return pid
    return None


def _start_server(tmp: Path, key: str) -> tuple[subprocess.Popen, str, Path]:
    port_file, log = tmp / "server.port", tmp / "server-requests.jsonl"
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "cron_llm_server.py"), GOOD, str(port_file), str(log)],
                            env={**os.environ, "EXPECTED_KEY": key}, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=open(tmp / "server.err", "w"))  # noqa: SIM115
    end = time.monotonic() + 30
    while not port_file.exists():
        assert proc.poll() is None and time.monotonic() < end, (tmp / "server.err").read_text()
        time.sleep(0.1)
    return proc, f"http://127.0.0.1:{port_file.read_text()}/v1", log


def _mailboxes() -> dict[Path, int]:
    if not MAIL_SPOOL.is_dir():
        return {}
    return {p: p.stat().st_size for p in MAIL_SPOOL.iterdir() if p.is_file()}


def _next_watchdog_tick(after: float) -> float:
    """The epoch second of the first */5 minute at or after ``after``, plus time for the run."""
    start = int(after // 300 + 1) * 300
    return start + 45


@pytest.fixture
def real_crontab() -> Iterator[None]:
    """The one real crontab: test_schedule's round trip must not interleave with this test."""
    with FileLock(Path(os.environ.get("TMPDIR", "/tmp")) / "mythline-real-crontab-test.lock", timeout=900):
        yield


def test_the_generated_crontab_under_real_cron(real_crontab: None, tmp_path: Path, home: Path, llm_server,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    key = "sk-cron-e2e-" + secrets.token_hex(12)
    monkeypatch.delenv(KEY_ENV, raising=False)
    server, base_url, requests_log = _start_server(tmp_path, key)
    alerts = tmp_path / "alerts.txt"
    config = write_config(tmp_path / "mythline.toml", base_url=base_url, sections={
        "defaults": {"interval": "1m", "grace": "10s", "enabled": False},
        f"agents.{GOOD}": {"enabled": True},
        f"agents.{BROKEN}": {"enabled": True},
        "alerts": {"command": f'echo "$MYTHLINE_ALERT_KIND $MYTHLINE_ALERT_AGENT" >> {alerts}'},
        "schedule": {"mailto": "root"},
        "budget": {"daily_usd": 100.0, "daily_tokens": 100_000_000},
    })
    env = {k: v for k, v in os.environ.items() if k != KEY_ENV}
    env["MYTHLINE_CONFIG"] = str(config)
    mail_stub = None
    started_cron: subprocess.Popen | None = None
    old_crontab = subprocess.run(["crontab", "-l"], capture_output=True, text=True).stdout
    mail_before = _mailboxes()
    try:
        stored = cli("keys", "set", KEY_ENV, input=key, env=env)
        assert stored.returncode == 0, stored.stderr
        # The agent cron will not run: one run by hand, then silence, so the watchdog must speak.
        llm_server.responder = lore_responder(BROKEN)
        first = cli("run", BROKEN, "--base-url", llm_server.base_url, env=env)
        assert first.returncode == 0, first.stderr
        if not SENDMAIL.exists():
            mail_stub = tmp_path / "mail.txt"
            SENDMAIL.write_text(f"#!/bin/sh\ncat >> '{mail_stub}'\necho >> '{mail_stub}'\n", encoding="utf-8")
            SENDMAIL.chmod(0o755)
        env.pop("MYTHLINE_CRONTAB", None)
        installed = cli("schedule", "cron", "--install", "--agent", GOOD, env=env)
        assert installed.returncode == 0, installed.stderr
        table = subprocess.run(["crontab", "-l"], capture_output=True, text=True, check=True).stdout
        assert key not in table and " watchdog" in table
        cron_pid = _running_cron()
        if cron_pid is None:
            # Started with an empty environment, as at boot: nothing of this shell reaches the jobs.
            started_cron = subprocess.Popen(["env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "cron", "-f"],
                                            start_new_session=True, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL)
            time.sleep(1)
            assert started_cron.poll() is None, "cron did not start"
            cron_pid = _running_cron() or started_cron.pid
        environ = Path(f"/proc/{cron_pid}/environ").read_bytes()
        assert key.encode() not in environ

        # Wait for the broken agent to be down, then for a watchdog tick after that and one more.
        down_at = time.time() + 75
        first_tick = _next_watchdog_tick(down_at)
        second_tick = first_tick + 300
        deadline = second_tick + 30
        while time.time() < deadline:
            time.sleep(5)
        records = sorted((home / "store").rglob("*.json"))
    finally:
        subprocess.run(["crontab", "-"], input=old_crontab, text=True, check=False)
        if not old_crontab.strip():
            subprocess.run(["crontab", "-r"], capture_output=True, check=False)
        if started_cron is not None:
            started_cron.send_signal(signal.SIGTERM)
            started_cron.wait(timeout=10)
        if mail_stub is not None:
            SENDMAIL.unlink(missing_ok=True)
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=10)

    # Runs happened under cron, with the key from the store, and nothing was bought or stored twice.
    requests = [json.loads(line) for line in requests_log.read_text().splitlines()]
    research = [r["topic"] for r in requests if r["step"] == "research"]
    assert len(research) >= 3, requests
    assert all(r["key_ok"] for r in requests)
    assert len(set(research)) == len(research), "a topic was researched twice"
    # One record per topic the good agent researched, plus the one the silent agent stored by hand.
    assert len(records) == len(research) + 1
    # The watchdog fired once for the silent agent, across two ticks.
    assert alerts.read_text().splitlines() == [f"down {BROKEN}"]
    # No mail, log or file carries the key.
    if mail_stub is not None:
        mail = mail_stub.read_text(encoding="utf-8", errors="replace")
    else:
        mail = "".join(data[mail_before.get(path, 0):].decode("utf-8", errors="replace")
                       for path, data in ((p, p.read_bytes()) for p in _mailboxes()))
    assert "X-Cron-Env" in mail and f"{BROKEN} is down" in mail, mail
    assert mail.count(f"{BROKEN} is down") == 1
    assert key not in mail
    for path in [*tmp_path.rglob("*"), *home.rglob("*")]:
        if path.is_file() and path.name != "keys.json":
            assert key.encode() not in path.read_bytes(), f"the key leaked into {path}"
    print(f"cron e2e: {len(research)} runs under cron, {len(records)} records, model {MODEL}", file=sys.stderr)
