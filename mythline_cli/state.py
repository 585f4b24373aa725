"""Where the fleet's shared state lives: the state home's files (the default), or PostgreSQL.

``state = "postgresql://..."`` in mythline.toml, or ``MYTHLINE_STATE`` (which wins), names
the database. Each process opens one connection to it (``Session``), the first time it needs
it, and keeps it until it exits. That connection holds two kinds of session-level advisory
locks, which PostgreSQL releases when the session ends however it ends (the process killed,
its backend terminated, its host cut off - the server's TCP keepalives, set below, notice; and
this side's keepalives end the cut-off process's wait within about 30 seconds too):

- the process's *holder* lock, a random 63-bit key taken at connect: a reservation names it,
  and a reservation whose holder lock nobody holds belongs to a dead process, on any host;
- the *run lock* of the agent it runs (``run_lock``): one run of an agent at a time, fleet-wide.

The DSN's password is never shown: every message names the database by ``describe(dsn)``,
and any text from the driver is redacted of it.
"""

from __future__ import annotations

import os
import secrets as _secrets
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from .errors import AlreadyRunning, StateUnavailable
from .redact import redact

if TYPE_CHECKING:
    from .config import Settings

ENV = "MYTHLINE_STATE"
SCHEMES = ("postgresql", "postgres")
CONNECT_TIMEOUT = 10  # seconds: an unreachable server fails the run before anything is called
# Server-side keepalives for this session: a host that loses its network has its session
# (and so its run lock and its reservations' liveness) ended within about 30 seconds. The user
# timeout (ms) covers an answer the server was sending when the network went: its
# unacknowledged bytes keep keepalives from starting, and retransmissions last ~15 minutes.
KEEPALIVES = ("-c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 -c tcp_keepalives_count=3 "
              "-c tcp_user_timeout=30000")
# The same on this side: without them, a process cut off from the server waits on its dead
# socket for the kernel's retransmissions (about 15 minutes) before it learns that its session,
# and every lock of it, is gone. Keepalives cover a wait for an answer; the user timeout (ms)
# covers a query sent into the void, whose unacknowledged bytes keep keepalives from starting.
CLIENT_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3,
                     "tcp_user_timeout": 30_000}


def dsn_of(settings: Settings | None) -> str | None:
    """The PostgreSQL DSN in use, or None for the state home's files."""
    value = os.environ.get(ENV)
    if value is None and settings is not None:
        # The settings cache has no ``config``: it is never written for a config with a state.
        value = getattr(getattr(settings, "config", None), "state", None)
    value = (value or "").strip()
    if not value or value == "file":
        return None
    scheme = value.split("://", 1)[0].lower() if "://" in value else ""
    if scheme not in SCHEMES:
        where = ENV if os.environ.get(ENV) else "state in mythline.toml"
        raise StateUnavailable(f"{where} is not a PostgreSQL URL ({describe(value)}); write "
                               'postgresql://USER@HOST:5432/DATABASE, or leave it unset for the state home\'s files')
    return value


def dsn_for(config: Path | None) -> str | None:
    """``dsn_of`` for a command that needs nothing else from the config (the store's reads):
    ``MYTHLINE_STATE``, else ``state`` in the config file the full path would read, taken
    from its TOML without validating the rest (no pydantic at start-up)."""
    if os.environ.get(ENV) is not None:
        return dsn_of(None)
    from . import paths
    from .errors import ConfigError

    source = paths.locate_config(config)[0]
    if source is None:
        return None
    import tomllib
    from types import SimpleNamespace

    try:
        value = tomllib.loads(source.read_text(encoding="utf-8")).get("state")
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML ({exc})", path=source) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot be read ({exc})", path=source) from None
    if value is not None and not isinstance(value, str):
        raise ConfigError("must be a string: postgresql://USER@HOST:5432/DATABASE, or unset for the state "
                          "home's files", path=source, key="state")
    return dsn_of(SimpleNamespace(config=SimpleNamespace(state=value)))  # type: ignore[arg-type]


