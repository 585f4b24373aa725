"""The one clock: now, in UTC. Code that needs a settable time takes a ``now`` argument
defaulting to these, so tests pass a fixed time instead of patching."""

from __future__ import annotations

from datetime import datetime, timezone


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def stamp() -> str:
    """Now as the ISO 8601 text every state file and event holds."""
    return utcnow().isoformat()
