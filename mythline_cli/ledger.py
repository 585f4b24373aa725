"""The file-locked budget ledger: reserve before a call, settle after, reclaim the dead.

Every change is a read-modify-write of the ledger under ``ledger.lock``; the lock is held
for the millisecond or two that takes and never across network I/O. Spend is kept
per agent per window ("day:2026-11-25", "month:2026-11"); fleet figures are their sum.
A reservation counts against every window it was made in until it is settled, released,
or reclaimed.

``ledger-history.jsonl`` is the ledger's journal: every change is appended there (fsynced,
numbered) in the lock, and ``apply`` turns a journal line into the change. The changes of
one access are appended with one write and one fsync, the only fsync of an access.
``ledger.json`` is a copy of the journal up to its ``seq``, replaced atomically (temp file,
rename) but not fsynced, just after the lock is released (``_save``; a rebuilt one in the
lock, on Windows every one in the lock (``SAVE_IN_LOCK``), and ``repair`` writes it fsynced
in the lock). It may be behind the
journal - a crash before it was written, two writers finishing in the other order, a power
cut that took it back to an older version - and every reader rolls it forward over the
lines it lacks (``_roll_forward``: the access in the lock, and ``snapshot`` without it). A
power cut can also leave it empty or torn (its rename reached the disk before its data):
the next access that writes rebuilds it from the journal when the journal is complete
(numbered from 1 without a gap), copying the damaged file aside; otherwise it refuses with
``LedgerCorrupt`` until ``mythline budget repair``, never resetting spend.

The lock (``locking``) queues its waiters in the kernel on POSIX; its held time and the
time waited for it are kept in ``last_lock_held`` / ``last_lock_wait``.
"""

from __future__ import annotations

import os
import socket
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from . import files, paths
from .errors import BudgetExceeded, LedgerCorrupt, MythlineError, UnknownPrice
from .procs import pid_alive

if TYPE_CHECKING:  # the read-only commands use the ledger without pydantic
    from .config import Agent, Settings
    from .pricing import Estimate

VERSION = 1
LOCK_TIMEOUT = 30.0
# Where ledger.json is written: after the lock is released, except on Windows. There a file
# another process has open cannot be replaced (nor opened while it is being replaced), and
# the next holder opens ledger.json at once: the two would meet in sharing-violation retries
# inside the lock. Tests switch it to exercise the Windows way.
SAVE_IN_LOCK = sys.platform == "win32"


def zone(name: str) -> tzinfo:
    if name == "local":
        return datetime.now().astimezone().tzinfo or timezone.utc
    return ZoneInfo(name)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def window_keys(now: datetime, tz: tzinfo) -> dict[str, str]:
    """The current budget windows for a wall clock instant in the budget's timezone."""
    local = now.astimezone(tz)
    return {"day": f"day:{local.date().isoformat()}", "month": f"month:{local:%Y-%m}"}


def _empty() -> dict[str, Any]:
    return {"version": VERSION, "windows": {}, "reservations": {}}


def _bucket(window: dict[str, Any], agent: str) -> dict[str, Any]:
    return window.setdefault("agents", {}).setdefault(
        agent, {"usd": 0.0, "tokens": 0, "unsettled_usd": 0.0, "calls": 0}
    )


_NUMBER_TYPES = frozenset((int, float))  # what json.loads gives for a number (bool is not one)
_INF = float("inf")


def _figure(value: Any) -> float:
    """A charge from a journal line: ``value`` (None: 0) when it is a finite number from zero up;
    ValueError otherwise (a negative figure would switch caps off, NaN would admit everything)."""
    if value is None:
        return 0
    if type(value) not in _NUMBER_TYPES or not 0 <= value < _INF:
        raise ValueError(f"impossible figure {value!r}")
    return value


