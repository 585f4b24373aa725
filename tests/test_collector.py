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

# The real command, as cron starts it, noting the collector's state around the moment the
# cycle builds its LLM client (the openai import) and at every LLM call. Importing
# mythline_cli.cycle here does not import the SDK: the client's module is imported by it.
PROBE = """
import atexit, gc, json, runpy, sys
import mythline_cli.cycle as cycle
seen = {"client": [], "calls": []}
client = cycle.Cycle.client
def noting(self):
    fresh = self._client is None
    before = (gc.isenabled(), gc.get_freeze_count(), "openai" in sys.modules)
    made = client(self)
    if fresh:
        seen["client"].append({"before": before, "after": (gc.isenabled(), gc.get_freeze_count())})
        chat = made.chat
        def chat_noting(*args, **kwargs):
            seen["calls"].append(gc.isenabled())
            return chat(*args, **kwargs)
        made.chat = chat_noting
    return made
cycle.Cycle.client = noting
atexit.register(lambda: sys.stderr.write("PROBE " + json.dumps({**seen, "enabled": gc.isenabled()}) + "\\n"))
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


def test_an_inner_block_leaves_the_outer_pause_alone(restore_gc) -> None:
    gc.enable()
    with collector.paused():
        with collector.paused():
            pass
        assert not gc.isenabled()
        collector.resume()  # start-up is over: that ends the outer pause
        assert gc.isenabled()
    assert gc.isenabled()


def test_a_collector_already_off_stays_off(restore_gc) -> None:
    gc.disable()
    with collector.paused():
        collector.resume()
        assert not gc.isenabled()
    assert not gc.isenabled()


def test_a_run_imports_the_sdk_with_the_collector_off_then_freezes_it_and_calls_with_it_on(
        home, config, llm_server) -> None:
    llm_server.responder = lore_responder(AGENT)
    proc, seen = probe("run", AGENT)
    assert proc.returncode == 0, proc.stderr
    (built,) = seen["client"]
    enabled_before, frozen_before, sdk_loaded = built["before"]
    assert not enabled_before and not sdk_loaded  # the SDK is imported while the collector is off
    enabled_after, frozen_after = built["after"]
    assert enabled_after and frozen_after - frozen_before > 10_000  # the SDK's objects, frozen
    assert seen["calls"] == [True, True]  # research and audit, with the collector on
    assert seen["enabled"]


def test_a_run_with_nothing_to_call_ends_with_the_collector_on(home, config, llm_server) -> None:
    config(sections={f"agents.{AGENT}": {"topics": []}})
    proc, seen = probe("run", AGENT)
    assert proc.returncode == 0, proc.stderr
    assert seen["client"] == [] and seen["calls"] == [] and seen["enabled"]
    assert not llm_server.requests
