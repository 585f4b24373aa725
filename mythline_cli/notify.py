"""The alerts a run raises: a quarantined topic, a failure streak, a budget nearing its cap.

Sending is best effort: an alert that cannot be delivered is an ``alert-failed`` event,
never a failed run."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .errors import MythlineError

if TYPE_CHECKING:
    from .config import Agent, Settings
    from .ledger import Ledger

Emit = Callable[..., Any]


def alert(settings: Settings, agent: str, emit: Emit, kind: str, message: str, *, once_key: str,
          **data: Any) -> None:
    try:
        from . import alerts

        alerts.send(settings, kind=kind, message=message, agent=agent, once_key=once_key, data=data)
    except Exception as exc:  # noqa: BLE001 - an alert must never break a run
        emit("alert-failed", kind=kind, error=f"{type(exc).__name__}: {exc}")


def quarantined(settings: Settings, agent: Agent, emit: Emit, topic: str, issues: list[str]) -> str:
    """Alert that ``topic`` is quarantined; returns the run's message about it."""
    message = f"{agent.name}: topic {topic!r} quarantined after {agent.max_attempts} failed attempts"
    if issues:
        message += f"; last problem: {issues[0]}"
    alert(settings, agent.name, emit, "quarantine", message, once_key=f"quarantine:{agent.name}:{topic}",
          topic=topic)
    return message


def failure_streak(settings: Settings, agent: str, emit: Emit, streak: int, message: str | None,
                   run_id: str) -> None:
    """Alert once, on the failure that makes the streak reach ``alerts.consecutive_failures``."""
    if streak == settings.config.alerts.consecutive_failures:
        alert(settings, agent, emit, "failures", f"{agent} failed {streak} runs in a row: {message}",
              once_key=f"failures:{agent}:{run_id}", failures=streak)


def budget_crossings(settings: Settings, ledger: Ledger, agent: Agent, emit: Emit) -> None:
    """Alert once per cap, window and threshold that spend has reached ``alerts.warn_at`` of."""
    from .ledger import crossings
    from .money import usd

    try:
        hits = crossings(ledger, agent, settings.config.alerts.warn_at)
    except MythlineError:
        return
    for hit in hits:
        scope = hit["scope"]
        spent = usd(hit['spent']) if hit["unit"] == "usd" else f"{int(hit['spent']):,} tokens"
        cap = usd(hit['cap']) if hit["unit"] == "usd" else f"{int(hit['cap']):,} tokens"
        alert(settings, agent.name, emit, "budget-warn", f"{scope} has spent {spent} of its {cap} cap "
              f"({hit['setting']}) in {hit['window']}", once_key=f"budget-warn:{scope}:{hit['unit']}:{hit['window']}"
              + (f":{hit['threshold']:g}" if isinstance(settings.config.alerts.warn_at, list) else ""),
              **hit)
