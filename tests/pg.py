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
