"""The lore store: one validated JSON record per (domain, topic), with provenance."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import files, paths
from .errors import Ambiguous, UnknownRecord, UsageError  # noqa: F401 - store.UnknownRecord, store.Ambiguous
from .slug import slug


def content_hash(record: dict[str, Any]) -> str:
    canonical = json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    # surrogatepass: a lone surrogate (parse replaces them, a hand-made record may not) still hashes.
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def store_record(*, domain: str, topic: str, record: dict[str, Any], provenance: dict[str, Any],
                 kind: str = "record", settings: Any = None) -> dict[str, Any]:
    """Write the record unless identical content is already stored; returns what happened.

    Idempotent: storing the same content again changes nothing. A different validated
    version replaces the old one and keeps the old hash in ``history``. Where: the shared
    state's PostgreSQL when ``settings`` (or ``MYTHLINE_STATE``) name one, else the state home.
    """
    shared = shared_store(settings)
    if shared is not None:
        return shared.put(domain=domain, topic=topic, record=record, provenance=provenance, kind=kind)
    path = paths.record(domain, slug(topic))
    digest = content_hash(record)
    try:
        existing = files.read_json(path)
    except files.CorruptFile:
        files.quarantine_corrupt(path)
        existing = None
    if isinstance(existing, dict) and existing.get("content_hash") == digest:
        return {"action": "unchanged", "path": str(path), "hash": digest}
    doc = next_version(existing if isinstance(existing, dict) else None, domain=domain, topic=topic, digest=digest,
                       record=record, provenance=provenance, kind=kind,
                       stored_at=datetime.now(timezone.utc).isoformat())
    files.write_json(path, doc)
    from .storeindex import note

    note(path, doc)
    return {"action": "replaced" if existing else "created", "path": str(path), "hash": digest}


def next_version(existing: dict[str, Any] | None, *, domain: str, topic: str, digest: str, record: dict[str, Any],
                 provenance: dict[str, Any], kind: str, stored_at: str) -> dict[str, Any]:
    """The document that replaces ``existing`` (None: the first version), on either backend."""
    history = []
    if existing is not None:
        old = _v if isinstance(_v := existing.get("provenance"), dict) else {}
        history = [h for h in existing.get("history") or [] if isinstance(h, dict)]
        # The old version itself, not only its hash: a refresh that changed a record can be undone.
        history.append({"content_hash": existing.get("content_hash"), "stored_at": old.get("stored_at"),
                        "run_id": old.get("run_id"), "record": existing.get("record"), "provenance": old})
    return {
        "domain": domain, "topic": topic, "content_hash": digest, **({"kind": kind} if kind != "record" else {}),
        "provenance": {**provenance, "stored_at": stored_at},
        "record": record, "history": history,
    }


# -- which backend ---------------------------------------------------------------------------

def shared_store(settings: Any = None, *, dsn: str | None = None) -> Any:
    """The store in the shared PostgreSQL (``storepg.PgRecords``) when the state is there
    (``dsn``, else ``settings`` or ``MYTHLINE_STATE``), else None: the state home's files."""
    from .state import dsn_of, session

    dsn = dsn or dsn_of(settings)
    if dsn is None:
        return None
    from .storepg import PgRecords

    return PgRecords(session(dsn))


def open_index(settings: Any = None, *, dsn: str | None = None, timeout: float | None = None) -> Any:
    """The store to list, look up and search, brought up to date: ``StoreIndex`` over the
    state home's files, or the shared PostgreSQL's records. Close it when done."""
    shared = shared_store(settings, dsn=dsn)
    if shared is not None:
        return shared
    from .storeindex import READ_TIMEOUT, StoreIndex

    return StoreIndex.open(timeout=READ_TIMEOUT if timeout is None else timeout)


def run_index(settings: Any = None) -> Any:
    """The store for a run's look-ups: on files, the index as it stands (never built by a run;
    None when there is none to use); on PostgreSQL, the records themselves."""
    shared = shared_store(settings)
    if shared is not None:
        return shared
    from .storeindex import StoreIndex

    try:
        return StoreIndex.existing()
    except Exception:  # noqa: BLE001 - without it, the queues and the record files decide
        return None


def stored(domain: str, topic: str, settings: Any = None) -> tuple[str, dict[str, Any]] | None:
    """(where, the stored document) of ``topic`` in ``domain``; None when there is none, or it
    cannot be read. On either backend."""
    shared = shared_store(settings)
    if shared is not None:
        key = f"{domain}/{slug(topic)}.json"
        doc = shared.get(key)
        return None if doc is None else (shared.path_of(key), doc)
    path = paths.record(domain, slug(topic))
    try:
        doc = files.read_json(path)
    except files.CorruptFile:
        return None
    return (str(path), doc) if isinstance(doc, dict) else None


# -- reading the store (files only: no LLM stack, no config) ----------------------------------

