"""An exclusive lock on a file whose waiters queue in the kernel instead of polling.

POSIX: ``flock(LOCK_EX)``. A free lock is taken with one non-blocking call. A busy one is
waited for with a blocking ``flock(LOCK_EX)``: the kernel queues the blocked requests and
wakes the first one when the holder unlocks, so waiters are served in arrival order and
none of them spins on the CPU the holder needs. (The kernel does not hand the lock over: a
process that asks at the instant it is free gets it before the woken waiter runs. That
only bites when the CPUs are oversubscribed.)

The blocking call needs a timeout. On Linux, in the main thread, it is made in that thread
under a one-shot ``ITIMER_REAL`` whose SIGALRM interrupts it (the kernel delivers a
process's SIGALRM to its main thread when that thread does not block it): the waiter that
is woken is the one that runs on. Elsewhere (another thread, another POSIX system, or a
process that uses SIGALRM or ITIMER_REAL itself) a helper thread makes the blocking call
and the caller waits for it with a timeout; a request that times out is abandoned, and if
it is granted later the helper closes the file at once, which releases it. The helper's
hand-over to the caller costs a thread wake-up while the lock is already held, which is
why it is not the first choice. Other signals (the run's SIGTERM/SIGINT handlers) interrupt
neither: their handlers run and the call is retried (PEP 475), or their exception ends the
wait and nothing stays locked. ``acquire(..., cut_short="waiting for X")`` puts the wait in
a ``stopping.cut_short`` region: there the run's first signal raises, so it ends the wait
at once (the alarm path's flock, the helper path's wait for its thread, filelock's polling
sleep), with the descriptor closed or the request given up.

Windows (and any platform without ``fcntl``): ``filelock.FileLock`` (``msvcrt.locking``
polling), which cannot queue. Both take the same lock as ``filelock`` does on POSIX
(``flock`` on the same file), so processes using either exclude each other.

The lock file is never deleted: a waiter holding an open descriptor of a deleted file
would lock a different file than a newcomer.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Protocol

from .errors import LockTimeout  # noqa: F401 - re-exported: locking.LockTimeout
from .stopping import region

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

# The implementation ``acquire`` uses: "flock" (POSIX, queued) or "filelock" (polling;
# the only one on Windows). Tests switch it to exercise the Windows path on POSIX.
DEFAULT = "flock" if fcntl is not None else "filelock"
# Whether a busy flock may be waited for in the calling thread under SIGALRM (see above).
# Tests switch it off to exercise the helper thread.
ALARM = sys.platform.startswith("linux")


class Held(Protocol):
    acquired_at: float  # time.perf_counter() when the lock was granted
    released_at: float  # time.perf_counter() when release() began to unlock it (0.0 before)

    def release(self) -> None: ...


def acquire(path: Path | str, timeout: float, *, kind: str | None = None,
            poll_interval: float = 0.05, cut_short: str | None = None) -> Held:
    """Take the exclusive lock on ``path`` (created if missing), waiting up to ``timeout`` seconds
    (0: one try; negative: no limit, as in filelock).

    Raises ``LockTimeout`` when it stayed busy. ``poll_interval`` is for the polling
    implementation only. ``cut_short``: the wait, if there is one, is a ``stopping.cut_short``
    region of that name (the run's first signal ends it with ``CutShort``).
    """
    kind = kind or DEFAULT
    if kind == "flock":
        return _acquire_flock(os.fspath(path), timeout, cut_short)
    if kind == "filelock":
        return _acquire_filelock(os.fspath(path), timeout, poll_interval, cut_short)
    raise ValueError(f"unknown lock kind {kind!r}")


# -- POSIX: flock, queued in the kernel -----------------------------------------------------

class _Flock:
    __slots__ = ("acquired_at", "fd", "released_at")

    def __init__(self, fd: int, acquired_at: float | None = None) -> None:
        self.fd = fd
        # time.perf_counter() when the kernel granted it (a waiter thread may have got it first).
        self.acquired_at = time.perf_counter() if acquired_at is None else acquired_at
        self.released_at = 0.0

    def release(self) -> None:
        fd, self.fd = self.fd, -1
        if fd < 0:
            return
        # Taken before the unlock: the unlock wakes the next waiter, which may run on this CPU
        # before this process does again, and that time is the next holder's, not ours.
        self.released_at = time.perf_counter()
        try:
            # Explicit: a forked child sharing the descriptor must not keep it locked.
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


class _Waiter:
    """A helper thread blocked in ``flock(LOCK_EX)``; ``abandon`` hands the result over once."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.guard = threading.Lock()
        self.done = threading.Event()
        self.abandoned = False
        self.error: BaseException | None = None
        self.granted_at = 0.0

    def run(self) -> None:
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
            self.granted_at = time.perf_counter()
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            self.error = exc
        with self.guard:
            if self.abandoned:
                # Granted (or failed) after the caller gave up: let the next one in.
                os.close(self.fd)
                return
            self.done.set()

    def abandon(self) -> bool:
        """Stop waiting. True when the request finished first: the caller then owns ``fd``."""
        with self.guard:
            if self.done.is_set():
                return True
            self.abandoned = True
            return False


def _acquire_flock(path: str, timeout: float, what: str | None = None) -> Held:
    deadline = time.monotonic() + timeout
    while True:
        held = _flock_once(path, timeout, deadline, what)
        fd = held.fd  # type: ignore[attr-defined]
        if os.fstat(fd).st_nlink:
            return held
        # The file was deleted while we waited for it: a newcomer would lock a new file.
        held.release()
        if timeout >= 0:
            timeout = max(0.0, deadline - time.monotonic())


def _flock_once(path: str, timeout: float, deadline: float, what: str | None = None) -> Held:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return _Flock(fd)
    except BlockingIOError:
        pass
    except BaseException:
        os.close(fd)
        raise
    if timeout == 0:
        os.close(fd)
        raise LockTimeout(path)
    if _alarm_usable():
        return _wait_under_alarm(path, fd, deadline if timeout > 0 else None, what)
    waiter = _Waiter(fd)
    try:
        threading.Thread(target=waiter.run, name="mythline-lock-wait", daemon=True).start()
    except BaseException:
        os.close(fd)
        raise
    try:
        with region(what):
            # Negative: no limit, as in filelock.
            waiter.done.wait(max(0.0, deadline - time.monotonic()) if timeout > 0 else None)
    except BaseException:  # a second Ctrl-C / SIGTERM, or the first one in a cut_short wait
        if waiter.abandon():
            os.close(fd)  # closing releases the lock if it was granted
        raise
    if not waiter.abandon():
        raise LockTimeout(path)
    if waiter.error is not None:
        os.close(fd)
        raise waiter.error
    return _Flock(fd, waiter.granted_at)


class _Expired(Exception):
    """Raised by our SIGALRM handler to end a blocking flock."""


def _alarm_usable() -> bool:
    """SIGALRM may be borrowed: Linux, the main thread, and nobody else using it or ITIMER_REAL."""
    return (ALARM and threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, signal.SIG_IGN)
            and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0))


