"""What the crash and disk-error sweeps share: the launcher that stops a real cycle at its
Nth write, the list of write points, and the invariants checked after each resumed run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from mythline_cli.ledger import replay

from helpers import TEST_KEY, is_audit
from zygote import Zygotes

AGENT = "world-npcs"
LAUNCHER = Path(__file__).with_name("crash_launcher.py")

def launch(kill_at: int, log: Path, home: Path, extra: dict[str, str] | None = None,
           zygotes: Zygotes | None = None) -> subprocess.CompletedProcess:
    """``mythline run AGENT`` with every write listed in ``log`` and the ``kill_at``-th stopped
    (0: none): a fresh interpreter, or a child forked by ``zygotes``."""
    env = {**os.environ, **(extra or {}), "MYTHLINE_HOME": str(home)}
    if zygotes is not None:
        return zygotes.run(["run", AGENT], env=env, kill_at=kill_at, log=log)
    return subprocess.run([sys.executable, str(LAUNCHER), str(kill_at), str(log), "--", "run", AGENT],
                          capture_output=True, text=True, env=env, timeout=120)


def resume(home: Path, extra: dict[str, str], zygotes: Zygotes, *args: str) -> subprocess.CompletedProcess:
    """The next scheduled ``mythline run AGENT`` in ``home``, forked by ``zygotes``."""
    return zygotes.run(["run", AGENT, *args], env={**os.environ, **extra, "MYTHLINE_HOME": str(home)})


def same_writes(fresh: Path, forked: Path) -> list[str]:
    """Where the writes listed in two launch logs differ (a fresh and a forked clean run)."""
    def kinds(log: Path) -> list[str]:
        return [desc for _, desc, _ in write_points(log, [])]

    a, b = kinds(fresh), kinds(forked)
    return [] if a == b else [f"a forked run wrote {b}, a fresh one {a}"]


def recorded_steps(home: Path) -> set[str]:
    try:
        ck = json.loads((home / "agents" / AGENT / "checkpoint.json").read_text())
    except FileNotFoundError:
        return set()
    return set((ck.get("current") or {}).get("steps") or {})


def open_reservations(home: Path) -> set[str]:
    """Reservations the journal says are open (what the ledger will hold after roll-forward)."""
    journal = home / "ledger-history.jsonl"
    return set(replay(journal)["reservations"]) if journal.exists() else set()


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


def write_points(log: Path, request_times: list[float]) -> list[tuple[int, str, int]]:
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


def check_sources(home: Path) -> list[str]:
    """A grounded record's quotes are found in the texts kept by their hashes, and every kept
    text is whole (its name is its sha256)."""
    import hashlib

    from mythline_cli import evidence

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