def read(key: str) -> dict[str, Any]:
    """The record document at ``key`` (``domain/slug.json``, relative to the store)."""
    path = paths.store_dir() / key
    try:
        doc = files.read_json(path)
    except files.CorruptFile as exc:
        raise UsageError(f"{path}: {exc.problem}; the file is kept as it is: fix or remove it") from None
    if not isinstance(doc, dict):
        raise UnknownRecord(f"{path} is no longer in the store (removed meanwhile?); see: mythline store ls")
    return doc


def resolve(index: Any, name: str, *, domain: str | None = None) -> dict[str, Any]:
    """The one index row whose name, topic or alias is ``name`` (else a one-line error)."""
    rows = [r for r in index.named(name, domain=domain) if r["kind"] == "record"] or index.named(name, domain=domain)
    if len(rows) == 1:
        return rows[0]
    if rows:
        where = ", ".join(f"{r['name']} ({r['domain']})" for r in rows[:6])
        raise Ambiguous(f"{len(rows)} records are named {name!r}: {where}; add --domain to pick one")
    hits, _ = index.search(name, limit=3)
    hint = f"; did you mean {', '.join(repr(h['name']) for h in hits)}?" if hits else ""
    scope = f" in domain {domain!r}" if domain else ""
    raise UnknownRecord(f"no stored record is named {name!r}{scope}{hint} (see: mythline store search TEXT)")


def read_key(key: str, settings: Any = None) -> dict[str, Any]:
    """``read`` on either backend: the record document at ``key``."""
    shared = shared_store(settings)
    return read(key) if shared is None else shared.read(key)


