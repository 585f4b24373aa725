"""Is a process still alive? (POSIX and Windows, standard library only.)"""

from __future__ import annotations

import os
import sys


def pid_alive(pid: int) -> bool:
    """True when ``pid`` names a running process on this machine (or we cannot tell)."""
    if pid <= 0:
        return False
    if sys.platform == "win32":
        return _win_alive(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, it just is not ours
    except OSError:
        return True
    return _not_zombie(pid)


def _not_zombie(pid: int) -> bool:
    """A killed child that its parent has not reaped yet still answers kill(0): ask /proc.

    Linux: ``/proc/PID/exe`` is a link while the process has its memory, and readlink says
    ENOENT once it has exited (a zombie) - one system call, where reading ``/proc/PID/stat``
    takes three and several times as long (the ledger asks for every open reservation, under
    its lock). Elsewhere, or without a usable /proc: read ``stat`` or assume it lives."""
    if _PROC_EXE:
        try:
            os.readlink(f"/proc/{pid}/exe")
        except FileNotFoundError:
            return False
        except OSError:
            return True  # not ours to inspect (EACCES): kill(0) said it exists
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return True
    state = stat.rsplit(b")", 1)[-1].split()[:1]
    return state != [b"Z"]


def _proc_exe_usable() -> bool:
    """Whether ``/proc/PID/exe`` tells the living from the dead here (Linux with /proc mounted)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        os.readlink(f"/proc/{os.getpid()}/exe")
    except OSError:
        return False
    return True


_PROC_EXE = _proc_exe_usable()


def _win_alive(pid: int) -> bool:  # pragma: no cover - exercised on Windows only
    import ctypes
    from ctypes import wintypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    PROCESS_QUERY_LIMITED_INFORMATION = 0x1000
    STILL_ACTIVE = 259
    handle = kernel32.OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, False, pid)
    if not handle:
        # ERROR_ACCESS_DENIED means it exists but belongs to someone else.
        return ctypes.get_last_error() == 5
    try:
        code = wintypes.DWORD()
        if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
            return True
        return code.value == STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)
