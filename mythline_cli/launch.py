"""What a scheduled start leaves behind when it has no heartbeat to write: start failures,
and when the schedule was installed.

A run that ends before its cycle begins (a config error, a missing key, an unknown agent,
a command line that is not understood) writes no heartbeat, so without this record only its
log file would know. The record never touches a file a running cycle writes (its heartbeat
or checkpoint): it is ``agents/AGENT/start-failure.json`` (the latest, replaced whole) plus a
``start-failed`` line appended to the agent's ``events.jsonl``; a start that names no
configured agent goes to the fleet's ``start-failures.jsonl`` instead. When not even the
state home can be written, the line on stderr (in cron's log or mail) is all there is.

``schedule.json`` holds when each agent's scheduler entry was installed, so an agent that
has never run can be judged late or down once it should have run.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import files, paths, statedocs
from .agent import valid_name
from .heartbeat import parse_time

# Long enough for any one error line, short enough that a status table stays readable.
MAX_LINE = 500


START_FAILURE = "start-failure.json"


def start_failure_path(agent: str) -> Path:
    return paths.agent_dir(agent) / START_FAILURE


def fleet_failures_path() -> Path:
    return paths.home() / "start-failures.jsonl"


def schedule_path() -> Path:
    return paths.home() / "schedule.json"


def _secrets() -> tuple[str, ...]:
    # The same rule as the stderr line: whatever looks like a credential in the environment.
    from .console import _env_secrets

    return _env_secrets()


def heartbeat_time(hb: dict[str, Any] | None) -> datetime | None:
    """The latest moment a heartbeat speaks for (a run started, beat or finished)."""
    if not hb:
        return None
    times = [t for t in (parse_time(hb.get(k)) for k in ("finished", "updated", "started")) if t is not None]
    return max(times) if times else None


class StartGuard:
    """Records a failure that ends ``mythline run`` before its cycle writes a heartbeat.

    Wrap the config load and the run in it; call ``known(settings)`` once the config is
    read. A failure after the cycle's first heartbeat is the heartbeat's to tell, and exits
    other than 1 and 2 (already running, paused, interrupted) are no failure at all.
    """

    def __init__(self, agent: str | None, *, started: datetime | None = None) -> None:
        self.agent = agent
        self.configured: bool | None = None
        self.started = started or datetime.now(timezone.utc)
        self.recorded: Path | str | None = None

    def known(self, settings: Any) -> None:
        self.configured = self.agent in settings.agent_names if self.agent is not None else False

    def __enter__(self) -> StartGuard:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        # Never wrapped around a typer.Exit: the exit codes a command chooses are outcomes.
        if isinstance(exc, Exception):
            from .errors import MythlineError

            code = exc.exit_code if isinstance(exc, MythlineError) else 1
            text = str(exc) if isinstance(exc, MythlineError) else None
            if text is None and isinstance(exc, OSError):
                from .console import disk_error_line

                text = disk_error_line(exc)
            self.failed(text or f"{type(exc).__name__}: {exc}", code)

    def failed(self, message: str, code: int) -> None:
        """Record ``message`` unless this run's cycle already told its heartbeat."""
        if code not in (1, 2) or self.recorded is not None:
            return
        if valid_name(self.agent):
            from . import heartbeat

            assert self.agent is not None
            try:
                beat = heartbeat_time(heartbeat.read_only(self.agent))
            except OSError:  # an unusable state home: recorded below if at all
                beat = None
            if beat is not None and beat >= self.started:
                return
        self.recorded = record_start_failure(self.agent, message, code, configured=self.configured)
        if self.recorded is not None:
            _RECORDED.append(self.recorded)


# Where this process recorded a start failure: one failure is recorded once, however many
# layers (the run command, then the exit-code catch in __main__) see it.
_RECORDED: list[Path | str] = []


def recorded_here() -> bool:
    return bool(_RECORDED)


def record_start_failure(agent: str | None, message: str, code: int, *, configured: bool | None,
                         now: datetime | None = None) -> Path | str | None:
    """Record that ``mythline run AGENT`` ended with ``code`` before its cycle began.

    ``configured``: whether AGENT is in the config (None: the config could not be read).
    Returns where it was recorded; never raises (the stderr line is already out).
    """
    try:
        return _record(agent, message, code, configured=configured, now=now or datetime.now(timezone.utc))
    except Exception:  # noqa: BLE001 - a disk that cannot take this cannot take anything else either
        return None


