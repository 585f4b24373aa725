"""A real PostgreSQL for the tests: a throwaway cluster in a temp dir, or ``MYTHLINE_TEST_PG``.

``pg_server`` (session) is a DSN of a server the tests may create databases on: the one in
``MYTHLINE_TEST_PG`` when it is set, else a cluster this session starts with the Debian
binaries (as the user ``postgres`` via ``runuser`` when running as root: PostgreSQL refuses
to run as root) and stops at its end. ``pg_dsn`` is a fresh database per test, so that its
tables and advisory locks (which are per database) are its own; its DSN carries TEST_KEY as
the password (the cluster trusts loopback, so it is never checked, only never leaked).

Where PostgreSQL is absent the tests that use them skip, saying so; with
``MYTHLINE_REQUIRE_PG=1`` (set by .ci/run) they fail instead.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import pytest

from helpers import TEST_KEY


def _bindir() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return os.path.dirname(found[-1])
    initdb = shutil.which("initdb")
    return os.path.dirname(initdb) if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _absent(reason: str) -> None:
    if os.environ.get("MYTHLINE_REQUIRE_PG") == "1":
        pytest.fail(f"PostgreSQL is required here (MYTHLINE_REQUIRE_PG=1) but {reason}")
    pytest.skip(f"no PostgreSQL: {reason}; install Debian's postgresql or set MYTHLINE_TEST_PG")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    given = os.environ.get("MYTHLINE_TEST_PG")
    if given:
        yield given
        return
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _absent("psycopg is not installed (pip install 'psycopg[binary]')")
    bindir = _bindir()
    if bindir is None:
        _absent("initdb was not found")
    root = os.geteuid() == 0
    as_user = ["runuser", "-u", "postgres", "--"] if root else []
    tmp = tempfile.mkdtemp(prefix="mythline-pg-")
    if root:
        shutil.chown(tmp, "postgres")
    data, port = os.path.join(tmp, "data"), _free_port()
    run: dict[str, Any] = {"capture_output": True, "text": True, "timeout": 120}
    try:
        done = subprocess.run([*as_user, f"{bindir}/initdb", "-D", data, "-A", "trust", "-U", "mythline",
                               "--no-sync"], **run)
        if done.returncode != 0:
            _absent(f"initdb failed: {done.stderr.strip()[-300:]}")
        # fsync off: a throwaway cluster; the crash tests kill clients, never the server. The
        # benchmark turns it on (MYTHLINE_TEST_PG_FSYNC=on), as a real server has it.
        fsync = os.environ.get("MYTHLINE_TEST_PG_FSYNC", "off")
        opts = f"-k {tmp} -p {port} -c listen_addresses=127.0.0.1 -c fsync={fsync} -c max_connections=300"
        done = subprocess.run([*as_user, f"{bindir}/pg_ctl", "-D", data, "-o", opts, "-l",
                               os.path.join(tmp, "log"), "-w", "start"], **run)
        if done.returncode != 0:
            _absent(f"the cluster did not start: {done.stderr.strip()[-300:]}")
        yield f"postgresql://mythline@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(tmp, ignore_errors=True)


def with_password(dsn: str, password: str) -> str:
    parts = urlsplit(dsn)
    user = parts.username or "mythline"
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, f"{user}:{quote(password, safe='')}@{host}", parts.path, parts.query, ""))


def database(server: str, name: str) -> str:
    parts = urlsplit(server)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, ""))


@pytest.fixture
def pg_dsn(pg_server: str) -> Iterator[str]:
    """A new, empty database for one test; its DSN has TEST_KEY as the password."""
    import psycopg

    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield with_password(database(pg_server, name), TEST_KEY)
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _host() -> str:
    return os.environ.get("MYTHLINE_HOST") or socket.gethostname()


class Backend:
    """The ledger's backend a test runs on, and its state read straight from where it lives
    (the state home's files, or the database's tables), not through the code under test."""

    def __init__(self, name: str, dsn: str | None) -> None:
        self.name = name
        self.dsn = dsn

    @property
    def pg(self) -> bool:
        return self.dsn is not None

    def state(self, home: Any = None) -> dict[str, Any]:
        """The ledger as stored (``ledger.json`` of ``home`` or of this test's state home, or the
        ledger row)."""
        if self.dsn is None:
            import json
            from pathlib import Path

            from mythline_cli import paths

            path = Path(home) / "ledger.json" if home is not None else paths.ledger()
            return json.loads(path.read_text(encoding="utf-8"))  # type: ignore[no-any-return]
        import psycopg

        with psycopg.connect(self.dsn) as conn:
            return conn.execute("SELECT state FROM mythline_ledger WHERE id = 1").fetchone()[0]  # type: ignore[index,no-any-return]

    def gone(self) -> None:
        """Wait until the server has ended the session of every other process (a killed
        process's socket is closed at once, but its backend ends a moment later); files: no wait."""
        if self.dsn is None:
            return
        import psycopg

        from helpers import wait_for

        def ended() -> bool:
            with psycopg.connect(self.dsn) as conn:  # type: ignore[arg-type]
                row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                   "AND application_name LIKE 'mythline %%' AND pid <> pg_backend_pid() "
                                   "AND application_name <> %s", (f"mythline {_host()} {os.getpid()}",)).fetchone()
                return row is not None and row[0] == 0

        wait_for(ended, timeout=30)

    def records(self, home: Any = None) -> int:
        """How many records are stored (record files under ``home``'s or this test's store, or
        rows of the shared store)."""
        if self.dsn is None:
            from pathlib import Path

            from mythline_cli import paths

            root = Path(home) / "store" if home is not None else paths.store_dir()
            return len(list(root.rglob("*.json")))
        import psycopg

        with psycopg.connect(self.dsn) as conn:
            return int(conn.execute("SELECT count(*) FROM mythline_records").fetchone()[0])  # type: ignore[index]

    def journal(self) -> list[dict[str, Any]]:
        """Every journal entry, in order."""
        if self.dsn is None:
            from mythline_cli import files, paths

            return list(files.iter_jsonl(paths.ledger_history()))
        import psycopg

        with psycopg.connect(self.dsn) as conn:
            return [row[0] for row in conn.execute("SELECT entry FROM mythline_journal ORDER BY seq")]


@pytest.fixture(params=["file", "postgresql"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Backend]:
    """The money, crash and concurrency tests that use it run on both ledger backends: the
    state home's files, and a fresh database of the session's PostgreSQL (``MYTHLINE_STATE``
    is set, so every process the test starts uses it too)."""
    if request.param == "file":
        monkeypatch.delenv("MYTHLINE_STATE", raising=False)
        yield Backend("file", None)
        return
    dsn = request.getfixturevalue("pg_dsn")
    monkeypatch.setenv("MYTHLINE_STATE", dsn)
    from mythline_cli import state

    try:
        yield Backend("postgresql", dsn)
    finally:
        state.forget_sessions()


def host(tmp_path: Path, name: str, dsn: str) -> tuple[Path, dict[str, str]]:
    """A "host": its own working dir and state home, its own name, only the DSN in common."""
    root = tmp_path / name
    (root / "work").mkdir(parents=True, exist_ok=True)
    return root / "work", {"MYTHLINE_STATE": dsn, "MYTHLINE_HOST": name, "MYTHLINE_HOME": str(root / "home")}
