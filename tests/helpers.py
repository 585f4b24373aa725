"""Helpers the tests import: the test key, config writing, the scripted responder, the real CLI
in a subprocess. (Fixtures live in conftest.py.)"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from factories import record_json
from llm_server import Reply, completion

TEST_KEY = "sk-test-DO-NOT-LEAK-0123456789abcdef"
KEY_ENV = "MYTHLINE_TEST_KEY"
MODEL = "test/model"


def toml_value(value: Any) -> str:
    return json.dumps(value)


def write_config(path: Path, *, base_url: str, sections: dict[str, dict[str, Any]] | None = None,
                 provider: dict[str, Any] | None = None) -> Path:
    """A config that talks to the scripted server with a known price and fast retries."""
    prov = {"base_url": base_url, "model": MODEL, "api_key_env": KEY_ENV, "tokenizer": "chars",
            "timeout": "5s", "max_attempts": 3, "max_retry_wait": "2s", "max_retry_time": "20s",
            "max_output_tokens": 500, "local": False}
    prov.update(provider or {})
    lines = ["[provider]"] + [f"{k} = {toml_value(v)}" for k, v in prov.items()]
    lines += ['[provider.prices."test/model"]', "input_per_million = 1.0", "output_per_million = 2.0"]
    sections = {name: dict(values) for name, values in (sections or {}).items()}
    # No test reaches the internet: agents research ungrounded unless a test gives them sources
    # (on tests/source_server.py, or local files).
    sections.setdefault("defaults", {}).setdefault("sources", [])
    for name, values in sections.items():
        lines.append(f"[{name}]")
        # A key that is not a bare TOML key (a domain such as "127.0.0.1") is quoted.
        lines += [f"{k if k.replace('_', '').replace('-', '').isalnum() else toml_value(k)} = {toml_value(v)}"
                  for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


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


def delayed(respond: Callable[[dict[str, Any]], Reply], seconds: float,
            only: Callable[[dict[str, Any]], bool] = lambda request: True) -> Callable[[dict[str, Any]], Reply]:
    """``respond``, with its answers held back ``seconds`` (only those for which ``only`` holds):
    a call in flight, for a signal or a second process to meet."""
    def respond_later(request: dict[str, Any]) -> Reply:
        reply = respond(request)
        if only(request):
            reply.delay = seconds
        return reply
    return respond_later


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


def write_tiktoken_cache(folder: Path) -> Path:
    """tiktoken's cache holding its o200k_base file, rebuilt byte for byte from bpe-openai's
    copy of the same vocabulary (the hash check proves it is the published file)."""
    import base64
    import hashlib
    import warnings

    from mythline_cli import pricing

    with warnings.catch_warnings():  # bpe-openai reads its data with a deprecated importlib call
        warnings.simplefilter("ignore", DeprecationWarning)
        import bpe_openai

        enc = bpe_openai.get_encoding("o200k_base")
    ordinary = [(rank, raw) for rank, raw in enumerate(enc.token_byte_values()) if raw and rank < 199_998]
    data = "".join(f"{base64.b64encode(raw).decode()} {rank}\n" for rank, raw in ordinary).encode()
    assert hashlib.sha256(data).hexdigest() == pricing.O200K_SHA256
    folder.mkdir(parents=True, exist_ok=True)
    (folder / hashlib.sha1(pricing.O200K_URL.encode()).hexdigest()).write_bytes(data)
    return folder


_EXCERPT = None


def given_sources(request: dict[str, Any]) -> list[dict[str, Any]]:
    """The numbered sources a research or audit prompt shows: number, title, tier, URL, text."""
    import re

    global _EXCERPT
    if _EXCERPT is None:
        _EXCERPT = re.compile(r"\[(\d+)\] (.*?) \((\w+) source\)\nURL: (\S+)\n<<<\n(.*?)\n>>>", re.S)
    text = request["body"]["messages"][-1]["content"]
    return [{"n": int(n), "title": t, "tier": tier, "url": u, "text": body}
            for n, t, tier, u, body in _EXCERPT.findall(text)]


def faithful_record(agent: str, request: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A record that cites every source the prompt gives and quotes them word for word, for
    the summary and each key field of the built-in agent."""
    from mythline_cli.fleet.topics import KEY_FIELDS

    from factories import record

    srcs = given_sources(request)
    fields = ("summary", *KEY_FIELDS.get(agent, ()))
    quotes = []
    for i, field in enumerate(fields):
        src = srcs[i % len(srcs)]
        body = [line for line in src["text"].splitlines() if len(line) > 60][0]
        quotes.append({"field": field, "source": src["n"], "quote": body.split(". ")[0]})
    rec = record(agent, topic_of(request), confidence=0.95,
                 sources=[{"source": s["n"], "url": s["url"]} for s in srcs], quotes=quotes)
    rec.update(changes)
    return rec


def grounded_responder(agent: str, *, score: float = 0.9) -> Callable[[dict[str, Any]], Reply]:
    """Answers research prompts with a record that quotes its given sources faithfully."""
    def respond(request: dict[str, Any]) -> Reply:
        if is_audit(request):
            return completion(json.dumps({"score": score, "issues": []}), prompt_tokens=300,
                              completion_tokens=20, model=MODEL)
        return completion(json.dumps(faithful_record(agent, request)), prompt_tokens=900, completion_tokens=300,
                          model=MODEL)
    return respond


def blocked_waiters(path: Path) -> int:
    """Requests queued in the kernel on ``path``'s flock (the "->" lines of /proc/locks): a
    process is then blocked waiting for it, not about to be."""
    st = path.stat()
    ident = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    with open("/proc/locks") as fh:
        return sum(1 for line in fh if "->" in line and ident in line)
