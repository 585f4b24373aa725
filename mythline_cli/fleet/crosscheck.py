"""lore-crosscheck's reading of the whole store: contradictions between records, found without a call.

Two records are about the same subject when their names, topics or aliases are the same
normal name (``storeindex.normal``). Where both state the same fact field (``FACTS``: a
leader, a status such as a death, a date, an allegiance) with values that differ once
normalised, that is a contradiction. Each is stored as one of lore-crosscheck's own records
(kind ``contradiction``), citing both records, their values and their sources, and is proposed
to lore-crosscheck's own queue as a claim to check: which of the two is right is then researched
by an ordinary research -> validate -> store attempt, estimated and reserved like every call.
Finding the contradiction is deterministic and costs nothing; judging it is an LLM call.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

# Fields that state one fact about a subject, the same in every schema that has them: a
# difference is a contradiction, not a difference of wording. Free text (summaries, origins)
# and lists are left out: two good records word those differently.
FACTS = ("leader", "status", "race", "faction", "allegiance", "headquarters", "continent", "controlling_faction",
         "start_and_end", "era", "period", "quest_giver", "zone", "item_type", "quality", "relationship")
MAX_NEW_PER_RUN = 20
DOMAIN = "crosschecks"
PREFIX = "contradiction: "


def _value(record: dict[str, Any], field: str) -> str | None:
    value = record.get(field)
    return value.strip() if isinstance(value, str) and value.strip() else None


def _claim(key: str, doc: dict[str, Any], value: str) -> dict[str, Any]:
    from ..storeindex import sources_of

    prov = _v if isinstance(_v := doc.get("provenance"), dict) else {}
    return {"path": key, "domain": doc.get("domain"), "topic": doc.get("topic"), "agent": prov.get("agent"),
            "content_hash": doc.get("content_hash"), "value": value,
            "sources": [{k: s[k] for k in ("url", "title", "tier") if k in s} for s in sources_of(doc)]}


def find(index: Any) -> list[dict[str, Any]]:
    """Every contradiction the stored records hold now, as record dicts (deterministic order)."""
    from ..errors import UsageError
    from ..storeindex import normal

    found: dict[str, dict[str, Any]] = {}
    for norm, keys in index.shared_names():
        docs = []
        for key in keys:
            try:
                doc = index.read(key)
            except UsageError:
                continue
            if isinstance(doc.get("record"), dict):
                docs.append((key, doc))
        for i, (key_a, a) in enumerate(docs):
            for key_b, b in docs[i + 1:]:
                for field in FACTS:
                    va, vb = _value(a["record"], field), _value(b["record"], field)
                    if va is None or vb is None or normal(va) == normal(vb):
                        continue
                    subject = a["record"].get("name") or a.get("topic") or norm
                    topic = f"{subject}: {field.replace('_', ' ')} is {va!r} or {vb!r}"
                    first, second = sorted([(key_a, a, va), (key_b, b, vb)], key=lambda c: c[0])
                    found[topic] = {
                        "name": f"{subject}: {field.replace('_', ' ')}",
                        "summary": (f"{first[1].get('domain')} says {subject}'s {field.replace('_', ' ')} is "
                                    f"{first[2]!r}; {second[1].get('domain')} says {second[2]!r}."),
                        "subject": subject, "field": field, "status": "open",
                        "claims": [_claim(first[0], first[1], first[2]), _claim(second[0], second[1], second[2])],
                    }
    return [found[t] | {"topic": t} for t in sorted(found)]


def scan(settings: Any, agent: Any, ck: Any, emit: Callable[..., Any]) -> Any:
    """lore-crosscheck's first step in every run (its lock held): store the contradictions found
    (at most ``MAX_NEW_PER_RUN`` new ones), mark those that no longer hold as resolved, and add up
    to ``agent.max_proposals`` of the new ones to its own queue as claims to check. Returns the
    agent with its queue as it is now. Never fails the run."""
    from ..store import open_index, read_key, store_record

    try:
        with open_index(settings, timeout=5.0) as index:
            current = find(index)
            existing = {r["topic"]: r for r in index.list(kind="contradiction", domain=DOMAIN)[0]}
        # Stored under a topic of its own: the claim's research stores its verdict under the claim.
        live = {PREFIX + item["topic"] for item in current}
        created = proposed = 0
        for item in current:
            topic = item["topic"]
            record = {k: v for k, v in item.items() if k != "topic"}
            if PREFIX + topic not in existing and created >= MAX_NEW_PER_RUN:
                continue
            stored = store_record(domain=DOMAIN, topic=PREFIX + topic, record=record, kind="contradiction",
                                  provenance={"agent": agent.name, "method": "deterministic"}, settings=settings)
            if stored["action"] == "created":
                created += 1
                emit("contradiction", topic=topic, records=[c["path"] for c in record["claims"]])
                if proposed < agent.max_proposals:
                    change = ck.apply({"op": "propose", "topic": topic, "agent": agent.name, "record": topic},
                                      agent.topics)
                    if change is not None:
                        proposed += 1
        for topic, row in existing.items():
            if topic in live:
                continue
            doc = read_key(row["path"], settings)
            record = dict(doc.get("record") or {})
            if record.get("status") == "open":
                record["status"] = "resolved"
                store_record(domain=DOMAIN, topic=topic, record=record, kind="contradiction",
                             provenance={"agent": agent.name, "method": "deterministic"}, settings=settings)
                emit("contradiction-resolved", topic=topic)
        if proposed:
            ck.save()
        return dataclasses.replace(agent, topics=ck.queue(agent.topics)) if proposed else agent
    except Exception as exc:  # noqa: BLE001 - reading the store is never worth a failed run
        emit("crosscheck-failed", error=f"{type(exc).__name__}: {exc}")
        return agent
