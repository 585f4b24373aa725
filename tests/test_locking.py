"""The ledger's lock (mythline_cli/locking.py): queued flock on POSIX, polling filelock elsewhere.

Both implementations are exercised here on POSIX: "filelock" is the one Windows uses.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mythline_cli import locking

from helpers import blocked_waiters

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="holds the lock with fcntl.flock")

# "flock" waits in the calling thread under SIGALRM (Linux, main thread); "flock-thread" in a
# helper thread (other threads, other POSIX systems); "filelock" polls (the Windows path).
KINDS = ["flock", "flock-thread", "filelock"]


@pytest.fixture
def use(monkeypatch: pytest.MonkeyPatch):
    def choose(kind: str) -> str:
        monkeypatch.setattr(locking, "ALARM", kind == "flock" and sys.platform.startswith("linux"))
        return "filelock" if kind == "filelock" else "flock"
    return choose


def hold(path: Path) -> int:
    """Take the lock the way another process would (flock on its own open file)."""
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def free(fd: int) -> None:
    os.close(fd)


def assert_let_go(path: Path, message: str) -> None:
    """Within 5 s, nothing holds the lock on ``path`` (a request left in the kernel lets go)."""
    deadline = time.monotonic() + 5
    while True:
        try:
            free(hold(path))
            return
        except BlockingIOError:
            assert time.monotonic() < deadline, message
            time.sleep(0.01)


@pytest.mark.parametrize("kind", KINDS)
def test_acquire_and_release(tmp_path: Path, kind: str, use) -> None:
    kind = use(kind)
    path = tmp_path / "x.lock"
    held = locking.acquire(path, 1.0, kind=kind)
    with pytest.raises(BlockingIOError):
        hold(path)
    held.release()
    held.release()  # a second release is harmless
    free(hold(path))
    assert path.exists()  # never deleted: a waiter would lock a different file


@pytest.mark.parametrize("kind", KINDS)
def test_a_held_lock_times_out_after_the_timeout(tmp_path: Path, kind: str, use) -> None:
    kind = use(kind)
    path = tmp_path / "x.lock"
    fd = hold(path)
    try:
        t0 = time.monotonic()
        with pytest.raises(locking.LockTimeout):
            locking.acquire(path, 0.4, kind=kind, poll_interval=0.01)
        # Waited the timeout out, and gave up while the lock was still held: no upper bound
        # on a loaded machine's scheduling is needed to show that.
        assert time.monotonic() - t0 >= 0.35
        with pytest.raises(locking.LockTimeout):
            locking.acquire(path, 0, kind=kind)  # zero: one try
    finally:
        free(fd)
    locking.acquire(path, 1.0, kind=kind).release()


@pytest.mark.parametrize("kind", KINDS)
def test_a_waiter_gets_the_lock_when_it_is_released(tmp_path: Path, kind: str, use) -> None:
    kind = use(kind)
    path = tmp_path / "x.lock"
    fd = hold(path)
    threading.Timer(0.3, free, args=(fd,)).start()
    t0 = time.monotonic()
    held = locking.acquire(path, 10.0, kind=kind, poll_interval=0.01)
    assert time.monotonic() - t0 >= 0.25  # it waited for the release (and got the lock within its timeout)
    assert t0 < held.acquired_at <= time.perf_counter() + 1  # when it was granted (perf_counter)
    with pytest.raises(BlockingIOError):
        hold(path)
    held.release()


@pytest.mark.parametrize("kind", ["flock", "flock-thread"])
def test_an_abandoned_wait_does_not_keep_the_lock(tmp_path: Path, kind: str, use) -> None:
    use(kind)
    path = tmp_path / "x.lock"
    fd = hold(path)
    with pytest.raises(locking.LockTimeout):
        locking.acquire(path, 0.2)
    # The timed-out request is still queued in the kernel; when it is granted, it lets go.
    free(fd)
    locking.acquire(path, 5.0).release()
    # ... and nothing of it is left holding the file.
    assert_let_go(path, "the abandoned request kept the lock")


@pytest.mark.parametrize("kind", ["flock", "flock-thread"])
def test_a_signal_while_waiting_leaves_the_lock_free(tmp_path: Path, kind: str, use) -> None:
    """A second Ctrl-C / SIGTERM raises KeyboardInterrupt out of the wait; nothing stays held."""
    use(kind)
    path = tmp_path / "x.lock"
    fd = hold(path)
    main = threading.main_thread().ident
    assert threading.current_thread().ident == main
    timer = threading.Timer(0.2, signal.pthread_kill, args=(main, signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            locking.acquire(path, 10.0)
    finally:
        timer.join()
        free(fd)
    locking.acquire(path, 5.0).release()
    assert_let_go(path, "the interrupted request kept the lock")


@pytest.mark.parametrize("kind", KINDS)
def test_the_first_signal_ends_a_cut_short_wait_and_leaves_the_lock_free(tmp_path: Path, kind: str, use) -> None:
    """A run's first SIGTERM ends a wait marked cut_short at once (with the lock held for 600 s
    and no timeout it could sit out); nothing stays held or queued."""
    from mythline_cli.stopping import CutShort, StopFlag, graceful

    kind = use(kind)
    path = tmp_path / "x.lock"
    fd = hold(path)
    main = threading.main_thread().ident
    timer = threading.Timer(0.2, signal.pthread_kill, args=(main, signal.SIGTERM))
    try:
        with graceful(StopFlag()) as flag:
            timer.start()
            with pytest.raises(CutShort) as stopped:
                locking.acquire(path, -1, kind=kind, cut_short="waiting for the x lock")
            assert flag.signame == "SIGTERM"
            # Entered after the signal: ends at once, before it waits.
            with pytest.raises(CutShort):
                locking.acquire(path, -1, kind=kind, cut_short="waiting for the x lock")
    finally:
        timer.join()
        free(fd)
    assert stopped.value.waiting == "waiting for the x lock" and stopped.value.exit_code == 143
    assert str(stopped.value).startswith("stopped by SIGTERM while waiting for the x lock;")
    if kind == "flock" and locking.ALARM:
        assert signal.getsignal(signal.SIGALRM) == signal.SIG_DFL
        assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    locking.acquire(path, 5.0, kind=kind).release()
    assert_let_go(path, "the cut-short request kept the lock")


def test_outside_a_cut_short_wait_the_first_signal_only_sets_the_flag(tmp_path: Path) -> None:
    """The settle after a paid call waits on: the first signal sets the flag, the wait goes on."""
    from mythline_cli.stopping import StopFlag, graceful

    path = tmp_path / "x.lock"
    fd = hold(path)
    main = threading.main_thread().ident
    with graceful(StopFlag()) as flag:
        def signal_then_free() -> None:
            time.sleep(0.1)
            signal.pthread_kill(main, signal.SIGTERM)
            while flag.signame is None:  # handled, and the wait went on
                time.sleep(0.01)
            free(fd)

        helper = threading.Thread(target=signal_then_free)
        helper.start()
        held = locking.acquire(path, -1)
        helper.join()
        assert flag.signame == "SIGTERM"
        held.release()


def test_a_lock_file_deleted_while_waiting_is_not_trusted(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    fd = hold(path)
    got: list[locking.Held] = []
    waiter = threading.Thread(target=lambda: got.append(locking.acquire(path, 10.0)))
    waiter.start()
    time.sleep(0.2)
    path.unlink()
    free(fd)
    waiter.join(10)
    (held,) = got
    # It holds the file that is there now, which a newcomer would lock too.
    assert os.fstat(held.fd).st_ino == path.stat().st_ino  # type: ignore[attr-defined]
    with pytest.raises(BlockingIOError):
        hold(path)
    held.release()


@pytest.mark.parametrize("kind", ["flock", "filelock"])
def test_both_kinds_exclude_each_other(tmp_path: Path, kind: str) -> None:
    other = "filelock" if kind == "flock" else "flock"
    path = tmp_path / "x.lock"
    held = locking.acquire(path, 1.0, kind=kind)
    try:
        with pytest.raises(locking.LockTimeout):
            locking.acquire(path, 0.1, kind=other, poll_interval=0.01)
    finally:
        held.release()
    locking.acquire(path, 1.0, kind=other).release()


WAITER = """
import sys, time
from mythline_cli import locking
held = locking.acquire(sys.argv[1], 60)
with open(sys.argv[2], "a") as fh:
    fh.write(sys.argv[3] + "\\n")
