"""A command line mythline cannot parse gets one line on stderr with the help to read, exit 2."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from mythline_cli.cli import app

from helpers import mythline

# (argv, the words the line must hold, the command whose help it points to)
CASES = {
    "unknown option": (["run", "--bogus"], "no such option: --bogus", "mythline run"),
    "unknown option after the agent": (["run", "world-npcs", "--json", "--bogus"], "no such option: --bogus",
                                       "mythline run"),
    "unknown command": (["bogus"], "no such command 'bogus'", "mythline"),
    "unknown subcommand": (["budget", "nope"], "no such command 'nope'", "mythline budget"),
    "bad number": (["run", "world-npcs", "--jobs", "x"], "invalid value for '--jobs' / '-j': 'x' is not a whole "
                   "number", "mythline run"),
    "bad number with --due": (["run", "--due", "--jobs", "x"], "invalid value for '--jobs' / '-j': 'x' is not a "
                              "whole number", "mythline run"),
    "fraction": (["run", "--due", "--jobs", "1.5"], "'1.5' is not a whole number", "mythline run"),
    "number out of range": (["run", "--due", "--jobs", "0"], "invalid value for '--jobs' / '-j': '0' is too "
                            "small; it must be at least 1", "mythline run"),
    "number above range": (["run", "--due", "--jobs", "65"], "'65' is too large; it must be at most 64",
                           "mythline run"),
    "missing option value": (["run", "world-npcs", "--model"], "option '--model' requires an argument",
                             "mythline run"),
    "missing global option value": (["--config"], "option '--config' requires an argument", "mythline"),
    "extra argument": (["budget", "reset", "extra"], "unexpected extra argument", "mythline budget reset"),
    "unknown status option": (["status", "--nope"], "no such option: --nope", "mythline status"),
    "nested group option": (["schedule", "cron", "--bogus"], "no such option: --bogus", "mythline schedule cron"),
    "config is a folder": (["--config", ".", "status"], "invalid value for '--config'", "mythline"),
}


def check(code: int, stdout: str, stderr: str, words: str, command: str) -> None:
    assert code == 2, stderr
    assert stdout == ""
    lines = stderr.splitlines()
    assert len(lines) == 1, f"expected one line, got: {stderr!r}"
    line = lines[0]
    assert line.startswith("mythline: ") and words in line
    assert line.endswith(f"(see: {command} --help)")
    assert "Usage:" not in line and "Error:" not in line and "Traceback" not in line
    # Typer's checks are pydantic's; its wording names neither the value nor the rule.
    assert "Input should" not in line and "unable to parse" not in line


@pytest.mark.parametrize("argv,words,command", CASES.values(), ids=list(CASES))
def test_a_usage_error_is_one_line_in_a_real_process(argv: list[str], words: str, command: str) -> None:
    proc = mythline(*argv)
    check(proc.returncode, proc.stdout, proc.stderr, words, command)


@pytest.mark.parametrize("argv,words,command", list(CASES.values())[:4], ids=list(CASES)[:4])
def test_a_usage_error_is_one_line_through_the_app(argv: list[str], words: str, command: str) -> None:
    result = CliRunner().invoke(app, argv)
    check(result.exit_code, result.stdout, result.stderr, words, command)


def test_the_help_still_prints_for_no_arguments() -> None:
    proc = mythline("budget")
    assert "Usage:" in proc.stdout + proc.stderr and "show" in proc.stdout + proc.stderr
    assert not re.search(r"^mythline: ", proc.stderr, re.M)


def test_mythline_usage_errors_stay_one_line_too() -> None:
    proc = mythline("run", "world-npcs", "--due")
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "mythline: --due runs every agent that is due: give no agent name and no --dry-run"]
