"""``Ledger``: reserve before a call, settle after, reclaim the dead, over one backend."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..errors import BudgetExceeded, UnknownPrice
from . import report as reports
from . import rules
from .backend import Access, Store
from .journal import State
from .storage import LOCK_TIMEOUT
from .windows import current, utcnow, window_keys, zone

# The wait a stop signal ends at once (stopping.cut_short), as the run's line names it.
LOCK_WAIT = "waiting for the ledger lock"

if TYPE_CHECKING:  # the read-only commands use the ledger without pydantic
    from ..config import Agent, Settings
    from ..pricing import Estimate
    from .report import BudgetReport, FleetUsage


@dataclass(frozen=True)
class Reservation:
    """An open hold on the budget for one call."""

    id: str
    agent: str
    usd: float | None
    tokens: int
    windows: tuple[str, ...] = ()


@dataclass
class Usage:
    """Spent and reserved in one window for one scope, against its cap."""

    spent: float
    reserved: float
    cap: float | None


class Ledger:
    """Reserve, settle, release, reclaim, reset and report: the rules over a ``Store``."""

    def __init__(self, settings: Settings, *, now: Callable[[], datetime] = utcnow,
                 lock_timeout: float = LOCK_TIMEOUT, store: Store | None = None) -> None:
        self.settings = settings
        self.tz = zone(settings.budget.timezone)
        if store is None:
            from ..state import store_for

            store = store_for(settings, now=now, lock_timeout=lock_timeout)
        self.store: Store = store
        # A shared backend's clock (the database's) unless the caller brings its own: hosts
        # then age reservations alike, whatever their clocks say.
        self.now = getattr(store, "now", now) if now is utcnow else now

    @property
    def last_lock_wait(self) -> float:
        return self.store.last_lock_wait

    @property
    def last_lock_held(self) -> float:
        return self.store.last_lock_held

    # -- one change: housekeeping first, on every access --------------------------
    @contextmanager
    def _access(self, cut_short: str | None = None) -> Iterator[Access]:
        with self.store.access(cut_short) as acc:
            self._reclaim(acc)
            self._roll(acc)
            yield acc

    def _reclaim(self, acc: Access) -> None:
        """Charge reservations whose holder is gone at their estimate, marked unsettled."""
        for entry in rules.reclaims(acc.state, self.now().timestamp(), self.settings.budget.run_timeout, acc.gone):
            acc.log(entry)

    def _roll(self, acc: Access) -> None:
        """Open the current windows; close old ones that no reservation still points at."""
        for entry in rules.window_changes(acc.state, self.current(acc.state)):
            acc.log(entry)

    # -- the money rules, applied to this ledger's settings and clock -------------
    def _caps(self, agent: Agent) -> list[rules.Cap]:
        from .reconcile import key_cap

        return rules.caps(self.settings.budget, agent, key_cap(window_keys(self.now(), self.tz)["day"]))

    usage = staticmethod(rules.usage)

    def current(self, data: State) -> dict[str, str]:
        """The current windows (see ``windows.current``: they only move forward)."""
        return current(self.now(), self.tz, data.get("latest"))

    def policy(self) -> rules.Policy:
        """The settings' pacing, priorities and reserves, at this ledger's clock."""
        budget = self.settings.budget
        elapsed = None
        if getattr(budget, "pace", "none") == "even":
            local = self.now().astimezone(self.tz)
            midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
            elapsed = (local - midnight).total_seconds() / 86400
        agents = self.settings.agents()
        return rules.Policy(elapsed=elapsed, burst=getattr(budget, "burst", 0.0),
                            priorities={a.name: a.priority for a in agents if a.priority},
                            reserves={a.name: a.reserve for a in agents if a.reserve},
                            headroom=getattr(budget, "priority_headroom", 0.0))

    def _refusal(self, data: State, agent: Agent, estimate: Estimate) -> BudgetExceeded | None:
        return rules.refusal(data, self.current(data), agent, estimate, self._caps(agent), self.policy())

    def check(self, agent: Agent, estimate: Estimate) -> BudgetExceeded | UnknownPrice | None:
        """The decision ``reserve`` would make now, without writing anything (for --dry-run)."""
        unpriced = rules.unknown_price(agent, estimate, self._caps(agent))
        if unpriced is not None:
            return unpriced
        return self._refusal(self.snapshot(), agent, estimate)

    def reserve(self, agent: Agent, estimate: Estimate, *, run_id: str, step: str) -> Reservation:
        """Hold ``estimate`` against every cap, or raise without holding anything."""
        unpriced = rules.unknown_price(agent, estimate, self._caps(agent))
        if unpriced is not None:
            raise unpriced
        # Nothing is held yet: a stop signal ends the wait for the lock (stopping.cut_short).
        with self._access(LOCK_WAIT) as acc:
            refusal = self._refusal(acc.state, agent, estimate)
            if refusal is None:
                windows = sorted(set(self.current(acc.state).values()))
                rid = uuid.uuid4().hex[:16]
                now = self.now()
                acc.log({"event": "reserve", "reservation": rid, "agent": agent.name, "run_id": run_id,
                         "step": step, **acc.holder(), "created": now.isoformat(),  # type: ignore[typeddict-item]
                         "created_ts": now.timestamp(), "usd": estimate.usd, "tokens": estimate.tokens,
                         "windows": windows})
        # Raised after the block so that reclaims and window closes made on the way are saved.
        if refusal is not None:
            raise refusal
        return Reservation(rid, agent.name, estimate.usd, estimate.tokens, tuple(windows))

    def agent_today(self, agent: str) -> tuple[int, float]:
        """(tokens, usd) spent today by one agent, from the ledger as it stands."""
        data = self.snapshot()
        day = self.current(data)["day"]
        bucket = data["windows"].get(day, {}).get("agents", {}).get(agent, {})
        return int(bucket.get("tokens", 0)), float(bucket.get("usd", 0.0))

    def settle(self, reservation: Reservation, *, usd: float | None, tokens: int,
               unsettled: bool = False, generation: str | None = None) -> bool:
        """Replace the hold with what the call cost. ``unsettled``: an estimate, not a bill;
        ``generation``: the provider's id of the call, to match it with the bill later.

        Returns False when the reservation had already been reclaimed (and so charged).
        """
        with self._access() as acc:
            if reservation.id not in acc.state["reservations"]:
                # Reclaimed meanwhile and charged at its estimate: add what the bill says beyond it.
                acc.log({"event": "late-settle", "reservation": reservation.id,
                         "agent": reservation.agent, "usd": usd, "tokens": tokens,
                         "extra_usd": max(0.0, (usd or 0.0) - (reservation.usd or 0.0)),
                         "extra_tokens": max(0, int(tokens) - int(reservation.tokens)),
                         "windows": list(reservation.windows), **({"generation": generation} if generation else {})})
                return False
            acc.log({"event": "settle", "reservation": reservation.id, "agent": reservation.agent,
                     "usd": usd, "tokens": int(tokens), "unsettled": unsettled,
                     **({"generation": generation} if generation else {}), "windows": list(reservation.windows)})
        return True

    def release(self, reservation: Reservation) -> None:
        """Drop a hold whose call was never sent."""
        with self._access() as acc:
            if reservation.id in acc.state["reservations"]:
                acc.log({"event": "release", "reservation": reservation.id, "agent": reservation.agent})

    def reset(self, *, agent: str | None = None, month: bool = False, reason: str = "manual") -> dict[str, Any]:
        """Zero the current day (and month) spend of one agent or of all."""
        with self._access() as acc:
            current = self.current(acc.state)
            keys = [current["day"]] + ([current["month"]] if month else [])
            cleared: dict[str, Any] = {}
            for key in keys:
                buckets = acc.state["windows"][key].get("agents", {})
                names = [agent] if agent else list(buckets)
                cleared[key] = {n: dict(buckets[n]) for n in names if n in buckets}
            entry = acc.log({"event": "reset", "agent": agent or "*", "windows": keys,
                             "cleared": cleared, "reason": reason})
        return dict(entry)

    def repair(self) -> dict[str, Any]:
        """Rebuild the ledger from its journal; an unreadable copy is moved aside first."""
        return self.store.repair()

    def housekeep(self) -> dict[str, Any] | None:
        """Roll the journal forward, reclaim dead runs' reservations and close old windows.

        Returns what was done about an unreadable ledger rebuilt from the journal
        (``problem``, ``moved_aside``, ``seq``), or None: worth a warning to the operator."""
        with self._access(LOCK_WAIT):  # nothing of this process is in flight: a signal ends the wait
            pass
        return self.store.rebuilt

    def snapshot(self) -> State:
        """The ledger as its journal says it is, without waiting for the lock."""
        return self.store.snapshot()

    def report(self, data: State | None = None) -> BudgetReport:
        """Spent, reserved and caps of the current windows, per agent and for the fleet."""
        data = data if data is not None else self.snapshot()
        return reports.report(data, self.current(data), self.settings)

    def fleet(self, data: State) -> FleetUsage:
        """The fleet's part of ``report``."""
        return reports.fleet(data, self.current(data), self.settings)


def crossings(ledger: Ledger, agent: Agent, warn_at: float | list[float]) -> list[dict[str, Any]]:
    """Every cap that ``agent``'s spend (or the fleet's) has reached ``warn_at`` of."""
    data = ledger.snapshot()
    return rules.crossings(data, ledger.current(data), ledger._caps(agent), warn_at)
