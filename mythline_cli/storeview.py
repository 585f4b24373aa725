"""What ``mythline store`` prints, and its two fast commands: no Typer, no pydantic, no LLM stack.

``store ls`` and ``store search`` start from here without the command line framework (see
``__main__``): over a large store, most of their time would otherwise be Typer's start-up.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from .console import out, print_json
from .errors import UsageError

DEFAULT_LIMIT = 50


def open_index(config: Any = None):  # noqa: ANN201 - StoreIndex | storepg.PgRecords
    """The store to read: the shared PostgreSQL's when the state is there (``MYTHLINE_STATE``,
    or ``state`` in the config file at ``config`` or found as usual), else the files' index."""
    from .state import dsn_for
    from .store import open_index as opened
    from .storeindex import IndexUnavailable

    dsn = dsn_for(config)
    try:
        return opened(dsn=dsn)
    except IndexUnavailable as exc:
        raise UsageError(f"the store's index cannot be used ({exc}); remove that file and try again: it is "
                         "rebuilt from the JSON records") from None


def parse_since(text: str | None) -> str | None:
    if text is None:
        return None
    from .durations import parse_duration

    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        try:
            seconds = parse_duration(text)
            return datetime.fromtimestamp(datetime.now(timezone.utc).timestamp() - seconds, timezone.utc).isoformat()
        except (ValueError, OverflowError, OSError):
            raise UsageError(f"--since {text!r} is neither a date (2026-11-30, 2026-11-30T12:00) nor a duration "
                             "(7d, 12h)") from None
    if when.tzinfo is None:
        when = when.astimezone()  # a date without a zone is local
    return when.astimezone(timezone.utc).isoformat()


def age(ts: str | None, now: datetime) -> str:
    if not ts:
        return "-"
    try:
        secs = max(0.0, (now - datetime.fromisoformat(ts)).total_seconds())
    except (TypeError, ValueError):
        return "-"
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if secs >= size:
            return f"{int(secs // size)}{unit}"
    return f"{int(secs)}s"


def tiers_text(tiers: dict[str, int]) -> str:
    order = ("official", "primary", "wiki", "secondary", "community", "tertiary")
    keys = sorted(tiers, key=lambda t: (order.index(t) if t in order else len(order), t))
    return " ".join(f"{k} {tiers[k]}" for k in keys) or "none"


def table(rows: list[dict[str, Any]], title: str) -> str:
    """The records as an aligned text table. Plain text on purpose: Rich's table layout costs more
    than the whole query on a page of rows, and ``store ls`` is meant to answer at once."""
    from rich.cells import cell_len

    now = datetime.now(timezone.utc)
    head = ("name", "agent", "conf", "sources by tier", "stored at", "age")
    right = {2, 5}
    body = []
    for row in rows:
        name = " ".join(str(row["name"] or "?").split())
        if cell_len(name) > 48:
            name = name[:46] + "…"
        conf = f"{row['confidence']:.2f}" if row["confidence"] is not None else "-"
        stored = (row["stored_at"] or "-")[:16].replace("T", " ")
        body.append((name, row["agent"] or row["domain"], conf, tiers_text(row["tiers"]), stored,
                     age(row["stored_at"], now)))
    widths = [max(cell_len(r[i]) for r in [head, *body]) for i in range(len(head))]

    def line(cells: tuple[str, ...]) -> str:
        parts = [(" " * (w - cell_len(c)) + c) if i in right else (c + " " * (w - cell_len(c)))
                 for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "  ".join(parts).rstrip()

    return "\n".join([title, "", line(head), "  ".join("\u2500" * w for w in widths), *map(line, body)])


def public(row: dict[str, Any], index: Any) -> dict[str, Any]:
    keep = ("name", "topic", "agent", "domain", "kind", "confidence", "n_sources", "tiers", "aliases", "stored_at",
            "content_hash")
    return {**{k: row[k] for k in keep}, "path": index.path_of(row["path"])}


def _value(value: Any) -> str:
    if isinstance(value, list):
        return "; ".join(_value(v) for v in value) if value else "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_value(v)}" for k, v in value.items())
    return str(value)


