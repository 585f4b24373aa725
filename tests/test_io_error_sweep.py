"""A disk that fills up (ENOSPC) or fails (EIO) at any write of a real cycle.

The write fails once, at each write point in turn. The failed run must end with one line
on stderr and a documented exit code (no traceback), leave every file whole and no temp
file behind; the next run must then finish the work with the crash sweep's invariants:
nothing stored twice, no recorded LLM step requested again, ledger equal to its journal.
"""

from __future__ import annotations

import errno
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import pytest

from helpers import lore_responder
from llm_server import ScriptedLLMServer
from sweeps import AGENT, check_invariants, launch, open_reservations, recorded_steps, resume, same_writes, write_points
from zygote import Zygotes

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the sweep's launcher counts POSIX opens")


def sweep(tmp_path: Path, llm_server, code: int, *, every: bool) -> None:
    llm_server.responder = lore_responder(AGENT)
    with ExitStack() as stack:
        _sweep(stack, tmp_path, llm_server, code, every=every)


def _sweep(stack: ExitStack, tmp_path: Path, llm_server, code: int, *, every: bool) -> None:
    clean = launch(0, tmp_path / "clean.log", tmp_path / "clean")
    assert clean.returncode == 0, clean.stderr
    points = write_points(tmp_path / "clean.log", [r["time"] for r in llm_server.requests])
    workers = max(2, os.cpu_count() or 2)
    zygotes = stack.enter_context(Zygotes(workers))
    # The points below run in forked children: first, one clean cycle forked writes the same.
    forked = launch(0, tmp_path / "forked.log", tmp_path / "forked", zygotes=zygotes)
    assert forked.returncode == 0, forked.stderr
    assert not same_writes(tmp_path / "clean.log", tmp_path / "forked.log")
    if not every:
        seen: set[tuple[str, int]] = set()
        points = [p for p in points if (p[1], p[2]) not in seen and not seen.add((p[1], p[2]))]

    outcomes: list[str] = []

    def one(point: tuple[int, str, int]) -> list[str]:
        k, desc, phase = point
        home = tmp_path / f"e{k}"
        with ScriptedLLMServer() as server:
            server.responder = lore_responder(AGENT)
            env = {"MYTHLINE_BASE_URL": server.base_url, "CRASH_ERRNO": str(code)}
            failed = launch(k, tmp_path / f"e{k}.log", home, env, zygotes)
            problems = []
            lines = failed.stderr.strip().splitlines()
            outcomes.append(f"{desc}: exit {failed.returncode} {lines[-1] if lines else ''}")
            if failed.returncode == 0 and not lines:
                pass  # the failed write was one the cycle can do without (reported in its events)
            elif failed.returncode != 1 or len(lines) != 1 or "Traceback" in failed.stderr or "unexpected" in lines[0]:
                problems.append(f"ended {failed.returncode} with {failed.stderr!r}")
            elif os.strerror(code) not in lines[0] or "nothing written before is lost" not in lines[0]:
                problems.append(f"the line does not say what failed: {lines[0]!r}")
            leftovers = [p.name for p in home.rglob("*.tmp")]
            if leftovers:
                problems.append(f"temp files left behind: {leftovers}")
            steps = recorded_steps(home)
            dead = open_reservations(home)
            start = server.count()
            next_env = {"MYTHLINE_BASE_URL": server.base_url}
            resumed = resume(home, next_env, zygotes)
            if resumed.returncode not in (0,):
                # A failed cycle backs off; the scheduler's next start after the back-off finishes it.
                resumed = resume(home, next_env, zygotes, "--force")
            if resumed.returncode != 0:
                problems.append(f"the next run exited {resumed.returncode}: {resumed.stderr.strip()}")
            problems += check_invariants(home, dead, steps, server.requests[start:])
        return [f"{desc} (after {phase} LLM requests): {p}" for p in problems]

    with ThreadPoolExecutor(max_workers=workers) as pool:
        violations = [v for found in pool.map(one, points) for v in found]
    print("\n" + "\n".join(sorted(outcomes)))
    print(f"\n{errno.errorcode[code]}: {len(points)} failure points, {len(violations)} violations")
    assert not violations, "\n".join(violations)


def test_a_full_disk_at_every_distinct_write(tmp_path, config, llm_server):
    sweep(tmp_path, llm_server, errno.ENOSPC, every=False)


@pytest.mark.slow
@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO], ids=["ENOSPC", "EIO"])
def test_a_write_failing_at_every_single_point(tmp_path, config, llm_server, code):
    sweep(tmp_path, llm_server, code, every=True)


def test_the_disk_error_line_says_what_to_do():
    from mythline_cli.console import disk_error_line

    line = disk_error_line(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/state/ledger.json"))
    assert line is not None and line.startswith("/state/ledger.json: No space left on device; the disk is full")
    temp = disk_error_line(OSError(errno.EIO, os.strerror(errno.EIO), "/state/agents/a/.checkpoint.json.k3j9x0aq.tmp"))
    assert temp is not None and temp.startswith("/state/agents/a/checkpoint.json: Input/output error; the disk reported")
    assert "next run carries on" in line
    assert "read-only" in (disk_error_line(OSError(errno.EROFS, "Read-only file system")) or "")
    sharing = OSError(errno.EACCES, "The process cannot access the file", "C:\\state\\ledger.json")
    sharing.winerror = 32  # what Windows sets on a sharing violation
    assert "another program holds the file open" in (disk_error_line(sharing) or "")
    # Not a disk problem: left to the caller's "unexpected" line.
    assert disk_error_line(OSError(errno.ECONNRESET, "Connection reset by peer")) is None
