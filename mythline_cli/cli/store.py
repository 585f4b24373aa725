"""``mythline store ls|show|search|export|reindex``: what the fleet has learned (reads the state
home's files, or the shared PostgreSQL when the state is there)."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import UsageError
from ._util import STATE, boundary, out, print_json

app = typer.Typer(no_args_is_help=True, help="Browse, search and export the lore store: every validated record "
                  "the fleet has stored, with its sources.\n\n\b\nExample:\n  mythline store ls --agent world-npcs\n\n"
                  "Exit codes: 0 done · 2 bad input (unknown agent, unknown record, a bad date) · "
                  "1 anything else.")

def known_agent(name: str) -> str:
    """``name`` when the fleet has such an agent (from the settings cache when it is fresh)."""
    from .. import settings_cache
    from ._util import settings

    cached = settings_cache.load(STATE.config)
    names = cached.agent_names if cached is not None else settings().agent_names
    if name not in names:
        settings().agent(name)  # the config's own line (exit 2), with its suggestions
    return name


LS_HELP = """List stored records, newest first: name, agent, confidence, sources by tier, when stored, age.

\b
Example:
  mythline store ls --agent world-npcs --since 7d --min-confidence 0.8
"""


@app.command("ls", help=LS_HELP)
def ls_cli(
    agent: str = typer.Option(None, "--agent", help="Only this agent's records."),
    domain: str = typer.Option(None, "--domain", help="Only this store domain (folder), e.g. npcs."),
    since: str = typer.Option(None, "--since", help="Only records stored since a date (2026-11-30) or within a "
                                                    "duration (7d)."),
    min_confidence: float = typer.Option(None, "--min-confidence", min=0, max=1,
                                         help="Only records with at least this confidence (0-1)."),
    limit: int = typer.Option(50, "--limit", min=1, help="Show at most this many (the newest)."),
    all_rows: bool = typer.Option(False, "--all", help="Show every matching record."),
    json_out: bool = typer.Option(False, "--json", help="Print the records as JSON."),
) -> None:
    with boundary():
        from ..storeview import ls

        ls(agent=agent, domain=domain, since=since, min_confidence=min_confidence, limit=limit, all_rows=all_rows,
           json_out=json_out, check_agent=known_agent, config=STATE.config)


SHOW_HELP = """Show one record for a person: its fields, citations with their tiers, evidence quotes, the
history of its versions and the contradictions that touch it. NAME is the record's name, its topic or an
alias (case, accents and punctuation do not matter).

\b
Example:
  mythline store show "Thrall"
"""


@app.command("show", help=SHOW_HELP)
def show_cli(
    name: str = typer.Argument(..., help="The record's name, topic or alias."),
    domain: str = typer.Option(None, "--domain", help="The store domain, when two records share a name."),
    json_out: bool = typer.Option(False, "--json", help="Print the record and its context as JSON."),
) -> None:
    with boundary():
        from ..store import describe, resolve
        from ..storeview import open_index, render_record

        with open_index(STATE.config) as index:
            data = describe(index, resolve(index, name, domain=domain))
        if json_out:
            print_json(data)
            return
        render_record(data)


SEARCH_HELP = """Find records by name, alias and content: every word must appear (a word matches as a
prefix); name matches come first.

\b
Example:
  mythline store search "frostmourne arthas"
"""


@app.command("search", help=SEARCH_HELP)
def search_cli(
    text: str = typer.Argument(..., help="Words to look for."),
    limit: int = typer.Option(20, "--limit", min=1, help="Show at most this many."),
    json_out: bool = typer.Option(False, "--json", help="Print the matches as JSON."),
) -> None:
    with boundary():
        from ..storeview import search

        search(text, limit=limit, json_out=json_out, config=STATE.config)


EXPORT_HELP = """Write the whole store for other tools. jsonl: one record document per line (to stdout, or
DIR/store.jsonl with --out). markdown: one page per record with its citations and evidence, under
DIR/<domain>/, and DIR/index.md linking them all (needs --out).

\b
Example:
  mythline store export --format markdown --out lore/
"""


@app.command("export", help=EXPORT_HELP)
def export_cli(
    fmt: str = typer.Option("jsonl", "--format", help="jsonl or markdown."),
    out_dir: Path = typer.Option(None, "--out", file_okay=False, help="Directory to write into (made if missing)."),
    json_out: bool = typer.Option(False, "--json", help="Print what was written as JSON."),
) -> None:
    with boundary():
        from ..store import export

        if fmt not in ("jsonl", "markdown"):
            raise UsageError(f"--format {fmt!r} is not one of: jsonl, markdown")
        if fmt == "markdown" and out_dir is None:
            raise UsageError("a markdown export is one page per record: give a directory with --out DIR")
        if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
            raise UsageError(f"--out {out_dir} is a file; give a directory")
        from ..storeview import open_index

        with open_index(STATE.config) as index:
            result = export(index, fmt=fmt, out_dir=out_dir)
        if out_dir is None:
            return  # the records went to stdout
        if json_out:
            print_json(result)
        else:
            out().print(f"Wrote {result['records']} records to {result['written']}.", markup=False)


@app.command("reindex", help="Rebuild the store's index from the JSON records (the index notices added, "
                             "replaced and removed records by itself; this also finds files edited in place).\n\n"
                             "\b\nExample:\n  mythline store reindex")
def reindex_cli(json_out: bool = typer.Option(False, "--json", help="Print the result as JSON.")) -> None:
    with boundary():
        from ..state import dsn_for
        from ..storeindex import IndexUnavailable, StoreIndex

        dsn = dsn_for(STATE.config)
        if dsn is not None:
            from ..store import open_index

            shared = open_index(dsn=dsn)
            result = {"records": shared.count(), "unreadable": 0, "index": shared.where}
            if json_out:
                print_json(result)
            else:
                out().print(f"The store is in {shared.where}: searched by the database, with no index to rebuild "
                            f"({result['records']} records).", markup=False)
            return
        try:
            index = StoreIndex.open(full=True)
        except IndexUnavailable as exc:
            raise UsageError(f"the store's index cannot be rebuilt ({exc})") from None
        with index:
            result = {"records": index.count(), "unreadable": len(index.problems()), "index": index.location}
        if json_out:
            print_json(result)
        else:
            out().print(f"Indexed {result['records']} records ({result['unreadable']} unreadable files).",
                        markup=False)
