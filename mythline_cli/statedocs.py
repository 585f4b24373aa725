"""Each agent's state documents and event logs, in the state home's files or in PostgreSQL.

One interface, two backends; the modules that own a document (checkpoint, heartbeat,
breaker, kill switch, alerts, start failures) and the readers (status, watchdog, logs)
ask ``backend()`` and never learn which one they have.

A *document* is named by (kind, agent); the fleet's own (the breaker, alerts) have the agent
``""``. The file backend keeps each where it always was (``FILE_NAMES``), written atomically,
updated under a file lock. The PostgreSQL backend keeps a document as one row of
``mythline_docs`` (its text as written, so a bad value reads back as a bad file does) and an
event as one row of ``mythline_events``; a locked update is one transaction under an
advisory lock on the document's name. A document that cannot be read is moved aside in
both: to ``NAME.corrupt-STAMP`` beside the file, or to the kind ``KIND.corrupt-STAMP``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from . import files, paths
from .clock import utcnow
from .errors import CorruptFile, LockTimeout

if TYPE_CHECKING:
    from .state import Session

T = TypeVar("T")

# The document kinds and the logs; the fleet's own have the agent "".
KINDS = ("checkpoint", "heartbeat", "paused", "resumed", "start-failure", "breaker", "alerts")
FLEET_KINDS = ("breaker", "alerts")
LOGS = ("events", "inbox", "alerts", "start-failures")  # events, inbox: per agent; the others: the fleet's


class Docs(Protocol):
    """Where the per-agent state lives."""

    shared: bool  # True when every host sees the same documents

    def where(self, kind: str, agent: str = "") -> str:
        """The document's place, for messages."""
        ...

    def read(self, kind: str, agent: str = "") -> Any | None:
        """The document, None when there is none; ``CorruptFile`` when it is not JSON."""
        ...

    def write(self, kind: str, agent: str, data: Any, *, durable: bool = True) -> None:
        """Replace the document whole (old or new after a crash, never half)."""
        ...

    def update(self, kind: str, agent: str, change: Callable[[Any], T], *, load: Callable[[], Any],
               timeout: float) -> T:
        """``change(load())`` while no other process updates this document; written back when
        it changed (or did not exist). ``load`` may move a bad document aside."""
        ...

    def move_aside(self, kind: str, agent: str = "") -> str:
        """Move an unreadable document aside; returns where it went."""
        ...

    def exists(self, kind: str, agent: str = "") -> bool: ...

    def names(self, agent: str) -> set[str] | None:
        """The file names (``FILE_NAMES``) of the agent's documents that exist, in one look;
        None when that cannot be told at once."""
        ...

    def read_text(self, kind: str, agent: str, limit: int) -> str | None:
        """The first ``limit`` bytes of a text document as text; None when absent, "" when
        it is there but cannot be read."""
        ...

    def write_text(self, kind: str, agent: str, text: str) -> None: ...

    def remove(self, kind: str, agent: str = "") -> bool:
        """Remove the document; False when there was none."""
        ...

    def documents(self) -> list[tuple[str, str]]:
        """(kind, agent) of every document there is (for ``state export`` and ``import``)."""
        ...

    def logs(self) -> list[tuple[str, str]]:
        """(log, agent) of every log there is."""
        ...

    def append(self, log: str, agent: str, entries: list[dict[str, Any]], *, fsync: bool = True) -> None:
        """Append entries to a log (``events`` of an agent, or a fleet log with agent "")."""
        ...

    def entries(self, log: str, agent: str = "") -> Iterator[dict[str, Any]]:
        """Every readable entry of a log, oldest first (torn or bad lines skipped)."""
        ...

    def tail(self, log: str, agent: str, n: int) -> tuple[list[dict[str, Any]], Any]:
        """(the last ``n`` entries, a position to ``follow`` from)."""
        ...

    def follow(self, log: str, agent: str, position: Any) -> tuple[list[dict[str, Any]], Any]:
        """(the entries appended after ``position``, the position after them)."""
        ...


# -- the state home's files -------------------------------------------------------------------

FILE_NAMES = {"checkpoint": "checkpoint.json", "heartbeat": "heartbeat.json", "paused": "paused",
              "resumed": "resumed.json", "start-failure": "start-failure.json"}


