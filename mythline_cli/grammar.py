"""The ``mythline [global options] run ...`` command line, declared once.

Typer parses it; the fast path, the windowless log chooser and the crontab reader read it
without Typer, from this table. tests/test_grammar.py holds the table equal to Typer's
command tree.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Option:
    """One option: its names, whether it takes a value, whether the fast path reads it."""

    names: tuple[str, ...]
    valued: bool = False
    # False: the fast path hands the whole command line to Typer when it meets this option.
    fast: bool = False


GLOBAL = (
    Option(("--config", "-c"), valued=True, fast=True),
    Option(("--debug",), fast=True),
    Option(("--home",), valued=True, fast=True),
    Option(("--version",)),
)

RUN = (
    Option(("--dry-run",)),
    Option(("--model",), valued=True, fast=True),
    Option(("--base-url",), valued=True, fast=True),
    Option(("--json",), fast=True),
    Option(("--force",), fast=True),
    Option(("--due",)),
    Option(("--jobs", "-j"), valued=True),
)

COMMANDS_WITH_FAST_PATHS = ("run", "status", "budget")


def option_names(options: Iterable[Option]) -> dict[str, bool]:
    """Every name -> whether it takes a value."""
    return {name: option.valued for option in options for name in option.names}


def find(options: Iterable[Option], name: str) -> Option | None:
    return next((o for o in options if name in o.names), None)


VALUED = frozenset(n for n, valued in option_names((*GLOBAL, *RUN)).items() if valued)


def words(argv: Sequence[str]) -> list[str]:
    """The bare words of a command line (command, agent), without options and their values."""
    found: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in VALUED:
            skip = True
        elif not arg.startswith("-"):
            found.append(arg)
    return found
