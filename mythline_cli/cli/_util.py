"""Shared CLI plumbing: the app state, consoles, and the one error boundary."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperGroup

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


try:  # Typer 0.20+ carries its own copy of Click
    from typer._click.exceptions import UsageError as _ClickUsageError
except ImportError:  # pragma: no cover - older Typer, on Click itself
    from click.exceptions import UsageError as _ClickUsageError  # type: ignore[no-redef, import-not-found, unused-ignore]


class _OneLineUsageError(_ClickUsageError):
    """Click's usage error, shown as the one ``mythline: ...`` line every failure gets."""

    def show(self, file: Any = None) -> None:
        global last_usage_error
        last_usage_error = self.message
        fail_line(self.message)


# The last usage error this process showed: a refused scheduled run records it as its cause.
last_usage_error: str | None = None


def _one_line(exc: Exception, fallback: str) -> Exception:
    """Click's three lines (usage, "Try ... for help", "Error: ...") as one that names the help
    (of ``fallback`` when Click does not say which command it was parsing)."""
    if isinstance(exc, _OneLineUsageError) or type(exc).__name__ == "NoArgsIsHelpError":
        return exc  # no arguments at all: the help itself is the answer
    _plain_words(exc)
    message = exc.format_message().strip()  # type: ignore[attr-defined]
    message = message[:1].lower() + message[1:].rstrip(".")
    ctx = getattr(exc, "ctx", None)
    command = ctx.command_path if ctx is not None else fallback
    return _OneLineUsageError(f"{message} (see: {command} --help)", ctx)


# Typer checks option values with pydantic, whose wording ("Input should be a valid
# integer, unable to parse string as an integer") names no value; ours names it.
_KINDS = {"int_parsing": "a whole number", "int_from_float": "a whole number", "float_parsing": "a number",
          "bool_parsing": "true or false"}
_BOUNDS = {"greater_than_equal": ("ge", "at least"), "greater_than": ("gt", "more than"),
           "less_than_equal": ("le", "at most"), "less_than": ("lt", "less than")}


def _plain_words(exc: Exception) -> None:
    cause = exc.__cause__
    errors = getattr(cause, "errors", None)
    if type(cause).__name__ != "ValidationError" or not callable(errors) or not hasattr(exc, "message"):
        return
    try:
        first = errors()[0]
    except (IndexError, TypeError):
        return
    value, kind, limits = first.get("input"), first.get("type"), first.get("ctx") or {}
    shown = repr(value) if isinstance(value, str) else str(value)
    if kind in _KINDS:
        exc.message = f"{shown} is not {_KINDS[kind]}"
    elif kind in _BOUNDS and _BOUNDS[kind][0] in limits:
        exc.message = f"{shown} is too {'small' if kind.startswith('greater') else 'large'}; it must be " \
                      f"{_BOUNDS[kind][1]} {limits[_BOUNDS[kind][0]]}"
    else:
        exc.message = f"{shown} is not a valid value"


def _command_path(ctx: Any) -> str:
    """The deepest command the words after the global options name (``mythline budget show``)."""
    # Click 8.2 keeps the subcommand's name in _protected_args (protected_args is deprecated).
    first = ctx._protected_args if hasattr(ctx, "_protected_args") else ctx.protected_args
    words = [*first, *ctx.args]
    command, path = ctx.command, [ctx.command_path]
    for word in words:
        sub = getattr(command, "commands", {}).get(word)
        if sub is None:
            break
        command = sub
        path.append(word)
    return " ".join(path)


class OneLineErrors(TyperGroup):
    """The root command: a command line that cannot be parsed, at any level, is one line, exit 2."""

    def make_context(self, *args: Any, **kwargs: Any):  # noqa: ANN201 - Click's Context
        try:
            return super().make_context(*args, **kwargs)
        except _ClickUsageError as exc:
            raise _one_line(exc, "mythline") from None

    def invoke(self, ctx: Any) -> Any:
        path = _command_path(ctx)
        try:
            return super().invoke(ctx)
        except _ClickUsageError as exc:
            raise _one_line(exc, path) from None