class FileDocs:
    """The documents as the state home's files, exactly where they always were."""

    shared = False

    def path(self, kind: str, agent: str = "") -> Path:
        if kind == "breaker":
            return paths.breaker()
        if kind == "alerts":
            return paths.alerts_state()
        return paths.agent_dir(agent) / FILE_NAMES[kind]

    def log_path(self, log: str, agent: str = "") -> Path:
        if log == "events":
            return paths.events(agent)
        if log == "inbox":
            return paths.agent_dir(agent) / "inbox.jsonl"
        return paths.home() / f"{log}.jsonl"

    def _lock(self, kind: str, agent: str) -> Path:
        if kind == "breaker":
            return paths.breaker_lock()
        if kind == "alerts":
            return paths.alerts_lock()
        return self.path(kind, agent).with_suffix(".lock")

    def where(self, kind: str, agent: str = "") -> str:
        return str(self.path(kind, agent))

    def read(self, kind: str, agent: str = "") -> Any | None:
        return files.read_json(self.path(kind, agent))

    def write(self, kind: str, agent: str, data: Any, *, durable: bool = True) -> None:
        files.write_json(self.path(kind, agent), data, durable=durable)

    def update(self, kind: str, agent: str, change: Callable[[Any], T], *, load: Callable[[], Any],
               timeout: float) -> T:
        return files.update_json(self.path(kind, agent), self._lock(kind, agent), change,
                                 load=lambda _path: load(), timeout=timeout)

    def move_aside(self, kind: str, agent: str = "") -> Any:
        return files.quarantine_corrupt(self.path(kind, agent))  # the Path, as before

    def exists(self, kind: str, agent: str = "") -> bool:
        return self.path(kind, agent).exists()

    def names(self, agent: str) -> set[str] | None:
        try:
            return set(os.listdir(paths.agent_dir(agent)))
        except OSError:
            return None

    def read_text(self, kind: str, agent: str, limit: int) -> str | None:
        try:
            with self.path(kind, agent).open("rb") as fh:
                raw = fh.read(limit)  # a huge file is never read whole
        except FileNotFoundError:
            return None
        except OSError:  # a directory, no permission: there, but unreadable
            return ""
        return raw.decode("utf-8", errors="replace")

    def write_text(self, kind: str, agent: str, text: str) -> None:
        files.write_bytes_atomic(self.path(kind, agent), text.encode("utf-8"))

    def remove(self, kind: str, agent: str = "") -> bool:
        path = self.path(kind, agent)
        if path.is_dir() and not path.is_symlink():
            raise paths.StateHomeUnusable(path, f"is a directory, not the {'pause flag' if kind == 'paused' else kind}",
                                          "remove that directory" + (" to resume the agent" if kind == "paused" else ""))
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        return True

    def _agents(self) -> list[str]:
        try:
            return sorted(e.name for e in os.scandir(paths.home() / "agents") if e.is_dir(follow_symlinks=False))
        except OSError:
            return []

    def documents(self) -> list[tuple[str, str]]:
        found = [(kind, "") for kind in FLEET_KINDS if self.path(kind).is_file()]
        return found + [(kind, agent) for agent in self._agents() for kind in FILE_NAMES
                        if self.path(kind, agent).is_file()]

    def logs(self) -> list[tuple[str, str]]:
        found = [(log, "") for log in LOGS[2:] if self.log_path(log).is_file()]
        return found + [(log, agent) for agent in self._agents() for log in LOGS[:2]
                        if self.log_path(log, agent).is_file()]

    def append(self, log: str, agent: str, entries: list[dict[str, Any]], *, fsync: bool = True) -> None:
        files.append_jsonl_many(self.log_path(log, agent), entries, fsync=fsync)

    def entries(self, log: str, agent: str = "") -> Iterator[dict[str, Any]]:
        return files.iter_jsonl(self.log_path(log, agent))

    def tail(self, log: str, agent: str, n: int) -> tuple[list[dict[str, Any]], Any]:
        path = self.log_path(log, agent)
        try:
            end = path.stat().st_size
        except FileNotFoundError:
            end = 0
        return files.tail_jsonl(path, n), end

    def follow(self, log: str, agent: str, position: Any) -> tuple[list[dict[str, Any]], Any]:
        path = self.log_path(log, agent)
        try:
            with path.open("rb") as fh:
                if os.fstat(fh.fileno()).st_size < position:
                    position = 0  # replaced by a new file
                fh.seek(position)
                data = fh.read()
        except FileNotFoundError:
            return [], 0
        end = data.rfind(b"\n") + 1
        return _parse_lines(data[:end].split(b"\n")), position + end


def _parse(raw: str | bytes) -> dict[str, Any] | None:
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


def _parse_lines(lines: list[bytes]) -> list[dict[str, Any]]:
    return [obj for obj in map(_parse, lines) if obj is not None]


# -- PostgreSQL -------------------------------------------------------------------------------

def _text(data: Any) -> str:
    # files.encode falls back to \u escapes for a lone surrogate, which UTF-8 (and so
    # PostgreSQL's text) cannot hold; JSON escapes NUL, which text cannot hold either.
    return files.encode(data, compact=True).decode("utf-8").rstrip("\n")


