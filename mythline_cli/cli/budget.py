"""``mythline budget show|reset``: the ledger, read or zeroed."""

from __future__ import annotations

import sys

import typer

from ..errors import UsageError
from ._util import boundary, out, print_json, settings

app = typer.Typer(no_args_is_help=True, help="Look at or reset the budget ledger (spend per agent and for the fleet).")


@app.command("show", help="Spent, reserved and cap per agent and for the fleet, in the current window.")
def show_cli(json_out: bool = typer.Option(False, "--json", help="Print the report as JSON.")) -> None:
    with boundary():
        from ..ledger import BudgetReport, Ledger

        cfg = settings()
        report: BudgetReport = Ledger(cfg).report()
        if json_out:
            print_json(report)
            return
        from ..statusview import render_budget

        render_budget(report)


@app.command("reset", help="Zero the current window's spend for one agent or all, recorded in the ledger "
                           "history and the events. Asks first on a terminal; needs --yes otherwise.")
def reset_cli(
    agent: str = typer.Option(None, "--agent", help="Reset only this agent (default: every agent)."),
    month: bool = typer.Option(False, "--month", help="Also zero the current month."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    with boundary():
        from ..events import EventLog
        from ..ledger import Ledger

        cfg = settings()
        if agent is not None:
            cfg.agent(agent)  # unknown agent -> exit 2
        what = f"agent {agent}" if agent else "every agent"
        if not yes:
            if not (sys.stdin and sys.stdin.isatty()):
                raise UsageError(f"refusing to reset the budget of {what} without --yes (not on a terminal)")
            if not typer.confirm(f"Zero today's{' and this month' + chr(39) + 's' if month else ''} spend for {what}?"):
                raise typer.Exit(1)
        entry = Ledger(cfg).reset(agent=agent, month=month)
        for name in ([agent] if agent else cfg.agent_names):
            EventLog(name, "budget-reset").emit("budget-reset", windows=entry["windows"], scope=entry["agent"])
        out().print(f"Reset {what} for {', '.join(entry['windows'])}.")


@app.command("repair", help="Rebuild ledger.json from its journal (ledger-history.jsonl). An unreadable "
                            "ledger is moved aside as ledger.json.corrupt-<timestamp> first; spend is never "
                            "reset to zero.")
def repair_cli(json_out: bool = typer.Option(False, "--json", help="Print what was rebuilt as JSON.")) -> None:
    with boundary():
        from ..ledger import Ledger

        result = Ledger(settings()).repair()
        if json_out:
            print_json(result)
            return
        if result["moved_aside"]:
            out().print(f"Moved the unreadable ledger to {result['moved_aside']}.", markup=False)
        out().print(f"Rebuilt the ledger from {result['seq']} journal entries: "
                    f"{len(result['windows'])} window(s), {result['reservations']} open reservation(s).", markup=False)
