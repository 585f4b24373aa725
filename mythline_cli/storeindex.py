"""A SQLite index beside the store's JSON records, so listing and searching stay fast at scale.

The JSON records are the source of truth; the index is derived from them and may be deleted
at any time. It notices added, replaced and removed records by the modification times of the
store's domain folders (an atomic write renames a file into its folder, which changes the
folder's time), and rescans only the folders that changed, comparing each file's size and
time. A folder time from the last two seconds is not trusted (a second write in the same
clock tick would not change it): that folder is rescanned next time. An edit made in place,
without a rename, is found by ``mythline store reindex``.

Every write is one SQLite transaction (its rollback journal makes a crash leave the old or the
new index). An index that is unreadable, or of another format version, is deleted and rebuilt;
one that cannot be written (a read-only store) is built in memory for the command.
"""

from __future__ import annotations

import builtins
import json
import os
import re
import sqlite3
import time
import unicodedata
from collections.abc import Iterable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

from . import files, paths
from .errors import IndexUnavailable  # noqa: F401 - storeindex.IndexUnavailable

# Bumped whenever the tables or what is extracted into them change: an older index is rebuilt.
VERSION = 2
# A folder time this recent may hide a second write in the same tick (coarse clocks).
UNSURE_NS = 2_000_000_000
READ_TIMEOUT = 30.0
TEXT_LIMIT = 20_000  # characters of a record's text that search sees

_SCHEMA = """
CREATE TABLE records (
    path TEXT PRIMARY KEY, domain TEXT NOT NULL, topic TEXT, name TEXT, norm TEXT, agent TEXT,
    confidence REAL, stored_at TEXT, content_hash TEXT, tiers TEXT, n_sources INTEGER,
    aliases TEXT, kind TEXT, mtime_ns INTEGER, size INTEGER
);
CREATE INDEX records_stored ON records(stored_at);
CREATE INDEX records_agent ON records(agent, stored_at);
CREATE INDEX records_domain ON records(domain, stored_at);
CREATE TABLE problems (path TEXT PRIMARY KEY, domain TEXT NOT NULL, problem TEXT, mtime_ns INTEGER, size INTEGER);
CREATE TABLE names (norm TEXT NOT NULL, path TEXT NOT NULL);
CREATE INDEX names_norm ON names(norm);
CREATE INDEX names_path ON names(path);
CREATE TABLE links (path TEXT NOT NULL, target TEXT NOT NULL);
CREATE INDEX links_target ON links(target);
CREATE INDEX links_path ON links(path);
CREATE TABLE folders (domain TEXT PRIMARY KEY, mtime_ns INTEGER);
"""
_FTS = "CREATE VIRTUAL TABLE search USING fts5(name, aliases, body, tokenize='unicode61 remove_diacritics 2')"
_PLAIN = "CREATE TABLE search (name TEXT, aliases TEXT, body TEXT)"

COLUMNS = ("path", "domain", "topic", "name", "agent", "confidence", "stored_at", "content_hash", "tiers",
           "n_sources", "aliases", "kind")


def index_path() -> Path:
    return paths.store_dir() / "index.sqlite"


def normal(name: str) -> str:
    """A subject's name for comparing: accents, case, apostrophes, punctuation and a leading
    "the" do not count ("Go'el" and "goel", "The Scourge" and "scourge" are the same)."""
    text = unicodedata.normalize("NFKD", name)
    text = "".join(c for c in text if not unicodedata.combining(c)).casefold()
    text = re.sub(r"['\u2019`]", "", text)
    text = " ".join(re.sub(r"[\W_]+", " ", text).split())
    return text[4:] if text.startswith("the ") else text


def rel(path: Path) -> str:
    """A record's path relative to the store, with forward slashes (the index's key)."""
    return path.relative_to(paths.store_dir()).as_posix()


# -- what a record file contributes ----------------------------------------------------------

