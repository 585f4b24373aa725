"""Every test gets its own state home, user home, no user config, no keys, and a scripted LLM
server; tests/home_guard.py keeps the whole session out of the real user home."""

from __future__ import annotations

import json
import os
import stat
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from factories import record_json
from llm_server import Reply, ScriptedLLMServer, completion

TEST_KEY = "sk-test-DO-NOT-LEAK-0123456789abcdef"
KEY_ENV = "MYTHLINE_TEST_KEY"
MODEL = "test/model"

# home_guard: the session's HOME and XDG dirs are its own, and a write to the real ones fails it.
pytest_plugins = ["home_guard", "pytester"]


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


def toml_value(value: Any) -> str:
    return json.dumps(value)


def write_config(path: Path, *, base_url: str, sections: dict[str, dict[str, Any]] | None = None,
                 provider: dict[str, Any] | None = None) -> Path:
    """A config that talks to the scripted server with a known price and fast retries."""
    prov = {"base_url": base_url, "model": MODEL, "api_key_env": KEY_ENV, "tokenizer": "chars",
            "timeout": "5s", "max_attempts": 3, "max_retry_wait": "2s", "max_retry_time": "20s",
            "max_output_tokens": 500}
    prov.update(provider or {})
    lines = ["[provider]"] + [f"{k} = {toml_value(v)}" for k, v in prov.items()]
    lines += ['[provider.prices."test/model"]', "input_per_million = 1.0", "output_per_million = 2.0"]
    for name, values in (sections or {}).items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


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


def is_audit(request: dict[str, Any]) -> bool:
    fmt = (request.get("body") or {}).get("response_format") or {}
    return (fmt.get("json_schema") or {}).get("name") == "audit"


def topic_of(request: dict[str, Any]) -> str:
    text = request["body"]["messages"][-1]["content"]
    return text.split("**", 2)[1]


def lore_responder(agent: str, *, score: float = 0.9, issues: list[str] | None = None,
                   cost: float | None = None) -> Callable[[dict[str, Any]], Reply]:
    """Answers research prompts with a valid record and audit prompts with ``score``."""
    def respond(request: dict[str, Any]) -> Reply:
        if is_audit(request):
            return completion(json.dumps({"score": score, "issues": issues or []}), prompt_tokens=300,
                              completion_tokens=20, cost=cost, model=MODEL)
        return completion(record_json(agent, topic_of(request)), prompt_tokens=400, completion_tokens=200,
                          cost=cost, model=MODEL)
    return respond


def mythline(*args: str, env: dict[str, str] | None = None, timeout: float = 60, **kwargs: Any):
    """Run the real CLI in a subprocess, as cron would."""
    import subprocess

    full_env = {**os.environ, **(env or {})}
    result = subprocess.run([sys.executable, "-m", "mythline_cli", *args], capture_output=True, text=True,
                            env=full_env, timeout=timeout, **kwargs)
    assert TEST_KEY not in (result.stdout or "") + (result.stderr or ""), "the API key leaked to the output"
    return result


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll until ``predicate()`` holds (for watching a real subprocess), else fail."""
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError("condition not reached in time")


def research_recorded(home: Path, agent: str = "world-npcs") -> bool:
    """Whether the agent's checkpoint holds a recorded research step for its current attempt."""
    try:
        ck = json.loads((home / "agents" / agent / "checkpoint.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    return "research" in ((ck.get("current") or {}).get("steps") or {})


FAKE_CRONTAB = """#!/bin/sh
# A stand-in for crontab(1): -l prints the stored table, - stores stdin.
store="$(dirname "$0")/table"
case "$1" in
  -l) if [ -f "$store" ]; then cat "$store"; else echo "no crontab for $(id -un)" >&2; exit 1; fi ;;
  -) cat > "$store" ;;
  *) echo "fake crontab: unsupported $*" >&2; exit 2 ;;
esac
"""


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
