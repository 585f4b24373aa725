"""``heartbeat.json``: the one small file ``mythline status`` reads per agent."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import files, statedocs
from .clock import stamp as _now
from .redact import redact

STATES = ("never-run", "ok", "running", "late", "down", "failed", "paused", "over-budget", "queue-empty",
          "interrupted")


def parse_time(ts: Any) -> datetime | None:
    """A heartbeat timestamp as an aware datetime; None when missing or unreadable.

    A hand-edited or foreign timestamp without an offset is read as UTC, so it is never
    compared naive-to-aware.
    """
    if not isinstance(ts, str):
        return None
    try:
        parsed = datetime.fromisoformat(ts)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)


_TEXT = (str, type(None))
_TIMES = ("started", "updated", "finished", "last_success")


def _count(value: Any) -> bool:
    return type(value) is int and value >= 0  # bool is no count


def problem(data: Any) -> str | None:
    """What makes ``data`` no heartbeat (a wrong shape, or a value of a known field that cannot
    be), else None. Plain checks, not a model: ``status`` reads one per agent and must start
    fast. Fields it does not know are left alone."""
    if type(data) is not dict:
        return "not an object"
    for name in ("state", "agent", "run_id", "step", "topic", "last_error", "last_outcome"):
        if type(data.get(name)) not in _TEXT:
            return f"{name} is not text"
    if not _count(data.get("consecutive_failures", 0)):
        return f"consecutive_failures {data.get('consecutive_failures')!r} is not a count"
    if not _count(data.get("tokens_today", 0)):
        return f"tokens_today {data.get('tokens_today')!r} is not a count"
    usd = data.get("usd_today", 0.0)
    if type(usd) not in (int, float) or not 0 <= usd < float("inf"):
        return f"usd_today {usd!r} is not an amount"
    if data.get("pid") is not None and type(data["pid"]) is not int:
        return "pid is not a number"
    for name in _TIMES:
        value = data.get(name)
        if value is not None and parse_time(value) is None:
            return f"{name} {value!r} is not a timestamp"
    until = data.get("backoff_until")
    if until is not None and (type(until) is not str or (parsed := _aware(until)) is None or parsed is False):
        return f"backoff_until {until!r} is not a timestamp with its offset"
    topics = data.get("topics", {})
    if type(topics) is not dict or not all(_count(v) for v in topics.values()):
        return "topics is not a table of counts"
    return None


def _aware(text: str) -> datetime | bool | None:
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else False


def read(agent: str) -> tuple[dict[str, Any] | None, Path | str | None]:
    """(the last heartbeat or None, where an unreadable one, or one holding a value that cannot
    be, was moved aside or None)."""
    docs = statedocs.backend()
    try:
        data = docs.read("heartbeat", agent)
    except files.CorruptFile:
        return None, docs.move_aside("heartbeat", agent)
    if data is not None and problem(data) is not None:
        return None, docs.move_aside("heartbeat", agent)
    return data, None


def read_only(agent: str) -> dict[str, Any] | None:
    """Like ``read`` but never touches the disk (for status)."""
    try:
        data = statedocs.backend().read("heartbeat", agent)
    except files.CorruptFile:
        return {"state": "failed", "last_error": "heartbeat file is unreadable"}
    if data is None:
        return None
    found = problem(data)
    if found is not None:
        return {"state": "failed", "last_error": f"heartbeat.json holds a bad value ({found}); "
                "the next run moves it aside"}
    return data


class Heartbeat:
    """The heartbeat of one run: a dict kept in memory and written whole at each beat."""

    def __init__(self, agent: str, run_id: str, *, previous: dict[str, Any] | None, pid: int,
                 secrets: tuple[str, ...] = ()) -> None:
        self.secrets = secrets
        prev = previous or {}
        now = _now()
        self.data: dict[str, Any] = {
            "agent": agent, "run_id": run_id, "pid": pid, "state": "running", "step": "start",
            "topic": None, "started": now, "updated": now, "finished": None,
            "last_success": prev.get("last_success"), "last_error": prev.get("last_error"),
            "last_outcome": prev.get("last_outcome"),
            "consecutive_failures": int(prev.get("consecutive_failures") or 0),
            "duration_s": None, "tokens_today": prev.get("tokens_today", 0), "usd_today": prev.get("usd_today", 0.0),
            "topics": prev.get("topics") or {"done": 0, "pending": 0, "quarantined": 0},
        }

    def beat(self, **fields: Any) -> None:
        self.data.update(redact(fields, self.secrets))
        self.data["updated"] = _now()
        # Rewritten at every step and rebuilt from the next run if lost: no fsync needed.
        statedocs.backend().write("heartbeat", self.data["agent"], self.data, durable=False)

    def finish(self, state: str, *, started_at: float, ended_at: float, **fields: Any) -> None:
        self.data["finished"] = _now()
        self.data["duration_s"] = round(ended_at - started_at, 3)
        self.beat(state=state, **fields)
