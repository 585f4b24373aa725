"""The fleet's state, derived from heartbeat files and the ledger (reads files only)."""

from __future__ import annotations

import socket
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, TypedDict

from . import heartbeat, killswitch, paths, statedocs
from .heartbeat import parse_time
from .ledger import Ledger
from .procs import pid_alive

if TYPE_CHECKING:
    from .config import Settings
    from .ledger import FleetUsage

FAILING = ("down", "failed")


class TopicCounts(TypedDict):
    done: int
    pending: int
    quarantined: int


class StartFailure(TypedDict):
    """Why the scheduler's last starts of an agent ended before its cycle (ISO times)."""

    at: str
    since: str
    count: int
    exit_code: int | None
    error: str


class StatusRow(TypedDict):
    """One agent in ``mythline status`` (and ``--json``'s ``agents``): times are ISO strings."""

    agent: str
    state: str
    note: str | None
    paused_at: str | None  # when the pause began (the flag's stamp), while paused
    last_run: str | None
    last_success: str | None
    next_due: str | None
    backoff_until: str | None
    consecutive_failures: int
    topic: str | None
    last_error: str | None
    start_failure: StartFailure | None
    log: str | None
    topics: TopicCounts
    tokens_today: int
    tokens_cap: int | None
    usd_today: float
    usd_cap: float | None


class StatusReport(TypedDict):
    """Everything ``mythline status`` shows; ``--json`` prints it as it is."""

    now: str
    home: str
    agents: list[StatusRow]
    fleet: FleetUsage
    open_reservations: int
    ledger_error: str | None
    breaker: dict[str, Any] | None
    start_failures: list[dict[str, Any]]
    failing: list[str]


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _count(value: Any) -> int:
    try:
        return max(0, int(value))
    except (TypeError, ValueError, OverflowError):
        return 0


def _silence(base: datetime, *, interval: float, grace: float, now: datetime) -> str | None:
    """"down" or "late" when nothing has run for an interval (+ grace) after ``base``."""
    due = base + timedelta(seconds=interval)
    if now > due + timedelta(seconds=grace):
        return "down"
    return "late" if now > due else None


def agent_state(hb: dict[str, Any] | None, *, interval: float, grace: float, run_timeout: float,
                now: datetime, paused: bool, enabled: bool = True,
                installed: datetime | None = None,
                pause: tuple[datetime | None, datetime] | None = None) -> tuple[str, datetime | None, str | None]:
    """(state, next due, note) for one agent, like a cron monitor would judge it.

    ``installed``: when the schedule that starts the agent was installed; an agent that has
    never run is late, then down, once it should have run since. ``pause``: (paused at,
    resumed at) of the agent's last pause.
    """
    if paused:
        return "paused", None, None
    if hb is None:
        if not enabled:
            return "never-run", None, "disabled"
        if installed is not None:
            due: datetime | None = installed + timedelta(seconds=interval)
            silent = _silence(installed, interval=interval, grace=grace, now=now)
            if silent:
                return silent, due, "never ran since the schedule was installed"
            return "never-run", due, None
        return "never-run", None, None
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
    if last is not None and pause is not None and pause[1] > last:
        # Time spent paused is no silence: the clock runs from the last run, minus the pause.
        began = max(pause[0] or last, last)
        last += pause[1] - began
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


def _breaker(settings: Any, now: datetime) -> dict[str, Any] | None:
    """The fleet's provider breaker when it is open (from the full settings or the cache)."""
    from .breaker import open_state

    try:
        if hasattr(settings, "breaker"):  # the settings cache
            url, cooldown = settings.breaker["provider"], float(settings.breaker["cooldown"])
        else:
            url, cooldown = settings.provider.base_url, float(settings.config.breaker.cooldown)
    except (AttributeError, KeyError, TypeError, ValueError):
        return None
    return open_state(url, cooldown=cooldown, now=now)


def _later(*times: datetime | None) -> datetime | None:
    known = [t for t in times if t is not None]
    return max(known) if known else None


