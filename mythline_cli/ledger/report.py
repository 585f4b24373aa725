"""The budget report: the typed shape ``budget show --json`` prints and ``status`` reads."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypedDict

from .journal import State
from .rules import usage

if TYPE_CHECKING:
    from ..config import Settings


class Figures(TypedDict):
    """One unit in one window: spent, held by open reservations, and the cap (None: no cap)."""

    spent: float
    reserved: float
    cap: float | None


class AgentUsage(TypedDict):
    """An agent's current day."""

    usd: Figures
    tokens: Figures


class FleetWindow(TypedDict):
    """The fleet's current day or month; ``window`` is its date part ("2026-11-25", "2026-11")."""

    window: str
    usd: Figures
    tokens: Figures


class FleetUsage(TypedDict):
    day: FleetWindow
    month: FleetWindow


class BudgetReport(TypedDict):
    """``mythline budget show --json``."""

    timezone: str
    windows: dict[str, str]  # "day" / "month" -> the current window key
    agents: dict[str, AgentUsage]
    fleet: FleetUsage
    open_reservations: int


def _figures(data: State, key: str, scope: str, unit: str, cap: float | None) -> Figures:
    spent, reserved = usage(data, key, scope, unit)
    return {"spent": spent, "reserved": reserved, "cap": cap}


def fleet(data: State, current: dict[str, str], settings: Settings) -> FleetUsage:
    """The fleet's part of the report. (Apart, because it costs nothing per agent: ``status``
    of 1,000 agents uses only this.)"""
    budget = settings.budget
    day, month = current["day"], current["month"]
    return {
        "day": {"window": day.split(":", 1)[1],
                "usd": _figures(data, day, "*", "usd", budget.daily_usd),
                "tokens": _figures(data, day, "*", "tokens", budget.daily_tokens)},
        "month": {"window": month.split(":", 1)[1],
                  "usd": _figures(data, month, "*", "usd", budget.monthly_usd),
                  "tokens": _figures(data, month, "*", "tokens", budget.monthly_tokens)},
    }


def report(data: State, current: dict[str, str], settings: Settings) -> BudgetReport:
    """Spent, reserved and caps of the current windows, per agent and for the fleet."""
    day = current["day"]
    agents: dict[str, AgentUsage] = {
        agent.name: {"usd": _figures(data, day, agent.name, "usd", agent.daily_usd),
                     "tokens": _figures(data, day, agent.name, "tokens", agent.daily_tokens)}
        for agent in settings.agents()
    }
    return {"timezone": settings.budget.timezone, "windows": current, "agents": agents,
            "fleet": fleet(data, current, settings), "open_reservations": len(data["reservations"])}
