"""The status table: how ``mythline status`` looks (no Typer, no pydantic)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .console import out

STYLES = {"ok": "green", "running": "cyan", "late": "yellow", "down": "bold red", "failed": "red",
          "paused": "magenta", "over-budget": "yellow", "queue-empty": "blue", "never-run": "dim"}


def _ago(ts: str | None, now: datetime) -> str:
    if not ts:
        return "-"
    try:
        then = datetime.fromisoformat(ts)
    except ValueError:
        return "-"
    secs = (now - then).total_seconds()
    future = secs < 0
    secs = abs(secs)
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if secs >= size:
            text = f"{int(secs // size)}{unit}"
            break
    else:
        text = f"{int(secs)}s"
    return f"in {text}" if future else f"{text} ago"


def _money(spent: float, cap: float | None) -> str:
    return f"${spent:.2f}" + (f"/{cap:.2f}" if cap is not None else "")


def _tokens(spent: int, cap: int | None) -> str:
    def k(n: float) -> str:
        if n >= 1_000_000:
            return f"{n / 1_000_000:.1f}M".replace(".0M", "M")
        return f"{n / 1000:.0f}k" if n >= 10_000 else f"{int(n):,}"
    return k(spent) + (f"/{k(cap)}" if cap is not None else "")


def render(data: dict[str, Any]) -> None:
    from rich import box
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    con = out()
    now = datetime.fromisoformat(data["now"])
    # On an 80-column terminal the two least urgent columns make way for the rest.
    wide = con.width >= 110
    table = Table(title="Mythline fleet", title_justify="left", caption_justify="left", box=box.SIMPLE_HEAD,
                  pad_edge=False, padding=(0, 1) if wide else (0, 0), title_style="bold")
    columns = [("agent", "left"), ("state", "left"), ("last run", "right")]
    columns += [("last ok", "right")] if wide else []
    columns += [("next", "right")] + ([("fails", "right")] if wide else [])
    columns += [("topics d/p/q" if wide else "topics", "right"), ("tokens today" if wide else "tokens", "right"),
                ("USD today" if wide else "USD", "right")]
    for col, justify in columns:
        table.add_column(col, justify=justify, no_wrap=True)
    for row in data["agents"]:
        state = row["state"] + (f" ({row['note']})" if row["note"] else "")
        t = row["topics"]
        fails = row["consecutive_failures"] or 0
        cells = [row["agent"], Text(state, style=STYLES.get(row["state"], "")), _ago(row["last_run"], now)]
        cells += [_ago(row["last_success"], now)] if wide else []
        cells += [_ago(row["next_due"], now) if row["next_due"] else "-"]
        cells += [Text(str(fails), style="red" if fails else "dim")] if wide else []
        cells += [f"{t['done']}/{t['pending']}/{t['quarantined']}",
                  _tokens(row["tokens_today"], row["tokens_cap"]), _money(row["usd_today"], row["usd_cap"])]
        table.add_row(*cells)
    day = data["fleet"]["day"]
    caption = (f"fleet today ({day['window']}): {_money(day['usd']['spent'], day['usd']['cap'])}"
               f" + ${day['usd']['reserved']:.2f} reserved · {_tokens(day['tokens']['spent'], day['tokens']['cap'])} tokens")
    month = data["fleet"]["month"]
    if month["usd"]["cap"] is not None or month["tokens"]["cap"] is not None:
        caption += f" · month {month['window']}: {_money(month['usd']['spent'], month['usd']['cap'])}"
    caption += f" · {data['open_reservations']} open reservation(s) · state home {data['home']}"
    table.caption = Text(caption)
    con.print(table)
    for row in data["agents"]:
        if row["last_error"]:
            # Errors quote config tables like [provider.prices."m"]: never read them as markup.
            con.print(f"[bold]{row['agent']}[/]: {escape(str(row['last_error']))}", markup=True)
    if data.get("ledger_error"):
        con.print(f"[red]ledger:[/] {escape(str(data['ledger_error']))}", markup=True)
