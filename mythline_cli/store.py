"""The lore store: one validated JSON record per (domain, topic), with provenance."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from typing import Any

from . import files, paths
from .slug import slug


def content_hash(record: dict[str, Any]) -> str:
    canonical = json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    # surrogatepass: a lone surrogate (parse replaces them, a hand-made record may not) still hashes.
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def store_record(*, domain: str, topic: str, record: dict[str, Any], provenance: dict[str, Any]) -> dict[str, Any]:
    """Write the record unless identical content is already stored; returns what happened.

    Idempotent: storing the same content again changes nothing. A different validated
    version replaces the old one and keeps the old hash in ``history``.
    """
    path = paths.record(domain, slug(topic))
    digest = content_hash(record)
    try:
        existing = files.read_json(path)
    except files.CorruptFile:
        files.quarantine_corrupt(path)
        existing = None
    if isinstance(existing, dict) and existing.get("content_hash") == digest:
        return {"action": "unchanged", "path": str(path), "hash": digest}
    history = []
    if isinstance(existing, dict):
        history = list(existing.get("history") or [])
        history.append({"content_hash": existing.get("content_hash"),
                        "stored_at": (existing.get("provenance") or {}).get("stored_at"),
                        "run_id": (existing.get("provenance") or {}).get("run_id")})
    doc = {
        "domain": domain, "topic": topic, "content_hash": digest,
        "provenance": {**provenance, "stored_at": datetime.now(timezone.utc).isoformat()},
        "record": record, "history": history,
    }
    files.write_json(path, doc)
    return {"action": "replaced" if existing else "created", "path": str(path), "hash": digest}