def _record(agent: str | None, message: str, code: int, *, configured: bool | None, now: datetime) -> Path | str:
    from .redact import redact

    secrets = _secrets()
    line = " ".join(str(message).split())[:MAX_LINE]
    # Only an agent the config names, or (the config unreadable) one that has run here before,
    # gets a folder: never one for a typo, or for a key pasted where the name goes.
    per_agent = valid_name(agent) and (configured or (configured is None and paths.agent_dir(str(agent)).is_dir()))
    log = paths.agent_log(agent if valid_name(agent) else "fleet")
    # Never through a link out of the state home, never into a home that is a file.
    paths.check_inside(paths.home() / "agents", *((paths.agent_dir(str(agent)), paths.events(str(agent)),
                                                   start_failure_path(str(agent))) if per_agent else ()),
                       fleet_failures_path())
    entry: dict[str, Any] = {"ts": now.isoformat(), "agent": agent, "event": "start-failed", "exit_code": code,
                             "error": line, "pid": os.getpid(),
                             # Cron's redirect creates the log before the run starts; a run typed in a
                             # terminal has none, and its line went to that terminal.
                             "log": str(log) if log.is_file() else None}
    if not per_agent:
        # Whatever was typed where the agent's name goes is masked too: a pasted key, say.
        docs = statedocs.backend()
        docs.append("start-failures", "", [redact(entry, secrets)])
        return fleet_failures_path() if not docs.shared else docs.where("start-failures")
    entry = redact(entry, secrets)
    assert agent is not None
    from . import heartbeat

    previous = latest_start_failure(agent)
    last_run = heartbeat_time(heartbeat.read_only(agent))
    # A streak: start failures since the last heartbeat (a real run) count as one run of bad luck.
    ongoing = previous is not None and (last_run is None or previous["at"] > last_run)
    entry["count"] = (previous["count"] + 1) if ongoing and previous else 1
    entry["since"] = previous["since"].isoformat() if ongoing and previous else entry["ts"]
    docs = statedocs.backend()
    docs.append("events", agent, [{**entry, "run_id": "start"}], fsync=False)
    docs.write("start-failure", agent, entry, durable=False)
    return start_failure_path(agent) if not docs.shared else docs.where("start-failure", agent)


def latest_start_failure(agent: str) -> dict[str, Any] | None:
    """The agent's last start failure: ``at``, ``since`` (datetimes), ``count``, ``error``,
    ``exit_code``, ``log``; None when there is none (or it cannot be read)."""
    try:
        data = statedocs.backend().read("start-failure", agent)
    except (files.CorruptFile, OSError):
        return None
    if not isinstance(data, dict):
        return None
    at = parse_time(data.get("ts"))
    if at is None:
        return None
    count = data.get("count")
    return {"at": at, "since": parse_time(data.get("since")) or at,
            "count": count if isinstance(count, int) and count > 0 else 1,
            "error": str(data.get("error") or "")[:MAX_LINE],
            "exit_code": data.get("exit_code") if isinstance(data.get("exit_code"), int) else None,
            "log": str(paths.agent_log(agent))}


def _existing(log: Any) -> str | None:
    """A recorded log path that is there to read (a stale record may name one removed since)."""
    return log if isinstance(log, str) and log and Path(log).is_file() else None


def recent_fleet_failures(*, since: datetime, limit: int = 20) -> list[dict[str, Any]]:
    """Start failures that named no configured agent, newer than ``since``, newest last."""
    found = []
    for entry in statedocs.backend().tail("start-failures", "", limit)[0]:
        at = parse_time(entry.get("ts"))
        if at is not None and at > since:
            found.append({"at": at.isoformat(), "agent": entry.get("agent") if isinstance(entry.get("agent"), str)
                          else None, "error": str(entry.get("error") or "")[:MAX_LINE],
                          "exit_code": entry.get("exit_code"), "log": _existing(entry.get("log"))})
    return found


# -- the schedule's install time ----------------------------------------------------------------

def schedule_changed(agents: list[str], *, removed: bool = False, partial: bool = False,
                     now: datetime | None = None) -> None:
    """Note which agents the installed schedule starts, and since when; never raises.

    Called by ``schedule ... --install``/``--remove``. An agent keeps its first install time
    across re-installs (its entry was in place all along); ``partial`` leaves other agents be.
    """
    try:
        stamp = (now or datetime.now(timezone.utc)).isoformat()
        current = installed_agents()
        kept = {name: at.isoformat() for name, at in current.items() if partial or (not removed and name in agents)}
        for name in agents:
            if removed:
                kept.pop(name, None)
            else:
                kept.setdefault(name, stamp)
        if not kept:
            schedule_path().unlink(missing_ok=True)
            return
        files.write_json(schedule_path(), {"agents": kept})
    except Exception:  # noqa: BLE001 - the schedule itself was written; this is only a hint for status
        return


def installed_agents() -> dict[str, datetime]:
    """Agent name -> when its scheduler entry was installed (from ``schedule.json``)."""
    try:
        data = files.read_json(schedule_path())
    except (files.CorruptFile, OSError):
        return {}
    agents = data.get("agents") if isinstance(data, dict) else None
    if not isinstance(agents, dict):
        return {}
    out = {}
    for name, ts in agents.items():
        at = parse_time(ts)
        if isinstance(name, str) and at is not None:
            out[name] = at
    return out
