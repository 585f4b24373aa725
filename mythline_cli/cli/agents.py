"""``mythline agents``: the fleet as configured, with each queue's progress (reads files only)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from rich.console import JustifyMethod

from ._util import boundary, out, print_json, settings

HELP = """List the fleet: each agent's name, whether it is enabled, its interval, next due time,
daily caps (USD and tokens), queue (topics done/pending/quarantined), model and description.
When mythline.toml defines agents of its own, a kind column shows which built-in agent's
knowledge area (record schema and store folder) each of them shares.

Settings come from mythline.toml (or the built-in defaults); next due and the queue come
from each agent's heartbeat, exactly as `mythline status` reads them.
"""


def fleet(cfg: Any, *, now: datetime | None = None) -> list[dict[str, Any]]:
    """One dict per agent: its resolved settings joined with its status row."""
    from ..durations import format_duration
    from ..status import collect

    now = now or datetime.now(timezone.utc)
    status = {row["agent"]: row for row in collect(cfg, now=now)["agents"]}
    rows = []
    for agent in cfg.agents():
        row = status[agent.name]
        rows.append({
            "agent": agent.name, "kind": agent.kind, "custom": agent.custom,
            "enabled": agent.enabled, "interval": format_duration(agent.interval),
            "interval_s": agent.interval, "grace": format_duration(agent.grace), "state": row["state"],
            "next_due": row["next_due"], "daily_usd": agent.daily_usd, "daily_tokens": agent.daily_tokens,
            "topics": {"total": len(agent.topics), **row["topics"]}, "model": agent.model,
            "domain": agent.domain, "description": agent.description,
        })
    return rows


def agents_cli(json_out: bool = typer.Option(False, "--json", help="Print the fleet as JSON.")) -> None:
    with boundary():
        from rich.table import Table
        from rich.text import Text

        from ..statusview import _ago

        now = datetime.now(timezone.utc)
        rows = fleet(settings(), now=now)
        if json_out:
            print_json(rows)
            return
        from rich import box

        con = out()
        # The description wraps into whatever width is left; below 120 columns it is left out.
        wide = con.width >= 120
        table = Table(title="Mythline agents", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
                      padding=(0, 1) if wide else (0, 0), title_style="bold")
        # Only a fleet with agents of its own needs to say whose kind each one is.
        kinds = any(row["custom"] for row in rows)
        columns: list[tuple[str, JustifyMethod]] = [("agent", "left")]
        columns += [("kind", "left")] if kinds else []
        columns += [("on", "left"), ("every", "right"), ("next", "right"), ("USD/day", "right"),
                    ("tokens/day", "right"), ("topics d/p/q" if wide else "topics", "right"), ("model", "left")]
        columns += [("description", "left")] if wide else []
        for col, justify in columns:
            table.add_column(col, justify=justify, no_wrap=col != "description")
        from ..money import usd

        for row in rows:
            t = row["topics"]
            cells = [row["agent"]]
            if kinds:
                cells += [row["kind"] if row["custom"] else Text("built-in", style="dim")]
            cells += [
                "yes" if row["enabled"] else "no", row["interval"],
                _ago(row["next_due"], now) if row["next_due"] else "-",
                usd(row["daily_usd"]) if row["daily_usd"] is not None else "none",
                f"{row['daily_tokens']:,}" if row["daily_tokens"] is not None else "none",
                f"{t['done']}/{t['pending']}/{t['quarantined']}", Text(row["model"]),
            ]
            cells += [Text(row["description"])] if wide else []
            table.add_row(*cells)
        con.print(table)
