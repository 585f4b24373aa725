"""The store of records in PostgreSQL: one row per (domain, slug) in ``mythline_records``.

The same interface as the file backend (``store.store_record`` writes, ``StoreIndex`` reads),
so a fleet on several hosts has one store: a record researched on one host is seen on every
other, and is never stored twice. A row holds the record document exactly as the file
backend would write it (``doc``, in key order) beside the columns the file backend's SQLite
index derives from it (``storeindex.extract``), so listing, looking up and searching are
queries of the database, with the same results and order.

A write is one short transaction: the row is locked (``FOR UPDATE``), or inserted with
``ON CONFLICT DO NOTHING`` when there is none, so processes storing the same record at once
queue on it and every one after the first finds its content there (``unchanged``).

Search is PostgreSQL's full-text search over the same text the SQLite index searches: every
word must start a word of the record's name, aliases or content (accents and case ignored:
the text is folded here, then split by the ``simple`` configuration), name matches ranked
first (``ts_rank`` with the weights 1.0 / 0.5 / 0.1, as the SQLite index's bm25 10 / 5 / 1). The
kind of match orders alike on both backends; among records matched the same way, bm25 and
``ts_rank`` can disagree on a store other than the tests'.
"""

from __future__ import annotations

import builtins
import json
import re
import unicodedata
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from .errors import UnknownRecord
from .storeindex import COLUMNS, extract, list_filter, normal

if TYPE_CHECKING:
    from .state import Session

_COLS = ", ".join("key AS path" if c == "path" else c for c in COLUMNS)
# Name 1.0 (A), aliases 0.5 (B), content 0.1 (D): the SQLite index's bm25 weights, scaled; divided
# by the record's count of distinct words (8), the nearest ts_rank comes to bm25 favouring short records.
_RANK = "ts_rank('{0.1, 0.2, 0.5, 1.0}', words, q, 8)"
_WORDS = ("setweight(to_tsvector('simple', %s), 'A') || setweight(to_tsvector('simple', %s), 'B') || "
          "setweight(to_tsvector('simple', %s), 'D')")


def folded(text: str) -> str:
    """``text`` as the words search compares: accents and case gone, anything else a space
    (what SQLite's unicode61 tokenizer with remove_diacritics does)."""
    value = unicodedata.normalize("NFKD", text)
    value = "".join(c for c in value if not unicodedata.combining(c)).casefold()
    return " ".join(re.sub(r"[\W_]+", " ", value).split())


def query_of(text: str) -> str:
    """The tsquery for ``text``: each of its words as a prefix, all of them required."""
    terms = [f"'{token}':*" for word in re.findall(r"\w+", text) for token in folded(word).split()]
    return " & ".join(terms)


_FIELDS = ("domain", "topic", "name", "agent", "confidence", "stored_at", "content_hash", "tiers", "n_sources",
           "aliases", "kind", "names", "links")
_INSERT = (f"INSERT INTO mythline_records ({', '.join(_FIELDS)}, words, doc, key) "
           f"VALUES ({', '.join(['%s'] * len(_FIELDS))}, {_WORDS}, %s, %s)")
_UPDATE = (f"UPDATE mythline_records SET {', '.join(f + ' = %s' for f in _FIELDS)}, words = {_WORDS}, doc = %s "
           "WHERE key = %s")


def _values(key: str, domain: str, doc: dict[str, Any]) -> tuple[Any, ...]:
    """The row of ``doc``: what ``storeindex.extract`` finds in it, its search text, itself."""
    from . import files

    row = extract(doc)
    aliases = json.loads(row["aliases"])
    name_text = " ".join(dict.fromkeys([row["name"], normal(row["name"]), row["topic"] or ""]))
    # PostgreSQL's text holds no NUL (the document, as JSON, keeps it escaped).
    def text(value: Any) -> Any:
        return value.replace("\x00", "") if isinstance(value, str) else value

    return (domain, text(row["topic"]), text(row["name"]), text(row["agent"]), row["confidence"],
            text(row["stored_at"]), row["content_hash"] or "", row["tiers"], row["n_sources"], row["aliases"],
            text(row["kind"]), sorted(map(text, row["names"])), [text(v) for v in row["links"]], folded(name_text),
            folded(" ".join([*aliases, *map(normal, aliases)])), folded(row["body"]),
            files.encode(doc, compact=True).decode("utf-8"), key)