def collect(settings: Settings, *, now: datetime | None = None) -> StatusReport:
    """Everything ``mythline status`` shows, as plain data."""
    from . import launch

    now = now or datetime.now(timezone.utc)
    ledger = Ledger(settings, now=lambda: now)
    try:
        data = ledger.snapshot()
        ledger_error = None
    except Exception as exc:  # noqa: BLE001 - status must still show the heartbeats
        data, ledger_error = {"windows": {}, "reservations": {}}, str(exc)
    keys = ledger.current(data)
    day = data["windows"].get(keys["day"], {}).get("agents", {})
    rows: list[StatusRow] = []
    installed = launch.installed_agents()
    breaker = _breaker(settings, now)
    breaker_until = parse_time(breaker["until"]) if breaker and breaker["cooling_down"] else None
    docs = statedocs.backend()
    for agent in settings.agents():
        hb = heartbeat.read_only(agent.name)
        flag = killswitch.state(agent.name)
        pause_note, paused_at = flag if flag is not None else (None, None)
        paused = flag is not None
        # One listing instead of a failed open per rarely-there file (a thousand agents add up).
        present = docs.names(agent.name) if hb is not None or paused or docs.shared else None
        if present is None:
            present = {launch.START_FAILURE} if docs.exists("start-failure", agent.name) else set()
        state, due, note = agent_state(hb, interval=agent.interval, grace=agent.grace,
                                       run_timeout=settings.budget.run_timeout, now=now, paused=paused,
                                       enabled=agent.enabled, installed=installed.get(agent.name),
                                       pause=None if paused or killswitch.RESUMED not in present
                                       else killswitch.last_pause(agent.name))
        if paused:
            note = pause_note or None
        start = (launch.latest_start_failure(agent.name)
                 if agent.enabled and not paused and launch.START_FAILURE in present else None)
        last_beat = launch.heartbeat_time(hb)
        if start is not None and state != "running" and (last_beat is None or start["at"] > last_beat):
            # Started by the scheduler but ended before its cycle: no heartbeat says so, this does.
            base = last_beat or installed.get(agent.name) or start["since"]
            silent = _silence(base, interval=agent.interval, grace=agent.grace, now=now)
            state = "down" if silent == "down" else "failed"
            note, due = "cannot start", None
        else:
            start = None
        hb = hb or {}
        backoff_until = parse_time(hb.get("backoff_until"))
        if due is not None and state not in ("running", "paused"):
            # The next run that will really try: not before a backoff or an open breaker ends.
            due = _later(due, backoff_until if backoff_until and backoff_until > now else None, breaker_until)
        if breaker is not None and state == "failed" and note is None:
            note = "breaker open"
        elif backoff_until is not None and backoff_until > now and state == "failed" and note is None:
            note = "backing off"
        topics = hb.get("topics")
        topics = topics if isinstance(topics, dict) else {}
        done, quarantined = _count(topics.get("done", 0)), _count(topics.get("quarantined", 0))
        spent = day.get(agent.name, {})
        last_run = parse_time(hb.get("finished")) or parse_time(hb.get("started"))
        last_success = parse_time(hb.get("last_success"))
        failing = state in FAILING + ("over-budget",)
        last_error = _text(hb.get("last_error")) if failing else None
        if start is not None:
            since = start["since"].astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
            last_error = f"cannot start ({start['count']} time(s) since {since}, exit {start['exit_code']}): {start['error']}"
        log = paths.agent_log(agent.name) if failing else None
        rows.append(StatusRow({
            "agent": agent.name, "state": state, "note": note,
            "paused_at": paused_at.isoformat() if paused and paused_at else None,
            "last_run": last_run.isoformat() if last_run else None,
            "last_success": last_success.isoformat() if last_success else None,
            "next_due": due.isoformat() if due else None,
            "backoff_until": backoff_until.isoformat() if backoff_until and backoff_until > now else None,
            "consecutive_failures": start["count"] if start else _count(hb.get("consecutive_failures", 0)),
            "topic": _text(hb.get("topic")),
            "last_error": last_error,
            "start_failure": (StartFailure(at=start["at"].isoformat(), since=start["since"].isoformat(),
                                           count=start["count"], exit_code=start["exit_code"], error=start["error"])
                              if start else None),
            # Where the scheduler's output of its runs goes (the crontab lines and windowless runs).
            "log": str(log) if log is not None and log.exists() else None,
            "topics": TopicCounts(done=done, pending=max(0, len(agent.topics) - done - quarantined),
                                  quarantined=quarantined),
            "tokens_today": int(spent.get("tokens", 0)), "tokens_cap": agent.daily_tokens,
            "usd_today": round(float(spent.get("usd", 0.0)), 6), "usd_cap": agent.daily_usd,
        }))
    # Starts that named no configured agent (a crontab line left from an old config, a bad
    # --due line): as long ago as the slowest agent's interval + grace, they are still happening.
    window = max((a.interval + a.grace for a in settings.agents()), default=3600.0)
    strays = launch.recent_fleet_failures(since=now - timedelta(seconds=window))
    return StatusReport(now=now.isoformat(), home=str(paths.home()), agents=rows, fleet=ledger.fleet(data),
                        open_reservations=len(data["reservations"]), ledger_error=ledger_error,
                        breaker=breaker, start_failures=strays,
                        failing=[r["agent"] for r in rows if r["state"] in FAILING])
