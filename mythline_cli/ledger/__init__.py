"""The budget ledger: reserve before a call, settle after, reclaim the dead.

Spend is kept per agent per window ("day:2026-11-25", "month:2026-11"); fleet figures are
their sum. A reservation counts against every window it was made in until it is settled,
released, or reclaimed. Every change is a journal entry; the ledger is the journal replayed.

Modules, imports pointing down the list:

- ``core``     ``Ledger``: the operations callers use, over one ``Store``
- ``report``   the typed budget report (``budget show --json``, ``status``)
- ``rules``    the money rules: pure functions of a state (caps, admission, reclaim, windows)
- ``storage``  the file backend (``FileStore``): ``ledger.json``, its journal, the file lock
- ``backend``  the storage seam: the ``Store`` and ``Access`` protocols
- ``journal``  the state value, the journal entries, ``apply`` and ``replay``
- ``windows``  budget windows and their forward-only clock

A backend gives one exclusive read-modify-write at a time (``Store.access``), journals
and applies what ``Access.log`` is given, names a reservation's holder and says when that
holder is gone; the rules decide everything else, the same for every backend.
"""

from .core import Ledger, Reservation, Usage, crossings
from .journal import VERSION, Entry, State, apply, replay
from .report import AgentUsage, BudgetReport, Figures, FleetUsage, FleetWindow
from .storage import LOCK_TIMEOUT
from .windows import utcnow, window_keys, zone

__all__ = [
    "LOCK_TIMEOUT", "VERSION", "AgentUsage", "BudgetReport", "Entry", "Figures", "FleetUsage", "FleetWindow",
    "Ledger", "Reservation", "State", "Usage", "apply", "crossings", "replay", "utcnow", "window_keys", "zone",
]
