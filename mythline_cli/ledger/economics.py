"""``budget report``: unit economics over the last N days, from the journal and the events.

Spend is read from the ledger's journal, through its backend (every reserve names its agent, step and windows;
its settle, reclaim, late-settle and reconcile entries say what it cost), so closed days
count as well as today. A reservation is a retry when its run already reserved the same
step; an unsettled charge (an estimate: a reclaim, or no usage reported) counts as
unsettled rather than under its step. Records stored and topics quarantined come from
each agent's ``events.jsonl`` (``store`` with a new or changed record, ``quarantine``).
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import TYPE_CHECKING, Any, TypedDict

from .. import statedocs

if TYPE_CHECKING:
    from ..config import Settings
    from .backend import Store

PARTS = ("research", "audit", "repair", "retries", "unsettled")
_PART_OF_STEP = {"research": "research", "audit": "audit", "repair": "repair", "audit-repair": "repair"}


class Economics(TypedDict):
    """One agent's (or the fleet's) figures over the report's days."""

    usd: float
    split: dict[str, float]  # PARTS -> USD
    stored: int
    quarantined: int
    usd_per_record: float | None  # None: nothing stored


class EconomicsReport(TypedDict):
    """``mythline budget report --json``."""

    days: list[str]  # the report's days, oldest first (dates in the budget's timezone)
    agents: dict[str, Economics]
    fleet: Economics
    daily_usd: dict[str, float]  # day -> the fleet's spend


def _empty() -> Economics:
    return {"usd": 0.0, "split": dict.fromkeys(PARTS, 0.0), "stored": 0, "quarantined": 0, "usd_per_record": None}


def _day_of(windows: Any) -> str | None:
    for key in windows or ():
        if isinstance(key, str) and key.startswith("day:"):
            return key[4:]
    return None


def _num(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value else 0.0


def economics(settings: Settings, *, days: int, today: date, store: Store | None = None) -> EconomicsReport:
    """The last ``days`` days up to ``today``, per agent and for the fleet; the journal is
    read from ``store``, by default the settings' backend (the files, or the shared state)."""
    if store is None:
        from ..state import store_for
        from .storage import LOCK_TIMEOUT
        from .windows import utcnow

        store = store_for(settings, now=utcnow, lock_timeout=LOCK_TIMEOUT)
    span = [(today - timedelta(days=n)).isoformat() for n in range(days - 1, -1, -1)]
    first = span[0]
    names = [a.name for a in settings.agents()]
    agents: dict[str, Economics] = {name: _empty() for name in names}
    daily = dict.fromkeys(span, 0.0)
    held: dict[str, dict[str, Any]] = {}  # reservation -> (agent, part, day)
    seen_steps: set[tuple[str, str, str]] = set()

    def charge(agent: str, day: str | None, part: str, usd: float) -> None:
        if day is None or day < first or day not in daily or not usd:
            return
        econ = agents.setdefault(agent, _empty())
        econ["usd"] += usd
        econ["split"][part] += usd
        daily[day] += usd

    for entry in store.journal():
        op: dict[str, Any] = dict(entry)
        event = op.get("event")
        if event == "reserve":
            step = str(op.get("step") or "")
            key = (str(op.get("agent")), str(op.get("run_id")), step)
            part = "retries" if key in seen_steps else _PART_OF_STEP.get(step, "research")
            seen_steps.add(key)
            held[str(op.get("reservation"))] = {"agent": op.get("agent"), "part": part,
                                                "day": _day_of(op.get("windows"))}
        elif event in ("settle", "reclaim"):
            res = held.get(str(op.get("reservation")), {})
            agent = str(op.get("agent") or res.get("agent") or "")
            day = res.get("day") or _day_of(op.get("windows"))
            unsettled = event == "reclaim" or bool(op.get("unsettled"))
            charge(agent, day, "unsettled" if unsettled else res.get("part", "research"), _num(op.get("usd")))
        elif event == "late-settle":
            charge(str(op.get("agent")), _day_of(op.get("windows")), "unsettled", _num(op.get("extra_usd")))
        elif event == "reconcile":
            res = held.get(str(op.get("reservation")), {})
            delta = _num(op.get("billed_usd")) - _num(op.get("charged"))
            part = "unsettled" if op.get("was_unsettled") else res.get("part", "research")
            charge(str(op.get("agent")), _day_of(op.get("windows")), part, delta)

    for name in names:
        for entry in statedocs.backend().entries("events", name):
            if str(entry.get("ts", ""))[:10] < first:
                continue
            if entry.get("event") == "store" and entry.get("action") != "unchanged":
                agents[name]["stored"] += 1
            elif entry.get("event") == "quarantine":
                agents[name]["quarantined"] += 1

    fleet = _empty()
    for econ in agents.values():
        fleet["usd"] += econ["usd"]
        fleet["stored"] += econ["stored"]
        fleet["quarantined"] += econ["quarantined"]
        for part in PARTS:
            fleet["split"][part] += econ["split"][part]
    for econ in (*agents.values(), fleet):
        econ["usd_per_record"] = econ["usd"] / econ["stored"] if econ["stored"] else None
    return {"days": span, "agents": agents, "fleet": fleet, "daily_usd": daily}