def _shape_problem(data: Any) -> str | None:
    """What makes ``data`` not a ledger, or None when every part has the expected shape.

    Run on every load, under the lock: written with exact type checks and no generators,
    which is several times faster than isinstance/all() for JSON-parsed data."""
    if type(data) is not dict:
        return "not a ledger"
    windows, reservations = data.get("windows"), data.get("reservations")
    if type(windows) is not dict or type(reservations) is not dict:
        return "not a ledger"
    num, inf = _NUMBER_TYPES, _INF
    for key, window in windows.items():
        agents = window.get("agents", {}) if type(window) is dict else None
        if type(agents) is not dict:
            return f"window {key!r} is not a window"
        for name, bucket in agents.items():
            if type(bucket) is not dict:
                return f"window {key!r} has a malformed entry for {name!r}"
            usd, tokens = bucket.get("usd", 0), bucket.get("tokens", 0)
            unsettled, calls = bucket.get("unsettled_usd", 0), bucket.get("calls", 0)
            if (type(usd) not in num or type(tokens) not in num or type(unsettled) not in num
                    or type(calls) not in num):
                return f"window {key!r} has a malformed entry for {name!r}"
            # Written as "not within" so that NaN is caught too: no journal adds up to these.
            if not (0 <= usd < inf and 0 <= tokens < inf and 0 <= unsettled < inf and 0 <= calls < inf):
                return f"window {key!r} has an impossible spend for {name!r} (negative or unbounded)"
    for rid, res in reservations.items():
        if type(res) is not dict:
            return f"reservation {rid!r} is malformed"
        keys, usd = res.get("windows"), res.get("usd")
        tokens = res.get("tokens", 0)
        if (type(res.get("agent")) is not str or type(keys) is not list
                or (usd is not None and type(usd) not in num) or type(tokens) not in num
                or type(res.get("pid", 0)) not in num or type(res.get("created_ts", 0)) not in num):
            return f"reservation {rid!r} is malformed"
        if not ((usd is None or 0 <= usd < inf) and 0 <= tokens < inf):
            return f"reservation {rid!r} holds an impossible amount (negative or unbounded)"
        for k in keys:
            if type(k) is not str:
                return f"reservation {rid!r} is malformed"
    return None


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def _write(data: dict[str, Any]) -> None:
    """Replace ledger.json (not fsynced: the journal is). A failure leaves it behind, which
    readers handle; raising would hide a change that is already in the journal from its
    caller (a reservation it does not receive can never be released). A full or failing
    disk is reported by the next write that matters."""
    try:
        files.write_json(paths.ledger(), data, durable=False, compact=True)
    except OSError:
        pass


def _corrupt(path: Path, problem: str) -> LedgerCorrupt:
    exc = LedgerCorrupt(path, problem)
    exc.problem = problem  # type: ignore[attr-defined]
    return exc


def _charge(data: dict[str, Any], windows: list[str], agent: str, usd: float, tokens: int, unsettled: bool) -> None:
    for key in windows:
        window = data["windows"].get(key)
        if window is None:
            continue
        bucket = _bucket(window, agent)
        bucket["usd"] += usd
        bucket["tokens"] += int(tokens)
        bucket["calls"] += 1
        if unsettled:
            bucket["unsettled_usd"] += usd


