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
        return _not_zombie(pid)  # it exists, it just is not ours
    except OSError:
        return True
    return _not_zombie(pid)


def _not_zombie(pid: int) -> bool:
    """False for a process that has exited but is still listed: kill(0) answers for an unreaped
    child (a zombie) as for a living process, so ask /proc.

    Linux: a living process's ``/proc/PID/exe`` is a link, and readlink answers it in one
    system call (the ledger asks for every open reservation, in its lock; reading
    ``/proc/PID/stat`` takes three and several times as long). When readlink fails - a zombie
    has no link (ENOENT), but so does a process that this /proc does not show (another PID
    namespace, ``hidepid``), and a process we may not inspect says EACCES - the state letter
    in ``/proc/PID/stat`` decides, as it does everywhere else: dead only when it says so
    (Z or X), alive when it cannot be read."""
    if _PROC_EXE:
        try:
            os.readlink(f"/proc/{pid}/exe")
            return True
        except OSError:
            pass
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return True
    state = stat.rsplit(b")", 1)[-1].split()[:1]
    return state not in ([b"Z"], [b"X"])


def _proc_exe_usable() -> bool:
    """Whether readlink of ``/proc/PID/exe`` can vouch for the living here: Linux, with a /proc
    that belongs to this process's PID namespace (its ``self`` is our pid)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return os.readlink("/proc/self") == str(os.getpid()) and bool(os.readlink("/proc/self/exe"))
    except OSError:
        return False


_PROC_EXE = _proc_exe_usable()


def _win_alive(pid: int) -> bool:  # pragma: no cover - exercised on Windows only
    import ctypes
    from ctypes import wintypes

    if sys.platform != "win32":  # tells the type checker which ctypes this is
        raise NotImplementedError
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