class PgDocs:
    """The documents as rows of ``mythline_docs``, the logs as rows of ``mythline_events``."""

    shared = True

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    @property
    def session(self) -> Session:
        from .state import session

        return session(self.dsn)

    def where(self, kind: str, agent: str = "") -> str:
        return f"{self.session.where} ({kind}" + (f" of {agent})" if agent else ")")

    def _run(self, during: str, action: Callable[[Any], T], *, transaction: bool = False) -> T:
        """``action(conn)``; in one transaction when it is more than one statement (a single
        statement on the autocommit connection is one already, and a round trip cheaper)."""
        import psycopg

        s = self.session
        try:
            if not transaction:
                return action(s.conn)
            with s.conn.transaction():
                return action(s.conn)
        except psycopg.errors.LockNotAvailable:
            # An update's lock_timeout: another process held the document all that time.
            raise LockTimeout(f"{s.where} ({during})") from None
        except psycopg.Error as exc:
            raise s.unavailable(exc, during=during) from None

    def _body(self, conn: Any, kind: str, agent: str) -> str | None:
        row = conn.execute("SELECT body FROM mythline_docs WHERE kind = %s AND agent = %s", (kind, agent)).fetchone()
        return None if row is None else str(row[0])

    def _put(self, conn: Any, kind: str, agent: str, body: str) -> None:
        conn.execute("INSERT INTO mythline_docs (kind, agent, body) VALUES (%s, %s, %s) ON CONFLICT (kind, agent) "
                     "DO UPDATE SET body = excluded.body, updated = now()", (kind, agent, body))

    def read(self, kind: str, agent: str = "") -> Any | None:
        body = self._run(f"while reading {kind}", lambda conn: self._body(conn, kind, agent))
        if body is None:
            return None
        if not body.strip():
            raise CorruptFile(self.where(kind, agent), "empty")  # type: ignore[arg-type]
        try:
            return json.loads(body)
        except ValueError as exc:
            raise CorruptFile(self.where(kind, agent), f"not valid JSON ({exc})") from None  # type: ignore[arg-type]
        except RecursionError:
            raise CorruptFile(self.where(kind, agent), "not valid JSON (nested too deep)") from None  # type: ignore[arg-type]

    def write(self, kind: str, agent: str, data: Any, *, durable: bool = True) -> None:
        body = _text(data)
        self._run(f"while writing {kind}", lambda conn: self._put(conn, kind, agent, body))

    def update(self, kind: str, agent: str, change: Callable[[Any], T], *, load: Callable[[], Any],
               timeout: float) -> T:
        import copy

        def locked(conn: Any) -> T:
            # One transaction: the advisory lock on the document's name queues every other
            # updater of it (on any host) until this commits or its session ends.
            conn.execute(f"SET LOCAL lock_timeout = '{int(timeout * 1000)}ms'")
            conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"mythline doc {kind} {agent}",))
            existed = self._body(conn, kind, agent) is not None
            data = load()  # reads on this same connection, inside this transaction
            before = copy.deepcopy(data)
            result = change(data)
            if data != before or not existed:
                self._put(conn, kind, agent, _text(data))
            return result

        return self._run(f"while updating {kind}", locked, transaction=True)

    def move_aside(self, kind: str, agent: str = "") -> str:
        stamp = utcnow().strftime("%Y%m%dT%H%M%S%fZ")
        aside = f"{kind}.corrupt-{stamp}"
        self._run(f"while moving {kind} aside", lambda conn: conn.execute(
            "UPDATE mythline_docs SET kind = %s WHERE kind = %s AND agent = %s", (aside, kind, agent)))
        return self.where(aside, agent)

    def exists(self, kind: str, agent: str = "") -> bool:
        return self._run(f"while reading {kind}", lambda conn: self._body(conn, kind, agent)) is not None

    def names(self, agent: str) -> set[str] | None:
        rows = self._run("while reading the agent's state", lambda conn: conn.execute(
            "SELECT kind FROM mythline_docs WHERE agent = %s", (agent,)).fetchall())
        return {FILE_NAMES[k] for (k,) in rows if k in FILE_NAMES}

    def read_text(self, kind: str, agent: str, limit: int) -> str | None:
        body = self._run(f"while reading {kind}", lambda conn: self._body(conn, kind, agent))
        return None if body is None else body[:limit]

    def write_text(self, kind: str, agent: str, text: str) -> None:
        clean = text.replace("\x00", "")  # text cannot hold NUL
        self._run(f"while writing {kind}", lambda conn: self._put(conn, kind, agent, clean))

    def remove(self, kind: str, agent: str = "") -> bool:
        cur = self._run(f"while removing {kind}", lambda conn: conn.execute(
            "DELETE FROM mythline_docs WHERE kind = %s AND agent = %s", (kind, agent)))
        return bool(cur.rowcount)

    def documents(self) -> list[tuple[str, str]]:
        rows = self._run("while listing the documents", lambda conn: conn.execute(
            "SELECT kind, agent FROM mythline_docs WHERE kind = ANY(%s) ORDER BY agent, kind", (list(KINDS),)).fetchall())
        return [(str(k), str(a)) for k, a in rows]

    def logs(self) -> list[tuple[str, str]]:
        rows = self._run("while listing the logs", lambda conn: conn.execute(
            "SELECT DISTINCT log, agent FROM mythline_events ORDER BY agent, log").fetchall())
        return [(str(k), str(a)) for k, a in rows]

    def append(self, log: str, agent: str, entries: list[dict[str, Any]], *, fsync: bool = True) -> None:
        if not entries:
            return

        def insert(conn: Any) -> None:
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO mythline_events (log, agent, entry) VALUES (%s, %s, %s)",
                                [(log, agent, _text(e)) for e in entries])

        self._run(f"while writing the {log} log", insert, transaction=len(entries) > 1)

    def entries(self, log: str, agent: str = "") -> Iterator[dict[str, Any]]:
        rows = self._run(f"while reading the {log} log", lambda conn: conn.execute(
            "SELECT entry FROM mythline_events WHERE log = %s AND agent = %s ORDER BY id", (log, agent)).fetchall())
        for (raw,) in rows:
            obj = _parse(raw)
            if obj is not None:
                yield obj

    def tail(self, log: str, agent: str, n: int) -> tuple[list[dict[str, Any]], Any]:
        def last(conn: Any) -> tuple[list[Any], int]:
            top = conn.execute("SELECT coalesce(max(id), 0) FROM mythline_events").fetchone()[0]
            rows = conn.execute("SELECT entry FROM mythline_events WHERE log = %s AND agent = %s AND id <= %s "
                                "ORDER BY id DESC LIMIT %s", (log, agent, top, max(n, 0))).fetchall()
            return rows, int(top)

        rows, top = self._run(f"while reading the {log} log", last, transaction=True)
        found = [obj for obj in (_parse(r[0]) for r in reversed(rows)) if obj is not None]
        return found, top

    def follow(self, log: str, agent: str, position: Any) -> tuple[list[dict[str, Any]], Any]:
        # Ids are handed out in commit order closely enough for a live view; an entry whose
        # transaction commits after a later id was read is shown late or, rarely, not at all.
        rows = self._run(f"while reading the {log} log", lambda conn: conn.execute(
            "SELECT id, entry FROM mythline_events WHERE log = %s AND agent = %s AND id > %s ORDER BY id",
            (log, agent, int(position or 0))).fetchall())
        found = [obj for obj in (_parse(r[1]) for r in rows) if obj is not None]
        return found, (int(rows[-1][0]) if rows else position)


