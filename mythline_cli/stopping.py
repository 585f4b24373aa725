"""Graceful stops: SIGTERM / SIGINT (Ctrl-C, and Ctrl-Break on Windows) end a run at the
next step boundary, with the checkpoint saved and unspent reservations released. A second
signal stops at once (``Aborted``)."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .errors import Aborted, ExitCode, Interrupted

_CODES = {"SIGINT": ExitCode.INTERRUPTED, "SIGTERM": ExitCode.TERMINATED, "SIGBREAK": ExitCode.INTERRUPTED}
_AGAIN = {"SIGINT": "Ctrl-C", "SIGBREAK": "Ctrl-Break"}


def code_of(signame: str) -> int:
    return _CODES.get(signame, ExitCode.INTERRUPTED)


class StopFlag:
    """Set by the first signal; checked at every step boundary."""

    def __init__(self) -> None:
        self.signame: str | None = None

    def check(self) -> None:
        if self.signame is not None:
            raise Interrupted(self.signame, code_of(self.signame))

    def __bool__(self) -> bool:
        return self.signame is not None


def _tell(signame: str) -> None:
    """On a terminal, say at once what the first signal does (people press Ctrl-C twice when
    nothing answers). Off a terminal (cron mails every line) the run's last line says it."""
    stream = sys.stderr
    try:
        if stream is None or not stream.isatty():
            return
        again = _AGAIN.get(signame, f"send {signame}")
        stream.write(f"mythline: stopping after this call; {again} again to abort\n")
        stream.flush()
    except (OSError, ValueError):  # a closed or broken terminal: the stop itself goes on
        pass


@contextmanager
def graceful(flag: StopFlag) -> Iterator[StopFlag]:
    """Install the handlers for the duration of a run (main thread only)."""
    names = ["SIGINT", "SIGTERM"] + (["SIGBREAK"] if sys.platform == "win32" else [])
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if flag.signame is not None:
            raise Aborted(name, code_of(name))
        flag.signame = name
        _tell(name)

    try:
        for name in names:
            sig = getattr(signal, name, None)
            if sig is not None:
                previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread: leave signals alone
        previous = {}
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
