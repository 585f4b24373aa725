"""The fleet's state, derived from heartbeat files and the ledger (reads files only)."""

from __future__ import annotations

import socket
from datetime import datetime, timedelta, timezone
from typing import Any

from . import heartbeat, paths
from .config import Settings
from .ledger import Ledger, window_keys
from .procs import pid_alive

FAILING = ("down", "failed")


def _parse(ts: Any) -> datetime | None:
    if not isinstance(ts, str):
        return None
    try:
        return datetime.fromisoformat(ts)
    except ValueError:
        return None


def agent_state(hb: dict[str, Any] | None, *, interval: float, grace: float, run_timeout: float,
                now: datetime, paused: bool) -> tuple[str, datetime | None, str | None]:
    """(state, next due, note) for one agent, like a cron monitor would judge it."""
    if paused:
        return "paused", None, None
    if hb is None:
        return "never-run", None, None
    state = hb.get("state") or "failed"
    updated = _parse(hb.get("updated")) or _parse(hb.get("started"))
    if state == "running":
        if updated is not None and (now - updated).total_seconds() > run_timeout:
            return "down", None, "hung"
        pid = hb.get("pid")
        if isinstance(pid, int) and hb.get("host", socket.gethostname()) == socket.gethostname() and not pid_alive(pid):
            return "failed", None, f"run died (pid {pid})"
        return "running", None, None
    last = _parse(hb.get("finished")) or updated
    due = last + timedelta(seconds=interval) if last else None
    if state in ("failed", "over-budget", "queue-empty"):
        return state, due, None
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
    keys = window_keys(now, ledger.tz)
    day = data["windows"].get(keys["day"], {}).get("agents", {})
    rows = []
    for agent in settings.agents():
        hb = heartbeat.read_only(agent.name)
        paused = paths.agent_dir(agent.name).joinpath("paused").exists()
        state, due, note = agent_state(hb, interval=agent.interval, grace=agent.grace,
                                       run_timeout=settings.budget.run_timeout, now=now, paused=paused)
        hb = hb or {}
        topics = hb.get("topics") or {}
        done, quarantined = int(topics.get("done", 0)), int(topics.get("quarantined", 0))
        spent = day.get(agent.name, {})
        rows.append({
            "agent": agent.name, "state": state, "note": note,
            "last_run": hb.get("finished") or hb.get("started"), "last_success": hb.get("last_success"),
            "next_due": due.isoformat() if due else None, "consecutive_failures": hb.get("consecutive_failures", 0),
            "topic": hb.get("topic"), "last_error": hb.get("last_error") if state in FAILING + ("over-budget",) else None,
            "topics": {"done": done, "pending": max(0, len(agent.topics) - done - quarantined),
                       "quarantined": quarantined},
            "tokens_today": int(spent.get("tokens", 0)), "tokens_cap": agent.daily_tokens,
            "usd_today": round(float(spent.get("usd", 0.0)), 6), "usd_cap": agent.daily_usd,
        })
    report = ledger.report(data)
    return {"now": now.isoformat(), "home": str(paths.home()), "agents": rows, "fleet": report["fleet"],
            "open_reservations": report["open_reservations"], "ledger_error": ledger_error,
            "failing": [r["agent"] for r in rows if r["state"] in FAILING]}
