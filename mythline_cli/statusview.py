"""The status table: how ``mythline status`` looks (no Typer, no pydantic)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from .console import out
from .money import usd, usd_pair

if TYPE_CHECKING:
    from .ledger import AgentUsage, BudgetReport, FleetWindow

STYLES = {"ok": "green", "running": "cyan", "late": "yellow", "down": "bold red", "failed": "red",
          "paused": "magenta", "over-budget": "yellow", "queue-empty": "blue", "never-run": "dim"}

# A fleet bigger than this gets a summary instead of one row per agent (``--all`` lists every
# one): a thousand rows help nobody at a glance, and Rich takes over a second to lay them out.
SUMMARY_ABOVE = 50
# In the summary, the agents a person may need to act on, most urgent first, and how many.
ATTENTION = ("down", "failed", "late", "over-budget")
ATTENTION_ROWS = 20


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


def _clock(ts: str) -> str:
    """An ISO time as local HH:MM (the day too when it is not today)."""
    try:
        moment = datetime.fromisoformat(ts).astimezone()
    except ValueError:
        return ts
    today = datetime.now().astimezone().date()
    return moment.strftime("%H:%M" if moment.date() == today else "%Y-%m-%d %H:%M")


def _money(spent: float, cap: float | None) -> str:
    return usd_pair(spent, cap)


def _tokens(spent: int, cap: int | None) -> str:
    def k(n: float) -> str:
        if n >= 1_000_000:
            return f"{n / 1_000_000:.1f}M".replace(".0M", "M")
        return f"{n / 1000:.0f}k" if n >= 10_000 else f"{int(n):,}"
    return k(spent) + (f"/{k(cap)}" if cap is not None else "")


def attention(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows in an ``ATTENTION`` state, most urgent state first, fleet order within a state."""
    rank = {state: i for i, state in enumerate(ATTENTION)}
    return sorted((r for r in rows if r["state"] in rank), key=lambda r: rank[r["state"]])


def render(data: dict[str, Any], *, all_rows: bool = False) -> None:
    """The fleet table; above ``SUMMARY_ABOVE`` agents, a summary unless ``all_rows``."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    con = out()
    now = datetime.fromisoformat(data["now"])
    rows = data["agents"]
    summary = len(rows) > SUMMARY_ABOVE and not all_rows
    title = "Mythline fleet"
    if summary:
        counts: dict[str, int] = {}
        for row in rows:
            counts[row["state"]] = counts.get(row["state"], 0) + 1
        order = [s for s in STYLES if s in counts] + sorted(s for s in counts if s not in STYLES)
        line = Text(f"Mythline fleet: {len(rows):,} agents", style="bold")
        for state in order:
            line.append(" · ")
            line.append(f"{counts[state]:,} {state}", style=STYLES.get(state, ""))
        con.print(line)
        needy = attention(rows)
        rows = needy[:ATTENTION_ROWS]
        title = (f"Needing attention: {len(rows)} of {len(needy):,}" if len(needy) > len(rows)
                 else f"Needing attention: {len(rows)}")
    # On an 80-column terminal the two least urgent columns make way for the rest.
    wide = con.width >= 110
    table = Table(title=title, title_justify="left", caption_justify="left", box=box.SIMPLE_HEAD,
                  pad_edge=False, padding=(0, 1) if wide else (0, 0), title_style="bold")
    columns = [("agent", "left"), ("state", "left"), ("last run", "right")]
    columns += [("last ok", "right")] if wide else []
    columns += [("next", "right")] + ([("fails", "right")] if wide else [])
    columns += [("topics d/p/q" if wide else "topics", "right"), ("tokens today" if wide else "tokens", "right"),
                ("USD today" if wide else "USD", "right")]
    for col, justify in columns:
        table.add_column(col, justify=justify, no_wrap=True)
    for row in rows:
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
               f" + {usd(day['usd']['reserved'])} reserved · {_tokens(day['tokens']['spent'], day['tokens']['cap'])} tokens")
    month = data["fleet"]["month"]
    if month["usd"]["cap"] is not None or month["tokens"]["cap"] is not None:
        caption += f" · month {month['window']}: {_money(month['usd']['spent'], month['usd']['cap'])}"
    caption += f" · {data['open_reservations']} open reservation(s) · state home {data['home']}"
    table.caption = Text(caption)
    con.print(table)
    if summary:
        hidden = len(data["agents"]) - len(rows)
        con.print(Text(f"{hidden:,} more agent(s) not shown; every agent: mythline status --all "
                       "(or --json)", style="dim"))
    breaker = data.get("breaker")
    if breaker:
        when = (f"since {_clock(breaker['since'])}, cooling down until {_clock(breaker['until'])}"
                if breaker["cooling_down"] else f"since {_clock(breaker['since'])}, cooled down: the next call is a probe")
        what = "provider wait" if breaker.get("kind") == "wait" else "breaker open"
        con.print(f"[bold red]{what}[/] for {escape(breaker['provider'])} {when}: {escape(breaker['reason'])}; "
                  "no agent calls it until then", markup=True)
    for row in rows:
        if row["last_error"]:
            # Errors quote config tables like [provider.prices."m"]: never read them as markup.
            log = f" (log: {row['log']})" if row.get("log") else ""
            # A run's own line often starts with the agent's name already: say it once.
            error = str(row["last_error"]).removeprefix(f"{row['agent']}: ")
            con.print(f"[bold]{row['agent']}[/]: {escape(error)}{escape(log)}", markup=True)
    for stray in data.get("start_failures") or []:
        who = f"mythline run {stray['agent']}" if stray.get("agent") else "a mythline run"
        con.print(f"[bold]{escape(who)}[/] could not start {_ago(stray['at'], now)}: {escape(stray['error'])} "
                  f"(log: {escape(stray['log'])})", markup=True)
    if data.get("ledger_error"):
        con.print(f"[red]ledger:[/] {escape(str(data['ledger_error']))}", markup=True)


def render_budget(report: BudgetReport) -> None:
    """``mythline budget show``: spent, reserved and caps per agent and for the fleet (``Ledger.report``)."""
    from rich.table import Table

    day = report["fleet"]["day"]
    table = Table(title=f"Budget · day {day['window']} ({report['timezone']})", title_justify="left")
    for col in ("scope", "USD spent", "USD reserved", "USD cap", "tokens spent", "tokens reserved", "token cap"):
        table.add_column(col, justify="left" if col == "scope" else "right")

    def cap(value: float | int | None, is_usd: bool) -> str:
        if value is None:
            return "none"
        return usd(value) if is_usd else f"{value:,}"

    def add(scope: str, row: AgentUsage | FleetWindow) -> None:
        table.add_row(scope, usd(row['usd']['spent']), usd(row['usd']['reserved']),
                      cap(row["usd"]["cap"], True), f"{int(row['tokens']['spent']):,}",
                      f"{int(row['tokens']['reserved']):,}", cap(row["tokens"]["cap"], False))

    for name, row in report["agents"].items():
        add(name, row)
    add("fleet (day)", day)
    month = report["fleet"]["month"]
    add(f"fleet (month {month['window']})", month)
    out().print(table)
