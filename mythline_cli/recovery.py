"""What a run repairs before it starts work: state a crash or a bad write left behind."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .checkpoint import Checkpoint
    from .config import Agent
    from .ledger import Ledger


@dataclass(frozen=True)
class Repair:
    """One repaired file: the warning line for the operator, the ``corrupt-state`` event's fields."""

    warning: str
    event: dict[str, Any]


def at_start(ledger: Ledger, ck: Checkpoint, agent: Agent, heartbeat_moved: Path | None) -> list[Repair]:
    """Settle the books (a crashed run's reservation is reclaimed even when this run has
    nothing left to call) and rebuild what an unreadable file lost. Raises LedgerCorrupt
    when the ledger cannot be rebuilt: that fix is the operator's."""
    out = []
    rebuilt = ledger.housekeep()
    if rebuilt is not None:
        out.append(Repair(f"ledger.json was unreadable ({rebuilt['problem']}); copied aside to "
                          f"{rebuilt['moved_aside']} and rebuilt from its journal ({rebuilt['seq']} entries)",
                          {"file": "ledger", "moved_to": str(rebuilt["moved_aside"]), "seq": rebuilt["seq"]}))
    if heartbeat_moved is not None:
        out.append(Repair(f"{agent.name}: heartbeat was unreadable; moved aside to {heartbeat_moved} and started "
                          "afresh", {"file": "heartbeat", "moved_to": str(heartbeat_moved)}))
    if ck.moved_aside is not None:
        found = ck.recover(agent.topics, domain=agent.domain, settings=ledger.settings)
        out.append(Repair(f"{agent.name}: checkpoint was unreadable; moved aside to {ck.moved_aside}, rebuilt from "
                          f"the store and the event log ({found['done']} topics done, {found['quarantined']} "
                          "quarantined); the attempt in progress starts again",
                          {"file": "checkpoint", "moved_to": str(ck.moved_aside), "recovered": found}))
    return out