def sources_of(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """A record's citations: the retrieved sources of its provenance when it has them, else
    the ones the record itself lists."""
    prov = _v if isinstance(_v := doc.get("provenance"), dict) else {}
    record = _v if isinstance(_v := doc.get("record"), dict) else {}
    for found in (prov.get("sources"), record.get("sources")):
        if isinstance(found, list) and found:
            return [s for s in found if isinstance(s, dict)]
    return []


def _texts(value: Any, out: list[str]) -> None:
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, list):
        for item in value:
            _texts(item, out)
    elif isinstance(value, dict):
        for key, item in value.items():
            if key not in ("url", "final_url", "sha256", "tier"):
                _texts(item, out)


def aliases_of(record: dict[str, Any]) -> list[str]:
    found = record.get("aliases")
    return [a for a in found if isinstance(a, str) and a.strip()] if isinstance(found, list) else []


def extract(doc: Any) -> dict[str, Any]:
    """The index row of one record document (``problem`` says why a file is no record)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("record"), dict):
        return {"problem": "not a stored record (no record object)"}
    record = doc["record"]
    prov = _v if isinstance(_v := doc.get("provenance"), dict) else {}
    topic = doc.get("topic") if isinstance(doc.get("topic"), str) else None
    name = record.get("name") if isinstance(record.get("name"), str) and record["name"].strip() else topic
    confidence = record.get("confidence")
    tiers: dict[str, int] = {}
    for src in sources_of(doc):
        tier = t if isinstance(t := src.get("tier"), str) else "unknown"
        tiers[tier] = tiers.get(tier, 0) + 1
    text: list[str] = []
    _texts(record, text)
    aliases = aliases_of(record)
    links = [c["path"] for c in record.get("claims") or [] if isinstance(c, dict) and isinstance(c.get("path"), str)]
    return {
        "topic": topic, "name": name or "", "norm": normal(name or ""),
        "agent": prov.get("agent") if isinstance(prov.get("agent"), str) else None,
        "confidence": float(confidence) if type(confidence) in (int, float) else None,
        "stored_at": prov.get("stored_at") if isinstance(prov.get("stored_at"), str) else None,
        "content_hash": doc.get("content_hash") if isinstance(doc.get("content_hash"), str) else None,
        "tiers": json.dumps(tiers), "n_sources": sum(tiers.values()), "aliases": json.dumps(aliases),
        "kind": doc.get("kind") if isinstance(doc.get("kind"), str) else "record",
        "problem": None, "body": " ".join(text)[:TEXT_LIMIT], "links": links,
        "names": {normal(n) for n in [name or "", topic or "", *aliases] if normal(n)},
    }


def _record_files(folder: Path) -> Iterator[os.DirEntry[str]]:
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        # Skips our temp files (".name.x-pid.tmp") and files moved aside ("x.json.corrupt-...").
        if entry.name.endswith(".json") and not entry.name.startswith(".") and entry.is_file():
            yield entry


def _folders(root: Path) -> dict[str, int]:
    try:
        entries = list(os.scandir(root))
    except OSError:
        return {}
    out = {}
    for entry in entries:
        if entry.is_dir(follow_symlinks=False) and not entry.name.startswith("."):
            try:
                out[entry.name] = entry.stat().st_mtime_ns
            except OSError:
                continue
    return out


def list_filter(*, agent: str | None, domain: str | None, kind: str | None, since: str | None,
                min_confidence: float | None, mark: str = "?",
                stored_at: str = "stored_at") -> tuple[str, list[Any]]:
    """The WHERE clause and its arguments of ``store ls``'s filters, for either backend's SQL
    (``mark``: its placeholder; ``stored_at``: how it compares record times)."""
    where: list[str] = []
    args: list[Any] = []
    for column, value in (("agent", agent), ("domain", domain), ("kind", kind)):
        if value is not None:
            where.append(f"{column} = {mark}")
            args.append(value)
    if since is not None:
        where.append(f"{stored_at} >= {mark}")
        args.append(since)
    if min_confidence is not None:
        where.append(f"confidence >= {mark}")
        args.append(min_confidence)
    return ("WHERE " + " AND ".join(where)) if where else "", args


class StoreIndex:
    """An open, fresh index of the store. Use ``StoreIndex.open()``; close when done."""

    def __init__(self, conn: sqlite3.Connection, *, fts: bool, location: str) -> None:
        self.conn = conn
        self.fts = fts
        self.location = location

    # -- opening and keeping fresh --------------------------------------------------------
    @classmethod
    def open(cls, *, timeout: float = READ_TIMEOUT, full: bool = False) -> StoreIndex:
        """The index, brought up to date with the JSON records (built when missing, rebuilt when
        unreadable or old; ``full``: every file compared again, for edits made in place)."""
        target = index_path()
        if not paths.store_dir().is_dir():
            return cls._memory()
        for attempt in (1, 2):
            index = None
            try:
                index = cls._connect(str(target), timeout)
                index.refresh(full=full or attempt == 2)
                return index
            except sqlite3.Error as exc:
                if index is not None:
                    index.close()
                if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                    raise IndexUnavailable(f"{target}: {exc}") from None
                if _readonly(exc) or attempt == 2 or not _discard(target):
                    break
                # Unreadable (a disk fault, a hand edit, not a database at all): derived, so rebuilt.
        # Nowhere to keep it (a read-only store, a directory in its place): built for this command.
        return cls._memory()

    @classmethod
    def existing(cls, *, timeout: float = 2.0) -> StoreIndex:
        """The index as it is, not brought up to date and never built: for a run, which must not
        spend a store's worth of reading on it. ``IndexUnavailable`` when there is none to use."""
        target = index_path()
        if not target.is_file():
            raise IndexUnavailable(f"{target}: not built yet")
        try:
            conn = sqlite3.connect(f"file:{target}?mode=ro", uri=True, timeout=timeout, isolation_level=None)
        except sqlite3.Error as exc:
            raise IndexUnavailable(f"{target}: {exc}") from None
        try:
            if conn.execute("PRAGMA user_version").fetchone()[0] != VERSION:
                raise IndexUnavailable(f"{target}: of another format version")
            sql = conn.execute("SELECT sql FROM sqlite_master WHERE name='search'").fetchone()
        except sqlite3.Error as exc:
            conn.close()
            raise IndexUnavailable(f"{target}: {exc}") from None
        except IndexUnavailable:
            conn.close()
            raise
        return cls(conn, fts=bool(sql) and "fts5" in sql[0].lower(), location=str(target))

    def put(self, path: Path, doc: Any) -> None:
        """Index one record file just written (a run's own record): one transaction."""
        st = path.stat()
        key = rel(path)
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            self._drop(key)
            self._put(key, path.parent.name, extract(doc), st.st_mtime_ns, st.st_size)
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    def has_name(self, domain: str, name: str) -> bool:
        """Whether a record in ``domain`` has ``name`` (normal) as its name, topic or an alias."""
        return self.conn.execute("SELECT 1 FROM names n JOIN records r ON r.path = n.path "
                                 "WHERE n.norm = ? AND r.domain = ? LIMIT 1", (normal(name), domain)).fetchone() is not None

    @classmethod
    def _memory(cls) -> StoreIndex:
        index = cls._connect(":memory:", READ_TIMEOUT)
        index.refresh(full=True)
        return index

    @classmethod
    def _connect(cls, location: str, timeout: float) -> StoreIndex:
        conn = sqlite3.connect(location, timeout=timeout, isolation_level=None)
        try:
            conn.execute("PRAGMA synchronous=FULL")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version != VERSION:
                fts = cls._create(conn)
            else:
                sql = conn.execute("SELECT sql FROM sqlite_master WHERE name='search'").fetchone()
                fts = bool(sql) and "fts5" in sql[0].lower()
        except BaseException:
            conn.close()
            raise
        return cls(conn, fts=fts, location=location)

    @staticmethod
    def _create(conn: sqlite3.Connection) -> bool:
        conn.execute("BEGIN IMMEDIATE")
        try:
            if conn.execute("PRAGMA user_version").fetchone()[0] == VERSION:  # built meanwhile
                conn.execute("COMMIT")
                sql = conn.execute("SELECT sql FROM sqlite_master WHERE name='search'").fetchone()
                return bool(sql) and "fts5" in sql[0].lower()
            for (name, kind) in conn.execute("SELECT name, type FROM sqlite_master "
                                             "WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite_%'"
                                             ).fetchall():
                if not name.startswith("search_"):  # an FTS table's shadow tables go with it
                    conn.execute(f'DROP {"VIEW" if kind == "view" else "TABLE"} IF EXISTS "{name}"')
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            try:
                conn.execute(_FTS)
                fts = True
            except sqlite3.OperationalError:  # a Python whose SQLite lacks FTS5: plain LIKE search
                conn.execute(_PLAIN)
                fts = False
            conn.execute(f"PRAGMA user_version={VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return fts

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> StoreIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def refresh(self, *, full: bool = False) -> int:
        """Bring the index up to date; returns how many files were (re)read."""
        root = paths.store_dir()
        on_disk = _folders(root)
        known = dict(self.conn.execute("SELECT domain, mtime_ns FROM folders").fetchall())
        stale = [d for d, m in on_disk.items() if full or known.get(d, -1) is None or known.get(d, -1) != m]
        gone = [d for d in known if d not in on_disk]
        if not stale and not gone:
            return 0
        read = 0
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            # Compared again under the write lock: another process may have just done this.
            known = dict(self.conn.execute("SELECT domain, mtime_ns FROM folders").fetchall())
            for domain in gone:
                self._drop_where("domain = ?", (domain,))
                self.conn.execute("DELETE FROM folders WHERE domain = ?", (domain,))
            for domain in stale:
                folder_time = _mtime(root / domain)
                if folder_time is None or (not full and known.get(domain, -1) == folder_time):
                    continue
                read += self._scan(domain, root / domain)
                # Too recent to prove that nothing else was written in the same tick: rescan next time.
                sure = time.time_ns() - folder_time > UNSURE_NS
                self.conn.execute("INSERT OR REPLACE INTO folders VALUES (?, ?)",
                                  (domain, folder_time if sure else None))
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        return read

    def _scan(self, domain: str, folder: Path) -> int:
        have = {row[0]: (row[1], row[2]) for row in self.conn.execute(
            "SELECT path, mtime_ns, size FROM records WHERE domain = ? UNION ALL "
            "SELECT path, mtime_ns, size FROM problems WHERE domain = ?", (domain, domain))}
        seen: set[str] = set()
        read = 0
        for entry in _record_files(folder):
            key = f"{domain}/{entry.name}"
            try:
                st = entry.stat()
            except OSError:
                continue
            seen.add(key)
            if have.get(key) == (st.st_mtime_ns, st.st_size):
                continue
            try:
                doc = files.read_json(Path(entry.path))
            except files.CorruptFile as exc:
                row = {"problem": exc.problem}
            except OSError as exc:
                row = {"problem": exc.strerror or str(exc)}
            else:
                if doc is None:
                    continue  # removed meanwhile
                row = extract(doc)
            if key in have:
                self._drop(key)
            self._put(key, domain, row, st.st_mtime_ns, st.st_size)
            read += 1
        for key in set(have) - seen:
            self._drop_where("path = ?", (key,))
        return read

    def _drop_where(self, where: str, args: tuple[Any, ...]) -> None:
        keys = [r[0] for r in self.conn.execute(f"SELECT path FROM records WHERE {where} UNION ALL "
                                                f"SELECT path FROM problems WHERE {where}", args + args)]
        for key in keys:
            self._drop(key)

    def _drop(self, key: str) -> None:
        self.conn.execute("DELETE FROM problems WHERE path = ?", (key,))
        row = self.conn.execute("SELECT rowid FROM records WHERE path = ?", (key,)).fetchone()
        if row is None:
            return
        self.conn.execute("DELETE FROM search WHERE rowid = ?", (row[0],))
        self.conn.execute("DELETE FROM records WHERE path = ?", (key,))
        self.conn.execute("DELETE FROM names WHERE path = ?", (key,))
        self.conn.execute("DELETE FROM links WHERE path = ?", (key,))

    def _put(self, key: str, domain: str, row: dict[str, Any], mtime_ns: int, size: int) -> None:
        if row.get("problem"):
            self.conn.execute("INSERT INTO problems VALUES (?, ?, ?, ?, ?)", (key, domain, row["problem"], mtime_ns, size))
            return
        values = {c: row.get(c) for c in COLUMNS}
        values.update(path=key, domain=domain, mtime_ns=mtime_ns, size=size, norm=row.get("norm"))
        cur = self.conn.execute(
            "INSERT INTO records (path, domain, topic, name, norm, agent, confidence, stored_at, content_hash, "
            "tiers, n_sources, aliases, kind, mtime_ns, size) "
            "VALUES (:path, :domain, :topic, :name, :norm, :agent, :confidence, :stored_at, :content_hash, "
            ":tiers, :n_sources, :aliases, :kind, :mtime_ns, :size)", values)
        rowid = cur.lastrowid
        aliases = json.loads(row["aliases"])
        # Each name also in its normal form: "Go'el" is found as "goel" as well as "go'el".
        self.conn.execute("INSERT INTO search (rowid, name, aliases, body) VALUES (?, ?, ?, ?)",
                          (rowid, " ".join(dict.fromkeys([row["name"], normal(row["name"]), row["topic"] or ""])),
                           " ".join([*aliases, *map(normal, aliases)]), row["body"]))
        self.conn.executemany("INSERT INTO names VALUES (?, ?)", [(n, key) for n in row["names"]])
        self.conn.executemany("INSERT INTO links VALUES (?, ?)", [(key, t) for t in row["links"]])

    # -- reading ------------------------------------------------------------------------
    def _rows(self, sql: str, args: Iterable[Any] = ()) -> list[dict[str, Any]]:
        cur = self.conn.execute(sql, tuple(args))
        names = [d[0] for d in cur.description]
        out = []
        for values in cur.fetchall():
            row = dict(zip(names, values, strict=True))
            for key in ("tiers", "aliases"):
                if key in row:
                    row[key] = json.loads(row[key]) if row[key] else ({} if key == "tiers" else [])
            out.append(row)
        return out

    def list(self, *, agent: str | None = None, domain: str | None = None, since: str | None = None,
             min_confidence: float | None = None, limit: int | None = None,
             kind: str | None = None) -> tuple[builtins.list[dict[str, Any]], int]:
        """(records newest first, at most ``limit``; how many match in all)."""
        clause, args = list_filter(agent=agent, domain=domain, kind=kind, since=since,
                                   min_confidence=min_confidence)
        total = self.conn.execute(f"SELECT count(*) FROM records {clause}", args).fetchone()[0]
        sql = f"SELECT {', '.join(COLUMNS)} FROM records {clause} ORDER BY stored_at DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return self._rows(sql, args), total

    def problems(self) -> builtins.list[dict[str, Any]]:
        """Files in the store that could not be read as records."""
        return self._rows("SELECT path, problem FROM problems ORDER BY path")

    def search(self, text: str, *, limit: int = 20) -> tuple[builtins.list[dict[str, Any]], int]:
        """Records whose name, aliases or content hold every word of ``text`` (name matches first)."""
        words = re.findall(r"\w+", text)
        if not words:
            return [], 0
        cols = ", ".join(f"r.{c}" for c in COLUMNS)
        if self.fts:
            query = " AND ".join('"' + w.replace('"', '""') + '"*' for w in words)
            total = self.conn.execute("SELECT count(*) FROM search WHERE search MATCH ?", (query,)).fetchone()[0]
            # Name first, then aliases, then the rest of the text (bm25 weights per column).
            rows = self._rows(f"SELECT {cols} FROM search JOIN records r ON r.rowid = search.rowid "
                              "WHERE search MATCH ? ORDER BY bm25(search, 10.0, 5.0, 1.0) LIMIT ?",
                              (query, limit))
            return rows, total
        where = " AND ".join("(s.name || ' ' || s.aliases || ' ' || s.body) LIKE ?" for _ in words)
        args = [f"%{w}%" for w in words]
        total = self.conn.execute(f"SELECT count(*) FROM search s WHERE {where}", args).fetchone()[0]
        rows = self._rows(f"SELECT {cols} FROM search s JOIN records r ON r.rowid = s.rowid WHERE {where} "
                          "ORDER BY r.stored_at DESC LIMIT ?", [*args, limit])
        return rows, total

    def named(self, name: str, *, domain: str | None = None) -> builtins.list[dict[str, Any]]:
        """Records whose name, topic or an alias is ``name`` (compared as ``normal`` names)."""
        cols = ", ".join(f"r.{c}" for c in COLUMNS)
        sql = (f"SELECT DISTINCT {cols} FROM names n JOIN records r ON r.path = n.path WHERE n.norm = ?")
        args: builtins.list[Any] = [normal(name)]
        if domain is not None:
            sql += " AND r.domain = ?"
            args.append(domain)
        return self._rows(sql + " ORDER BY r.path", args)

    def names_in(self, domain: str) -> set[str]:
        """Every normal name and alias of the records in ``domain``."""
        return {row[0] for row in self.conn.execute(
            "SELECT n.norm FROM names n JOIN records r ON r.path = n.path WHERE r.domain = ?", (domain,))}

    def touching(self, key: str) -> builtins.list[dict[str, Any]]:
        """The contradiction records that cite the record at ``key``."""
        cols = ", ".join(f"r.{c}" for c in COLUMNS)
        return self._rows(f"SELECT DISTINCT {cols} FROM links l JOIN records r ON r.path = l.path "
                          "WHERE l.target = ? ORDER BY r.path", (key,))

    def shared_names(self) -> builtins.list[tuple[str, builtins.list[str]]]:
        """Names (normal) that more than one record carries: candidates for
        a contradiction. Contradiction records themselves are left out."""
        rows = self.conn.execute(
            "SELECT n.norm, group_concat(DISTINCT n.path) FROM names n JOIN records r ON r.path = n.path "
            "WHERE r.kind = 'record' GROUP BY n.norm "
            "HAVING count(DISTINCT r.path) > 1 ORDER BY n.norm").fetchall()
        return [(norm, sorted(paths_.split(","))) for norm, paths_ in rows]

    def count(self) -> int:
        return self.conn.execute("SELECT count(*) FROM records").fetchone()[0]

    # What the store's readers ask of either backend (``storepg.PgRecords`` answers the same).
    def read(self, key: str) -> dict[str, Any]:
        """The record document at ``key``, from its JSON file."""
        from .store import read

        return read(key)

    def path_of(self, key: str) -> str:
        return str(paths.store_dir() / key)


def _mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


def _readonly(exc: Exception) -> bool:
    text = str(exc).lower()
    return "readonly" in text or "read-only" in text or "unable to open" in text


def _discard(target: Path) -> bool:
    """Remove a broken index (and its journal); False when it cannot be removed."""
    for path in (target, target.with_name(target.name + "-journal")):
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError:
            return False
    return True


def opened(**kwargs: Any) -> closing[StoreIndex]:
    return closing(StoreIndex.open(**kwargs))


# A run builds a missing index only for a store this small; a bigger one (a store that
# predates the index) is left to the first `mythline store` command, which may take a while.
RUN_BUILD_LIMIT = 2000


def _small_store() -> bool:
    limit, seen = RUN_BUILD_LIMIT, 0
    try:
        folders = [e.path for e in os.scandir(paths.store_dir()) if e.is_dir(follow_symlinks=False)]
    except OSError:
        return True
    for folder in folders:
        try:
            with os.scandir(folder) as entries:
                for _ in entries:
                    seen += 1
                    if seen > limit:
                        return False
        except OSError:
            continue
    return True


def note(path: Path, doc: Any) -> None:
    """After a run wrote the record at ``path``: the index learns it at once (so the run's own
    look-ups, and the next command, find it). Never raises: the index is derived, and a run
    never fails for it; whatever is missed here the next command's refresh finds."""
    try:
        if not index_path().is_file():
            if _small_store():
                StoreIndex.open(timeout=2.0).close()  # builds it, this record included
            return
        index = StoreIndex._connect(str(index_path()), 2.0)
        try:
            index.put(path, doc)
        finally:
            index.close()
    except Exception:  # noqa: BLE001 - see above
        return
