"""Consoles, output helpers and the one-line failure report: no Typer, no pydantic, and
Rich only when something is printed through it."""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING, Any

from .errors import ExitCode, MythlineError

if TYPE_CHECKING:
    from rich.console import Console


def is_tty() -> bool:
    return bool(sys.stdout and sys.stdout.isatty())


def out() -> Console:
    from rich.console import Console

    # Piped or logged output gets room for a whole table row instead of 80 columns.
    width = None if is_tty() else 160
    return Console(soft_wrap=True, highlight=False, width=width)


def err() -> Console:
    from rich.console import Console

    # soft_wrap: a long message stays one line, which is what cron mails and scripts expect.
    return Console(stderr=True, soft_wrap=True, highlight=False)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def _env_secrets() -> tuple[str, ...]:
    # Whatever looks like a credential in the environment is masked in anything we print.
    marks = ("KEY", "TOKEN", "SECRET", "PASSWORD", "WEBHOOK")
    return tuple(v for k, v in os.environ.items() if any(m in k.upper() for m in marks) and len(v) >= 8)


def fail_line(message: str) -> None:
    """The one line a failure gets on stderr (secrets masked)."""
    from .redact import redact

    message = redact(message, _env_secrets())
    if sys.stderr is None:  # a windowless launcher has no stderr
        return
    if sys.stderr.isatty():
        from rich.markup import escape

        err().print(f"[bold red]mythline:[/] {escape(message)}", markup=True)
    else:
        sys.stderr.write(f"mythline: {message}\n")
        sys.stderr.flush()


def report_failure(exc: BaseException) -> int:
    """One line on stderr for a failure that ended a command; the exit code it ends with.

    Typed errors say what to do; an interrupt is one word; anything else is named, with the
    hint that ``--debug`` shows the traceback.
    """
    if isinstance(exc, MythlineError):
        fail_line(str(exc))
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        fail_line("interrupted")
        return ExitCode.INTERRUPTED
    fail_line(f"unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)")
    return ExitCode.FAILED
