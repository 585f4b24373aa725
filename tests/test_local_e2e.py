"""End to end against a real llama.cpp-family server (slow, opt-in: python -m pytest -m slow).

Either point it at a server that is running:
    MYTHLINE_E2E_LOCAL_URL=http://127.0.0.1:8080/v1 MYTHLINE_E2E_LOCAL_MODEL=qwen2.5-0.5b
or give it a GGUF file and have llama-cpp-python installed (pip install 'llama-cpp-python[server]'):
    MYTHLINE_E2E_GGUF=/path/to/model.gguf
The config is the one `mythline init --base-url` writes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import mythline

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/models", timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture
def local_server() -> Iterator[tuple[str, str]]:
    url, model = os.environ.get("MYTHLINE_E2E_LOCAL_URL"), os.environ.get("MYTHLINE_E2E_LOCAL_MODEL", "local")
    if url:
        if not _up(url.rstrip("/")):
            pytest.skip(f"MYTHLINE_E2E_LOCAL_URL={url} does not answer GET /models")
        yield url.rstrip("/"), model
        return
    gguf = os.environ.get("MYTHLINE_E2E_GGUF")
    if not gguf:
        pytest.skip("no local model server: set MYTHLINE_E2E_LOCAL_URL (a running llama.cpp-family server) or "
                    "MYTHLINE_E2E_GGUF (a GGUF file, with llama-cpp-python[server] installed)")
    try:
        import llama_cpp.server  # noqa: F401
    except ImportError:
        pytest.skip("MYTHLINE_E2E_GGUF is set but llama-cpp-python[server] is not installed")
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", gguf, "--host", "127.0.0.1",
                             "--port", str(port), "--n_ctx", "8192"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 300
        while not _up(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("llama_cpp.server did not start")
            time.sleep(1)
        yield url, Path(gguf).stem
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_real_local_server_with_the_config_init_writes(local_server, home, tmp_path) -> None:
    url, model = local_server
    path = tmp_path / "mythline.toml"
    assert mythline("init", "--path", str(path), "--base-url", url, "--model", model).returncode == 0
    env = {"MYTHLINE_CONFIG": str(path)}
    probe = mythline("doctor", "--probe", "--json", env=env, timeout=3600)
    checks = {c["name"]: c for c in json.loads(probe.stdout)["checks"]}
    assert checks["probe"]["status"] == "ok", checks["probe"]
    run = mythline("run", "world-npcs", env=env, timeout=4 * 3600)
    assert run.returncode == 0, run.stderr  # stored, or a rejected attempt with feedback: never a failed run
    facts = json.loads((home / "providers.json").read_text())
    assert any(e.get("structured_outputs") for e in facts.values())
    breaker = home / "breaker.json"
    assert not breaker.exists() or all(not e.get("failures") for e in json.loads(breaker.read_text()).values())
    assert tomllib.loads(path.read_text())["provider"]["api_key_env"] == ""
