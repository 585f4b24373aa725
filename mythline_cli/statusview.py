"""The status table: how ``mythline status`` looks (no Typer, no pydantic)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from .console import out
from .money import usd, usd_pair

if TYPE_CHECKING:
    from .ledger import AgentUsage, BudgetReport, FleetWindow
    from .status import StatusReport, StatusRow

STYLES = {"ok": "green", "running": "cyan", "late": "yellow", "down": "bold red", "failed": "red",
          "paused": "magenta", "over-budget": "yellow", "queue-empty": "blue", "never-run": "dim"}

# A fleet bigger than this gets a summary instead of one row per agent (``--all`` lists every
# one, in a table laid out without Rich's table): a thousand rows help nobody at a glance.
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


def _tokens(spent: float, cap: float | None) -> str:
    def k(n: float) -> str:
        if n >= 1_000_000:
            return f"{n / 1_000_000:.1f}M".replace(".0M", "M")
        return f"{n / 1000:.0f}k" if n >= 10_000 else f"{int(n):,}"
    return k(spent) + (f"/{k(cap)}" if cap is not None else "")


def attention(rows: list[StatusRow]) -> list[StatusRow]:
    """The rows in an ``ATTENTION`` state, most urgent state first, fleet order within a state."""
    rank = {state: i for i, state in enumerate(ATTENTION)}
    return sorted((r for r in rows if r["state"] in rank), key=lambda r: rank[r["state"]])


Cell = tuple[str, str]  # text, style
Column = tuple[str, Literal["left", "right"]]  # name, justify


def table_parts(data: StatusReport, rows: list[StatusRow], *, wide: bool,
                now: datetime) -> tuple[list[Column], list[list[Cell]], str]:
    """The fleet table's columns (name, justify), cells and caption."""
    columns: list[Column] = [("agent", "left"), ("state", "left"), ("last run", "right")]
    columns += [("last ok", "right"), ("next", "right"), ("fails", "right")] if wide else [("next", "right")]
    columns += [("topics d/p/q" if wide else "topics", "right"), ("tokens today" if wide else "tokens", "right"),
                ("USD today" if wide else "USD", "right")]
    body: list[list[Cell]] = []
    for row in rows:
        paused_at = row.get("paused_at")
        about = ", ".join(part for part in (row["note"], paused_at and f"since {_clock(paused_at)}") if part)
        state = row["state"] + (f" ({about})" if about else "")
        t = row["topics"]
        fails = row["consecutive_failures"] or 0
        cells = [(row["agent"], ""), (state, STYLES.get(row["state"], "")), (_ago(row["last_run"], now), "")]
        cells += [(_ago(row["last_success"], now), "")] if wide else []
        cells += [(_ago(row["next_due"], now) if row["next_due"] else "-", "")]
        cells += [(str(fails), "red" if fails else "dim")] if wide else []
        cells += [(f"{t['done']}/{t['pending']}/{t['quarantined']}", ""),
                  (_tokens(row["tokens_today"], row["tokens_cap"]), ""), (_money(row["usd_today"], row["usd_cap"]), "")]
        body.append(cells)
    day = data["fleet"]["day"]
    caption = (f"fleet today ({day['window']}): {_money(day['usd']['spent'], day['usd']['cap'])}"
               f" + {usd(day['usd']['reserved'])} reserved · {_tokens(day['tokens']['spent'], day['tokens']['cap'])} tokens")
    month = data["fleet"]["month"]
    if month["usd"]["cap"] is not None or month["tokens"]["cap"] is not None:
        caption += f" · month {month['window']}: {_money(month['usd']['spent'], month['usd']['cap'])}"
    caption += f" · {data['open_reservations']} open reservation(s) · state home {data['home']}"
    return columns, body, caption


