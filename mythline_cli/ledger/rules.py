"""The money rules: pure functions of a ledger state, shared by every backend.

A backend hands them the state it holds under its lock (or in its transaction) and journals
the entries they ask for; none of them reads a file, a clock or a process table.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
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


class Policy(NamedTuple):
    """How caps narrow for a call beyond their figure: even pacing over the day, and the
    fleet cap shared by priority and reserve. The default narrows nothing."""

    elapsed: float | None = None  # share of the day window gone (budget.pace = "even"); None: no pacing
    burst: float = 0.0  # share of a day cap pacing always allows on top
    priorities: Mapping[str, int] = {}  # agent -> priority (higher runs longer when the fleet cap is scarce)
    reserves: Mapping[str, float] = {}  # agent -> share of each fleet cap only it may use
    headroom: float = 0.0  # share of a fleet cap the lowest priority may not touch


def caps(budget: Budget, agent: Agent, key_cap: float | None = None) -> list[Cap]:
    """Every cap that applies to ``agent``'s calls; ``key_cap``: the provider key's remaining
    limit as a fleet day cap (``budget reconcile`` reads it)."""
    found = [
        Cap("day", agent.name, "usd", agent.daily_usd, f"agents.{agent.name}.daily_usd"),  # type: ignore[arg-type]
        Cap("day", agent.name, "tokens", agent.daily_tokens, f"agents.{agent.name}.daily_tokens"),  # type: ignore[arg-type]
        Cap("day", "*", "usd", budget.daily_usd, "budget.daily_usd"),  # type: ignore[arg-type]
        Cap("day", "*", "tokens", budget.daily_tokens, "budget.daily_tokens"),  # type: ignore[arg-type]
        Cap("month", "*", "usd", budget.monthly_usd, "budget.monthly_usd"),  # type: ignore[arg-type]
        Cap("month", "*", "tokens", budget.monthly_tokens, "budget.monthly_tokens"),  # type: ignore[arg-type]
    ]
    if key_cap is not None and (budget.daily_usd is None or key_cap < budget.daily_usd):
        found.append(Cap("day", "*", "usd", key_cap, "the provider key's limit (see: mythline budget reconcile)"))
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


def _used(data: State, key: str, scope: str, unit: str) -> float:
    spent, reserved = usage(data, key, scope, unit)
    return spent + reserved


def _rank(policy: Policy, agent: str) -> float:
    """0 for the highest priority in the fleet, 1 for the lowest, evenly between."""
    levels = sorted(set(policy.priorities.values()) | {policy.priorities.get(agent, 0)})
    if len(levels) < 2:
        return 0.0
    return (len(levels) - 1 - levels.index(policy.priorities.get(agent, 0))) / (len(levels) - 1)


def ceiling(cap: Cap, policy: Policy | None = None, *, agent: str | None = None, data: State | None = None,
            key: str = "", request: float = 0.0) -> float:
    """How much spent + reserved a new reservation may bring ``cap`` to.

    The one place where a policy narrows a cap for a call: even pacing over the day
    (``cap x (elapsed + burst)``), the unused reserves of the other agents (never theirs to
    spend), and, beyond an agent's own reserve, its priority (the lowest stops
    ``headroom`` short of the fleet cap, the highest at it)."""
    limit = cap.cap
    if policy is not None:
        if policy.elapsed is not None and cap.kind == "day":
            limit = min(limit, cap.cap * min(1.0, max(0.0, policy.elapsed) + policy.burst))
        if cap.scope == "*" and agent is not None and data is not None:
            held = sum(max(0.0, share * cap.cap - _used(data, key, name, cap.unit))
                       for name, share in policy.reserves.items() if name != agent)
            limit = min(limit, cap.cap - held)
            own = policy.reserves.get(agent, 0.0) * cap.cap
            if policy.headroom and not _used(data, key, agent, cap.unit) + request <= own:
                limit = min(limit, cap.cap * (1 - policy.headroom * _rank(policy, agent)))
    # The tolerance absorbs float noise only; it never admits a whole call.
    return limit * (1 + 1e-9)


def refusal(data: State, current: dict[str, str], agent: Agent, estimate: Estimate,
            applicable: list[Cap], policy: Policy | None = None) -> BudgetExceeded | None:
    """Why ``estimate`` may not be reserved now, or None when every cap has room."""
    for cap in applicable:
        request = float(estimate.usd or 0.0) if cap.unit == "usd" else float(estimate.tokens)
        key = current[cap.kind]
        spent, reserved = usage(data, key, cap.scope, cap.unit)
        limit = ceiling(cap, policy, agent=agent.name, data=data, key=key, request=request)
        # Written as "not within" so that a NaN anywhere refuses instead of admitting everything.
        if not spent + reserved + request <= limit:
            if limit < cap.cap:
                cap = cap._replace(setting=f"{cap.setting} (narrowed to {limit / (1 + 1e-9):.6g} for now by "
                                           f"{_why(cap, policy, agent.name)})")
            return BudgetExceeded(
                scope=f"agent {agent.name}" if cap.scope != "*" else "the fleet", unit=cap.unit,
                window="daily" if cap.kind == "day" else "monthly", spent=spent,
                reserved=reserved, request=request, cap=cap.cap, setting=cap.setting, agent=agent.name,
            )
    return None


def _why(cap: Cap, policy: Policy | None, agent: str) -> str:
    if policy is None:
        return "policy"
    reasons = []
    if policy.elapsed is not None and cap.kind == "day":
        reasons.append("budget.pace")
    if cap.scope == "*" and any(n != agent for n in policy.reserves):
        reasons.append("other agents' reserve")
    if cap.scope == "*" and policy.headroom and _rank(policy, agent) > 0:
        reasons.append(f"agents.{agent}.priority")
    return " and ".join(reasons) or "policy"


def unknown_price(agent: Agent, estimate: Estimate, applicable: list[Cap]) -> UnknownPrice | None:
    """A call without a price may not be made while a USD cap applies: it could not be checked."""
    if estimate.usd is None and any(c.unit == "usd" for c in applicable):
        return UnknownPrice(agent.model)
    return None


def crossings(data: State, current: dict[str, str], applicable: list[Cap],
              warn_at: float | Sequence[float]) -> list[dict[str, Any]]:
    """Every (cap, threshold) whose spend has reached the threshold's share of the cap;
    ``warn_at`` is one share or several (each crossing is its own alert)."""
    shares = [warn_at] if isinstance(warn_at, (int, float)) else list(warn_at)
    out = []
    for kind, scope, unit, cap, setting in applicable:
        spent, _ = usage(data, current[kind], scope, unit)
        for share in sorted(shares):
            if cap and spent >= share * cap:
                out.append({"scope": "fleet" if scope == "*" else scope, "unit": unit, "window": current[kind],
                            "spent": spent, "cap": cap, "setting": setting, "threshold": share})
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
