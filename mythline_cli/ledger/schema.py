"""The PostgreSQL schema of the shared state, created at first use and checked on every connect.

``mythline_meta`` holds ``schema_version``. A database at an older version is migrated in
one transaction; one at a newer version (a newer mythline wrote it) is refused, never used.
Creation and migration run under a transaction-level advisory lock, so processes that
start together on an empty database do not race to create the same table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..state import Session

_SCHEMA_LOCK = 0x6D7974686C696E65  # "mythline": the advisory key creation and migration wait on

# Each step brings the schema from version i to i + 1.
STEPS: list[str] = [
    """
    CREATE TABLE IF NOT EXISTS mythline_meta (key text PRIMARY KEY, value text NOT NULL);
    CREATE TABLE IF NOT EXISTS mythline_ledger (id int PRIMARY KEY CHECK (id = 1), seq bigint NOT NULL,
                                                state json NOT NULL);
    CREATE TABLE IF NOT EXISTS mythline_journal (seq bigint PRIMARY KEY, entry json NOT NULL);
    INSERT INTO mythline_ledger VALUES (1, 0, '{"version": 1, "windows": {}, "reservations": {}}')
        ON CONFLICT DO NOTHING;
    """,
    # The per-agent state documents and event logs (statedocs.PgDocs). Bodies are text as
    # written, not json: a bad value reads back as a bad file does, and is moved aside.
    """
    CREATE TABLE IF NOT EXISTS mythline_docs (kind text NOT NULL, agent text NOT NULL, body text NOT NULL,
                                              updated timestamptz NOT NULL DEFAULT now(),
                                              PRIMARY KEY (kind, agent));
    CREATE TABLE IF NOT EXISTS mythline_events (id bigserial PRIMARY KEY, log text NOT NULL, agent text NOT NULL,
                                                entry text NOT NULL);
    CREATE INDEX IF NOT EXISTS mythline_events_by_log ON mythline_events (log, agent, id);
    """,
    # The store of records (storepg.py): one row per (domain, slug), the document as written,
    # beside the columns the file backend's SQLite index derives from it. ``doc`` is json, not
    # jsonb: its keys stay in the order written, so an export is the file backend's to the byte.
    # The time indexes are in the order ``store ls`` reads (newest first, none last): no sort.
    """
    CREATE TABLE IF NOT EXISTS mythline_records (
        key text PRIMARY KEY, domain text NOT NULL, topic text, name text NOT NULL, agent text,
        confidence double precision, stored_at text, content_hash text NOT NULL, tiers text NOT NULL,
        n_sources integer NOT NULL, aliases text NOT NULL, kind text NOT NULL, names text[] NOT NULL,
        links text[] NOT NULL, words tsvector NOT NULL, doc json NOT NULL);
    CREATE INDEX IF NOT EXISTS mythline_records_stored ON mythline_records
        ((stored_at COLLATE "C") DESC NULLS LAST);
    CREATE INDEX IF NOT EXISTS mythline_records_agent ON mythline_records
        (agent, (stored_at COLLATE "C") DESC NULLS LAST);
    CREATE INDEX IF NOT EXISTS mythline_records_domain ON mythline_records
        (domain, (stored_at COLLATE "C") DESC NULLS LAST);
    CREATE INDEX IF NOT EXISTS mythline_records_names ON mythline_records USING gin (names);
    CREATE INDEX IF NOT EXISTS mythline_records_links ON mythline_records USING gin (links);
    CREATE INDEX IF NOT EXISTS mythline_records_words ON mythline_records USING gin (words);
    """,
]
VERSION = len(STEPS)


def version(conn: Any) -> int:
    """The database's schema version (0: none yet)."""
    if conn.execute("SELECT to_regclass('mythline_meta')").fetchone()[0] is None:
        return 0
    row = conn.execute("SELECT value FROM mythline_meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else 0


def ensure(session: Session) -> dict[str, Any]:
    """Create or migrate the schema to ``VERSION``; refuse a newer one. Returns what was done."""
    from ..errors import StateUnavailable

    conn = session.conn
    try:
        found = version(conn)
        if found == VERSION:
            return {"from": found, "to": VERSION}
        if found < VERSION:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                found = version(conn)  # another process may have done it while this one waited
                for step in STEPS[found:]:
                    conn.execute(step)
                conn.execute("INSERT INTO mythline_meta VALUES ('schema_version', %s) ON CONFLICT (key) "
                             "DO UPDATE SET value = excluded.value", (str(VERSION),))
            return {"from": found, "to": VERSION}
    except Exception as exc:  # noqa: BLE001 - the driver's errors, named by the session
        raise session.unavailable(exc) from None
    raise StateUnavailable(f"the shared state at {session.where} has schema version {found}, newer than this "
                           f"mythline knows ({VERSION}); upgrade mythline on this host")
