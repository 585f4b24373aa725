"""Backoff after failed runs: how long an agent waits, and whether it is still waiting."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from typing import Any

from .config import Backoff
from .errors import BackingOff


def check(agent: str, previous: dict[str, Any] | None) -> None:
    """Raise BackingOff while the last heartbeat's ``backoff_until`` lies ahead; a missing or
    unreadable time is no wait."""
    until = (previous or {}).get("backoff_until")
    if not isinstance(until, str):
        return
    try:
        when = datetime.fromisoformat(until)
    except ValueError:
        return
    if datetime.now(timezone.utc) < when:
        raise BackingOff(agent, until, int((previous or {}).get("consecutive_failures") or 0))


def until(cfg: Backoff, streak: int, *, not_before: str | None = None) -> str:
    """When the next run may start after ``streak`` failures in a row: doubling from
    ``cfg.base``, jittered so that a fleet that failed together spreads out, capped at
    ``cfg.max``, and never sooner than ``not_before`` (a wait the provider asked for)."""
    wait = min(cfg.max, cfg.base * 2 ** (streak - 1))
    wait *= 1 + cfg.jitter * (2 * random.random() - 1)
    when = (datetime.now(timezone.utc) + timedelta(seconds=min(wait, cfg.max))).isoformat()
    if not_before and datetime.fromisoformat(not_before) > datetime.fromisoformat(when):
        return not_before
    return when
