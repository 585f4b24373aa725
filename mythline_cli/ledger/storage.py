"""The file backend: ``ledger.json`` and its journal in the state home, under one file lock.

``ledger-history.jsonl`` is the ledger's journal: every change is appended there (fsynced,
numbered) in the lock, the changes of one access with one write and one fsync, the only
fsync of an access. ``ledger.json`` is a copy of the journal up to its ``seq``, replaced
atomically (temp file, rename) but not fsynced, just after the lock is released (``_save``;
in the lock when this access rebuilt it, and on Windows: ``SAVE_IN_LOCK``; ``repair``
writes it fsynced in the lock). It may be behind the journal - a crash before it was
written, two writers finishing in the other order, a power cut that took it back to an
older version - and every reader rolls it forward over the lines it lacks
(``_roll_forward``: the access in the lock, and ``snapshot`` without it). A power cut can
also leave it empty or torn (its rename reached the disk before its data): the next access
that writes rebuilds it from the journal when the journal is complete (numbered from 1
without a gap), copying the damaged file aside; otherwise it refuses with ``LedgerCorrupt``
until ``mythline budget repair``, never resetting spend.

The lock (``locking``) queues its waiters in the kernel on POSIX; its held time and the
time waited for it are kept in ``last_lock_held`` / ``last_lock_wait``. A reservation's
holder is a PID on a host name: it is known dead only on its own host.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from .. import files, paths
from ..errors import LedgerCorrupt, MythlineError
from ..procs import pid_alive
from .journal import Entry, State, apply, empty, replay, shape_problem

LOCK_TIMEOUT = 30.0
# Where ledger.json is written: after the lock is released, except on Windows. There a file
# another process has open cannot be replaced (nor opened while it is being replaced), and
# the next holder opens ledger.json at once: the two would meet in sharing-violation retries
# inside the lock. Tests switch it to exercise the Windows way.
SAVE_IN_LOCK = sys.platform == "win32"


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def _write(data: State) -> None:
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


class FileAccess:
    """One access under the file lock: the loaded ledger and the batch of entries it journals."""

    __slots__ = ("_alive", "_batch", "_host", "_now", "state")

    def __init__(self, state: State, now: Callable[[], datetime], host: str) -> None:
        self.state = state
        self._batch: list[Any] = []  # Entry; files.append_jsonl_many takes plain dicts
        self._now = now
        self._host = host
        self._alive = {os.getpid(): True}  # one check per process per access, and none for this one

    def log(self, entry: Entry) -> Entry:
        """Journal one change and make it. Write-ahead: the access's batch reaches the journal
        (fsynced) before ledger.json is replaced, so the journal is never behind."""
        entry = {"seq": int(self.state.get("seq", 0)) + 1, "ts": self._now().isoformat(), **entry}  # type: ignore[typeddict-item]
        # Applied first: a change ``apply`` refuses (an impossible figure, checked before it
        # changes anything) never reaches the journal, where every later access would refuse it.
        apply(self.state, entry)
        self._batch.append(entry)
        return entry

    def holder(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "host": self._host}

    def gone(self, reservation: dict[str, Any]) -> bool:
        # A PID means something on its own host only; elsewhere run_timeout decides.
        if reservation.get("host") != self._host:
            return False
        pid = int(reservation.get("pid", 0))
        if pid not in self._alive:
            self._alive[pid] = pid_alive(pid)
        return not self._alive[pid]


class FileStore:
    """The ledger in the state home, changed under ``ledger.lock``."""

    def __init__(self, *, now: Callable[[], datetime], lock_timeout: float = LOCK_TIMEOUT) -> None:
        self.now = now
        self.lock_timeout = lock_timeout
        self.host = socket.gethostname()
        self.last_lock_wait = 0.0
        self.last_lock_held = 0.0
        self.rebuilt: dict[str, Any] | None = None

    def _load(self) -> State:
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
            return empty()
        problem = shape_problem(data)
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
    def _lock(self, cut_short: str | None = None) -> Iterator[None]:
        """The ledger's lock; times the wait and the hold into ``last_lock_wait/last_lock_held``.
        ``cut_short``: a stop signal ends the wait (``locking.acquire``), never the hold."""
        # Imported here: the read-only commands (status, budget show) never lock.
        from .. import locking

        home = paths.home()
        if not home.is_dir():
            home.mkdir(parents=True, exist_ok=True)
        lock_path = paths.ledger_lock()
        t0 = time.perf_counter()
        try:
            held = locking.acquire(lock_path, self.lock_timeout, cut_short=cut_short)
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
    def access(self, cut_short: str | None = None) -> Iterator[FileAccess]:
        """The ledger, loaded and rolled forward under the lock; saved when the block exits.

        Changes are journaled by ``FileAccess.log`` into a batch that is appended (one write,
        one fsync) before the lock is released, also when the block raises: what was applied
        is then rolled forward by the next access, as a crash would be. ``ledger.json`` is
        written after the release (see ``_save``), except when this access rebuilt it and
        on Windows (``SAVE_IN_LOCK``). ``cut_short``: see ``Store.access``.
        """
        journal = paths.ledger_history()
        save: State | None = None
        end = 0
        self.rebuilt = None
        with self._lock(cut_short):
            data, rebuilt = self._load_to_change()
            acc = FileAccess(data, self.now, self.host)
            try:
                behind = self._roll_forward(data) or rebuilt
                yield acc
            finally:
                files.append_jsonl_many(journal, acc._batch)
            batch = acc._batch
            if rebuilt or (SAVE_IN_LOCK and (batch or behind)):
                # In the lock: the next access must find a rebuilt file, not the torn one;
                # on Windows, see SAVE_IN_LOCK.
                _write(data)
            elif batch or behind:  # an access that changed nothing rewrites nothing
                save, end = data, _size(journal)
        if save is not None:
            self._save(save, end)

    @staticmethod
    def _save(data: State, journal_end: int) -> None:
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

    def _load_to_change(self) -> tuple[State, bool]:
        """``_load`` for an access that writes: (ledger, whether it was rebuilt from the journal)."""
        try:
            return self._load(), False
        except LedgerCorrupt as exc:
            return self._rebuild(exc), True

    def _rebuild(self, corrupt: LedgerCorrupt) -> State:
        """The ledger replayed from the journal in place of an unreadable ``ledger.json``.

        Only from a complete journal: numbered lines 1..n without a gap (the journal is
        fsynced before every ledger.json write, so it is never behind one). Anything else,
        no journal included, raises ``corrupt``: spend is never silently reset to zero.
        The damaged file is copied aside as ``ledger.json.corrupt-<timestamp>``.
        """
        data = empty()
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
        if expected == 1 or shape_problem(data):
            raise corrupt
        # Copied, not moved: until the rebuilt ledger replaces it, readers keep seeing a corrupt
        # ledger (an error), never a missing one (which reads as nothing spent).
        moved = files.quarantine_corrupt(paths.ledger(), keep=True)
        self.rebuilt = {"problem": getattr(corrupt, "problem", str(corrupt)), "moved_aside": str(moved),
                        "seq": expected - 1}
        return data

    def _roll_forward(self, data: State) -> bool:
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

    def journal(self) -> Iterator[Entry]:
        """Every entry of ``ledger-history.jsonl``, in order, without the lock (lines are
        appended whole; a torn or foreign line is skipped, as ``replay`` does)."""
        for op in files.iter_jsonl(paths.ledger_history()):
            if isinstance(op.get("seq"), int):
                yield op  # type: ignore[misc]

    def snapshot(self) -> State:
        """The ledger as the journal says it is, without the lock: ``ledger.json`` (replaced
        atomically) rolled forward over the journal lines it does not hold yet."""
        data = self._load()
        self._roll_forward(data)
        return data