def _plain_table(title: str, columns: list[Column], body: list[list[Cell]], caption: str, *,
                 padding: int, width: int) -> Any:
    """The table ``render`` draws with Rich, laid out here: the same characters, in a few
    milliseconds where Rich takes over a second for a thousand rows. None when it does not
    fit ``width`` (Rich then shortens columns)."""
    from rich.cells import cell_len
    from rich.text import Span, Text

    widths = [cell_len(name) for name, _ in columns]
    for cells in body:
        for i, (text, _) in enumerate(cells):
            widths[i] = max(widths[i], cell_len(text))
    # SIMPLE_HEAD without edge padding: a blank edge on both sides, one blank between columns
    # and the cell padding inside them.
    gap = " " * (1 + 2 * padding)
    total = 2 + sum(widths) + len(gap) * (len(widths) - 1)
    if total > width:
        return None

    def fit(text: str, size: int, justify: str) -> str:
        fill = " " * (size - cell_len(text))
        return fill + text if justify == "right" else text + fill

    # One string and its style spans: a Text.append per cell costs more than the layout.
    parts: list[str] = []
    spans: list[Span] = []
    at = 0

    def put(text: str, style: str = "") -> None:
        nonlocal at
        parts.append(text)
        if style:
            spans.append(Span(at, at + len(text), style))
        at += len(text)

    put(title, "bold")
    put("\n" + " " * total + "\n ")
    pad = " " * padding
    last = len(columns) - 1
    for i, ((name, justify), size) in enumerate(zip(columns, widths, strict=True)):
        # Rich styles a header cell's padding with it, not the blank between columns.
        put((pad if i else "") + fit(name, size, justify) + (pad if i < last else ""), "table.header")
        put(" " if i < last else "")
    put(" \n " + "─" * (total - 2) + " \n")
    justifies = [justify for _, justify in columns]
    for cells in body:
        put(" ")
        for i, ((text, style), size) in enumerate(zip(cells, widths, strict=True)):
            if i:
                put(gap)
            put(fit(text, size, justifies[i]), style)
        put(" \n")
    put(" " * total + "\n" + caption)
    return Text("".join(parts), spans=spans, no_wrap=True, end="")


def _rich_table(title: str, columns: list[Column], body: list[list[Cell]], caption: str, *,
                padding: int) -> Any:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, title_justify="left", caption_justify="left", box=box.SIMPLE_HEAD,
                  pad_edge=False, padding=(0, padding), title_style="bold")
    for col, justify in columns:
        table.add_column(col, justify=justify, no_wrap=True)
    for cells in body:
        table.add_row(*(Text(text, style=style) for text, style in cells))
    table.caption = Text(caption)
    return table


def render(data: StatusReport, *, all_rows: bool = False) -> None:
    """The fleet table; above ``SUMMARY_ABOVE`` agents, a summary unless ``all_rows``."""
    from rich.markup import escape
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
    columns, body, caption = table_parts(data, rows, wide=wide, now=now)
    padding = 1 if wide else 0
    drawn = (_plain_table(title, columns, body, caption, padding=padding, width=con.width)
             if len(body) > SUMMARY_ABOVE else None)
    con.print(drawn if drawn is not None else _rich_table(title, columns, body, caption, padding=padding))
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
    # One text for all of them: a print per line costs a thousand-agent fleet a second.
    # Errors quote config tables like [provider.prices."m"]: never read as markup.
    errors = Text(end="")
    for row in rows:
        if row["last_error"]:
            log = f" (log: {row['log']})" if row.get("log") else ""
            # A run's own line often starts with the agent's name already: say it once.
            error = str(row["last_error"]).removeprefix(f"{row['agent']}: ")
            errors.append("\n" if errors else "")
            errors.append(row["agent"], style="bold")
            errors.append(f": {error}{log}")
    if errors:
        con.print(errors)
    for stray in data.get("start_failures") or []:
        who = f"mythline run {stray['agent']}" if stray.get("agent") else "a mythline run"
        log = f" (log: {escape(stray['log'])})" if stray.get("log") else ""
        con.print(f"[bold]{escape(who)}[/] could not start {_ago(stray['at'], now)}: {escape(stray['error'])}{log}",
                  markup=True)
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