def passwords_of(dsn: str) -> set[str]:
    """The DSN's passwords (the URL's, ``password=``, ``sslpassword=``), as written and decoded.

    Parsed by hand, not by ``urlsplit``: a DSN it cannot read (an unclosed ``[``) is exactly
    one that libpq quotes back whole in its error."""
    rest = dsn.split("://", 1)[1] if "://" in dsn else dsn
    netloc, _, after = rest.partition("/")
    netloc, _, query = netloc.partition("?")
    query = query or after.partition("?")[2]
    found = []
    userinfo = netloc.rpartition("@")[0]
    if ":" in userinfo:
        found.append(userinfo.split(":", 1)[1])
    for pair in query.split("&"):
        key, _, val = pair.partition("=")
        if key in ("password", "sslpassword"):
            found.append(val)
    return {form for raw in found if raw for form in (raw, unquote(raw)) if form}


def describe(dsn: str) -> str:
    """``dsn`` without its password and query: scheme://user@host:port/database."""
    try:
        parts = urlsplit(dsn)
        host = parts.hostname or ""
        if parts.port:
            host += f":{parts.port}"
    except ValueError:
        return "[unreadable DSN]"
    if "://" not in dsn:
        return "[not a URL]"
    user = f"{parts.username}@" if parts.username else ""
    # A libpq service's name is no secret, and without it "postgresql:///" names nothing.
    service = [p for p in parts.query.split("&") if p.startswith("service=")]
    return f"{parts.scheme}://{user}{host}{parts.path}" + (f"?{service[0]}" if service else "")


def _clean(dsn: str, text: str) -> str:
    """A driver's message as one line, without the DSN's password."""
    secrets = sorted(passwords_of(dsn), key=len, reverse=True)
    # The driver's first line says what failed; the rest is libpq's advice on how to look.
    lines = [part for part in str(text).splitlines() if part.strip()]
    line = " ".join(lines[0].split()) if lines else ""
    line = line.replace(dsn, describe(dsn))
    for secret in secrets:
        line = line.replace(secret, "[redacted]")
    return str(redact(line, tuple(secrets)))


def _driver() -> Any:
    try:
        import psycopg
    except ImportError:
        raise StateUnavailable("the state is in PostgreSQL but its driver is not installed; run: "
                               "pip install 'psycopg[binary]' (or unset MYTHLINE_STATE / state)") from None
    return psycopg


