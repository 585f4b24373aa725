"""Graceful stops: SIGTERM / SIGINT (Ctrl-C, and Ctrl-Break on Windows) end a run at the
next step boundary, with the checkpoint saved and unspent reservations released. A second
signal stops at once (``Aborted``).

A wait that spends nothing (a lock before a reservation, a source fetch, the delay between
requests to a host, a local server's slot) is marked with ``cut_short``: the first signal
ends it at once. Inside such a region the handler raises ``CutShort`` (an ``Interrupted``
naming the wait), and a blocking call there ends with it (PEP 475: a handler that raises
ends the system call it interrupted). The call in flight to the provider is never in one:
its answer is paid for, so it is finished and recorded first."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from .errors import Aborted, CutShort, ExitCode, Interrupted  # noqa: F401 - re-exported: stopping.CutShort

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


# The run's flag (set by ``graceful``) and the wait the main thread is in (``cut_short``).
_flag: StopFlag | None = None
_waiting: str | None = None


class cut_short:  # noqa: N801 - used as a function: ``with stopping.cut_short("waiting for X"):``
    """Mark a wait that spends nothing and leaves nothing half done: the first stop signal ends
    it at once with ``CutShort``, and entering it after a signal raises at once. ``what`` names
    it in the run's line ("stopped by SIGTERM while <what>").

    Keep file writes and anything paid for out of the region; whatever the region holds when
    it ends must be given up by the code around it (an ``except BaseException`` that closes
    the descriptor), because the exception may come the instant after a lock was granted. The
    handler clears the region before it raises, so it raises at most once per signal. In a
    thread other than the main one (where no handler runs) only the entry check applies."""

    __slots__ = ("_outer", "_what")

    def __init__(self, what: str) -> None:
        self._what = what
        self._outer: str | None = None

    def __enter__(self) -> None:
        global _waiting
        flag = _flag
        if flag is not None and flag.signame is not None:
            raise CutShort(flag.signame, code_of(flag.signame), waiting=self._what)
        if threading.current_thread() is threading.main_thread():
            self._outer, _waiting = _waiting, self._what

    def __exit__(self, *exc: object) -> None:
        global _waiting
        if threading.current_thread() is threading.main_thread():
            _waiting = self._outer


def region(what: str | None) -> AbstractContextManager[None]:
    """``cut_short(what)``, or nothing when ``what`` is None (a wait a signal must not end)."""
    return nullcontext() if what is None else cut_short(what)


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
    global _flag, _waiting
    names = ["SIGINT", "SIGTERM"] + (["SIGBREAK"] if sys.platform == "win32" else [])
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: Any) -> None:
        global _waiting
        name = signal.Signals(signum).name
        if flag.signame is not None:
            raise Aborted(name, code_of(name))
        flag.signame = name
        what, _waiting = _waiting, None
        if what is not None:
            # A wait that spends nothing: it ends now (the run's line says so at once).
            raise CutShort(name, code_of(name), waiting=what)
        _tell(name)

    try:
        for name in names:
            sig = getattr(signal, name, None)
            if sig is not None:
                previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread: leave signals alone
        previous = {}
    outer_flag, outer_waiting = _flag, _waiting
    if previous:  # the regions answer to this run's signals
        _flag, _waiting = flag, None
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        _flag, _waiting = outer_flag, outer_waiting
