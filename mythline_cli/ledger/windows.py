"""Budget windows: which day and month an instant belongs to, moving only forward."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo

from ..clock import utcnow  # noqa: F401 - re-exported: ledger.utcnow


def zone(name: str) -> tzinfo:
    if name == "local":
        return datetime.now().astimezone().tzinfo or UTC
    return ZoneInfo(name)


def window_keys(now: datetime, tz: tzinfo) -> dict[str, str]:
    """The current budget windows for a wall clock instant in the budget's timezone."""
    local = now.astimezone(tz)
    return {"day": f"day:{local.date().isoformat()}", "month": f"month:{local:%Y-%m}"}


def current(now: datetime, tz: tzinfo, latest: Mapping[str, str] | None) -> dict[str, str]:
    """The current windows, never before the newest one opened (``latest``): a process whose
    clock or timezone says an earlier day (cron in UTC, a shell in Los Angeles) joins the
    newest window instead of reopening an old one, so two zones can never alternate a cap
    back to zero."""
    keys = window_keys(now, tz)
    latest = latest or {}
    return {kind: max(key, latest.get(kind, "")) for kind, key in keys.items()}