class Session:
    """This process's one connection to the shared state, and the locks it holds."""

    def __init__(self, dsn: str) -> None:
        psycopg = _driver()
        self.dsn = dsn
        self.where = describe(dsn)
        self.host = os.environ.get("MYTHLINE_HOST") or socket.gethostname()
        self.holder = _secrets.randbits(62) + 1
        self.offset = timedelta(0)
        self._run_locks: set[str] = set()
        try:
            from psycopg.conninfo import conninfo_to_dict

            from .ledger.storage import LOCK_TIMEOUT

            options = conninfo_to_dict(dsn).get("options") or ""
            # A ledger access waits for the row as long as for the file lock, and a session that
            # sits in a transaction that long is stuck (an access takes milliseconds; a frozen
            # process's kernel still answers keepalives): the server ends it, freeing the row.
            held = f"-c lock_timeout={LOCK_TIMEOUT:.0f}s -c idle_in_transaction_session_timeout={LOCK_TIMEOUT:.0f}s"
            self.conn = psycopg.connect(dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT,
                                        application_name=f"mythline {self.host} {os.getpid()}",
                                        options=f"{options} {KEEPALIVES} {held}".strip(), **CLIENT_KEEPALIVES)
            row = self.conn.execute("SELECT pg_advisory_lock(%s), clock_timestamp()", (self.holder,)).fetchone()
        except psycopg.Error as exc:
            raise self.unavailable(exc) from None
        # The database's clock, not this host's: every host then ages reservations alike.
        self.offset = row[1] - datetime.now(UTC)
        from .ledger import schema

        schema.ensure(self)

    def unavailable(self, exc: BaseException, *, during: str = "") -> StateUnavailable:
        reason = _clean(self.dsn, str(exc)) or type(exc).__name__
        if during:
            return StateUnavailable(f"lost the shared state at {self.where} {during} ({reason}); what was "
                                    "done before is kept, as after a crash, and the next run resumes")
        return StateUnavailable(f"the shared state at {self.where} is unreachable or refused the connection "
                                f"({reason}); nothing was called. Check that PostgreSQL is up and the DSN in "
                                f"{ENV} or state in mythline.toml (see docs/many-hosts.md)")

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def live_holders(self) -> set[int]:
        """The holder keys of every process connected to this database now."""
        rows = self.conn.execute(
            "SELECT (classid::bigint << 32) | objid::bigint FROM pg_locks WHERE locktype = 'advisory' "
            "AND objsubid = 1 AND granted AND database = (SELECT oid FROM pg_database "
            "WHERE datname = current_database())").fetchall()
        return {int(r[0]) for r in rows}

    def try_run_lock(self, agent: str) -> bool:
        psycopg = _driver()
        try:
            got = self.conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))",
                                    (f"mythline run {agent}",)).fetchone()[0]
        except psycopg.Error as exc:
            raise self.unavailable(exc, during="while taking the run lock") from None
        if got:
            self._run_locks.add(agent)
        return bool(got)

    def release_run_lock(self, agent: str) -> None:
        if agent not in self._run_locks:
            return
        self._run_locks.discard(agent)
        try:
            self.conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (f"mythline run {agent}",))
        except Exception:  # noqa: BLE001 - a lost session has released it already
            pass

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:  # noqa: BLE001
            pass


_sessions: dict[str, Session] = {}


def session(dsn: str) -> Session:
    """The process's session for ``dsn``, opened on first use."""
    found = _sessions.get(dsn)
    if found is None or found.conn.closed:
        if found is not None:
            # The connection was lost: its locks are gone, so this process's reservations are
            # reclaimed and its run lock may be someone else's. Carrying on would break both.
            raise StateUnavailable(f"lost the shared state at {found.where} mid-run; what was done before is "
                                   "kept, as after a crash, and the next run resumes")
        found = _sessions[dsn] = Session(dsn)
    return found


def forget_sessions() -> None:
    """Close every session (tests, and a process that forks)."""
    for s in list(_sessions.values()):
        s.close()
    _sessions.clear()


def store_for(settings: Settings, *, now: Callable[[], datetime], lock_timeout: float) -> Any:
    """The ledger's backend for ``settings``: a ``FileStore``, or a ``PgStore`` on its DSN."""
    dsn = dsn_of(settings)
    if dsn is None:
        from .ledger.storage import FileStore

        return FileStore(now=now, lock_timeout=lock_timeout)
    from .ledger.postgres import PgStore

    return PgStore(session(dsn), lock_timeout=lock_timeout)


@contextmanager
def run_lock(settings: Settings, agent: str, path: Path) -> Iterator[None]:
    """One run of ``agent`` at a time: the lock on the file ``path`` (``locking``), or, on
    PostgreSQL, a session advisory lock that every host sees. ``AlreadyRunning`` when it is held."""
    dsn = dsn_of(settings)
    if dsn is None:
        from . import locking

        try:
            held = locking.acquire(path, 0)
        except locking.LockTimeout:
            raise AlreadyRunning(agent) from None
        try:
            yield
        finally:
            held.release()
        return
    s = session(dsn)
    if not s.try_run_lock(agent):
        raise AlreadyRunning(agent)
    try:
        yield
    finally:
        s.release_run_lock(agent)
