"""``mythline run --due``: one scheduler entry for the whole fleet.

Every agent whose next due time has passed runs as its own ``mythline run AGENT`` process
(its own run lock, its own signal handling, the shared ledger), at most ``jobs`` at once.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from . import heartbeat, killswitch
from .config import Settings
from .errors import ExitCode
from .heartbeat import parse_time
from .status import agent_state

# `run --due` is started by cron every minute: half of that absorbs the start-up jitter.
TOLERANCE = 30.0


def due_agents(settings: Settings, *, now: datetime | None = None) -> list[str]:
    """Enabled, unpaused agents whose interval has passed since their last run and not backing off."""
    now = now or datetime.now(timezone.utc)
    due = []
    for agent in settings.agents():
        if not agent.enabled or killswitch.is_paused(agent.name):
            continue
        hb = heartbeat.read_only(agent.name)
        if not hb:
            due.append(agent.name)
            continue
        until = parse_time(hb.get("backoff_until"))
        if until is not None and now < until:
            continue
        # A "running" heartbeat left by a run that died (SIGKILL, OOM, power cut) or hung past
        # run_timeout makes the agent due again, judged exactly as status judges it; its run
        # lock still stops a second run if the first is in fact alive.
        state, _, _ = agent_state(hb, interval=agent.interval, grace=agent.grace,
                                  run_timeout=settings.budget.run_timeout, now=now, paused=False)
        if state == "running":
            continue
        # From the start of the last run, as cron counts, less half a tick: that run began a
        # moment after its tick (process start-up), and this check runs a moment after this
        # one, so a strict comparison would miss the tick the interval ends on and run every
        # interval + 1 minute.
        last = parse_time(hb.get("started")) or parse_time(hb.get("finished"))
        if last is None or now >= last + timedelta(seconds=agent.interval - TOLERANCE):
            due.append(agent.name)
    return due


@dataclass
class ChildResult:
    """One agent's run under ``--due``."""

    agent: str
    exit_code: int
    stderr: str


# Worst first: the fleet's exit code is the most serious of its runs'.
_SEVERITY = [ExitCode.FAILED, ExitCode.USAGE, ExitCode.OVER_BUDGET]


def fleet_exit_code(results: list[ChildResult]) -> int:
    codes = {r.exit_code for r in results}
    for code in _SEVERITY:
        if code in codes:
            return code
    if codes - {ExitCode.OK, ExitCode.ALREADY_RUNNING, ExitCode.PAUSED}:
        return ExitCode.FAILED  # a run killed by a signal, or another surprise
    return ExitCode.OK


def run_due(settings: Settings, *, jobs: int, config: Path | None, force: bool = False,
            agents: list[str] | None = None, poll: float = 0.05) -> list[ChildResult]:
    """Run the due agents as separate processes, at most ``jobs`` at once."""
    queue = list(agents if agents is not None else due_agents(settings))
    running: dict[str, subprocess.Popen[bytes]] = {}
    errs: dict[str, Any] = {}
    results: list[ChildResult] = []
    stopping: list[int] = []

    def forward(signum: int, frame: Any) -> None:
        stopping.append(signum)
        if sys.platform == "win32":
            return  # the children share our console and get Ctrl-C / Ctrl-Break themselves
        for proc in running.values():
            try:
                proc.send_signal(signum)
            except (OSError, ValueError):
                pass

    previous = {}
    for name in ("SIGINT", "SIGTERM"):
        sig = getattr(signal, name)
        try:
            previous[sig] = signal.signal(sig, forward)
        except ValueError:
            pass
    base = [sys.executable, "-m", "mythline_cli"] + (["--config", str(config)] if config else [])
    try:
        while queue or running:
            while queue and len(running) < jobs and not stopping:
                name = queue.pop(0)
                cmd = base + ["run", name] + (["--force"] if force else [])
                # stderr goes to a file, not a pipe: a chatty child must never block on a full pipe.
                errs[name] = tempfile.TemporaryFile(mode="w+", encoding="utf-8")  # noqa: SIM115 - closed when the child ends
                # Its own session on POSIX: a Ctrl-C reaches the whole foreground group, and a child
                # there would get it twice (once from the terminal, once forwarded) and abort
                # instead of stopping after its call. Only the forwarded signal reaches it now.
                running[name] = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=errs[name],
                                                 start_new_session=sys.platform != "win32")
            if stopping:
                queue.clear()
            for name, proc in list(running.items()):
                if proc.poll() is not None:
                    with errs.pop(name) as fh:
                        fh.seek(0)
                        err = fh.read()
                    results.append(ChildResult(name, proc.returncode, err))
                    del running[name]
            time.sleep(poll)
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    if stopping:
        code = ExitCode.TERMINATED if stopping[0] == signal.SIGTERM else ExitCode.INTERRUPTED
        results.append(ChildResult("*", code, ""))
    return results
