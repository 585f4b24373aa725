"""``mythline watchdog``: alert once when an agent goes down and once when it comes back."""

from __future__ import annotations

import typer

from ._util import boundary, is_tty, out, print_json, settings

HELP = """Send a `down` alert for every agent that went down, and a `recovered` alert when it is back.

Meant for cron every few minutes (*/5 * * * * /path/to/mythline watchdog). An agent is
judged exactly as `mythline status` judges it: down is past its next due time + grace, or a
run hung past budget.run_timeout. One alert per incident, however often the watchdog runs;
where alerts go is set under [alerts] (see docs/alerts.md). Prints nothing on a healthy
fleet when not on a terminal. Exit 1 when any agent is down, else 0.
"""


def watchdog_cli(json_out: bool = typer.Option(False, "--json", help="Print what was found and sent as JSON.")) -> None:
    with boundary():
        from ..watchdog import watch

        report = watch(settings())
        if json_out:
            print_json(report)
        elif report["sent"] or is_tty():
            from rich.markup import escape

            con = out()
            for alert in report["sent"]:
                notes = []
                for channel in ("webhook", "command"):
                    outcome = alert.get(channel)
                    if outcome and not outcome.get("ok"):
                        notes.append(f"{channel} failed: {outcome.get('error')}")
                style = "green" if alert["kind"] == "recovered" else "red"
                line = f"[{style}]{alert['kind']}[/] {escape(alert['message'])}"
                if notes:
                    line += f" [yellow]({escape('; '.join(notes))})[/]"
                con.print(line, markup=True)
            if not report["sent"]:
                still = ", ".join(report["down"])
                if still:
                    con.print(f"still down (already alerted): {escape(still)}", markup=True)
                elif not report["failing"]:
                    con.print("every agent is fine", markup=True)
            if is_tty():
                for row in report["failing"]:
                    state = row["state"] + (f" ({row['note']})" if row["note"] else "")
                    cause = f": {row['error']}" if row["error"] else ""
                    log = f" (log: {row['log']})" if row["log"] else ""
                    con.print(f"[red]{escape(state)}[/] {escape(row['agent'])}{escape(cause)}{escape(log)}",
                              markup=True)
    raise typer.Exit(1 if report["down"] else 0)
