"""The fleet's state, derived from heartbeat files and the ledger (reads files only)."""

from __future__ import annotations

import socket
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from . import heartbeat, killswitch, paths
from .heartbeat import parse_time
from .ledger import Ledger

if TYPE_CHECKING:
    from .config import Settings
from .procs import pid_alive

FAILING = ("down", "failed")


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _count(value: Any) -> int:
    try:
        return max(0, int(value))
    except (TypeError, ValueError, OverflowError):
        return 0


def agent_state(hb: dict[str, Any] | None, *, interval: float, grace: float, run_timeout: float,
                now: datetime, paused: bool, enabled: bool = True) -> tuple[str, datetime | None, str | None]:
    """(state, next due, note) for one agent, like a cron monitor would judge it."""
    if paused:
        return "paused", None, None
    if hb is None:
        return "never-run", None, None if enabled else "disabled"
    state = hb.get("state") or "failed"
    if not isinstance(state, str):
        state = "failed"
    updated = parse_time(hb.get("updated")) or parse_time(hb.get("started"))
    if state == "running":
        # A run older than run_timeout is hung, even if it still writes heartbeats.
        began = parse_time(hb.get("started")) or updated
        if began is not None and (now - began).total_seconds() > run_timeout:
            return "down", None, "hung"
        pid = hb.get("pid")
        if isinstance(pid, int) and hb.get("host", socket.gethostname()) == socket.gethostname() and not pid_alive(pid):
            return "failed", None, f"run died (pid {pid})"
        return "running", None, None
    last = parse_time(hb.get("finished")) or updated
    due = last + timedelta(seconds=interval) if last else None
    if not enabled:
        # A disabled agent is not scheduled, so it is never late or down.
        return (state if state in heartbeat.STATES else "failed"), None, "disabled"
    if state == "failed":
        return state, due, None
    # Over-budget and queue-empty agents still run on schedule (cheaply): silence means the
    # scheduler stopped calling them, which is worth a "late" or "down" like any other.
    if due is not None and now > due + timedelta(seconds=grace):
        return "down", due, None
    if due is not None and now > due:
        return "late", due, None
    return state if state in heartbeat.STATES else "failed", due, None


def collect(settings: Settings, *, now: datetime | None = None) -> dict[str, Any]:
    """Everything ``mythline status`` shows, as plain data."""
    now = now or datetime.now(timezone.utc)
    ledger = Ledger(settings, now=lambda: now)
    try:
        data = ledger.snapshot()
        ledger_error = None
    except Exception as exc:  # noqa: BLE001 - status must still show the heartbeats
        data, ledger_error = {"windows": {}, "reservations": {}}, str(exc)
    keys = ledger.current(data)
    day = data["windows"].get(keys["day"], {}).get("agents", {})
    rows = []
    for agent in settings.agents():
        hb = heartbeat.read_only(agent.name)
        pause_note = killswitch.note(agent.name)
        paused = pause_note is not None
        state, due, note = agent_state(hb, interval=agent.interval, grace=agent.grace,
                                       run_timeout=settings.budget.run_timeout, now=now, paused=paused,
                                       enabled=agent.enabled)
        if paused:
            note = pause_note or None
        hb = hb or {}
        topics = hb.get("topics")
        topics = topics if isinstance(topics, dict) else {}
        done, quarantined = _count(topics.get("done", 0)), _count(topics.get("quarantined", 0))
        spent = day.get(agent.name, {})
        last_run = parse_time(hb.get("finished")) or parse_time(hb.get("started"))
        last_success = parse_time(hb.get("last_success"))
        rows.append({
            "agent": agent.name, "state": state, "note": note,
            "last_run": last_run.isoformat() if last_run else None,
            "last_success": last_success.isoformat() if last_success else None,
            "next_due": due.isoformat() if due else None,
            "consecutive_failures": _count(hb.get("consecutive_failures", 0)),
            "topic": _text(hb.get("topic")),
            "last_error": _text(hb.get("last_error")) if state in FAILING + ("over-budget",) else None,
            "topics": {"done": done, "pending": max(0, len(agent.topics) - done - quarantined),
                       "quarantined": quarantined},
            "tokens_today": int(spent.get("tokens", 0)), "tokens_cap": agent.daily_tokens,
            "usd_today": round(float(spent.get("usd", 0.0)), 6), "usd_cap": agent.daily_usd,
        })
    return {"now": now.isoformat(), "home": str(paths.home()), "agents": rows, "fleet": ledger.fleet(data),
            "open_reservations": len(data["reservations"]), "ledger_error": ledger_error,
            "failing": [r["agent"] for r in rows if r["state"] in FAILING]}
