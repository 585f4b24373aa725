"""The ``run`` command line is declared once (mythline_cli/grammar.py) and read by the fast
path, the windowless log chooser and the crontab reader; Typer's own command tree is the
truth it is checked against, so a new option cannot drift silently."""

from __future__ import annotations

from typing import Any

import pytest
import typer

from mythline_cli import grammar, schedule
from mythline_cli.__main__ import _fast_run_args, log_name
from mythline_cli.cli import app


# Typer 0.20+ carries its own copy of Click: the tree is read by duck type, not class.
def _options(command: Any) -> dict[str, bool]:
    """Every option name of ``command`` -> whether it takes a value, as Click parses it."""
    found: dict[str, bool] = {}
    for param in command.params:
        if param.param_type_name == "option":
            for name in [*param.opts, *param.secondary_opts]:
                found[name] = not param.is_flag and not param.count
    return found


def _arguments(command: Any) -> list[str]:
    return [p.name or "" for p in command.params if p.param_type_name == "argument"]


@pytest.fixture(scope="module")
def tree() -> Any:
    return _tree()


def _tree() -> Any:
    group = typer.main.get_command(app)
    assert "run" in group.commands  # type: ignore[attr-defined]
    return group


def test_the_global_options_are_typers(tree: Any) -> None:
    assert grammar.option_names(grammar.GLOBAL) == _options(tree)


def test_the_run_options_are_typers(tree: Any) -> None:
    assert grammar.option_names(grammar.RUN) == _options(tree.commands["run"])


def test_run_takes_one_argument_the_agent(tree: Any) -> None:
    # The readers below take the first bare word after `run` for the agent.
    assert _arguments(tree.commands["run"]) == ["agent"]
    assert _arguments(tree) == []


def _valued_in_typer() -> list[str]:
    return sorted(n for n, valued in _options(_tree().commands["run"]).items() if valued)


def _global_valued_in_typer() -> list[str]:
    return sorted(n for n, valued in _options(_tree()).items() if valued)


@pytest.mark.parametrize("option", _valued_in_typer())
def test_a_valued_run_option_is_never_taken_for_the_agent(option: str) -> None:
    # The value looks like an agent name on purpose: only the grammar tells them apart.
    argv = ["run", option, "world-lore", "quest-chains"]
    assert log_name(argv) == "quest-chains"
    line = f"* * * * * '/x/mythline' {' '.join(argv)} >> '/h/logs/quest-chains.log' 2>&1"
    assert schedule.job_key(line) == "quest-chains"


@pytest.mark.parametrize("option", _global_valued_in_typer())
def test_a_valued_global_option_is_never_taken_for_the_command(option: str) -> None:
    argv = [option, "run", "run", "world-lore"]
    assert log_name(argv) == "world-lore"
    assert schedule.job_key(f"* * * * * /x/mythline {' '.join(argv)} >> /log 2>&1") == "world-lore"


def test_the_fast_path_reads_every_option_marked_for_it() -> None:
    for option in grammar.RUN:
        if not option.fast:
            continue
        for name in option.names:
            argv = ["run", "world-npcs", name] + (["x"] if option.valued else [])
            parsed = _fast_run_args(argv)
            assert parsed is not None, name
            assert parsed[0] == "world-npcs"


def test_the_fast_path_leaves_every_other_option_to_typer() -> None:
    for option in grammar.RUN:
        if option.fast:
            continue
        for name in option.names:
            argv = ["run", "world-npcs", name] + (["2"] if option.valued else [])
            assert _fast_run_args(argv) is None, name
