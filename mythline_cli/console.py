"""Consoles, output helpers and the one-line failure report: no Typer, no pydantic, and
Rich only when something is printed through it."""

from __future__ import annotations

import errno
import json
import os
import re
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


# What to do about a file-system error, by errno: the errors a disk, a quota or a
# permission can cause at any write. Anything else stays "unexpected".
_DISK_HINTS = {
    errno.ENOSPC: "the disk is full: free some space",
    errno.EDQUOT: "the disk quota is used up: free some space",
    errno.EIO: "the disk reported an I/O error: check it (dmesg, SMART)",
    errno.EROFS: "the file system is read-only: remount it, or point MYTHLINE_HOME at a writable place",
    errno.EACCES: "check that path's permissions (or point MYTHLINE_HOME elsewhere)",
    errno.EPERM: "check that path's permissions (or point MYTHLINE_HOME elsewhere)",
}
# Windows: another program (an antivirus scanner, a sync client) holds the file open.
_SHARING_VIOLATIONS = {32, 33}


def disk_error_line(exc: OSError) -> str | None:
    """The one line for a file-system error at a write, or None if it is not one."""
    hint: str | None
    if getattr(exc, "winerror", None) in _SHARING_VIOLATIONS:
        hint = "another program holds the file open (an antivirus scanner or a sync client?): try again later"
    else:
        hint = _DISK_HINTS.get(exc.errno or 0)
    if hint is None:
        return None
    where = ""
    if exc.filename:
        # A temp file of an atomic write (".ledger.json.k3j9x0aq.tmp") stands for the file it replaces.
        head, _, name = os.fsdecode(exc.filename).rpartition(os.sep)
        match = re.fullmatch(r"\.(.+)\.[^.]+\.tmp", name)
        where = (f"{head}{os.sep}" if head else "") + (match.group(1) if match else name) + ": "
    return (f"{where}{exc.strerror or os.strerror(exc.errno or 0)}; {hint}. Files are written whole or "
            "not at all, so nothing written before is lost: the next run carries on from them")


def _misplaced_line(exc: OSError) -> str:
    """A file where a directory belongs (or the reverse): the state home's own line when the
    home is the culprit, else the path and what to do with it."""
    from . import paths

    root = paths.home()
    if root.exists() and not root.is_dir():
        try:
            paths.check_home()
        except paths.StateHomeUnusable as bad:
            return str(bad)
    where = os.fsdecode(exc.filename) if exc.filename else "a path in the state home"
    return (f"{where}: {exc.strerror or 'not the kind of file expected'} (a file where a directory belongs, or "
            "the reverse); move it away and run again")


def report_failure(exc: BaseException) -> int:
    """One line on stderr for a failure that ended a command; the exit code it ends with.

    Typed errors say what to do; an interrupt is one word; anything else is named, with the
    hint that ``--debug`` shows the traceback.
    """
    if isinstance(exc, MythlineError):
        fail_line(str(exc))
        return exc.exit_code
    if isinstance(exc, (NotADirectoryError, IsADirectoryError, FileExistsError)):
        fail_line(_misplaced_line(exc))
        return ExitCode.USAGE
    if isinstance(exc, OSError):
        line = disk_error_line(exc)
        if line is not None:
            fail_line(line)
            return ExitCode.FAILED
    if isinstance(exc, KeyboardInterrupt):
        fail_line("interrupted")
        return ExitCode.INTERRUPTED
    fail_line(f"unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)")
    return ExitCode.FAILED
