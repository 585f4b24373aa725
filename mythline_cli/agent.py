"""One agent with every setting resolved, and the rule for agent names: plain data,
importable without pydantic (``__main__`` and the status fast path use it)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TypeGuard

# An agent's name becomes file and folder names (agents/NAME/, logs/NAME.log, ledger
# buckets), a crontab word and a Task Scheduler task name: lowercase ASCII letters, digits
# and '-', starting with a letter, short enough for every one of those.
MAX_NAME = 40
NAME_RULE = (f"lowercase ASCII letters, digits and '-', starting with a letter, "
             f"at most {MAX_NAME} characters")
_NAME = re.compile(r"[a-z][a-z0-9-]*")

# Windows refuses these as file names (whatever the case or extension; '.' is not allowed
# here, so only the exact names matter: "con-zones" is fine). "fleet" is taken by the
# fleet's own log, logs/fleet.log.
WINDOWS_RESERVED = frozenset({"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)),
                              *(f"lpt{i}" for i in range(10))})
RESERVED = WINDOWS_RESERVED | {"fleet"}


def name_problem(name: object) -> str | None:
    """Why ``name`` cannot be an agent's name, or None when it can."""
    if not isinstance(name, str) or not name:
        return f"an agent name is {NAME_RULE}"
    if len(name) > MAX_NAME:
        return f"an agent name is at most {MAX_NAME} characters"
    if not _NAME.fullmatch(name):
        return f"an agent name is {NAME_RULE}"
    if name in WINDOWS_RESERVED:
        return f"{name!r} is a reserved device name on Windows; pick another name"
    if name in RESERVED:
        return f"{name!r} is taken by the fleet's own log; pick another name"
    return None


def valid_name(name: object) -> TypeGuard[str]:
    """Whether ``name`` may name an agent: safe as a file name, a crontab word and a task name.

    Says nothing about whether such an agent is configured; every built-in name is valid.
    """
    return name_problem(name) is None


@dataclass(frozen=True)
class Agent:
    """One agent with every setting resolved."""

    name: str
    # Which knowledge area (a built-in agent's name): its record schema, store domain and
    # default description. A built-in agent is its own kind.
    kind: str
    domain: str
    description: str
    enabled: bool
    interval: float
    grace: float
    max_attempts: int
    min_score: float
    min_sources: int
    daily_usd: float | None
    daily_tokens: int | None
    model: str
    topics: tuple[str, ...]
    priority: int = 0
    reserve: float = 0.0
    # A stored record older than this is researched again once the queue is empty (None: never).
    refresh_after: float | None = None
    # At most this many subjects a run proposes to other agents' queues.
    max_proposals: int = 5
    # Retrieval: URL templates and local globs; empty = ungrounded (the model's memory only).
    sources: tuple[str, ...] = ()
    key_fields: tuple[str, ...] = ("summary",)
    min_tier: str = "secondary"
    web_search: bool = False
    audit_model: str = ""  # "" = the research model

    @property
    def auditor(self) -> str:
        """The model that audits this agent's records."""
        return self.audit_model or self.model

    @property
    def grounded(self) -> bool:
        return bool(self.sources) or self.web_search

    @property
    def custom(self) -> bool:
        """Defined in mythline.toml rather than built in."""
        return self.kind != self.name
