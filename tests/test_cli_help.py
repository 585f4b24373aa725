"""Help text for every command, documentation for every command, and cheap imports for the read-only ones."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer.main
from probe import run_app
from typer.testing import CliRunner

from mythline_cli.cli import app

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


def walk(command: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    found = [(path, command)]
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        found += walk(sub, path + (name,))
    return found


TREE = walk(typer.main.get_command(app))
COMMANDS = [(path, cmd) for path, cmd in TREE if path]
IDS = [" ".join(path) for path, _ in COMMANDS]


def test_the_tree_has_the_known_commands() -> None:
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"run", "status", "init", "home", "budget", "budget show", "budget reset"} <= names


@pytest.mark.parametrize("path,command", TREE, ids=["mythline"] + IDS)
def test_every_command_has_help(path: tuple[str, ...], command: Any) -> None:
    text = (command.help or "").strip()
    assert len(text) >= 15, f"{' '.join(('mythline',) + path)} has no real help text: {text!r}"
    for param in command.params:
        if param.name == "help":
            continue
        assert (getattr(param, "help", None) or "").strip(), f"{path} parameter {param.name} has no help"


@pytest.mark.parametrize("path,command", TREE, ids=["mythline"] + IDS)
def test_help_option_prints_the_help(path: tuple[str, ...], command: Any) -> None:
    result = runner.invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.stderr
    first = (command.help or "").strip().splitlines()[0]
    assert first[:40] in " ".join(result.stdout.split())
    assert "Usage:" in result.stdout


@pytest.mark.parametrize("path,command", TREE, ids=["mythline"] + IDS)
def test_examples_keep_their_lines(path: tuple[str, ...], command: Any) -> None:
    """An example command line is printed on a line of its own, never re-wrapped into prose."""
    examples = [line.strip() for line in (command.help or "").splitlines() if line.startswith("  mythline ")]
    result = runner.invoke(app, [*path, "--help"], terminal_width=80)
    printed = [line.strip() for line in result.stdout.splitlines()]
    for example in examples:
        assert example in printed, f"{example!r} was re-wrapped in:\n{result.stdout}"


def test_the_commands_with_examples() -> None:
    with_examples = {" ".join(path) for path, cmd in COMMANDS if "\n  mythline " in (cmd.help or "")}
    assert {"run", "logs", "schedule cron", "schedule windows"} <= with_examples


def test_top_level_help_documents_exit_codes() -> None:
    result = runner.invoke(app, ["--help"])
    text = " ".join(result.stdout.split())
    for code in ("0 ", "1 ", "2 usage or config error", "3 over budget", "4 already running", "5 paused",
                 "130/143"):
        assert code in text


def test_no_arguments_prints_help() -> None:
    result = runner.invoke(app, [])
    assert "Usage:" in result.stdout + result.stderr
    assert "status" in result.stdout + result.stderr


def test_version() -> None:
    from mythline_cli import __version__

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"mythline {__version__}"


# -- read-only commands do not load the LLM stack ----------------------------------------------

@pytest.mark.parametrize("args", [
    ["status"], ["status", "--json"], ["budget", "show"], ["budget", "show", "--json"], ["--help"],
    ["status", "--help"], ["run", "--help"], ["budget", "--help"], ["home"], ["init"],
    ["budget", "report"], ["budget", "report", "--json"], ["budget", "reconcile", "--help"],
], ids=lambda a: " ".join(a))
def test_read_only_commands_do_not_import_the_llm_stack(args: list[str]) -> None:
    report = run_app(args)
    assert report.returncode == 0, report.stderr
    assert report.llm_stack == set()


def test_status_with_heartbeats_and_a_config_does_not_import_the_llm_stack() -> None:
    Path("mythline.toml").write_text('[provider]\nmodel = "some/model"\n[budget]\ndaily_usd = 1\n',
                                     encoding="utf-8")
    hb = Path(__import__("os").environ["MYTHLINE_HOME"]) / "agents" / "world-npcs" / "heartbeat.json"
    hb.parent.mkdir(parents=True)
    hb.write_text('{"state": "failed", "finished": "2030-01-01T00:00:00+00:00", "last_error": "x"}',
                  encoding="utf-8")
    report = run_app(["status"])
    assert report.returncode == 1
    assert report.llm_stack == set()


# -- documentation -----------------------------------------------------------------------------

def test_every_command_is_documented() -> None:
    cli_doc = ROOT / "docs" / "cli.md"
    assert cli_doc.is_file(), "docs/cli.md (the command reference) does not exist"
    texts = [cli_doc.read_text(encoding="utf-8")]
    readme = ROOT / "README.md"
    if readme.is_file():
        texts.append(readme.read_text(encoding="utf-8"))
    texts += [p.read_text(encoding="utf-8") for p in sorted((ROOT / "docs").rglob("*.md")) if p != cli_doc]
    docs = " ".join(" ".join(texts).split())
    missing = [name for name in IDS if not re.search(r"\bmythline " + re.escape(name) + r"\b", docs)]
    assert not missing, f"commands not documented as `mythline <command>` in README.md or docs/: {missing}"


def test_every_long_option_is_documented() -> None:
    import pathlib

    import typer.main

    from mythline_cli.cli import app

    root = pathlib.Path(__file__).resolve().parents[1]
    docs = "".join(p.read_text(encoding="utf-8") for p in (root / "docs").glob("*.md"))
    docs += (root / "README.md").read_text(encoding="utf-8")
    missing = []

    def walk(command, path):
        for param in command.params:
            for opt in param.opts:
                if opt.startswith("--") and opt != "--help" and f"`{opt}" not in docs and f"{opt} " not in docs:
                    missing.append(f"{' '.join(path)} {opt}")
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*path, name])

    walk(typer.main.get_command(app), ["mythline"])
    assert missing == []
