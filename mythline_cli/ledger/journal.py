"""The ledger's model: its state value, the journal entries that change it, and replay.

A state is the JSON object ``ledger.json`` holds: ``windows`` (per window key, the spend of
each agent), ``reservations`` (open holds by id), ``latest`` (the newest window of each kind)
and ``seq`` (the last journal entry applied). ``apply`` is the only code that changes one;
every backend journals entries and applies them with it, so replay gives the same state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypedDict

from .. import files
from ..errors import LedgerCorrupt

VERSION = 1

State = dict[str, Any]


class Entry(TypedDict, total=False):
    """One journal line. Which fields an event carries: see ``apply``."""

    seq: int
    ts: str
    event: str  # window-opened, reserve, settle, release, reclaim, late-settle, window-closed, reset, reconcile
    reservation: str
    agent: str
    run_id: str | None
    step: str
    pid: int | None
    host: str
    holder: int  # the PostgreSQL backend's liveness key (a session advisory lock)
    created: str
    created_ts: float
    usd: float | None
    tokens: int
    windows: list[str]
    unsettled: bool
    extra_usd: float
    extra_tokens: int
    # The provider's id of the call a settle pays for, to match it with the bill; replay keeps
    # unknown fields out of the state, so adding it changes no ledger.
    generation: str
    # reconcile: a call's charge (``charged``, ``was_unsettled``) replaced by the provider's bill.
    billed_usd: float
    charged: float
    was_unsettled: bool
    window: str
    kind: str
    reason: str
    cleared: dict[str, Any]
    agents: dict[str, Any]


def empty() -> State:
    return {"version": VERSION, "windows": {}, "reservations": {}}


def bucket(window: dict[str, Any], agent: str) -> dict[str, Any]:
    return window.setdefault("agents", {}).setdefault(
        agent, {"usd": 0.0, "tokens": 0, "unsettled_usd": 0.0, "calls": 0}
    )


_NUMBER_TYPES = frozenset((int, float))  # what json.loads gives for a number (bool is not one)
_INF = float("inf")


def figure(value: Any) -> float:
    """A charge from a journal line: ``value`` (None: 0) when it is a finite number from zero up;
    ValueError otherwise (a negative figure would switch caps off, NaN would admit everything)."""
    if value is None:
        return 0
    if type(value) not in _NUMBER_TYPES or not 0 <= value < _INF:
        raise ValueError(f"impossible figure {value!r}")
    return value  # type: ignore[no-any-return]


def shape_problem(data: Any) -> str | None:
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


def _charge(data: State, windows: list[str], agent: str, usd: float, tokens: int, unsettled: bool) -> None:
    for key in windows:
        window = data["windows"].get(key)
        if window is None:
            continue
        spend = bucket(window, agent)
        spend["usd"] += usd
        spend["tokens"] += int(tokens)
        spend["calls"] += 1
        if unsettled:
            spend["unsettled_usd"] += usd


def apply(data: State, op: Entry | dict[str, Any]) -> None:
    """Make the change one journal line describes. Deterministic: replay gives the same ledger."""
    kind = op.get("event")
    if kind == "window-opened":
        data["windows"].setdefault(op["window"], {"kind": op["kind"], "opened": op["ts"], "agents": {}})
        latest = data.setdefault("latest", {})
        latest[op["kind"]] = max(latest.get(op["kind"], ""), op["window"])
    elif kind == "reserve":
        figure(op.get("usd"))
        figure(op.get("tokens", 0))
        data["reservations"][op["reservation"]] = {
            k: op[k] for k in ("agent", "run_id", "step", "pid", "host", "holder", "created", "created_ts", "usd",  # type: ignore[literal-required]
                               "tokens", "windows") if k in op}
    elif kind == "settle":
        usd, tokens = figure(op.get("usd")), figure(op.get("tokens", 0))
        res = data["reservations"].pop(op["reservation"], None)
        if res is not None:
            _charge(data, res["windows"], res["agent"], usd or 0.0, int(tokens), bool(op.get("unsettled")))
    elif kind == "release":
        data["reservations"].pop(op["reservation"], None)
    elif kind == "reclaim":
        # The provider may have billed the call, so it counts at its estimate, unsettled.
        usd, tokens = figure(op.get("usd")), figure(op.get("tokens", 0))
        data["reservations"].pop(op["reservation"], None)
        _charge(data, op.get("windows", []), op["agent"], usd or 0.0, int(tokens), True)
    elif kind == "late-settle":
        figure(op.get("extra_usd"))
        figure(op.get("extra_tokens"))
        for key in op.get("windows", []):
            window = data["windows"].get(key)
            if window is not None and (op.get("extra_usd") or op.get("extra_tokens")):
                spend = bucket(window, op["agent"])
                spend["usd"] += op.get("extra_usd") or 0.0
                spend["tokens"] += int(op.get("extra_tokens") or 0)
                spend["unsettled_usd"] += op.get("extra_usd") or 0.0
    elif kind == "reconcile":
        # The bill replaces our figure: more when it is higher, less when it is lower.
        billed, charged = figure(op.get("billed_usd")), figure(op.get("charged"))
        for key in op.get("windows", []):
            window = data["windows"].get(key)
            if window is None:
                continue
            spend = bucket(window, op["agent"])
            spend["usd"] = max(0.0, spend["usd"] + billed - charged)
            if op.get("was_unsettled"):
                spend["unsettled_usd"] = max(0.0, spend["unsettled_usd"] - charged)
    elif kind == "window-closed":
        data["windows"].pop(op["window"], None)
    elif kind == "reset":
        for key in op.get("windows", []):
            buckets = data["windows"].get(key, {}).get("agents", {})
            for name in ([op["agent"]] if op.get("agent") not in (None, "*") else list(buckets)):
                buckets.pop(name, None)
    if isinstance(op.get("seq"), int):
        data["seq"] = op["seq"]


def replay(journal: Path) -> State:
    """A ledger rebuilt from every numbered line of the journal; ``LedgerCorrupt`` naming the
    first line that is no ledger change (a hand edit: a charge below zero, a missing field)."""
    data = empty()
    for op in files.iter_jsonl(journal):
        if isinstance(op.get("seq"), int):
            try:
                apply(data, op)
            except (KeyError, TypeError, ValueError, AttributeError):
                raise LedgerCorrupt(journal, f"entry {op['seq']} is not a ledger change") from None
    return data