def render_record(data: dict[str, Any]) -> None:
    from rich.text import Text

    con = out()
    now = datetime.now(timezone.utc)
    record = data["record"]
    con.print(Text(data["name"], style="bold"), Text(f"  ({data['domain']}, by {data['agent'] or '?'})"))
    conf = f"{data['confidence']:.2f}" if data["confidence"] is not None else "-"
    con.print(f"confidence {conf} · stored {data['stored_at'] or '-'} ({age(data['stored_at'], now)} ago) · "
              f"{data['content_hash'] or ''}", markup=False)
    if data["aliases"]:
        con.print("also known as: " + ", ".join(data["aliases"]), markup=False)
    if record.get("summary"):
        con.print()
        con.print(Text(str(record["summary"])))
    con.print()
    skip = {"name", "summary", "sources", "confidence", "aliases", "evidence", "claims"}
    for key, value in record.items():
        if key not in skip:
            con.print(Text(f"{key.replace('_', ' ')}: ", style="bold") + Text(_value(value)))
    claims = [c for c in record.get("claims") or [] if isinstance(c, dict)]
    if claims:
        con.print()
        con.print(Text("Claims", style="bold"))
        for c in claims:
            con.print(f"  {c.get('value')!r}: {c.get('topic')} ({c.get('domain')}, by {c.get('agent') or '?'}) "
                      f"{c.get('path')}", markup=False)
            for src in c.get("sources") or []:
                con.print(f"    {src.get('tier', '?')}: {src.get('url', '')}", markup=False)
    if data["sources"]:
        con.print()
        con.print(Text("Citations", style="bold"))
        for src in data["sources"]:
            line = f"[{src['n']}] {src.get('tier', '?')}: {src.get('title') or ''} {src.get('url', '')}"
            con.print(line.replace("  ", " "), markup=False)
            if src.get("final_url") and src.get("final_url") != src.get("url"):
                con.print(f"    final URL {src['final_url']}", markup=False)
            if src.get("fetched_at") or src.get("sha256"):
                con.print(f"    fetched {src.get('fetched_at', '-')} · sha256 {str(src.get('sha256', '-'))[:16]}",
                          markup=False)
            for quote in src.get("quotes") or []:
                con.print(f"    \u201c{quote}\u201d", markup=False)
    if data["evidence"]:
        con.print()
        con.print(Text("Evidence", style="bold"))
        for ev in data["evidence"]:
            where = f" [{ev['source']}]" if "source" in ev else (f" {ev['url']}" if "url" in ev else "")
            field = f"{ev['field']}: " if "field" in ev else ""
            con.print(f"  {field}\u201c{ev['quote']}\u201d{where}", markup=False)
    if data["contradictions"]:
        con.print()
        con.print(Text("Contradictions", style="bold yellow"))
        for c in data["contradictions"]:
            con.print(f"  {c['summary'] or c['name']}", markup=False)
    con.print()
    versions = len(data["history"]) + 1
    con.print(Text("History", style="bold") + Text(f" ({versions} version{'s' if versions > 1 else ''})"))
    con.print(f"  now  {data['stored_at'] or '-'}  {data['content_hash'] or ''}", markup=False)
    for h in reversed(data["history"]):
        con.print(f"  was  {h.get('stored_at') or '-'}  {h.get('content_hash') or ''}", markup=False)
    con.print(f"\n{data['path']}", markup=False, style="dim")




def _say(text: str) -> None:
    import sys

    sys.stdout.write(text + "\n")


