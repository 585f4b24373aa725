"""Kill a real cycle with SIGKILL before every write it makes; check the invariants each time.

Every write under the state home (checkpoint, heartbeat, event append, ledger journal and
ledger, store, locks) is a crash point. After each kill the next run must finish the work
with every file readable, the ledger equal to its journal, nothing stored twice, no
recorded LLM step requested again, and the dead run's reservation reclaimed at its
estimate, marked unsettled.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from concurrent.futures import ThreadPoolExecutor

import pytest

from helpers import TEST_KEY, grounded_responder, is_audit, lore_responder
from llm_server import ScriptedLLMServer
from mythline_cli import evidence
from mythline_cli.ledger import replay
from source_server import SourceServer

AGENT = "world-npcs"
LAUNCHER = Path(__file__).with_name("crash_launcher.py")

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")


def launch(kill_at: int, log: Path, home: Path, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **(extra or {}), "MYTHLINE_HOME": str(home)}
    return subprocess.run([sys.executable, str(LAUNCHER), str(kill_at), str(log), "--", "run", AGENT],
                          capture_output=True, text=True, env=env, timeout=120)


def recorded_steps(home: Path) -> set[str]:
    try:
        ck = json.loads((home / "agents" / AGENT / "checkpoint.json").read_text())
    except FileNotFoundError:
        return set()
    return set(((ck.get("current") or {}).get("steps") or {}))


def open_reservations(home: Path) -> set[str]:
    """Reservations the journal says are open (what the ledger will hold after roll-forward)."""
    journal = home / "ledger-history.jsonl"
    return set(replay(journal)["reservations"]) if journal.exists() else set()


def check_sources(home: Path) -> list[str]:
    """A grounded record's quotes are found in the texts kept by their hashes, and every kept
    text is whole (its name is its sha256)."""
    import hashlib

    problems = []
    for path in (home / "sources" / "text").glob("*.txt"):
        if hashlib.sha256(path.read_bytes()).hexdigest() != path.stem:
            problems.append(f"source text {path.name} is not whole")
    for path in (home / "store").rglob("*.json"):
        prov = json.loads(path.read_text())["provenance"]
        if not prov.get("sources"):
            problems.append("a grounded record was stored without sources")
        for src in prov.get("sources", []):
            text = (home / "sources" / "text" / f"{src['sha256']}.txt").read_text()
            for q in src["quotes"]:
                if not evidence.check(q["quote"], text, threshold=95, min_chars=20).found:
                    problems.append(f"stored quote not in its source: {q['quote'][:40]}")
    return problems


def check_invariants(home: Path, dead: set[str], steps_before: set[str], requests: list[dict]) -> list[str]:
    problems = []
    for path in home.rglob("*.json"):
        try:
            json.loads(path.read_text())
        except ValueError:
            problems.append(f"{path.name} does not parse")
    for path in home.rglob("*.jsonl"):
        for line in path.read_text().splitlines():
            try:
                json.loads(line)
            except ValueError:
                problems.append(f"{path.name} has a garbled line")
    ledger = json.loads((home / "ledger.json").read_text())
    if replay(home / "ledger-history.jsonl") != ledger:
        problems.append("ledger.json differs from its journal")
    if ledger["reservations"]:
        problems.append("reservations left open")
    journal = [json.loads(line) for line in (home / "ledger-history.jsonl").read_text().splitlines()]
    reclaimed = {op["reservation"] for op in journal if op["event"] == "reclaim"}
    if dead - reclaimed:
        problems.append("a dead run's reservation was not reclaimed")
    for op in journal:
        if op["event"] == "reclaim" and (op["reason"] != "process gone" or not op["usd"] > 0):
            problems.append("reclaim not charged at its estimate")
    topics = [json.loads(p.read_text())["topic"] for p in (home / "store").rglob("*.json")]
    if sorted(set(topics)) != sorted(topics) or "Thrall" not in topics:
        problems.append(f"stored records: {sorted(topics)}")
    asked = {"audit" if is_audit(r) else "research" for r in requests}
    if asked & steps_before:
        problems.append(f"recorded step(s) {sorted(asked & steps_before)} requested again")
    ck = json.loads((home / "agents" / AGENT / "checkpoint.json").read_text())
    if ck["topics"].get("Thrall", {}).get("status") != "done":
        problems.append("topic not done after the resumed run")
    for path in home.rglob("*"):
        if path.is_file() and TEST_KEY in path.read_text(errors="replace"):
            problems.append(f"the API key reached {path.name}")
    return problems


def _points(log: Path, request_times: list[float]) -> list[tuple[int, str, int]]:
    """(index, description, phase) of each write; phase = LLM requests made before it."""
    out = []
    for line in log.read_text().splitlines():
        index, op, path, stamp = line.split(" ")
        name = ("store record" if path.startswith("store/") else "page cache" if path.startswith("sources/cache/")
                else "source text" if path.startswith("sources/text/") else path.split("/")[-1])
        if name.endswith(".tmp"):  # ".heartbeat.json.x1y2z3.tmp" -> "heartbeat.json (temp)"
            name = name.lstrip(".").split(".")[0] + ".json (temp)"
        phase = sum(1 for t in request_times if t < float(stamp))
        out.append((int(index), f"{op} {name}", phase))
    return out


def sweep(tmp_path: Path, llm_server, *, every: bool, grounded: bool = False) -> int:
    responder = grounded_responder if grounded else lore_responder
    llm_server.responder = responder(AGENT)
    clean = launch(0, tmp_path / "clean.log", tmp_path / "clean")
    assert clean.returncode == 0, clean.stderr
    points = _points(tmp_path / "clean.log", [r["time"] for r in llm_server.requests])
    written = " ".join(desc for _, desc, _ in points)
    # The sweep covers every kind of write the cycle makes.
    for target in ("checkpoint.json", "heartbeat.json", "events.jsonl", "ledger.json", "ledger-history.jsonl",
                   "run.lock", "store record", "(temp)", "os.rename"):
        assert target in written, target
    if grounded:
        for target in ("page cache", "source text", "hosts.json", "hosts.lock"):
            assert target in written, target
    if not every:
        # One kill per distinct write: what is written, in which phase of the cycle.
        seen: set[tuple[str, int]] = set()
        points = [p for p in points if (p[1], p[2]) not in seen and not seen.add((p[1], p[2]))]

    def one(point: tuple[int, str, int]) -> list[str]:
        k, desc, phase = point
        home = tmp_path / f"k{k}"
        # Each crash point gets its own server, so the requests it counts are its own.
        with ScriptedLLMServer() as server:
            server.responder = responder(AGENT)
            env = {"MYTHLINE_BASE_URL": server.base_url}
            killed = launch(k, tmp_path / f"k{k}.log", home, env)
            if killed.returncode != -signal.SIGKILL:
                return [f"{desc}: the run was not killed ({killed.returncode})"]
            steps = recorded_steps(home)
            dead = open_reservations(home)
            start = server.count()
            resumed = subprocess.run([sys.executable, "-m", "mythline_cli", "run", AGENT], capture_output=True,
                                     text=True, env={**os.environ, **env, "MYTHLINE_HOME": str(home)}, timeout=120)
            problems = [] if resumed.returncode == 0 else [f"resume exited {resumed.returncode}: {resumed.stderr}"]
            problems += check_invariants(home, dead, steps, server.requests[start:])
            if grounded:
                problems += check_sources(home)
        return [f"{desc} (after {phase} LLM requests): {p}" for p in problems]

    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        violations = [v for found in pool.map(one, points) for v in found]
    print(f"\n{len(points)} crash points, {len(violations)} violations")
    assert not violations, "\n".join(violations)
    return len(points)


def test_sigkill_at_every_distinct_write_point(tmp_path, config, llm_server):
    sweep(tmp_path, llm_server, every=False)


def grounded_config(config, pages: SourceServer) -> None:
    config(sections={"defaults": {"sources": [pages.base_url + "/wiki/{title}", pages.base_url + "/chronicle/{title}"]},
                     "sources": {"host_delay": "0s"}, "sources.tiers": {"127.0.0.1": "primary"}})


def test_sigkill_at_every_distinct_write_point_of_a_grounded_cycle(tmp_path, config, llm_server):
    """The fetch cache, the kept source texts, the host table and the recorded sources step too."""
    with SourceServer() as pages:
        grounded_config(config, pages)
        sweep(tmp_path, llm_server, every=False, grounded=True)


@pytest.mark.slow
def test_sigkill_at_every_single_write_of_a_grounded_cycle(tmp_path, config, llm_server):
    with SourceServer() as pages:
        grounded_config(config, pages)
        sweep(tmp_path, llm_server, every=True, grounded=True)


@pytest.mark.slow
def test_sigkill_at_every_single_write(tmp_path, config, llm_server):
    sweep(tmp_path, llm_server, every=True)
