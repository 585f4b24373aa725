"""The storage seam: what a ledger backend provides. The file backend is ``storage.FileStore``.

An access may be a transaction: it sees every entry journaled before it, and the entries it
logs become durable together when it ends; it is never held across a call to the provider.
Liveness is the backend's: a PID on one host, a lease across hosts.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any, Protocol

from .journal import Entry, State


class Access(Protocol):
    """One change to the ledger, made while no other process can make one."""

    state: State  # the ledger with every journaled entry applied

    def log(self, entry: Entry) -> Entry:
        """Number and time ``entry``, apply it to ``state`` and journal it; returns it numbered.

        Whether the entries of an access whose block raised are kept is the backend's choice:
        either is a state a crash could leave (the file backend keeps them)."""
        ...

    def holder(self) -> dict[str, Any]:
        """Who holds a reservation made now, as written into it (``pid`` and ``host`` here)."""
        ...

    def gone(self, reservation: dict[str, Any]) -> bool:
        """True when the process that made ``reservation`` is known to have died."""
        ...


class Store(Protocol):
    """Where one ledger lives, and how it is changed one access at a time."""

    last_lock_wait: float  # seconds the last access waited for its turn
    last_lock_held: float  # seconds the last access held it
    rebuilt: dict[str, Any] | None  # set by the access that rebuilt an unreadable copy

    def access(self, cut_short: str | None = None) -> AbstractContextManager[Access]:
        """The ledger, exclusively, for one read-modify-write; never held across network I/O.

        ``cut_short``: the wait for the turn (only the wait) is a ``stopping.cut_short`` region
        of that name: the run's first signal ends it, with nothing held or written. For an
        access with nothing of this run in flight (before a reservation), never for the settle
        of a paid call."""
        ...

    def snapshot(self) -> State:
        """The ledger as its journal says it is, without waiting for a turn."""
        ...

    def journal(self) -> Iterator[Entry]:
        """Every journal entry, in order (``budget reconcile`` and ``budget report`` read it)."""
        ...

    def repair(self) -> dict[str, Any]:
        """Rebuild the ledger from its journal (``moved_aside``, ``seq``, ...): spend never reset."""
        ...