held.release()
"""


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="counts queued requests in /proc/locks")
def test_waiting_processes_are_served_in_arrival_order(tmp_path: Path) -> None:
    path, log = tmp_path / "x.lock", tmp_path / "order.txt"
    fd = hold(path)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    procs = []
    try:
        for i in range(5):
            procs.append(subprocess.Popen([sys.executable, "-c", WAITER, str(path), str(log), str(i)], env=env))
            deadline = time.monotonic() + 30
            while blocked_waiters(path) < i + 1:  # queued in the kernel before the next one starts
                assert procs[-1].poll() is None and time.monotonic() < deadline
                time.sleep(0.01)
    finally:
        free(fd)
        for p in procs:
            p.wait(60)
    assert [p.returncode for p in procs] == [0] * 5
    assert log.read_text().split() == ["0", "1", "2", "3", "4"]


def test_a_signal_handler_that_returns_does_not_end_the_wait(tmp_path: Path) -> None:
    """The run's first SIGTERM only sets a flag: the wait goes on (the call is retried)."""
    path = tmp_path / "x.lock"
    fd = hold(path)
    seen: list[int] = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: seen.append(signum))
    main = threading.main_thread().ident
    threading.Timer(0.1, signal.pthread_kill, args=(main, signal.SIGUSR1)).start()
    threading.Timer(0.4, free, args=(fd,)).start()
    try:
        t0 = time.monotonic()
        held = locking.acquire(path, 10.0)
        assert time.monotonic() - t0 >= 0.35 and seen == [signal.SIGUSR1]
        held.release()
    finally:
        signal.signal(signal.SIGUSR1, previous)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the SIGALRM wait is Linux-only")
def test_the_alarm_is_borrowed_only_when_free_and_given_back(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    assert locking._alarm_usable()
    fd = hold(path)
    try:
        with pytest.raises(locking.LockTimeout):
            locking.acquire(path, 0.2)
        assert signal.getsignal(signal.SIGALRM) == signal.SIG_DFL
        assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
        # A process with its own SIGALRM use keeps it: the wait goes to a helper thread.
        fired: list[int] = []
        previous = signal.signal(signal.SIGALRM, lambda signum, frame: fired.append(signum))
        try:
            signal.setitimer(signal.ITIMER_REAL, 0.3)
            assert not locking._alarm_usable()
            with pytest.raises(locking.LockTimeout):
                locking.acquire(path, 0.5)
            assert fired == [signal.SIGALRM]  # its own timer still fired, into its own handler
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        # Another thread cannot take signals: it waits in a helper thread too.
        out: list[object] = []
        waiter = threading.Thread(target=lambda: out.append(locking._alarm_usable()))
        waiter.start()
        waiter.join()
        assert out == [False]
    finally:
        free(fd)