def _wait_under_alarm(path: str, fd: int, deadline: float | None, what: str | None = None) -> Held:
    """Block in flock(LOCK_EX) in this thread; a one-shot SIGALRM at ``deadline`` ends the wait."""
    armed = True

    def expire(signum: int, frame: Any) -> None:
        if armed:  # once disarmed, a late alarm is a no-op
            raise _Expired

    previous = signal.signal(signal.SIGALRM, expire)
    try:
        try:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise _Expired
                signal.setitimer(signal.ITIMER_REAL, left)
            with region(what):
                fcntl.flock(fd, fcntl.LOCK_EX)
            granted = time.perf_counter()
        finally:
            armed = False
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _Expired:
        # Possibly granted just as the alarm fired: closing releases it either way.
        os.close(fd)
        raise LockTimeout(path) from None
    except BaseException:  # a second Ctrl-C / SIGTERM, or the first one in a cut_short wait
        os.close(fd)  # granted or not: closing lets go
        raise
    finally:
        # Again: a signal between the inner disarm and its setitimer would leave it armed,
        # and the restored default action of SIGALRM ends the process.
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    return _Flock(fd, granted)


# -- everywhere else: filelock, polling ------------------------------------------------------

class _FileLockHeld:
    __slots__ = ("acquired_at", "lock", "released_at")

    def __init__(self, lock: Any) -> None:
        self.lock = lock
        self.acquired_at = time.perf_counter()
        self.released_at = 0.0

    def release(self) -> None:
        self.released_at = time.perf_counter()
        self.lock.release()


def _acquire_filelock(path: str, timeout: float, poll_interval: float, what: str | None = None) -> Held:
    from filelock import FileLock, Timeout

    lock = FileLock(path, timeout=timeout)
    try:
        with region(what):  # the polling sleep is what a signal ends
            lock.acquire(poll_interval=poll_interval)
    except Timeout:
        raise LockTimeout(path) from None
    except BaseException:
        if lock.is_locked:  # granted the instant before the signal: let go
            lock.release(force=True)
        raise
    return _FileLockHeld(lock)
