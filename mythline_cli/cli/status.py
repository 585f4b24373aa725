"""``mythline status`` and ``mythline home``: read files only, never import the LLM stack."""

from __future__ import annotations

import typer

from ..statusview import ATTENTION_ROWS, SUMMARY_ABOVE, render
from ._util import boundary, print_json, settings

HELP = f"""Show every agent's state from its heartbeat, and the fleet's budget.

States: never-run, ok, running, late (past its next due time), down (past due + grace,
or a run hung past budget.run_timeout), failed, paused, over-budget, queue-empty.
Exit 1 when any agent is down or failed, else 0 — usable as a monitoring check.

A fleet of more than {SUMMARY_ABOVE} agents is summarised: how many agents are in each state,
then the {ATTENTION_ROWS} most urgent of those down, failed, late or over-budget. --all lists
every agent; --json always has every agent.
"""


def status_cli(
    json_out: bool = typer.Option(False, "--json", help="Print the same data as JSON."),
    all_rows: bool = typer.Option(False, "--all", help="One row per agent, however big the fleet (more than "
                                                      f"{SUMMARY_ABOVE} are otherwise summarised)."),
) -> None:
    with boundary():
        from ..status import collect

        cfg = settings()
        data = collect(cfg)
        from .. import paths, settings_cache

        if paths.home().exists():  # never create a state home just to cache
            settings_cache.save(cfg)
        if json_out:
            print_json(data)
        else:
            render(data, all_rows=all_rows)
    raise typer.Exit(1 if data["failing"] else 0)


def home_cli() -> None:
    from .. import paths

    typer.echo(str(paths.home()))
