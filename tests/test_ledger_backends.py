"""The ledger's storage seam: the money rules above it, the same over any ``Store``.

A second backend brings only storage, locking and liveness; these tests hold the rules to
that by running one script of reservations over the file backend and over a store that
keeps its state in memory, and by calling the rules on a bare state value.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mythline_cli import paths
from mythline_cli.config import parse_config
from mythline_cli.errors import BudgetExceeded
from mythline_cli.ledger import Entry, Ledger, State, apply, replay, rules
from mythline_cli.ledger.backend import Access, Store
from mythline_cli.ledger.journal import empty
from mythline_cli.ledger.storage import FileStore
from mythline_cli.pricing import Estimate

T0 = datetime(2026, 5, 5, 10, 0, 0, tzinfo=UTC)
AGENT, OTHER = "world-npcs", "world-zones"


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> datetime:
        return self.t


class MemoryAccess:
    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.state = store.state

    def log(self, entry: Entry) -> Entry:
        numbered: Any = {"seq": int(self.state.get("seq", 0)) + 1, "ts": self.store.now().isoformat(), **entry}
        apply(self.state, numbered)
        self.store.entries.append(numbered)
        return numbered  # type: ignore[no-any-return]

    def holder(self) -> dict[str, Any]:
        return {"pid": 0, "host": f"lease-{self.store.lease}"}

    def gone(self, reservation: dict[str, Any]) -> bool:
        return reservation.get("host") in self.store.expired


class MemoryStore:
    """A backend in a few lines: one lock, one state, its journal, leases instead of PIDs."""

    def __init__(self, now: Clock) -> None:
        self.now = now
        self.state: State = empty()
        self.entries: list[dict[str, Any]] = []
        self.lease = 1
        self.expired: set[str] = set()
        self.last_lock_wait = self.last_lock_held = 0.0
        self.rebuilt: dict[str, Any] | None = None
        self._lock = threading.Lock()

    @contextmanager
    def access(self, cut_short: str | None = None) -> Iterator[Access]:  # a thread lock: no signal waits on it
        with self._lock:
            yield MemoryAccess(self)

    def snapshot(self) -> State:
        return self.state

    def journal(self) -> Iterator[Entry]:
        yield from self.entries  # type: ignore[misc]

    def repair(self) -> dict[str, Any]:
        return {"moved_aside": None, "seq": self.state.get("seq", 0)}


def settings() -> Any:
    return parse_config({
        "provider": {"model": "test/model",
                     "prices": {"test/model": {"input_per_million": 1.0, "output_per_million": 2.0}}},
        "budget": {"timezone": "Europe/Berlin", "daily_usd": 1.0, "daily_tokens": 3000},
        "defaults": {"daily_usd": 0.5},
    })


def est(usd: float) -> Estimate:
    return Estimate(prompt_tokens=300, max_output_tokens=200, usd=usd, counted_by="chars", price=None)


def script(ledger: Ledger, clock: Clock) -> list[Any]:
    """Reservations against an agent cap, the fleet's USD and token caps, settles, a release,
    a day rollover: what each call decided, in order."""
    cfg = ledger.settings
    decisions: list[Any] = []
    held = []
    for name, usd in ((AGENT, 0.3), (AGENT, 0.3), (OTHER, 0.4), (OTHER, 0.2), ("lore-crosscheck", 0.2),
                      ("world-items", 0.01), ("world-items", 0.01)):
        try:
            held.append(ledger.reserve(cfg.agent(name), est(usd), run_id="r", step="s"))
            decisions.append(("held", name, usd))
        except BudgetExceeded as exc:
            decisions.append(("refused", name, exc.scope, exc.unit, exc.spent, exc.reserved))
    decisions.append(ledger.settle(held[0], usd=0.1, tokens=400))
    ledger.release(held[1])
    decisions.append(ledger.report())
    clock.t += timedelta(days=1)
    decisions.append(ledger.check(cfg.agent(AGENT), est(0.45)))
    ledger.housekeep()
    decisions.append(ledger.report())
    return decisions


def test_the_same_script_decides_the_same_over_either_backend(home: Path) -> None:
    file_clock, memory_clock = Clock(), Clock()
    on_file = Ledger(settings(), now=file_clock)
    store = MemoryStore(memory_clock)
    in_memory = Ledger(settings(), now=memory_clock, store=store)

    on_disk = script(on_file, file_clock)
    assert on_disk == script(in_memory, memory_clock)
    assert any(d[0] == "refused" for d in on_disk if isinstance(d, tuple))  # the caps did bite
    assert store.state == replay(paths.ledger_history())
    assert [{k: v for k, v in e.items() if k not in ("reservation", "pid", "host", "created_ts")}
            for e in store.entries] == \
        [{k: v for k, v in e.items() if k not in ("reservation", "pid", "host", "created_ts")}
         for e in replay_lines()]


def replay_lines() -> list[dict[str, Any]]:
    from mythline_cli.files import iter_jsonl

    return list(iter_jsonl(paths.ledger_history()))


def test_a_holder_the_backend_says_is_gone_is_reclaimed_at_its_estimate() -> None:
    clock = Clock()
    store = MemoryStore(clock)
    ledger = Ledger(settings(), now=clock, store=store)
    agent = ledger.settings.agent(AGENT)
    res = ledger.reserve(agent, est(0.4), run_id="r", step="s")
    ledger.housekeep()
    assert res.id in store.state["reservations"]  # its lease is alive: kept
    store.expired.add("lease-1")
    ledger.housekeep()
    (reclaim,) = [e for e in store.entries if e["event"] == "reclaim"]
    assert (reclaim["reservation"], reclaim["usd"], reclaim["reason"]) == (res.id, 0.4, "process gone")
    assert ledger.report()["agents"][AGENT]["usd"] == {"spent": 0.4, "reserved": 0.0, "cap": 0.5}
    assert ledger.settle(res, usd=0.45, tokens=500) is False  # late: only the excess is added
    assert ledger.report()["agents"][AGENT]["usd"]["spent"] == pytest.approx(0.45)


def test_the_file_store_is_a_store(home: Path) -> None:
    store: Store = FileStore(now=Clock())  # checked by mypy; here: it works through the seam
    with store.access() as acc:
        acc.log({"event": "window-opened", "window": "day:2026-05-05", "kind": "day"})
        assert acc.holder()["host"] and not acc.gone(acc.holder())
    assert store.snapshot() == replay(paths.ledger_history())
    assert store.snapshot()["latest"] == {"day": "day:2026-05-05"}


def test_the_rules_need_nothing_but_a_state_value(home: Path) -> None:
    cfg = settings()
    agent = cfg.agent(AGENT)
    state = empty()
    current = {"day": "day:2026-05-05", "month": "month:2026-05"}
    for entry in rules.window_changes(state, current):
        apply(state, {"ts": T0.isoformat(), **entry})
    apply(state, {"event": "reserve", "reservation": "a", "agent": OTHER, "usd": 0.7, "tokens": 10,
                  "windows": sorted(current.values()), "created_ts": T0.timestamp()})
    caps = rules.caps(cfg.budget, agent)
    assert rules.refusal(state, current, agent, est(0.3), caps) is None
    refused = rules.refusal(state, current, agent, est(0.31), caps)
    assert refused is not None and (refused.scope, refused.reserved) == ("the fleet", 0.7)
    assert rules.reclaims(state, T0.timestamp() + 60, 3600, lambda res: False) == []
    assert [e["reason"] for e in rules.reclaims(state, T0.timestamp() + 3601, 3600, lambda res: False)] == \
        ["older than run_timeout"]
    assert not home.exists()  # no file was read or written: not even the state home was made


def test_a_settle_may_carry_the_providers_generation_id() -> None:
    """Keeping the id of each call in the journal changes no ledger (replay ignores it)."""
    entries: list[Entry] = [
        {"seq": 1, "ts": T0.isoformat(), "event": "window-opened", "window": "day:2026-05-05", "kind": "day"},
        {"seq": 2, "event": "reserve", "reservation": "a", "agent": AGENT, "usd": 0.2, "tokens": 10,
         "windows": ["day:2026-05-05"]},
        {"seq": 3, "event": "settle", "reservation": "a", "agent": AGENT, "usd": 0.1, "tokens": 5},
    ]
    plain, with_id = empty(), empty()
    for entry in entries:
        apply(plain, entry)
        apply(with_id, {**entry, "generation": "gen-123"} if entry["event"] == "settle" else entry)
    assert plain == with_id
    assert plain["windows"]["day:2026-05-05"]["agents"][AGENT]["usd"] == 0.1
