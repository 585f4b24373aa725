"""The per-agent append-only event log (``events.jsonl``)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from . import paths, statedocs
from .redact import redact


class EventLog:
    """Appends one JSON line per event for one agent and run."""

    def __init__(self, agent: str, run_id: str, *, secrets: tuple[str, ...] = ()) -> None:
        self.agent = agent
        self.run_id = run_id
        self.secrets = secrets
        self.path = paths.events(agent)

    def emit(self, event: str, **data: Any) -> dict[str, Any]:
        entry = {"ts": datetime.now(timezone.utc).isoformat(), "agent": self.agent, "run_id": self.run_id,
                 "event": event, **data}
        entry = redact(entry, self.secrets)
        # No fsync: a killed process loses nothing (the page cache survives it), and the money
        # trail that must survive a power cut is the ledger journal, which is fsynced.
        statedocs.backend().append("events", self.agent, [entry], fsync=False)
        return entry
