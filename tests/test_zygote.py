"""The sweeps' fork server runs a command as a fresh process would: same output, same exit
status, its own environment and directory, and a real SIGKILL reported as subprocess does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from helpers import lore_responder
from sweeps import AGENT, launch, same_writes
from zygote import Zygotes

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="fork is POSIX")


def test_a_forked_command_answers_as_a_fresh_process_does(tmp_path, config):
    fresh = subprocess.run([sys.executable, "-m", "mythline_cli", "run", AGENT, "--dry-run", "--json"],
                           capture_output=True, text=True, timeout=120)
    with Zygotes(1) as zygotes:
        forked = zygotes.run(["run", AGENT, "--dry-run", "--json"], env=dict(os.environ))
        # Its own environment and directory, not the server's.
        other = tmp_path / "elsewhere"
        other.mkdir()
        moved = zygotes.run(["run", AGENT, "--dry-run"], env={**os.environ, "MYTHLINE_CONFIG": str(other / "none.toml")},
                            cwd=other)
    assert (forked.returncode, forked.stdout, forked.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr)
    assert fresh.returncode == 0 and AGENT in fresh.stdout
    assert moved.returncode == 2 and "none.toml" in moved.stderr


def test_a_killed_child_is_reported_as_subprocess_reports_it(tmp_path, config, llm_server):
    llm_server.responder = lore_responder(AGENT)
    with Zygotes(1) as zygotes:
        killed = launch(3, tmp_path / "k.log", tmp_path / "k", zygotes=zygotes)
        clean = launch(0, tmp_path / "forked.log", tmp_path / "forked", zygotes=zygotes)
    fresh = launch(0, tmp_path / "fresh.log", tmp_path / "fresh")
    assert killed.returncode == -signal.SIGKILL
    assert len((tmp_path / "k.log").read_text().splitlines()) == 3
    assert clean.returncode == fresh.returncode == 0
    assert not same_writes(tmp_path / "fresh.log", tmp_path / "forked.log")
    # The check can fail: a run that stopped early wrote less.
    assert same_writes(tmp_path / "fresh.log", tmp_path / "k.log")
