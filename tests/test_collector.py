"""The garbage collector around a run: off while it starts, on (start-up frozen) for its work."""

from __future__ import annotations

import gc
import json
import subprocess
import sys

import pytest

from mythline_cli import collector

from helpers import lore_responder

AGENT = "world-npcs"

# The real command, as cron starts it, with every LLM call noting the collector's state.
PROBE = """
import atexit, gc, json, runpy, sys
import mythline_cli.llm as llm
seen = []
chat = llm.LLMClient.chat
def noting(self, *args, **kwargs):
    seen.append({"enabled": gc.isenabled(), "frozen": gc.get_freeze_count()})
    return chat(self, *args, **kwargs)
llm.LLMClient.chat = noting
atexit.register(lambda: sys.stderr.write("PROBE " + json.dumps({"calls": seen, "enabled": gc.isenabled()}) + "\\n"))
sys.argv = ["mythline", *sys.argv[1:]]
runpy.run_module("mythline_cli", run_name="__main__")
"""


@pytest.fixture
def restore_gc():
    was = gc.isenabled()
    yield
    gc.unfreeze()
    (gc.enable if was else gc.disable)()


def probe(*args: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=60)
    line = next(ln for ln in proc.stderr.splitlines() if ln.startswith("PROBE "))
    return proc, json.loads(line[len("PROBE "):])


def test_paused_switches_the_collector_off_until_resumed_then_freezes_what_exists(restore_gc) -> None:
    gc.enable()
    with collector.paused():
        assert not gc.isenabled()
        before = gc.get_freeze_count()
        collector.resume()
        assert gc.isenabled()
        assert gc.get_freeze_count() > before
        collector.resume()  # a second resume changes nothing
        assert gc.isenabled()
    assert gc.isenabled()


def test_the_end_of_the_block_resumes_when_nothing_else_did(restore_gc) -> None:
    gc.enable()
    with pytest.raises(RuntimeError), collector.paused():
        raise RuntimeError("the run failed before its client existed")
    assert gc.isenabled()


def test_a_collector_already_off_stays_off(restore_gc) -> None:
    gc.disable()
    with collector.paused():
        collector.resume()
        assert not gc.isenabled()
    assert not gc.isenabled()


def test_a_run_calls_the_llm_with_the_collector_on_and_start_up_frozen(home, config, llm_server) -> None:
    llm_server.responder = lore_responder(AGENT)
    proc, seen = probe("run", AGENT)
    assert proc.returncode == 0, proc.stderr
    assert len(seen["calls"]) == 2  # research and audit
    assert all(c["enabled"] and c["frozen"] > 10_000 for c in seen["calls"])
    assert seen["enabled"]


def test_a_run_with_nothing_to_call_ends_with_the_collector_on(home, config, llm_server) -> None:
    config(sections={f"agents.{AGENT}": {"topics": []}})
    proc, seen = probe("run", AGENT)
    assert proc.returncode == 0, proc.stderr
    assert seen["calls"] == [] and seen["enabled"]
    assert not llm_server.requests
