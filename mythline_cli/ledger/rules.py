"""The money rules: pure functions of a ledger state, shared by every backend.

A backend hands them the state it holds under its lock (or in its transaction) and journals
the entries they ask for; none of them reads a file, a clock or a process table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from ..errors import BudgetExceeded, UnknownPrice
from .journal import Entry, State

if TYPE_CHECKING:  # the read-only commands use the ledger without pydantic
    from ..config import Agent, Budget
    from ..pricing import Estimate


class Cap(NamedTuple):
    """One limit: spend of ``scope`` (an agent name, or ``"*"`` for the fleet) in ``unit``
    over the current window of ``kind``, set by the setting named ``setting``."""

    kind: str  # "day" | "month"
    scope: str
    unit: str  # "usd" | "tokens"
    cap: float
    setting: str


def caps(budget: Budget, agent: Agent) -> list[Cap]:
    """Every cap that applies to ``agent``'s calls."""
    found = [
        Cap("day", agent.name, "usd", agent.daily_usd, f"agents.{agent.name}.daily_usd"),  # type: ignore[arg-type]
        Cap("day", agent.name, "tokens", agent.daily_tokens, f"agents.{agent.name}.daily_tokens"),  # type: ignore[arg-type]
        Cap("day", "*", "usd", budget.daily_usd, "budget.daily_usd"),  # type: ignore[arg-type]
        Cap("day", "*", "tokens", budget.daily_tokens, "budget.daily_tokens"),  # type: ignore[arg-type]
        Cap("month", "*", "usd", budget.monthly_usd, "budget.monthly_usd"),  # type: ignore[arg-type]
        Cap("month", "*", "tokens", budget.monthly_tokens, "budget.monthly_tokens"),  # type: ignore[arg-type]
    ]
    return [c for c in found if c.cap is not None]


def usage(data: State, key: str, scope: str, unit: str) -> tuple[float, float]:
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


def ceiling(cap: Cap) -> float:
    """How much spent + reserved a new reservation may bring ``cap`` to.

    The one place where a policy narrows a cap for a call: even pacing over the window,
    an agent's priority or its reserved share of the fleet cap."""
    # The tolerance absorbs float noise only; it never admits a whole call.
    return cap.cap * (1 + 1e-9)


def refusal(data: State, current: dict[str, str], agent: Agent, estimate: Estimate,
            applicable: list[Cap]) -> BudgetExceeded | None:
    """Why ``estimate`` may not be reserved now, or None when every cap has room."""
    for cap in applicable:
        request = float(estimate.usd or 0.0) if cap.unit == "usd" else float(estimate.tokens)
        spent, reserved = usage(data, current[cap.kind], cap.scope, cap.unit)
        # Written as "not within" so that a NaN anywhere refuses instead of admitting everything.
        if not spent + reserved + request <= ceiling(cap):
            return BudgetExceeded(
                scope=f"agent {agent.name}" if cap.scope != "*" else "the fleet", unit=cap.unit,
                window="daily" if cap.kind == "day" else "monthly", spent=spent,
                reserved=reserved, request=request, cap=cap.cap, setting=cap.setting, agent=agent.name,
            )
    return None


def unknown_price(agent: Agent, estimate: Estimate, applicable: list[Cap]) -> UnknownPrice | None:
    """A call without a price may not be made while a USD cap applies: it could not be checked."""
    if estimate.usd is None and any(c.unit == "usd" for c in applicable):
        return UnknownPrice(agent.model)
    return None


def crossings(data: State, current: dict[str, str], applicable: list[Cap], warn_at: float) -> list[dict[str, Any]]:
    """Every cap whose spend has reached ``warn_at`` of it."""
    out = []
    for kind, scope, unit, cap, setting in applicable:
        spent, _ = usage(data, current[kind], scope, unit)
        if cap and spent >= warn_at * cap:
            out.append({"scope": "fleet" if scope == "*" else scope, "unit": unit, "window": current[kind],
                        "spent": spent, "cap": cap, "setting": setting})
    return out


def reclaims(data: State, now_ts: float, run_timeout: float,
             gone: Callable[[dict[str, Any]], bool]) -> list[Entry]:
    """The reclaim entries for reservations whose holder is ``gone`` (the backend's liveness
    check) or that are older than ``run_timeout``: charged at their estimate, unsettled."""
    out: list[Entry] = []
    for rid, res in data["reservations"].items():
        age = now_ts - float(res.get("created_ts", 0))
        dead = gone(res)
        if not dead and age <= run_timeout:
            continue
        out.append({"event": "reclaim", "reservation": rid, "agent": res["agent"],
                    "pid": res.get("pid"), "run_id": res.get("run_id"),
                    "reason": "process gone" if dead else "older than run_timeout",
                    "usd": res.get("usd") or 0.0, "tokens": res.get("tokens", 0),
                    "windows": res.get("windows", [])})
    return out


def window_changes(data: State, current: dict[str, str]) -> list[Entry]:
    """Open the current windows; close old ones that no reservation still points at."""
    out: list[Entry] = []
    for kind, key in current.items():
        if key not in data["windows"]:
            out.append({"event": "window-opened", "window": key, "kind": kind})
    held = {k for res in data["reservations"].values() for k in res.get("windows", [])}
    for key in data["windows"]:
        if key in current.values() or key in held:
            continue
        out.append({"event": "window-closed", "window": key,
                    "agents": data["windows"][key].get("agents", {})})
    return out
