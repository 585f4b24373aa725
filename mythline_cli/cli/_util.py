"""Shared CLI plumbing: the app state, consoles, and the one error boundary."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from ..console import fail_line, is_tty, out, print_json, report_failure  # noqa: F401 - the CLI's output helpers


@dataclass
class State:
    """Global options, set by the app callback."""

    config: Path | None = None
    debug: bool = False


STATE = State()


@contextmanager
def boundary() -> Iterator[None]:
    """Turn typed errors into one line and a documented exit code (tracebacks with --debug)."""
    try:
        yield
    except typer.Exit:
        raise
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - the last line of defence
        if STATE.debug:
            raise
        raise typer.Exit(report_failure(exc)) from None


def settings(**overrides: Any):  # noqa: ANN201 - Settings, imported lazily
    from ..config import load_settings

    return load_settings(STATE.config, overrides or None)
