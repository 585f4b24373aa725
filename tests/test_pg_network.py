"""A host that loses its network to PostgreSQL mid-run, for real: the packets of its one
connection are dropped (iptables, on the loopback port pair), the rest of the machine keeps
talking to the server.

What must follow: the server ends the lost session (its TCP keepalives give up), so the run
lock and the reservation's holder are released for every other host; the cut-off run itself
ends with one line and exit 6 rather than waiting on a dead socket; no money is lost. Needs
root and a working ``iptables``; skipped, saying so, without them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import TEST_KEY, delayed, is_audit, lore_responder, mythline, wait_for

AGENT = "world-npcs"

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="iptables is Linux's")


def _iptables_works() -> str | None:
    if os.geteuid() != 0:
        return "not root"
    if shutil.which("iptables") is None:
        return "iptables is not installed (apt-get install iptables)"
    probe = subprocess.run(["iptables", "-L", "INPUT", "-n"], capture_output=True, text=True)
    return None if probe.returncode == 0 else f"iptables does not work here ({probe.stderr.strip()[:200]})"


class Cut:
    """Drop every packet of one TCP connection on the loopback interface, both ways."""

    def __init__(self) -> None:
        self.rules: list[list[str]] = []

    def connection(self, client_port: int, server_port: int) -> None:
        for sport, dport in ((client_port, server_port), (server_port, client_port)):
            rule = ["INPUT", "-i", "lo", "-p", "tcp", "--sport", str(sport), "--dport", str(dport), "-j", "DROP"]
            subprocess.run(["iptables", "-I", *rule], check=True, capture_output=True)
            self.rules.append(rule)

    def heal(self) -> None:
        while self.rules:
            subprocess.run(["iptables", "-D", *self.rules.pop()], capture_output=True)


@pytest.fixture
def cut() -> Iterator[Cut]:
    why = _iptables_works()
    if why:
        pytest.skip(f"cannot cut a connection: {why}")
    made = Cut()
    try:
        yield made
    finally:
        made.heal()


def session_of(dsn: str, host_name: str) -> tuple[int, int] | None:
    """(backend pid, client port) of the run on ``host_name``."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT pid, client_port FROM pg_stat_activity WHERE application_name LIKE %s",
                           (f"mythline {host_name} %",)).fetchone()
    return (int(row[0]), int(row[1])) if row else None


def journal(dsn: str) -> list[dict]:
    import psycopg

    with psycopg.connect(dsn) as conn:
        return [r[0] for r in conn.execute("SELECT entry FROM mythline_journal ORDER BY seq")]


def test_a_host_cut_off_mid_call_releases_its_lock_and_its_reservation(tmp_path: Path, config, llm_server,
                                                                       pg_dsn: str, cut: Cut) -> None:
    from urllib.parse import urlsplit

    answer = lore_responder(AGENT)
    # The research answer comes after the cut: the run then needs the database to settle it.
    llm_server.responder = delayed(answer, 3, only=lambda r: not is_audit(r))
    hosts = {}
    for name in ("host-a", "host-b"):
        (tmp_path / name).mkdir()
        hosts[name] = {"MYTHLINE_STATE": pg_dsn, "MYTHLINE_HOST": name,
                       "MYTHLINE_HOME": str(tmp_path / name / "home")}
    victim = subprocess.Popen([sys.executable, "-m", "mythline_cli", "run", AGENT], cwd=tmp_path / "host-a",
                              env={**os.environ, **hosts["host-a"]}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: llm_server.count() >= 1 and session_of(pg_dsn, "host-a") is not None)
        backend_pid, client_port = session_of(pg_dsn, "host-a")  # type: ignore[misc]
        cut.connection(client_port, urlsplit(pg_dsn).port)  # type: ignore[arg-type]
        (reserved,) = [e for e in journal(pg_dsn) if e["event"] == "reserve"]

        # While the server still believes in the lost session, the lock holds on every host.
        held = mythline("run", AGENT, cwd=tmp_path / "host-b", env=hosts["host-b"])
        assert held.returncode == 4, held.stderr

        # The server's keepalives give up on the silent peer and end its session: the lock and
        # the holder go with it, and host-b's run takes the agent and reclaims the reservation.
        def runs() -> bool:
            done = mythline("run", AGENT, cwd=tmp_path / "host-b", env=hosts["host-b"])
            assert done.returncode in (0, 4), done.stderr
            return done.returncode == 0

        llm_server.responder = answer
        wait_for(runs, timeout=120)
        assert session_of(pg_dsn, "host-a") is None

        # The cut-off run does not wait on its dead socket for the kernel's 15 minutes.
        out, err = victim.communicate(timeout=120)
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.communicate()
    assert victim.returncode == 6, err
    (line,) = err.splitlines()
    assert line.startswith("mythline: lost the shared state at postgresql://mythline@127.0.0.1:"), line
    assert TEST_KEY not in out + err

    entries = journal(pg_dsn)
    (reclaim,) = [e for e in entries if e["event"] == "reclaim"]
    assert (reclaim["reservation"], reclaim["usd"], reclaim["reason"]) == \
        (reserved["reservation"], reserved["usd"], "process gone")
    assert not [e for e in entries if e.get("reservation") == reserved["reservation"]
                and e["event"] in ("settle", "release", "late-settle")]
    import psycopg

    with psycopg.connect(pg_dsn) as conn:
        ledger = conn.execute("SELECT state FROM mythline_ledger WHERE id = 1").fetchone()[0]
    assert ledger["reservations"] == {}
    day = next(w for k, w in ledger["windows"].items() if k.startswith("day:"))
    # Spent: host-b's whole run, settled, plus the cut-off call at its estimate.
    settled = sum(e["usd"] for e in entries if e["event"] == "settle")
    assert day["agents"][AGENT]["usd"] == pytest.approx(settled + reserved["usd"])
    assert day["agents"][AGENT]["unsettled_usd"] == pytest.approx(reserved["usd"])
