"""Kill a real cycle with SIGKILL before every write it makes; check the invariants each time.

Every write under the state home (checkpoint, heartbeat, event append, ledger journal and
ledger, store, locks) is a crash point. After each kill the next run must finish the work
with every file readable, the ledger equal to its journal, nothing stored twice, no
recorded LLM step requested again, and the dead run's reservation reclaimed at its
estimate, marked unsettled.
"""

from __future__ import annotations

import os
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import pytest

from helpers import grounded_responder, lore_responder
from llm_server import ScriptedLLMServer
from source_server import SourceServer
from sweeps import (
    AGENT,
    check_invariants,
    check_sources,
    launch,
    open_reservations,
    recorded_steps,
    resume,
    same_writes,
    write_points,
)
from zygote import Zygotes

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")


def sweep(tmp_path: Path, llm_server, *, every: bool, grounded: bool = False) -> int:
    with ExitStack() as stack:
        return _sweep(stack, tmp_path, llm_server, every=every, grounded=grounded)


def _sweep(stack: ExitStack, tmp_path: Path, llm_server, *, every: bool, grounded: bool) -> int:
    responder = grounded_responder if grounded else lore_responder
    llm_server.responder = responder(AGENT)
    clean = launch(0, tmp_path / "clean.log", tmp_path / "clean")
    assert clean.returncode == 0, clean.stderr
    points = write_points(tmp_path / "clean.log", [r["time"] for r in llm_server.requests])
    workers = max(2, os.cpu_count() or 2)
    zygotes = stack.enter_context(Zygotes(workers))
    # The points below run in forked children: first, one clean cycle forked writes the same.
    forked = launch(0, tmp_path / "forked.log", tmp_path / "forked", zygotes=zygotes)
    assert forked.returncode == 0, forked.stderr
    assert not same_writes(tmp_path / "clean.log", tmp_path / "forked.log")
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
            killed = launch(k, tmp_path / f"k{k}.log", home, env, zygotes)
            if killed.returncode != -signal.SIGKILL:
                return [f"{desc}: the run was not killed ({killed.returncode})"]
            steps = recorded_steps(home)
            dead = open_reservations(home)
            start = server.count()
            resumed = resume(home, env, zygotes)
            problems = [] if resumed.returncode == 0 else [f"resume exited {resumed.returncode}: {resumed.stderr}"]
            problems += check_invariants(home, dead, steps, server.requests[start:])
            if grounded:
                problems += check_sources(home)
        return [f"{desc} (after {phase} LLM requests): {p}" for p in problems]

    with ThreadPoolExecutor(max_workers=workers) as pool:
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
