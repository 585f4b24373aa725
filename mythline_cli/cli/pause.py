"""``mythline pause`` / ``mythline resume``: the kill switch."""

from __future__ import annotations

import typer

from ..errors import UsageError
from ._util import boundary, out, settings

PAUSE_HELP = """Stop an agent (or --all) from calling anything until resumed.

A paused agent's runs exit 5 without calling the provider. A run already in flight stops at
its next step boundary (before its next LLM call) with its checkpoint saved.
"""

RESUME_HELP = "Let a paused agent (or --all) run again."


def _targets(agent: str | None, all_agents: bool) -> list[str]:
    cfg = settings()
    if all_agents == (agent is not None):
        raise UsageError("name one agent, or use --all")
    return cfg.agent_names if all_agents else [cfg.agent(agent).name]


def pause_cli(
    agent: str = typer.Argument(None, help="Agent to pause."),
    all_agents: bool = typer.Option(False, "--all", help="Pause every agent."),
    note: str = typer.Option(None, "--note", help="Why: shown by status and in the refusal message."),
) -> None:
    with boundary():
        from ..killswitch import pause

        names = _targets(agent, all_agents)
        for name in names:
            pause(name, note)
        out().print(f"Paused {', '.join(names)}.", markup=False)


def resume_cli(
    agent: str = typer.Argument(None, help="Agent to resume."),
    all_agents: bool = typer.Option(False, "--all", help="Resume every agent."),
) -> None:
    with boundary():
        from ..killswitch import resume

        names = _targets(agent, all_agents)
        resumed = [name for name in names if resume(name)]
        out().print(f"Resumed {', '.join(resumed)}." if resumed else "Nothing was paused.", markup=False)