class PgRecords:
    """The store in the shared PostgreSQL: written by ``put``, read like a ``StoreIndex``."""

    fts = True

    def __init__(self, session: Session) -> None:
        self.session = session

    @property
    def where(self) -> str:
        return f"{self.session.where} (table mythline_records)"

    def path_of(self, key: str) -> str:
        """Where the record at ``key`` is, for people: the database and the key."""
        return f"{self.session.where}#{key}"

    # -- the connection ---------------------------------------------------------------------
    @contextmanager
    def _transaction(self, during: str) -> Iterator[Any]:
        import psycopg

        conn = self.session.conn
        try:
            with conn.transaction():
                yield conn
        except psycopg.Error as exc:
            raise self.session.unavailable(exc, during=during) from None

    def _query(self, sql: str, args: Iterable[Any] = ()) -> builtins.list[tuple[Any, ...]]:
        import psycopg

        try:
            return self.session.conn.execute(sql, tuple(args)).fetchall()
        except psycopg.Error as exc:
            raise self.session.unavailable(exc, during="while reading the store") from None

    def _rows(self, sql: str, args: Iterable[Any] = ()) -> builtins.list[dict[str, Any]]:
        out = []
        for values in self._query(sql, args):
            row = dict(zip(COLUMNS, values, strict=True))
            row["tiers"] = json.loads(row["tiers"]) if row["tiers"] else {}
            row["aliases"] = json.loads(row["aliases"]) if row["aliases"] else []
            out.append(row)
        return out

    # -- writing ----------------------------------------------------------------------------
    def put(self, *, domain: str, topic: str, record: dict[str, Any], provenance: dict[str, Any],
            kind: str = "record") -> dict[str, Any]:
        """``store_record`` on PostgreSQL: the same document, the same answer."""
        from .slug import slug
        from .store import content_hash, next_version

        key = f"{domain}/{slug(topic)}.json"
        digest = content_hash(record)
        result = {"path": self.path_of(key), "hash": digest}
        with self._transaction("while storing a record") as conn:
            select = "SELECT doc FROM mythline_records WHERE key = %s FOR UPDATE"
            row = conn.execute(select, (key,)).fetchone()
            if row is None:
                doc = next_version(None, domain=domain, topic=topic, digest=digest, record=record,
                                   provenance=provenance, kind=kind, stored_at=self.session.now().isoformat())
                if self._write(conn, key, domain, doc, insert=True):
                    return {"action": "created", **result}
                row = conn.execute(select, (key,)).fetchone()  # stored by another process meanwhile
            existing = row[0]
            if isinstance(existing, dict) and existing.get("content_hash") == digest:
                return {"action": "unchanged", **result}
            doc = next_version(existing if isinstance(existing, dict) else None, domain=domain, topic=topic,
                               digest=digest, record=record, provenance=provenance, kind=kind,
                               stored_at=self.session.now().isoformat())
            self._write(conn, key, domain, doc, insert=False)
        return {"action": "replaced", **result}

    @staticmethod
    def _write(conn: Any, key: str, domain: str, doc: dict[str, Any], *, insert: bool) -> bool:
        if insert:
            cur = conn.execute(_INSERT + " ON CONFLICT (key) DO NOTHING", _values(key, domain, doc))
        else:
            cur = conn.execute(_UPDATE, _values(key, domain, doc))
        return bool(cur.rowcount == 1)

    def load(self, docs: Iterable[tuple[str, dict[str, Any]]]) -> int:
        """Fill an empty store with ``docs`` (key, document) as they are: ``state import``."""
        from .errors import StateUnavailable

        rows = [_values(key, key.split("/", 1)[0], doc) for key, doc in docs]
        with self._transaction("while importing the store") as conn:
            conn.execute("LOCK TABLE mythline_records IN EXCLUSIVE MODE")
            held = conn.execute("SELECT count(*) FROM mythline_records").fetchone()[0]
            if held:
                raise StateUnavailable(f"the shared state at {self.session.where} already holds {held} stored "
                                       "records; import only into a new database")
            with conn.cursor() as cur:
                cur.executemany(_INSERT, rows)  # pipelined: one round trip for many rows
        return len(rows)

    def empty(self) -> bool:
        return not self._query("SELECT 1 FROM mythline_records LIMIT 1")

    def documents(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every record document with its key, in key order (``state export``)."""
        for key, doc in self._query('SELECT key, doc FROM mythline_records ORDER BY key COLLATE "C"'):
            yield str(key), doc

    # -- reading: what StoreIndex answers ---------------------------------------------------
    def read(self, key: str) -> dict[str, Any]:
        """The record document at ``key`` (``domain/slug.json``)."""
        rows = self._query("SELECT doc FROM mythline_records WHERE key = %s", (key,))
        if not rows or not isinstance(rows[0][0], dict):
            raise UnknownRecord(f"{self.path_of(key)} is no longer in the store (removed meanwhile?); "
                                "see: mythline store ls")
        return rows[0][0]

    def get(self, key: str) -> dict[str, Any] | None:
        rows = self._query("SELECT doc FROM mythline_records WHERE key = %s", (key,))
        return rows[0][0] if rows and isinstance(rows[0][0], dict) else None

    def list(self, *, agent: str | None = None, domain: str | None = None, since: str | None = None,
             min_confidence: float | None = None, limit: int | None = None,
             kind: str | None = None) -> tuple[builtins.list[dict[str, Any]], int]:
        """(records newest first, at most ``limit``; how many match in all)."""
        # Byte order for times, as SQLite compares them.
        clause, args = list_filter(agent=agent, domain=domain, kind=kind, since=since,
                                   min_confidence=min_confidence, mark="%s", stored_at='stored_at COLLATE "C"')
        total = self._query(f"SELECT count(*) FROM mythline_records {clause}", args)[0][0]
        # Byte order, as SQLite compares; a record without a time last, as SQLite puts NULL.
        sql = f'SELECT {_COLS} FROM mythline_records {clause} ORDER BY stored_at COLLATE "C" DESC NULLS LAST'
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return self._rows(sql, args), int(total)

    def problems(self) -> builtins.list[dict[str, Any]]:
        """Nothing: a row is written whole by ``put``, never a file edited by hand."""
        return []

    def search(self, text: str, *, limit: int = 20) -> tuple[builtins.list[dict[str, Any]], int]:
        """Records whose name, aliases or content hold every word of ``text`` (name matches first)."""
        query = query_of(text)
        if not query:
            return [], 0
        total = self._query("SELECT count(*) FROM mythline_records WHERE words @@ to_tsquery('simple', %s)",
                            (query,))[0][0]
        rows = self._rows(f"SELECT {_COLS} FROM mythline_records, to_tsquery('simple', %s) q WHERE words @@ q "
                          f'ORDER BY {_RANK} DESC, stored_at COLLATE "C" DESC NULLS LAST LIMIT %s', (query, limit))
        return rows, int(total)

    def named(self, name: str, *, domain: str | None = None) -> builtins.list[dict[str, Any]]:
        """Records whose name, topic or an alias is ``name`` (compared as ``normal`` names)."""
        sql = f"SELECT {_COLS} FROM mythline_records WHERE names @> ARRAY[%s]::text[]"
        args: builtins.list[Any] = [normal(name)]
        if domain is not None:
            sql += " AND domain = %s"
            args.append(domain)
        return self._rows(sql + ' ORDER BY key COLLATE "C"', args)

    def has_name(self, domain: str, name: str) -> bool:
        """Whether a record in ``domain`` has ``name`` (normal) as its name, topic or an alias."""
        return bool(self._query("SELECT 1 FROM mythline_records WHERE names @> ARRAY[%s]::text[] AND domain = %s "
                                "LIMIT 1", (normal(name), domain)))

    def names_in(self, domain: str) -> set[str]:
        """Every normal name and alias of the records in ``domain``."""
        return {r[0] for r in self._query("SELECT DISTINCT unnest(names) FROM mythline_records WHERE domain = %s",
                                          (domain,))}

    def touching(self, key: str) -> builtins.list[dict[str, Any]]:
        """The contradiction records that cite the record at ``key``."""
        return self._rows(f"SELECT {_COLS} FROM mythline_records WHERE links @> ARRAY[%s]::text[] "
                          'ORDER BY key COLLATE "C"', (key,))

    def shared_names(self) -> builtins.list[tuple[str, builtins.list[str]]]:
        """Names (normal) that more than one record carries (contradiction records left out)."""
        rows = self._query("SELECT n, array_agg(DISTINCT key) FROM mythline_records, unnest(names) AS n "
                           "WHERE kind = 'record' GROUP BY n HAVING count(DISTINCT key) > 1 "
                           'ORDER BY n COLLATE "C"')
        return [(norm, sorted(keys)) for norm, keys in rows]

    def count(self) -> int:
        return int(self._query("SELECT count(*) FROM mythline_records")[0][0])

    # The session outlives a command's use of the store: closing is the process's exit.
    def close(self) -> None:
        return None

    def __enter__(self) -> PgRecords:
        return self

    def __exit__(self, *exc: object) -> None:
        return None
