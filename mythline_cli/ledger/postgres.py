"""The PostgreSQL backend: the ledger's state in one row, its journal in a table.

An access is one short transaction: ``SELECT ... FOR UPDATE`` of the ledger's single row
(``mythline_ledger``), the rules run on that state, then the entries they logged are
inserted into ``mythline_journal`` and the row is replaced, and the transaction commits -
all or nothing. The row lock is the whole-ledger lock the rules need (a fleet cap sums every
agent's spend, so any reservation may conflict with any other), and PostgreSQL queues its
waiters, frees it at commit, rollback or the session's end, and is never held across a call
to the provider: the cycle reserves, commits, calls, then settles in a second access.

A reservation's holder is the process's session advisory lock (``state.Session``); it is
gone when no session of this database holds that key any more, wherever that process ran.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .journal import Entry, State, apply, empty
from .storage import LOCK_TIMEOUT

if TYPE_CHECKING:
    from ..state import Session


class PgAccess:
    """One access inside the ledger row's transaction."""

    __slots__ = ("_batch", "_live", "_session", "_ts", "state")

    def __init__(self, state: State, session: Session, ts: datetime) -> None:
        self.state = state
        self._session = session
        self._ts = ts
        self._batch: list[Entry] = []
        self._live: set[int] | None = None

    def log(self, entry: Entry) -> Entry:
        entry = {"seq": int(self.state.get("seq", 0)) + 1, "ts": self._ts.isoformat(), **entry}  # type: ignore[typeddict-item]
        apply(self.state, entry)
        self._batch.append(entry)
        return entry

    def holder(self) -> dict[str, Any]:
        import os

        return {"pid": os.getpid(), "host": self._session.host, "holder": self._session.holder}

    def gone(self, reservation: dict[str, Any]) -> bool:
        key = reservation.get("holder")
        if type(key) is not int:
            return False  # not made on this backend (an imported file home): run_timeout decides
        if key == self._session.holder:
            return False
        if self._live is None:
            self._live = self._session.live_holders()
        return key not in self._live


class PgStore:
    """The ledger in PostgreSQL, changed one transaction at a time."""

    def __init__(self, session: Session, *, lock_timeout: float = LOCK_TIMEOUT) -> None:
        self.session = session
        # The session's own (state.Session) unless told otherwise: how long an access waits for
        # the row, and how long a session may sit in a transaction before the server ends it.
        self.lock_timeout = lock_timeout
        self.now = session.now
        self.last_lock_wait = 0.0
        self.last_lock_held = 0.0
        self.rebuilt: dict[str, Any] | None = None

    @contextmanager
    def _transaction(self, during: str) -> Iterator[Any]:
        import psycopg

        conn = self.session.conn
        try:
            with conn.transaction():
                if self.lock_timeout != LOCK_TIMEOUT:
                    ms = f"{max(1, round(self.lock_timeout * 1000))}ms"
                    conn.execute("SELECT set_config('lock_timeout', %s, true), "
                                 "set_config('idle_in_transaction_session_timeout', %s, true)", (ms, ms))
                yield conn
        except psycopg.errors.LockNotAvailable:
            from ..errors import MythlineError

            raise MythlineError(f"the budget ledger in the shared state at {self.session.where} stayed locked for "
                                f"{self.lock_timeout:.0f}s; is a process stuck? nothing was called (the server "
                                "ends a session that holds it that long)") from None
        except psycopg.Error as exc:
            raise self.session.unavailable(exc, during=during) from None

    @contextmanager
    def access(self, cut_short: str | None = None) -> Iterator[PgAccess]:
        """The ledger row, locked for one transaction; the entries logged are committed with it.

        A block that raises rolls the whole access back: nothing of it happened, which is a
        state a crash at its start could leave. ``cut_short``: the wait for the row is a
        ``stopping.cut_short`` region; the signal's ``CutShort`` is a ``KeyboardInterrupt`` to
        psycopg, which cancels the query in the server before it lets it through, and the
        transaction is rolled back."""
        from ..stopping import region

        t0 = time.perf_counter()
        with self._transaction("while changing the budget ledger") as conn:
            with region(cut_short):
                row = conn.execute("SELECT state, statement_timestamp() FROM mythline_ledger WHERE id = 1 "
                                   "FOR UPDATE").fetchone()
            t1 = time.perf_counter()
            acc = PgAccess(row[0], self.session, row[1])
            yield acc
            if acc._batch:
                with conn.cursor() as cur:
                    cur.executemany("INSERT INTO mythline_journal (seq, entry) VALUES (%s, %s)",
                                    [(e["seq"], json.dumps(e)) for e in acc._batch])
                conn.execute("UPDATE mythline_ledger SET seq = %s, state = %s WHERE id = 1",
                             (acc.state.get("seq", 0), json.dumps(acc.state, separators=(",", ":"))))
        self.last_lock_wait, self.last_lock_held = t1 - t0, time.perf_counter() - t1

    def snapshot(self) -> State:
        with self._transaction("while reading the budget ledger") as conn:
            return conn.execute("SELECT state FROM mythline_ledger WHERE id = 1").fetchone()[0]  # type: ignore[no-any-return]

    def journal(self) -> Iterator[Entry]:
        """Every journal entry, in order."""
        with self._transaction("while reading the ledger's journal") as conn:
            rows = conn.execute("SELECT entry FROM mythline_journal ORDER BY seq").fetchall()
        for (entry,) in rows:
            yield entry

    def repair(self) -> dict[str, Any]:
        """Replace the ledger row by its journal replayed. The two are committed together, so
        this finds nothing to mend unless the row was edited by hand."""
        with self._transaction("while repairing the budget ledger") as conn:
            conn.execute("SELECT 1 FROM mythline_ledger WHERE id = 1 FOR UPDATE")
            data = empty()
            for (entry,) in conn.execute("SELECT entry FROM mythline_journal ORDER BY seq").fetchall():
                apply(data, entry)
            conn.execute("UPDATE mythline_ledger SET seq = %s, state = %s WHERE id = 1",
                         (data.get("seq", 0), json.dumps(data, separators=(",", ":"))))
        return {"moved_aside": None, "seq": data.get("seq", 0), "reservations": len(data["reservations"]),
                "windows": sorted(data["windows"])}

    def load(self, entries: list[Entry]) -> State:
        """Fill an empty ledger with ``entries`` (a file home's journal), replayed as they are."""
        from ..errors import StateUnavailable

        data = empty()
        for entry in entries:
            apply(data, entry)
        with self._transaction("while importing the budget ledger") as conn:
            seq = conn.execute("SELECT seq FROM mythline_ledger WHERE id = 1 FOR UPDATE").fetchone()[0]
            if seq:
                raise StateUnavailable(f"the shared state at {self.session.where} already holds a ledger "
                                       f"({seq} journal entries); import only into a new database")
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO mythline_journal (seq, entry) VALUES (%s, %s)",
                                [(e["seq"], json.dumps(e)) for e in entries])
            conn.execute("UPDATE mythline_ledger SET seq = %s, state = %s WHERE id = 1",
                         (data.get("seq", 0), json.dumps(data, separators=(",", ":"))))
        return data
