"""``mythline run AGENT``, as the scheduler starts it, skips Typer and behaves exactly like
the full command line: same outcome, same exit codes, same one-line errors."""

from __future__ import annotations

import json

import pytest
from probe import Probe, run_main

from helpers import lore_responder, mythline

AGENT = "world-npcs"


# Accepted by `run` and ignored without --due: a way to send the same request down the full path.
FULL_PATH = ("--jobs", "2")


def probe(*args: str) -> tuple[Probe, str]:
    """The command's result and whether Typer and the CLI package were imported."""
    report = run_main(*args)
    return report, f"MODULES typer={'typer' in report.loaded} cli={'mythline_cli.cli' in report.loaded}"


def without_probe(stderr: str) -> str:
    return stderr.strip()


def test_a_scheduled_run_does_not_import_typer(home, config, llm_server):
    llm_server.responder = lore_responder(AGENT)
    proc, modules = probe("run", AGENT)
    assert proc.returncode == 0, proc.stderr
    assert modules == "MODULES typer=False cli=False"
    assert proc.stdout == ""  # quiet off a terminal, as cron wants
    assert len(list((home / "store" / "npcs").glob("*.json"))) == 1


@pytest.mark.parametrize("args", [
    ("run", AGENT, "--dry-run"),
    ("run", AGENT, "--help"),
    ("run", AGENT, "extra-word"),
    ("run",),
    ("--version",),
    ("run", AGENT, "--jobs", "2"),
])
def test_anything_else_takes_the_full_path(home, config, llm_server, args):
    llm_server.responder = lore_responder(AGENT)
    _, modules = probe(*args)
    assert modules.startswith("MODULES typer=True")


def test_run_due_takes_the_full_path(home, config, llm_server):
    # Every agent disabled: nothing is due, so no cycle runs; only the route is checked.
    config(sections={"defaults": {"enabled": False}})
    proc, modules = probe("run", "--due")
    assert proc.returncode == 0, proc.stderr
    assert modules.startswith("MODULES typer=True")
    assert llm_server.count() == 0


def test_both_paths_store_the_same_way_and_print_the_same_json(home, config, llm_server):
    llm_server.responder = lore_responder(AGENT)
    fast = mythline("run", AGENT, "--json")
    full = mythline("run", AGENT, "--json", *FULL_PATH)
    assert fast.returncode == full.returncode == 0, fast.stderr + full.stderr
    a, b = json.loads(fast.stdout), json.loads(full.stdout)
    assert a.keys() == b.keys()
    assert (a["agent"], a["exit_code"], a["result"]) == (b["agent"], b["exit_code"], b["result"]) == (AGENT, 0, "stored")
    assert a["topic"] != b["topic"]  # the second run took the next topic in the queue
    assert len(list((home / "store" / "npcs").glob("*.json"))) == 2


@pytest.mark.parametrize("args, code, words", [
    (("run", "world-dragons"), 2, "unknown agent 'world-dragons'"),
    (("run", AGENT, "--model", ""), 2, "--model"),
    (("run", AGENT, "--base-url", "ftp://example.invalid"), 2, "--base-url: must start with http:// or https://"),
])
def test_errors_are_the_same_one_line_on_both_paths(home, config, llm_server, args, code, words):
    fast = mythline(*args)
    full = mythline(*args, *FULL_PATH)
    assert fast.returncode == full.returncode == code
    assert fast.stderr == full.stderr
    assert fast.stderr.count("\n") == 1 and words in fast.stderr
    assert "Traceback" not in fast.stderr
    assert llm_server.count() == 0


def test_a_missing_key_is_the_same_one_line_on_both_paths(home, config, llm_server, monkeypatch):
    from helpers import KEY_ENV

    monkeypatch.delenv(KEY_ENV)
    fast = mythline("run", AGENT)
    full = mythline("run", AGENT, *FULL_PATH)
    assert fast.returncode == full.returncode == 2
    assert fast.stderr == full.stderr and KEY_ENV in fast.stderr


def test_options_before_and_after_the_agent(home, config, llm_server, tmp_path):
    llm_server.responder = lore_responder(AGENT)
    other = config()  # the same settings, given with --config instead of MYTHLINE_CONFIG
    proc, modules = probe("--config", str(other), "run", "--model=test/model", AGENT, "--force")
    assert proc.returncode == 0, proc.stderr
    assert modules == "MODULES typer=False cli=False"
    missing = tmp_path / "nowhere.toml"
    proc, modules = probe("--config", str(missing), "run", AGENT)
    assert proc.returncode == 2 and "no such file" in without_probe(proc.stderr)


def test_debug_shows_the_traceback_on_the_fast_path(home, config, llm_server):
    proc, modules = probe("--debug", "run", "world-dragons")
    assert modules == "MODULES typer=False cli=False"
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "UsageError" in proc.stderr