def apply(data: dict[str, Any], op: dict[str, Any]) -> None:
    """Make the change one journal line describes. Deterministic: replay gives the same ledger."""
    kind = op.get("event")
    if kind == "window-opened":
        data["windows"].setdefault(op["window"], {"kind": op["kind"], "opened": op["ts"], "agents": {}})
        latest = data.setdefault("latest", {})
        latest[op["kind"]] = max(latest.get(op["kind"], ""), op["window"])
    elif kind == "reserve":
        _figure(op.get("usd"))
        _figure(op.get("tokens", 0))
        data["reservations"][op["reservation"]] = {
            k: op[k] for k in ("agent", "run_id", "step", "pid", "host", "created", "created_ts", "usd", "tokens",
                               "windows") if k in op}
    elif kind == "settle":
        usd, tokens = _figure(op.get("usd")), _figure(op.get("tokens", 0))
        res = data["reservations"].pop(op["reservation"], None)
        if res is not None:
            _charge(data, res["windows"], res["agent"], usd or 0.0, tokens, bool(op.get("unsettled")))
    elif kind == "release":
        data["reservations"].pop(op["reservation"], None)
    elif kind == "reclaim":
        # The provider may have billed the call, so it counts at its estimate, unsettled.
        usd, tokens = _figure(op.get("usd")), _figure(op.get("tokens", 0))
        data["reservations"].pop(op["reservation"], None)
        _charge(data, op.get("windows", []), op["agent"], usd or 0.0, tokens, True)
    elif kind == "late-settle":
        _figure(op.get("extra_usd"))
        _figure(op.get("extra_tokens"))
        for key in op.get("windows", []):
            window = data["windows"].get(key)
            if window is not None and (op.get("extra_usd") or op.get("extra_tokens")):
                bucket = _bucket(window, op["agent"])
                bucket["usd"] += op.get("extra_usd") or 0.0
                bucket["tokens"] += int(op.get("extra_tokens") or 0)
                bucket["unsettled_usd"] += op.get("extra_usd") or 0.0
    elif kind == "window-closed":
        data["windows"].pop(op["window"], None)
    elif kind == "reset":
        for key in op.get("windows", []):
            buckets = data["windows"].get(key, {}).get("agents", {})
            for name in ([op["agent"]] if op.get("agent") not in (None, "*") else list(buckets)):
                buckets.pop(name, None)
    if isinstance(op.get("seq"), int):
        data["seq"] = op["seq"]