def copy(source: Docs, target: Docs) -> dict[str, int]:
    """Every document (as its text, a bad one too) and every readable log entry of ``source``
    into ``target``, which has none; returns how many of each.

    An inbox's position is the backend's own (a byte offset, a row id): only the changes a
    checkpoint has not applied yet are carried, and it is set to apply them from the start."""
    docs = source.documents()
    waiting: dict[str, list[dict[str, Any]]] = {}
    for kind, agent in docs:
        text = source.read_text(kind, agent, 1 << 30)
        if text is None:
            continue
        if kind == "checkpoint":
            data = _parse(text)
            if data is not None:
                offset = data.get("inbox_offset") or 0
                waiting[agent] = source.follow("inbox", agent, offset if type(offset) is int else 0)[0]
                data["inbox_offset"] = 0
                text = _text(data)
        target.write_text(kind, agent, text)
    count = 0
    for log, agent in source.logs():
        entries = waiting.get(agent, []) if log == "inbox" and agent in waiting else list(source.entries(log, agent))
        target.append(log, agent, entries)
        count += len(entries)
    return {"documents": len(docs), "entries": count}


def run_lock(agent: str) -> Any:
    """The agent's run lock, wherever the state is (a context manager; ``AlreadyRunning``)."""
    from .state import run_lock as lock

    return lock(_settings, agent, paths.run_lock(agent))


# -- which one ----------------------------------------------------------------------------------

_settings: Any = None
_pg: dict[str, PgDocs] = {}
_files = FileDocs()


def use(settings: Any) -> None:
    """The settings whose ``state`` names the backend (``MYTHLINE_STATE`` wins either way);
    set where the settings are loaded. Resolved at first use, so a bad ``state`` fails only
    the commands that need the state."""
    global _settings
    _settings = settings


def backend() -> Docs:
    """The documents' backend for this process: the state home's files, or PostgreSQL."""
    from .state import dsn_of

    dsn = dsn_of(_settings)
    if dsn is None:
        return _files
    found = _pg.get(dsn)
    if found is None:
        found = _pg[dsn] = PgDocs(dsn)
    return found

