"""``procs.pid_alive``: the living, the exited-but-unreaped (zombie), the gone, and other users'."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from mythline_cli import procs


def _zombie() -> subprocess.Popen[bytes]:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    # Not waited for: it stays a zombie until we reap it. /proc says when it has exited.
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{child.pid}/stat", "rb") as fh:
                if fh.read().rsplit(b")", 1)[-1].split()[:1] == [b"Z"]:
                    return child
        except OSError:
            break
        time.sleep(0.01)
    child.wait()
    pytest.skip("no /proc to see a zombie in")


@pytest.fixture(params=["proc-exe", "proc-stat"])
def way(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both Linux checks: the readlink of /proc/PID/exe, and reading /proc/PID/stat (its fallback)."""
    if request.param == "proc-exe" and not procs._proc_exe_usable():
        pytest.skip("/proc/PID/exe is not usable here")
    monkeypatch.setattr(procs, "_PROC_EXE", request.param == "proc-exe")
    return str(request.param)


def test_this_process_and_a_running_child_are_alive(way: str) -> None:
    assert procs.pid_alive(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert procs.pid_alive(child.pid)
    finally:
        child.kill()
        child.wait()
    assert not procs.pid_alive(child.pid)  # reaped: gone


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="zombies are told apart through /proc")
def test_an_exited_child_not_yet_reaped_is_dead(way: str) -> None:
    child = _zombie()
    try:
        os.kill(child.pid, 0)  # it still answers kill(0): that alone would call it alive
        assert not procs.pid_alive(child.pid)
    finally:
        child.wait()


def test_no_such_process_and_nonsense_pids_are_dead(way: str) -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not procs.pid_alive(child.pid)
    assert not procs.pid_alive(0)
    assert not procs.pid_alive(-1)


@pytest.mark.skipif(not hasattr(os, "getuid") or os.getuid() != 0, reason="needs root to become another user")
def test_another_users_process_is_alive_even_when_we_may_not_look_at_it(way: str) -> None:
    # pid 1 belongs to root; a forked child that became nobody may not signal it (kill says
    # EPERM) and must still call it alive.
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 3
        try:
            os.setgid(65534)
            os.setuid(65534)
            code = 0 if procs.pid_alive(1) else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
