"""Run the mythline CLI and SIGKILL it just before its Nth write under the state home.

    python crash_launcher.py N LOGFILE -- mythline arguments...

N = 0 never kills; every write point (a file opened for writing, a rename) is listed in
LOGFILE either way, one per line, so a test can count them and then kill at each in turn.
With ``CRASH_ERRNO`` set (e.g. 28, ENOSPC), the Nth write fails with that OSError instead
of a kill: the disk-full or I/O-error sweep. ``install`` is the hook alone (tests/zygote.py
puts it into a forked child).
The hook lives here, in the test's launcher, not in the product.
"""

from __future__ import annotations

import os
import signal
import sys
import time


def install(kill_at: int, log: str) -> None:
    """List every write under the state home in ``log``; stop the process at write ``kill_at``."""
    log_fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    home = os.path.realpath(os.environ["MYTHLINE_HOME"])
    count = 0
    fail_errno = int(os.environ.get("CRASH_ERRNO") or 0)
    writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND

    def hook(event: str, details: tuple) -> None:
        nonlocal count
        if event == "open":
            path, mode, flags = details
            if not isinstance(path, (str, bytes, os.PathLike)):
                return
            is_write = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                mode is None and isinstance(flags, int) and flags & writing)
            target = os.fsdecode(path)
        elif event == "os.rename":
            is_write, target = True, os.fsdecode(details[1])
        else:
            return
        if not is_write or not os.path.realpath(target).startswith(home):
            return
        count += 1
        os.write(log_fd, f"{count} {event} {os.path.relpath(target, home)} {time.monotonic()}\n".encode())
        if count == kill_at:
            if fail_errno:
                raise OSError(fail_errno, os.strerror(fail_errno), target)
            os.kill(os.getpid(), signal.SIGKILL)

    sys.addaudithook(hook)


def main() -> None:
    args = sys.argv[sys.argv.index("--") + 1:]
    install(int(sys.argv[1]), sys.argv[2])
    sys.argv = ["mythline", *args]
    from mythline_cli.__main__ import main as cli

    cli()


if __name__ == "__main__":
    main()
