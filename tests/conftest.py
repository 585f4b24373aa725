"""Every test gets its own state home, user home, no user config, no keys, and a scripted LLM
server; tests/home_guard.py keeps the whole session out of the real user home."""

from __future__ import annotations

import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import FAKE_CRONTAB, KEY_ENV, TEST_KEY, write_config
from llm_server import ScriptedLLMServer

# home_guard: the session's HOME and XDG dirs are its own, and a write to the real ones fails it.
# pg: a real PostgreSQL for the shared-state tests (pg_server, pg_dsn).
pytest_plugins = ["home_guard", "pg", "pytester"]


@pytest.fixture(autouse=True)
def env_setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("MYTHLINE_HOME", str(home))
    # The user's home too: platformdirs, "~" in a config and a subprocess all derive from it.
    for var in ("HOME", "USERPROFILE"):
        monkeypatch.setenv(var, str(tmp_path / "user-home"))
    for var, name in (("XDG_CONFIG_HOME", "xdg-config"), ("XDG_DATA_HOME", "xdg-data"),
                      ("XDG_CACHE_HOME", "xdg-cache"), ("XDG_STATE_HOME", "xdg-state")):
        monkeypatch.setenv(var, str(tmp_path / name))
    for var in ("MYTHLINE_CONFIG", "MYTHLINE_MODEL", "MYTHLINE_BASE_URL", "OPENROUTER_API_KEY", KEY_ENV):
        monkeypatch.delenv(var, raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return home


@pytest.fixture(autouse=True)
def no_secret_leaks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fail any test after which the API key shows up in a file, a CLI result or captured output."""
    from typer.testing import CliRunner

    invoke = CliRunner.invoke

    def checked(self, *args: Any, **kwargs: Any):
        result = invoke(self, *args, **kwargs)
        for stream in ("stdout", "stderr"):
            try:
                text = getattr(result, stream)
            except ValueError:  # stderr not captured separately
                continue
            assert TEST_KEY not in text, f"the API key leaked to {stream}"
        return result

    monkeypatch.setattr(CliRunner, "invoke", checked)
    yield
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.stat().st_size < 50_000_000:
            assert TEST_KEY.encode() not in path.read_bytes(), f"the API key leaked into {path}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    for name, text in report.sections:
        if TEST_KEY in text:
            report.outcome = "failed"
            report.longrepr = f"the API key leaked into captured output ({name})"


@pytest.fixture
def home(env_setup: Path) -> Path:
    return env_setup


@pytest.fixture
def llm_server() -> Iterator[ScriptedLLMServer]:
    with ScriptedLLMServer() as server:
        yield server


@pytest.fixture
def config(tmp_path: Path, llm_server: ScriptedLLMServer, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    """Write a config for the scripted server; point MYTHLINE_CONFIG at it; set the key."""
    monkeypatch.setenv(KEY_ENV, TEST_KEY)

    def make(**kwargs: Any) -> Path:
        path = write_config(tmp_path / "mythline.toml", base_url=llm_server.base_url, **kwargs)
        monkeypatch.setenv("MYTHLINE_CONFIG", str(path))
        return path

    make()
    return make


@pytest.fixture
def fake_crontab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The table file the fake crontab program reads and writes."""
    folder = tmp_path / "fake-cron"
    folder.mkdir()
    program = folder / "crontab"
    program.write_text(FAKE_CRONTAB, encoding="utf-8")
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("MYTHLINE_CRONTAB", str(program))
    return folder / "table"
