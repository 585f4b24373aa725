"""The watchdog: one pass over the fleet, a ``down`` alert per new incident and a
``recovered`` alert per closed one. Started every five minutes by the scheduler."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from .alerts import close_incident, open_incident, open_incidents, send
from .clock import utcnow

if TYPE_CHECKING:
    from .status import StatusRow


def _when(ts: str | None) -> str:
    if not ts:
        return "an unknown time"
    try:
        return datetime.fromisoformat(ts).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        return ts


def _down_message(row: StatusRow, settings: Any) -> str:
    name = row["agent"]
    from .durations import format_duration

    if row.get("note") == "hung":
        return (f"{name} is down (hung): its run started {_when(row['last_run'])} and is still running past "
                f"budget.run_timeout ({format_duration(settings.budget.run_timeout)}); see: mythline status")
    grace = format_duration(settings.agent(name).grace)
    log = f"; its scheduled output: {row['log']}" if row.get("log") else ""
    start = row.get("start_failure")
    if start:
        return (f"{name} is down: the scheduler starts it, but it cannot start ({start['count']} time(s) since "
                f"{_when(start['since'])}, last run {_when(row['last_run'])}): {start['error']}{log}; "
                f"see: mythline logs {name}")
    if row.get("last_run") is None:
        return (f"{name} is down: it has never run, though its schedule was installed long enough ago "
                f"(due {_when(row['next_due'])}, grace {grace}); check that cron or Task Scheduler starts it{log}")
    cause = f"; last error: {row['last_error']}" if row.get("last_error") else ""
    return (f"{name} is down: last run {_when(row['last_run'])}, due {_when(row['next_due'])}, nothing since "
            f"(grace {grace}){cause}; check that cron or Task Scheduler still starts it{log}, and see: "
            f"mythline logs {name}")


def watch(settings, *, now: datetime | None = None) -> dict[str, Any]:
    """One watchdog pass: a ``down`` alert per new incident, a ``recovered`` alert per closed one."""
    from .status import collect

    now = now or utcnow()
    data = collect(settings, now=now)
    incidents = open_incidents()
    sent: list[dict[str, Any]] = []
    down: list[str] = []
    streak = settings.config.alerts.consecutive_failures
    for row in data["agents"]:
        name = row["agent"]
        start = row.get("start_failure")
        if start and start["count"] >= streak:
            # A run that cannot start never reaches the cycle's own failure-streak alert.
            result = send(settings, kind="failures", agent=name, now=now,
                          once_key=f"failures:{name}:start:{start['since']}",
                          message=f"{name} could not start {start['count']} times in a row: {start['error']}"
                                  + (f"; its scheduled output: {row['log']}" if row.get("log") else ""),
                          data={"failures": start["count"], "exit_code": start["exit_code"], "since": start["since"]})
            if result is not None:
                sent.append(result)
        if row["state"] == "down":
            down.append(name)
            since = row["last_run"] or "unknown"
            incident = open_incident(name, since=since, now=now, note=row.get("note"))
            result = send(settings, kind="down", agent=name, message=_down_message(row, settings),
                          once_key=incident["key"], now=now,
                          data={"state": "down", "note": row.get("note"), "last_run": row["last_run"],
                                "next_due": row["next_due"], "last_error": row.get("last_error")})
            if result is not None:
                sent.append(result)
        elif name in incidents:
            incident = incidents[name]
            key = str(incident.get("key"))
            state = row["state"] + (f" ({row['note']})" if row.get("note") else "")
            result = send(settings, kind="recovered", agent=name, once_key=f"recovered:{key}", now=now,
                          message=f"{name} recovered: now {state} (down since {_when(incident.get('opened'))})",
                          data={"state": row["state"], "down_since": incident.get("opened")})
            # Sent first, closed after: a crash in between re-finds the incident, and the
            # once-key keeps the second look from alerting twice.
            close_incident(name, key)
            if result is not None:
                sent.append(result)
    # Every agent that needs a look, with its cause and log: what a person at the terminal reads.
    failing = [{"agent": r["agent"], "state": r["state"], "note": r.get("note"), "error": r.get("last_error"),
                "log": r.get("log")} for r in data["agents"] if r["state"] in ("down", "failed")]
    return {"now": now.isoformat(), "down": down, "failing": failing, "sent": sent,
            "start_failures": data.get("start_failures") or []}