def ls(*, agent: str | None = None, domain: str | None = None, since: str | None = None,
       min_confidence: float | None = None, limit: int = DEFAULT_LIMIT, all_rows: bool = False,
       json_out: bool = False, check_agent: Any = None, config: Any = None) -> None:
    """``store ls``: ``check_agent(name)`` raises when the fleet has no such agent."""
    after = parse_since(since)
    with open_index(config) as index:
        rows, total = index.list(agent=agent, domain=domain, since=after, min_confidence=min_confidence,
                                 limit=None if all_rows else limit)
        problems = index.problems()
        if domain is not None and not total and not index.list(domain=domain, limit=1)[1]:
            from .fleet.topics import DOMAINS

            known = sorted(set(DOMAINS.values()))
            if domain not in known:
                raise UsageError(f"unknown domain {domain!r}; the store's domains are: {', '.join(known)}")
        if agent is not None and check_agent is not None and not total and not index.list(agent=agent, limit=1)[1]:
            # No record names it: a configured agent with nothing stored yet, or a typo.
            check_agent(agent)
        shown = [public(r, index) for r in rows]
    if json_out:
        print_json({"total": total, "shown": len(rows), "records": shown, "unreadable": problems})
        return
    if not total:
        filtered = agent or domain or since or min_confidence is not None
        _say("No stored records match." if filtered else
              "No stored records yet: each successful `mythline run AGENT` stores one.")
    else:
        _say(table(rows, f"Stored records ({total:,})"))
        if len(rows) < total:
            _say(f"{len(rows)} of {total:,} shown; --limit N or --all for more.")
    for p in problems:
        _say(f"unreadable: {p['path']}: {p['problem']}")


def search(text: str, *, limit: int = 20, json_out: bool = False, config: Any = None) -> None:
    import re

    if not re.search(r"\w", text):
        raise UsageError(f"nothing to search for in {text!r}: give a word, e.g. mythline store search thrall")
    with open_index(config) as index:
        rows, total = index.search(text, limit=limit)
        shown = [public(r, index) for r in rows]
    if json_out:
        print_json({"total": total, "shown": len(rows), "records": shown})
        return
    if not rows:
        _say(f"No stored record mentions {text!r}.")
        return
    _say(table(rows, f"Records matching {text!r} ({total:,})"))
    if len(rows) < total:
        _say(f"{len(rows)} of {total:,} shown; --limit N for more.")


def fast(args: list[str]) -> int | None:
    """``store ls [options]`` and ``store search TEXT [options]`` without Typer; None for anything
    else (``--help``, a typo, a bad value): the full path parses and reports those."""
    if args[:1] == ["ls"]:
        valued = {"--agent": str, "--domain": str, "--since": str, "--min-confidence": float, "--limit": int}
        flags = {"--all", "--json"}
    elif args[:1] == ["search"]:
        valued, flags = {"--limit": int}, {"--json"}
    else:
        return None
    opts: dict[str, Any] = {}
    words: list[str] = []
    rest = args[1:]
    try:
        while rest:
            word = rest.pop(0)
            name, eq, value = word.partition("=")
            if word in flags:
                opts[word] = True
            elif name in valued and eq:
                opts[name] = valued[name](value)
            elif word in valued and rest:
                opts[word] = valued[word](rest.pop(0))
            elif word == "--" or word.startswith("-"):
                return None
            else:
                words.append(word)
    except ValueError:
        return None
    limit = opts.get("--limit")
    if (limit is not None and limit < 1) or not 0 <= opts.get("--min-confidence", 0) <= 1:
        return None
    from . import settings_cache

    if args[0] == "ls":
        if words:
            return None
        agent = opts.get("--agent")

        def cached_only(name: str) -> None:
            cached = settings_cache.load(None)
            if cached is None or name not in cached.agent_names:
                raise LookupError(name)  # the full path validates the config and says so

        try:
            ls(agent=agent, domain=opts.get("--domain"), since=opts.get("--since"),
               min_confidence=opts.get("--min-confidence"), limit=limit or DEFAULT_LIMIT,
               all_rows=bool(opts.get("--all")), json_out=bool(opts.get("--json")), check_agent=cached_only)
        except LookupError:
            return None
        return 0
    if len(words) != 1:
        return None
    search(words[0], limit=limit or 20, json_out=bool(opts.get("--json")))
    return 0