def replay(journal: Path) -> dict[str, Any]:
    """A ledger rebuilt from every numbered line of the journal; ``LedgerCorrupt`` naming the
    first line that is no ledger change (a hand edit: a charge below zero, a missing field)."""
    data = _empty()
    for op in files.iter_jsonl(journal):
        if isinstance(op.get("seq"), int):
            try:
                apply(data, op)
            except (KeyError, TypeError, ValueError, AttributeError):
                raise LedgerCorrupt(journal, f"entry {op['seq']} is not a ledger change") from None
    return data


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
    """Reserve, settle, release, reclaim, reset and report, all under one file lock."""

    def __init__(self, settings: Settings, *, now: Callable[[], datetime] = utcnow,
                 lock_timeout: float = LOCK_TIMEOUT) -> None:
        self.settings = settings
        self.now = now
        self.tz = zone(settings.budget.timezone)
        self.lock_timeout = lock_timeout
        self.host = socket.gethostname()
        self.last_lock_wait = 0.0
        self.last_lock_held = 0.0
        self._batch: list[dict[str, Any]] | None = None
        # Set by the access that rebuilt an unreadable ledger.json from the journal.
        self.rebuilt: dict[str, Any] | None = None

    # -- storage -----------------------------------------------------------------
    def _load(self) -> dict[str, Any]:
        path = paths.ledger()
        try:
            data = files.read_json(path)
        except files.CorruptFile as exc:
            raise _corrupt(path, exc.problem) from None
        if data is None and path.exists():
            # read_json says None for a missing file and for a file holding JSON ``null``;
            # read again so that a ledger created meanwhile is not mistaken for the latter.
            try:
                data = files.read_json(path)
            except files.CorruptFile as exc:
                raise _corrupt(path, exc.problem) from None
            if data is None and path.exists():
                raise _corrupt(path, "not a ledger (JSON null)")
        if data is None:
            return _empty()
        problem = _shape_problem(data)
        if problem:
            raise _corrupt(path, problem)
        if "latest" not in data:
            # Written before windows were forward-only: derive it as a replay would.
            latest: dict[str, str] = {}
            for key, window in data["windows"].items():
                kind = window.get("kind") or key.split(":", 1)[0]
                latest[kind] = max(latest.get(kind, ""), key)
            data["latest"] = latest
        return data

    @contextmanager
    def _lock(self) -> Iterator[None]:
        """The ledger's lock; times the wait and the hold into ``last_lock_wait/last_lock_held``."""
        # Imported here: the read-only commands (status, budget show) never lock.
        from . import locking

        home = paths.home()
        if not home.is_dir():
            home.mkdir(parents=True, exist_ok=True)
        lock_path = paths.ledger_lock()
        t0 = time.perf_counter()
        try:
            held = locking.acquire(lock_path, self.lock_timeout)
        except locking.LockTimeout:
            raise MythlineError(
                f"the budget ledger stayed locked for {self.lock_timeout:.0f}s "
                f"({lock_path}); is a process stuck? nothing was called"
            ) from None
        # From the grant, which a waiter thread may have received a moment before this thread
        # woke up: the time the lock was really held, handover included.
        t1 = held.acquired_at
        try:
            yield
        finally:
            held.release()
            # Up to the unlock: once it is made, the time is the next holder's.
            self.last_lock_wait, self.last_lock_held = t1 - t0, held.released_at - t1

    @contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        """The ledger, loaded under the lock; saved when the block exits cleanly.

        Changes are journaled by ``_log`` into a batch that is appended (one write, one
        fsync) before the lock is released, also when the block raises: what was applied is
        then rolled forward by the next access, as a crash would be. ``ledger.json`` is
        written after the release (see ``_save``), except when this access rebuilt it and
        on Windows (``SAVE_IN_LOCK``).
        """
        journal = paths.ledger_history()
        batch: list[dict[str, Any]] = []
        save: dict[str, Any] | None = None
        end = 0
        with self._lock():
            self._batch = batch
            try:
                data, rebuilt = self._load_to_change()
                try:
                    behind = self._roll_forward(data) or rebuilt
                    self._reclaim(data)
                    self._roll(data)
                    yield data
                finally:
                    self._batch = None
                    files.append_jsonl_many(journal, batch)
                if rebuilt or (SAVE_IN_LOCK and (batch or behind)):
                    # In the lock: the next access must find a rebuilt file, not the torn one;
                    # on Windows, see SAVE_IN_LOCK.
                    _write(data)
                elif batch or behind:  # an access that changed nothing rewrites nothing
                    save, end = data, _size(journal)
            finally:
                self._batch = None
        if save is not None:
            self._save(save, end)

    @staticmethod
    def _save(data: dict[str, Any], journal_end: int) -> None:
        """Write ``ledger.json``: a copy of the journal up to ``data["seq"]``, made after the lock is
        released, so the next holder does not wait for the file system's rename.

        The journal, appended and fsynced in the lock, is what counts; this file only spares
        readers a replay. It may be a moment behind: a process killed before writing it, two
        writers finishing in the other order, a power cut (it is not fsynced). Every reader
        rolls it forward from the journal's tail (``_roll_forward``), so none ever sees less
        than the journal says. ``journal_end`` is the journal's size when this access let go
        of the lock: when it has grown since, a later access holds a newer ledger and writes
        it, so this one does not, and an older copy rarely lands after a newer one. A write
        that fails leaves the file behind."""
        if _size(paths.ledger_history()) > journal_end:
            return
        _write(data)

    def _load_to_change(self) -> tuple[dict[str, Any], bool]:
        """``_load`` for an access that writes: (ledger, whether it was rebuilt from the journal)."""
        try:
            return self._load(), False
        except LedgerCorrupt as exc:
            return self._rebuild(exc), True

    def _rebuild(self, corrupt: LedgerCorrupt) -> dict[str, Any]:
        """The ledger replayed from the journal in place of an unreadable ``ledger.json``.

        Only from a complete journal: numbered lines 1..n without a gap (the journal is
        fsynced before every ledger.json write, so it is never behind one). Anything else,
        no journal included, raises ``corrupt``: spend is never silently reset to zero.
        The damaged file is copied aside as ``ledger.json.corrupt-<timestamp>``.
        """
        data = _empty()
        expected = 1
        try:
            for op in files.iter_jsonl(paths.ledger_history()):
                seq = op.get("seq")
                if type(seq) is not int:
                    continue
                if seq != expected:
                    raise corrupt
                apply(data, op)
                expected += 1
        except LedgerCorrupt:
            raise
        except Exception:  # noqa: BLE001 - a line that does not apply: not a journal to trust
            raise corrupt from None
        if expected == 1 or _shape_problem(data):
            raise corrupt
        # Copied, not moved: until the rebuilt ledger replaces it, readers keep seeing a corrupt
        # ledger (an error), never a missing one (which reads as nothing spent).
        moved = files.quarantine_corrupt(paths.ledger(), keep=True)
        self.rebuilt = {"problem": getattr(corrupt, "problem", str(corrupt)), "moved_aside": str(moved),
                        "seq": expected - 1}
        return data

    def _log(self, data: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
        """Journal one change and make it. Write-ahead: the access's batch reaches the journal
        (fsynced) before ledger.json is replaced, so the journal is never behind."""
        entry = {"seq": int(data.get("seq", 0)) + 1, "ts": self.now().isoformat(), **entry}
        if self._batch is None:
            raise RuntimeError("ledger change outside the lock")
        # Applied first: a change ``apply`` refuses (an impossible figure, checked before it
        # changes anything) never reaches the journal, where every later access would refuse it.
        apply(data, entry)
        self._batch.append(entry)
        return entry

    def _roll_forward(self, data: dict[str, Any]) -> bool:
        """Apply journal lines a crash (or a power cut) kept out of ``ledger.json``; True if any.

        Normally there are none: the last line is read first and the tail widened only when
        it is ahead of ``ledger.json``."""
        seq = int(data.get("seq", 0))
        journal = paths.ledger_history()
        n = 1
        while True:
            tail = [op for op in files.tail_jsonl(journal, n) if isinstance(op.get("seq"), int)]
            if not tail or tail[-1]["seq"] <= seq:
                return False
            if tail[0]["seq"] <= seq + 1 or len(tail) < n:
                break
            n *= 16
        ops = [op for op in tail if op["seq"] > seq]
        if [op["seq"] for op in ops] != list(range(seq + 1, seq + 1 + len(ops))):
            # Not one unbroken run after ledger.json's number: a garbled line inside the tail
            # (an append torn by a power cut) shortened it. Read the whole journal; a gap that
            # is really there means spend could be missing, so stop rather than guess.
            ops = [op for op in files.iter_jsonl(journal) if isinstance(op.get("seq"), int) and op["seq"] > seq]
            if [op["seq"] for op in ops] != list(range(seq + 1, seq + 1 + len(ops))):
                raise LedgerCorrupt(journal, f"entries are missing after entry {seq}, the last one in ledger.json")
        for op in ops:
            try:
                apply(data, op)
            except (KeyError, TypeError, ValueError, AttributeError):
                raise LedgerCorrupt(journal, f"entry {op['seq']} is not a ledger change") from None
        return True

    # -- housekeeping done on every access ---------------------------------------
    def _reclaim(self, data: dict[str, Any]) -> None:
        """Charge reservations whose process is gone at their estimate, marked unsettled."""
        timeout = self.settings.budget.run_timeout
        now_ts = self.now().timestamp()
        alive = {os.getpid(): True}  # one check per process per access, and none for this one
        for rid, res in list(data["reservations"].items()):
            age = now_ts - float(res.get("created_ts", 0))
            dead = False
            if res.get("host") == self.host:
                pid = int(res.get("pid", 0))
                if pid not in alive:
                    alive[pid] = pid_alive(pid)
                dead = not alive[pid]
            if not dead and age <= timeout:
                continue
            usd = res.get("usd") or 0.0
            self._log(data, {"event": "reclaim", "reservation": rid, "agent": res["agent"],
                       "pid": res.get("pid"), "run_id": res.get("run_id"),
                       "reason": "process gone" if dead else "older than run_timeout",
                       "usd": usd, "tokens": res.get("tokens", 0), "windows": res.get("windows", [])})

    def _roll(self, data: dict[str, Any]) -> None:
        """Open the current windows; close old ones that no reservation still points at."""
        current = self.current(data)
        for kind, key in current.items():
            if key not in data["windows"]:
                self._log(data, {"event": "window-opened", "window": key, "kind": kind})
        held = {k for res in data["reservations"].values() for k in res.get("windows", [])}
        for key in list(data["windows"]):
            if key in current.values() or key in held:
                continue
            self._log(data, {"event": "window-closed", "window": key,
                             "agents": data["windows"][key].get("agents", {})})

    # -- the money rules ---------------------------------------------------------
    def _caps(self, agent: Agent) -> list[tuple[str, str, str, float, str]]:
        """(window kind, scope, unit, cap, setting) for every cap that applies."""
        budget = self.settings.budget
        caps = [
            ("day", agent.name, "usd", agent.daily_usd, f"agents.{agent.name}.daily_usd"),
            ("day", agent.name, "tokens", agent.daily_tokens, f"agents.{agent.name}.daily_tokens"),
            ("day", "*", "usd", budget.daily_usd, "budget.daily_usd"),
            ("day", "*", "tokens", budget.daily_tokens, "budget.daily_tokens"),
            ("month", "*", "usd", budget.monthly_usd, "budget.monthly_usd"),
            ("month", "*", "tokens", budget.monthly_tokens, "budget.monthly_tokens"),
        ]
        return [c for c in caps if c[3] is not None]  # type: ignore[misc]

    @staticmethod
    def usage(data: dict[str, Any], key: str, scope: str, unit: str) -> tuple[float, float]:
        """(spent, reserved) in window ``key`` for an agent name or ``"*"`` (the fleet)."""
        window = data["windows"].get(key, {})
        spent = 0.0
        for name, bucket in window.get("agents", {}).items():
            if scope in ("*", name):
                spent += bucket.get(unit, 0) or 0
        reserved = 0.0
        for res in data["reservations"].values():
            if key in res.get("windows", []) and scope in ("*", res.get("agent")):
                reserved += res.get(unit) or 0
        return spent, reserved

    def current(self, data: dict[str, Any]) -> dict[str, str]:
        """The current windows. They only move forward: a process whose clock or timezone says
        an earlier day (cron in UTC, a shell in Los Angeles) joins the newest window instead of
        reopening an old one, so two zones can never alternate a cap back to zero."""
        keys = window_keys(self.now(), self.tz)
        latest = data.get("latest") or {}
        return {kind: max(key, latest.get(kind, "")) for kind, key in keys.items()}

    def _refusal(self, data: dict[str, Any], agent: Agent, estimate: Estimate) -> BudgetExceeded | None:
        """Why ``estimate`` may not be reserved now, or None when every cap has room."""
        current = self.current(data)
        for kind, scope, unit, cap, setting in self._caps(agent):
            request = float(estimate.usd or 0.0) if unit == "usd" else float(estimate.tokens)
            spent, reserved = self.usage(data, current[kind], scope, unit)
            # The tolerance absorbs float noise only; it never admits a whole call. Written as
            # "not within" so that a NaN anywhere refuses instead of admitting everything.
            if not spent + reserved + request <= cap * (1 + 1e-9):
                return BudgetExceeded(
                    scope=f"agent {agent.name}" if scope != "*" else "the fleet", unit=unit,
                    window="daily" if kind == "day" else "monthly", spent=spent,
                    reserved=reserved, request=request, cap=cap, setting=setting, agent=agent.name,
                )
        return None

    def _price_check(self, agent: Agent, estimate: Estimate) -> None:
        if estimate.usd is None and any(unit == "usd" for _, _, unit, _, _ in self._caps(agent)):
            raise UnknownPrice(agent.model)

    def check(self, agent: Agent, estimate: Estimate) -> BudgetExceeded | UnknownPrice | None:
        """The decision ``reserve`` would make now, without writing anything (for --dry-run)."""
        try:
            self._price_check(agent, estimate)
        except UnknownPrice as exc:
            return exc
        return self._refusal(self.snapshot(), agent, estimate)

    def reserve(self, agent: Agent, estimate: Estimate, *, run_id: str, step: str) -> Reservation:
        """Hold ``estimate`` against every cap, or raise without holding anything."""
        self._price_check(agent, estimate)
        with self._locked() as data:
            refusal = self._refusal(data, agent, estimate)
            if refusal is None:
                rid = self._hold(data, agent, estimate, run_id=run_id, step=step)
        # Raised after the block so that reclaims and window closes made on the way are saved.
        if refusal is not None:
            raise refusal
        return Reservation(rid, agent.name, estimate.usd, estimate.tokens,
                           tuple(data["reservations"][rid]["windows"]))

    def _hold(self, data: dict[str, Any], agent: Agent, estimate: Estimate, *, run_id: str, step: str) -> str:
        current = self.current(data)
        rid = uuid.uuid4().hex[:16]
        self._log(data, {
            "event": "reserve", "reservation": rid, "agent": agent.name, "run_id": run_id, "step": step,
            "pid": os.getpid(), "host": self.host, "created": self.now().isoformat(),
            "created_ts": self.now().timestamp(), "usd": estimate.usd, "tokens": estimate.tokens,
            "windows": sorted(set(current.values())),
        })
        return rid

    def agent_today(self, agent: str) -> tuple[int, float]:
        """(tokens, usd) spent today by one agent, from the file as it stands."""
        data = self.snapshot()
        day = self.current(data)["day"]
        bucket = data["windows"].get(day, {}).get("agents", {}).get(agent, {})
        return int(bucket.get("tokens", 0)), float(bucket.get("usd", 0.0))

    def settle(self, reservation: Reservation, *, usd: float | None, tokens: int,
               unsettled: bool = False) -> bool:
        """Replace the hold with what the call cost. ``unsettled``: an estimate, not a bill.

        Returns False when the reservation had already been reclaimed (and so charged).
        """
        with self._locked() as data:
            if reservation.id not in data["reservations"]:
                # Reclaimed meanwhile and charged at its estimate: add what the bill says beyond it.
                self._log(data, {"event": "late-settle", "reservation": reservation.id,
                                 "agent": reservation.agent, "usd": usd, "tokens": tokens,
                                 "extra_usd": max(0.0, (usd or 0.0) - (reservation.usd or 0.0)),
                                 "extra_tokens": max(0, int(tokens) - int(reservation.tokens)),
                                 "windows": list(reservation.windows)})
                return False
            self._log(data, {"event": "settle", "reservation": reservation.id, "agent": reservation.agent,
                             "usd": usd, "tokens": int(tokens), "unsettled": unsettled})
        return True

    def release(self, reservation: Reservation) -> None:
        """Drop a hold whose call was never sent."""
        with self._locked() as data:
            if reservation.id in data["reservations"]:
                self._log(data, {"event": "release", "reservation": reservation.id, "agent": reservation.agent})

    def reset(self, *, agent: str | None = None, month: bool = False, reason: str = "manual") -> dict[str, Any]:
        """Zero the current day (and month) spend of one agent or of all."""
        with self._locked() as data:
            current = self.current(data)
            keys = [current["day"]] + ([current["month"]] if month else [])
            cleared: dict[str, Any] = {}
            for key in keys:
                buckets = data["windows"][key].get("agents", {})
                names = [agent] if agent else list(buckets)
                cleared[key] = {n: dict(buckets[n]) for n in names if n in buckets}
            entry = self._log(data, {"event": "reset", "agent": agent or "*", "windows": keys,
                                     "cleared": cleared, "reason": reason})
        return entry

    def repair(self) -> dict[str, Any]:
        """Rebuild ``ledger.json`` from the journal; an unreadable one is moved aside first."""
        with self._lock():
            moved = None
            path = paths.ledger()
            try:
                self._load()
            except LedgerCorrupt:
                moved = files.quarantine_corrupt(path)
            data = replay(paths.ledger_history())
            files.write_json(path, data, compact=True)
        return {"moved_aside": str(moved) if moved else None, "seq": data.get("seq", 0),
                "reservations": len(data["reservations"]), "windows": sorted(data["windows"])}

    def housekeep(self) -> dict[str, Any] | None:
        """Roll the journal forward, reclaim dead runs' reservations and close old windows.

        Returns what was done about an unreadable ledger.json rebuilt from the journal
        (``problem``, ``moved_aside``, ``seq``), or None: worth a warning to the operator."""
        self.rebuilt = None
        with self._locked():
            pass
        return self.rebuilt

    def snapshot(self) -> dict[str, Any]:
        """The ledger as the journal says it is, without the lock: ``ledger.json`` (replaced
        atomically) rolled forward over the journal lines it does not hold yet."""
        data = self._load()
        self._roll_forward(data)
        return data

    def report(self, data: dict[str, Any] | None = None) -> dict[str, Any]:
        """Spent, reserved and caps of the current windows, per agent and for the fleet."""
        data = data if data is not None else self.snapshot()
        current = self.current(data)
        budget = self.settings.budget
        agents = {}
        for agent in self.settings.agents():
            day = current["day"]
            su, ru = self.usage(data, day, agent.name, "usd")
            st, rt = self.usage(data, day, agent.name, "tokens")
            agents[agent.name] = {
                "usd": {"spent": su, "reserved": ru, "cap": agent.daily_usd},
                "tokens": {"spent": st, "reserved": rt, "cap": agent.daily_tokens},
            }
        return {"timezone": budget.timezone, "windows": current, "agents": agents, "fleet": self.fleet(data),
                "open_reservations": len(data["reservations"])}

    def fleet(self, data: dict[str, Any]) -> dict[str, Any]:
        """The fleet's part of ``report``: spent, reserved and caps of the current day and month.
        (Apart, because it costs nothing per agent: ``status`` of 1,000 agents uses only this.)"""
        current = self.current(data)
        budget = self.settings.budget
        fleet = {}
        for kind, usd_cap, tok_cap in (("day", budget.daily_usd, budget.daily_tokens),
                                       ("month", budget.monthly_usd, budget.monthly_tokens)):
            su, ru = self.usage(data, current[kind], "*", "usd")
            st, rt = self.usage(data, current[kind], "*", "tokens")
            fleet[kind] = {
                "window": current[kind].split(":", 1)[1],
                "usd": {"spent": su, "reserved": ru, "cap": usd_cap},
                "tokens": {"spent": st, "reserved": rt, "cap": tok_cap},
            }
        return fleet


def crossings(ledger: Ledger, agent: Agent, warn_at: float) -> list[dict[str, Any]]:
    """Every cap that ``agent``'s spend (or the fleet's) has reached ``warn_at`` of."""
    data = ledger.snapshot()
    current = ledger.current(data)
    out = []
    for kind, scope, unit, cap, setting in ledger._caps(agent):
        spent, _ = ledger.usage(data, current[kind], scope, unit)
        if cap and spent >= warn_at * cap:
            out.append({"scope": "fleet" if scope == "*" else scope, "unit": unit, "window": current[kind],
                        "spent": spent, "cap": cap, "setting": setting})
    return out
