"""A pytest plugin: the suite never touches the real user home.

At configure time, before any test is collected, HOME, the XDG dirs and MYTHLINE_HOME point
into a directory of the session's own, so a test that undoes its own isolation
(``monkeypatch.undo()``), a subprocess that gets a bare environment, or code that asks
platformdirs, lands there and not in ``~/.local/share/mythline``. Two checks make it loud:

- after every test, the session's own directory must still be empty: a file there means the
  test left its per-test isolation (the test fails at teardown, naming the file);
- at the end of the session, Mythline's real state, config and cache dirs (as they were
  before the session changed the environment) must be exactly as they were (the session
  fails, naming each path).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

APP = "mythline"
# What the session points elsewhere. USERPROFILE is HOME on Windows.
HOME_VARS = ("HOME", "USERPROFILE")
XDG_VARS = ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME")
SECRET_VARS = ("MYTHLINE_CONFIG", "MYTHLINE_MODEL", "MYTHLINE_BASE_URL")

Snapshot = dict[str, tuple[int, int]]


def real_roots() -> list[Path]:
    """Where Mythline keeps a user's state, config and cache, read from the environment the
    suite was started in (call it before ``isolate``)."""
    home = Path(os.path.expanduser("~"))
    roots = [home / ".local" / "share" / APP, home / ".config" / APP, home / ".cache" / APP,
             home / ".local" / "state" / APP, home / f".{APP}"]
    try:
        import platformdirs

        for name in ("user_data_dir", "user_config_dir", "user_cache_dir", "user_state_dir", "user_log_dir"):
            roots.append(Path(getattr(platformdirs, name)(APP, appauthor=False)))
    except ImportError:  # pragma: no cover - platformdirs is a dependency of mythline
        pass
    if os.environ.get("MYTHLINE_HOME"):
        roots.append(Path(os.environ["MYTHLINE_HOME"]).expanduser())
    return sorted(set(roots))


def snapshot(roots: list[Path]) -> Snapshot:
    """Every file and folder under ``roots`` with its size and modification time."""
    found: Snapshot = {}
    for root in roots:
        if not root.exists():
            continue
        found[str(root)] = (0, 0)
        for folder, dirs, names in os.walk(root):
            for name in dirs + names:
                path = os.path.join(folder, name)
                try:
                    st = os.lstat(path)
                except OSError:
                    continue
                found[path] = (st.st_size, st.st_mtime_ns) if name in names else (0, 0)
    return found


def changes(before: Snapshot, after: Snapshot) -> list[str]:
    """``path (created|changed|removed)`` for every difference, sorted."""
    out = [f"{p} (created)" for p in after.keys() - before.keys()]
    out += [f"{p} (removed)" for p in before.keys() - after.keys()]
    out += [f"{p} (changed)" for p in before.keys() & after.keys() if before[p] != after[p]]
    return sorted(out)


def isolate(root: Path) -> dict[str, str]:
    """Point HOME, the XDG dirs and MYTHLINE_HOME into ``root``; return the new values."""
    values = {var: str(root / "home") for var in HOME_VARS}
    values |= {var: str(root / var.lower()) for var in XDG_VARS}
    values["MYTHLINE_HOME"] = str(root / "mythline-home")
    os.environ.update(values)
    for var in SECRET_VARS:
        os.environ.pop(var, None)
    return values


class Guard:
    """The session's own directory and the real dirs' snapshot."""

    def __init__(self) -> None:
        self.roots = real_roots()
        self.before = snapshot(self.roots)
        self.session = Path(tempfile.mkdtemp(prefix="mythline-test-session-"))
        self.env = isolate(self.session)

    def strays(self) -> list[Path]:
        """Files under the session's directory: each one a test that left its isolation."""
        return sorted(p for p in self.session.rglob("*") if not p.is_dir())


GUARD: Guard | None = None


def pytest_configure(config: pytest.Config) -> None:
    global GUARD
    if GUARD is None:
        GUARD = Guard()


@pytest.fixture(autouse=True)
def stays_in_its_tmp_dirs() -> Any:
    """Fail a test that wrote into the session's home: its per-test isolation was undone."""
    yield
    if GUARD is None:
        return
    strays = GUARD.strays()
    if strays:
        for path in strays:  # so only the test that wrote them fails
            path.unlink(missing_ok=True)
        pytest.fail("the test wrote outside its tmp dirs (its isolation was undone, e.g. by "
                    f"monkeypatch.undo()): {', '.join(map(str, strays))}", pytrace=False)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if GUARD is None:
        return
    found = changes(GUARD.before, snapshot(GUARD.roots))
    if found:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        lines = ["the test session wrote into the real user dirs:"] + [f"  {c}" for c in found]
        if reporter is not None:
            reporter.write_sep("!", "real user dirs touched", red=True)
            for line in lines:
                reporter.write_line(line, red=True)
        else:
            print("\n".join(lines))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_unconfigure(config: pytest.Config) -> None:
    global GUARD
    if GUARD is not None:
        shutil.rmtree(GUARD.session, ignore_errors=True)
        GUARD = None