def evidence_of(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The record's evidence quotes, whichever shape carries them: a list under the provenance or
    the record (items with a quote and the source it comes from), or quotes kept per source."""
    out: list[dict[str, Any]] = []
    prov = _v if isinstance(_v := doc.get("provenance"), dict) else {}
    record = _v if isinstance(_v := doc.get("record"), dict) else {}
    for found in (prov.get("evidence"), record.get("evidence")):
        if not isinstance(found, list):
            continue
        for item in found:
            if isinstance(item, str) and item.strip():
                out.append({"quote": item})
            elif isinstance(item, dict) and isinstance(item.get("quote"), str):
                out.append({k: item[k] for k in ("field", "quote", "source", "url") if k in item})
        if out:
            return out
    return out


def sources_for_show(doc: dict[str, Any]) -> list[dict[str, Any]]:
    from .storeindex import sources_of

    keep = ("url", "final_url", "title", "tier", "fetched_at", "sha256")
    out = []
    for n, src in enumerate(sources_of(doc), 1):
        entry = {k: src[k] for k in keep if k in src and src[k] not in (None, "")}
        quotes = src.get("quotes") or src.get("evidence")
        if isinstance(quotes, list):
            entry["quotes"] = [q if isinstance(q, str) else q.get("quote") for q in quotes
                               if isinstance(q, str) or (isinstance(q, dict) and isinstance(q.get("quote"), str))]
        entry["n"] = src.get("n", n) if isinstance(src.get("n", n), int) else n
        out.append(entry)
    return out


def describe(index: Any, row: dict[str, Any]) -> dict[str, Any]:
    """Everything ``store show`` prints about one record: the document, its citations, evidence,
    versions and the contradictions that cite it."""
    doc = index.read(row["path"])
    record = _v if isinstance(_v := doc.get("record"), dict) else {}
    history = [h for h in doc.get("history") or [] if isinstance(h, dict)]
    contradictions = []
    for c in index.touching(row["path"]):
        try:
            cdoc = index.read(c["path"])
        except UsageError:
            continue
        crec = cdoc.get("record") or {}
        contradictions.append({"path": c["path"], "name": c["name"], "field": crec.get("field"),
                               "summary": crec.get("summary"), "claims": crec.get("claims") or []})
    return {
        "path": index.path_of(row["path"]), "key": row["path"], "domain": row["domain"],
        "topic": doc.get("topic"), "name": row["name"], "agent": row["agent"], "kind": row["kind"],
        "confidence": row["confidence"], "stored_at": row["stored_at"], "content_hash": doc.get("content_hash"),
        "aliases": row["aliases"], "record": record, "provenance": doc.get("provenance") or {},
        "sources": sources_for_show(doc), "evidence": evidence_of(doc),
        "history": [{"content_hash": h.get("content_hash"), "stored_at": h.get("stored_at"),
                     "run_id": h.get("run_id"), "record": h.get("record")} for h in history],
        "contradictions": contradictions,
    }


# -- export ----------------------------------------------------------------------------------

def _md(text: Any) -> str:
    """Text for a Markdown page: one line, nothing that starts markup of its own."""
    value = " ".join(str(text).split())
    return value.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;")


def _field(value: Any) -> str:
    if isinstance(value, list):
        return "; ".join(_field(v) for v in value) if value else "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_field(v)}" for k, v in value.items())
    return _md(value)


def markdown_page(data: dict[str, Any]) -> str:
    """One record as a Markdown page: fields, citations with tiers, evidence, versions, contradictions."""
    record = data["record"]
    lines = [f"# {_md(data['name'])}", "",
             f"*{_md(data['domain'])}* · by {_md(data['agent'] or '?')} · confidence "
             f"{data['confidence'] if data['confidence'] is not None else '-'} · stored {data['stored_at'] or '-'}", ""]
    if data["aliases"]:
        lines += ["Also known as: " + ", ".join(_md(a) for a in data["aliases"]), ""]
    if record.get("summary"):
        lines += [_md(record["summary"]), ""]
    skip = {"name", "summary", "sources", "confidence", "aliases", "evidence", "claims"}
    for key, value in record.items():
        if key not in skip:
            lines.append(f"- **{_md(key.replace('_', ' '))}**: {_field(value)}")
    claims = [c for c in record.get("claims") or [] if isinstance(c, dict)]
    if claims:
        lines += ["", "## Claims", ""]
        for c in claims:
            lines.append(f"- {_md(repr(c.get('value')))}: {_md(c.get('topic'))} ({_md(c.get('domain'))}, by "
                         f"{_md(c.get('agent') or '?')})")
            lines += [f"  - [{_md(s.get('title') or s.get('url', ''))}]({s.get('url', '')}) ({_md(s.get('tier', '?'))})"
                      for s in c.get("sources") or []]
    if data["sources"]:
        lines += ["", "## Citations", ""]
        for src in data["sources"]:
            title = _md(src.get("title") or src.get("url", ""))
            extra = [f"final URL {src['final_url']}" for _ in [0] if src.get("final_url") not in (None, src.get("url"))]
            extra += [f"fetched {src['fetched_at']}"] if src.get("fetched_at") else []
            extra += [f"sha256 `{str(src['sha256'])[:16]}`"] if src.get("sha256") else []
            lines.append(f"{src['n']}. [{title}]({src.get('url', '')}) ({_md(src.get('tier', '?'))})"
                         + (" · " + " · ".join(extra) if extra else ""))
            lines += [f"   > {_md(q)}" for q in src.get("quotes") or []]
    if data["evidence"]:
        lines += ["", "## Evidence", ""]
        for ev in data["evidence"]:
            where = f" [{ev['source']}]" if "source" in ev else ""
            lines.append(f"- {_md(ev['field']) + ': ' if 'field' in ev else ''}\u201c{_md(ev['quote'])}\u201d{where}")
    if data["contradictions"]:
        lines += ["", "## Contradictions", ""]
        lines += [f"- {_md(c['summary'] or c['name'])}" for c in data["contradictions"]]
    lines += ["", "## History", "", f"- {data['stored_at'] or '-'} `{data['content_hash'] or ''}` (current)"]
    lines += [f"- {h.get('stored_at') or '-'} `{h.get('content_hash') or ''}`" for h in reversed(data["history"])]
    return "\n".join(lines) + "\n"


def export(index: Any, *, fmt: str, out_dir: Path | None) -> dict[str, Any]:
    """The whole store as JSON lines (stdout without ``out_dir``) or Markdown pages and an index."""
    import sys

    rows, _ = index.list()
    if fmt == "jsonl":
        lines = []
        for row in rows:
            try:
                doc = index.read(row["path"])
            except UsageError:
                continue  # removed or broken meanwhile: the index lists it no longer next time
            lines.append(files.encode({"key": row["path"], **doc}, compact=True))
        if out_dir is None:
            try:
                for line in lines:
                    sys.stdout.buffer.write(line)
                sys.stdout.flush()
            except BrokenPipeError:  # `... | head`: the reader has what it wanted
                import os

                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return {"records": len(lines), "written": "stdout"}
        target = out_dir / "store.jsonl"
        files.write_bytes_atomic(target, b"".join(lines))
        return {"records": len(lines), "written": str(target)}
    assert out_dir is not None
    entries: list[tuple[str, str, str]] = []
    for row in rows:
        try:
            data = describe(index, row)
        except UsageError:
            continue
        page = Path(row["path"]).with_suffix(".md").as_posix()
        files.write_bytes_atomic(out_dir / page, markdown_page(data).encode("utf-8"), sync_dir=False)
        entries.append((row["domain"], data["name"], page))
    index_lines = ["# Mythline lore store", "", f"{len(entries)} records.", ""]
    current = None
    for domain, name, page in sorted(entries, key=lambda e: (e[0], e[1].casefold())):
        if domain != current:
            index_lines += ["", f"## {_md(domain)}", ""]
            current = domain
        index_lines.append(f"- [{_md(name)}]({page})")
    files.write_bytes_atomic(out_dir / "index.md", ("\n".join(index_lines) + "\n").encode("utf-8"))
    return {"records": len(entries), "written": str(out_dir / "index.md")}
