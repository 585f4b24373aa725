"""Graceful stops: SIGTERM / SIGINT (Ctrl-C, and Ctrl-Break on Windows) end a run at the
next step boundary, with the checkpoint saved and unspent reservations released. A second
signal stops at once."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .errors import ExitCode, Interrupted

_CODES = {"SIGINT": ExitCode.INTERRUPTED, "SIGTERM": ExitCode.TERMINATED, "SIGBREAK": ExitCode.INTERRUPTED}


class StopFlag:
    """Set by the first signal; checked at every step boundary."""

    def __init__(self) -> None:
        self.signame: str | None = None

    def check(self) -> None:
        if self.signame is not None:
            raise Interrupted(self.signame, _CODES.get(self.signame, ExitCode.INTERRUPTED))

    def __bool__(self) -> bool:
        return self.signame is not None


@contextmanager
def graceful(flag: StopFlag) -> Iterator[StopFlag]:
    """Install the handlers for the duration of a run (main thread only)."""
    names = ["SIGINT", "SIGTERM"] + (["SIGBREAK"] if sys.platform == "win32" else [])
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: Any) -> None:
        if flag.signame is not None:
            raise KeyboardInterrupt  # a second signal: stop now
        flag.signame = signal.Signals(signum).name

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
