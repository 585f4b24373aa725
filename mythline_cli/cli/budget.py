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


@app.command("reconcile", help="Compare the ledger with the provider's bill (OpenRouter's GET /generation and "
                               "GET /key): each call's figure is replaced by what was billed, the drift is "
                               "shown per day, and the key's remaining limit becomes one more fleet cap. A "
                               "provider without these endpoints: one line, nothing changed (exit 0).\n\n"
                               "Examples:\n\n  mythline budget reconcile\n\n"
                               "  mythline budget reconcile --since 2026-12-01 --json")
def reconcile_cli(
    since: str = typer.Option(None, "--since", metavar="DATE", help="Only calls from this day on (YYYY-MM-DD)."),
    json_out: bool = typer.Option(False, "--json", help="Print what was done as JSON."),
) -> None:
    with boundary():
        from datetime import date

        from .. import keys
        from ..errors import NoBilling
        from ..ledger import Ledger
        from ..ledger.reconcile import Billing, reconcile

        start = None
        if since is not None:
            try:
                start = date.fromisoformat(since)
            except ValueError:
                raise UsageError(f"--since {since!r} is not a date; write it as YYYY-MM-DD, e.g. 2026-12-01") from None
        cfg = settings()
        env = cfg.provider.api_key_env
        key = keys.lookup(env)[0] if env else None
        if env and not key:
            raise UsageError(keys.missing(env))
        try:
            result = reconcile(Ledger(cfg), Billing(cfg.provider.base_url, key), since=start)
        except NoBilling as exc:
            if json_out:
                print_json({"supported": False, "reason": str(exc)})
            else:
                out().print(str(exc), markup=False)
            return
        if json_out:
            print_json({"supported": True, **result})
            return
        console = out()
        console.print(f"Reconciled {result['reconciled']} call(s) with the bill; {result['pending']} not billed yet "
                      f"(the next reconcile asks again). Ledger changed by ${result['extra_usd']:+.6f}.", markup=False)
        for day, fig in result["days"].items():
            console.print(f"  {day}: ledger ${fig['ledger_usd']:.6f}, billed ${fig['billed_usd']:.6f}, "
                          f"drift ${fig['drift_usd']:+.6f} ({fig['calls']} call(s))", markup=False)
        k = result["key"]
        limit = "no limit" if k["limit"] is None else f"limit ${k['limit']:.2f}, ${k['limit_remaining'] or 0:.2f} left"
        usage = f"${k['usage_daily']:.6f} used today (UTC)" if k["usage_daily"] is not None else "usage today unknown"
        console.print(f"Key: {limit}; {usage}.", markup=False)


@app.command("report", help="Unit economics of the last N days, per agent and for the fleet: spend split into "
                            "research / audit / repair / retries / unsettled, records stored, topics "
                            "quarantined, cost per stored record, and the fleet's daily spend as bars.\n\n"
                            "Examples:\n\n  mythline budget report\n\n  mythline budget report --days 30 --json")
def report_cli(
    days: int = typer.Option(7, "--days", min=1, max=366, help="How many days back, today included."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    with boundary():
        from datetime import date

        from ..ledger import utcnow, window_keys, zone
        from ..ledger.economics import economics

        cfg = settings()
        today = date.fromisoformat(window_keys(utcnow(), zone(cfg.budget.timezone))["day"][4:])
        result = economics(cfg, days=days, today=today)
        if json_out:
            print_json(result)
            return
        _render_report(result)


def _render_report(result) -> None:  # noqa: ANN001 - an EconomicsReport
    from rich.table import Table

    from ..ledger.economics import PARTS

    console = out()
    table = Table(title=f"Spend and records, {result['days'][0]} to {result['days'][-1]}", title_justify="left")
    table.add_column("agent")
    for head in ("spent", *PARTS, "stored", "quarantined", "per record"):
        table.add_column(head, justify="right")

    def row(name: str, econ: dict) -> list[str]:
        per = econ["usd_per_record"]
        return [name, f"${econ['usd']:.4f}", *(f"${econ['split'][p]:.4f}" for p in PARTS), str(econ["stored"]),
                str(econ["quarantined"]), f"${per:.4f}" if per is not None else "-"]

    for name, econ in result["agents"].items():
        if econ["usd"] or econ["stored"] or econ["quarantined"]:
            table.add_row(*row(name, econ))
    table.add_section()
    table.add_row(*row("fleet", result["fleet"]), style="bold")
    console.print(table)
    daily = result["daily_usd"]
    top = max(daily.values(), default=0.0) or 1.0
    width = 40
    console.print("Fleet spend per day")
    for day, usd in daily.items():
        bar = "█" * round(width * usd / top) if usd else ""
        console.print(f"  {day}  [cyan]{bar:<{width}}[/cyan] ${usd:.4f}")
