"""Shared CLI plumbing: the app state, consoles, and the one error boundary."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from ..console import is_tty, out, print_json  # noqa: F401 - the CLI's output helpers
from ..errors import ExitCode, MythlineError


@dataclass
class State:
    """Global options, set by the app callback."""

    config: Path | None = None
    debug: bool = False


STATE = State()


def err() -> Console:
    # soft_wrap: a long message stays one line, which is what cron mails and scripts expect.
    return Console(stderr=True, soft_wrap=True, highlight=False)


def _env_secrets() -> tuple[str, ...]:
    # Whatever looks like a credential in the environment is masked in anything we print.
    marks = ("KEY", "TOKEN", "SECRET", "PASSWORD", "WEBHOOK")
    return tuple(v for k, v in os.environ.items() if any(m in k.upper() for m in marks) and len(v) >= 8)


def fail_line(message: str) -> None:
    """The one line a failure gets on stderr (secrets masked)."""
    from ..redact import redact

    message = redact(message, _env_secrets())
    if sys.stderr is None:  # a windowless launcher has no stderr
        return
    if sys.stderr.isatty():
        from rich.markup import escape

        err().print(f"[bold red]mythline:[/] {escape(message)}", markup=True)
    else:
        sys.stderr.write(f"mythline: {message}\n")
        sys.stderr.flush()


@contextmanager
def boundary() -> Iterator[None]:
    """Turn typed errors into one line and a documented exit code (tracebacks with --debug)."""
    try:
        yield
    except typer.Exit:
        raise
    except MythlineError as exc:
        if STATE.debug:
            raise
        fail_line(str(exc))
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        if STATE.debug:
            raise
        fail_line("interrupted")
        raise typer.Exit(ExitCode.INTERRUPTED) from None
    except Exception as exc:  # noqa: BLE001 - the last line of defence
        if STATE.debug:
            raise
        fail_line(f"unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)")
        raise typer.Exit(ExitCode.FAILED) from None


def settings(**overrides: Any):  # noqa: ANN201 - Settings, imported lazily
    from ..config import load_settings

    return load_settings(STATE.config, overrides or None)
