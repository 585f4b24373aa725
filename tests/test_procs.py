"""``procs.pid_alive``: the living, the exited-but-unreaped (zombie), the gone, and other users'."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from mythline_cli import procs


@contextmanager
def sleeper() -> Iterator[int]:
    """A running child process's pid; killed and reaped on the way out."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        yield child.pid
    finally:
        child.kill()
        child.wait()


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
    with sleeper() as pid:
        assert procs.pid_alive(pid)
    assert not procs.pid_alive(pid)  # reaped: gone


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


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")
def test_a_live_process_this_proc_does_not_show_is_alive(monkeypatch: pytest.MonkeyPatch) -> None:
    """/proc of another PID namespace, or mounted with hidepid: no exe link for a process that
    kill(0) still finds. Only the state letter in /proc/PID/stat may call it dead."""
    def no_link(path: str) -> str:
        raise FileNotFoundError(2, "No such file or directory", path)

    monkeypatch.setattr(procs, "_PROC_EXE", True)
    monkeypatch.setattr(procs.os, "readlink", no_link)
    with sleeper() as pid:
        assert procs.pid_alive(pid)


NOT_DUMPABLE = """
import ctypes, os, sys, time
sys.path.insert(0, sys.argv[1])
from mythline_cli import procs
PR_SET_DUMPABLE = 4
os.setgid(65534); os.setuid(65534)  # nobody, who may not look into a non-dumpable process
kid = os.fork()
if kid == 0:
    ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    if sys.argv[2] == "live":
        time.sleep(30)
    os._exit(0)
time.sleep(0.5)  # running, or exited and not reaped: a zombie
print(os.access(f"/proc/{kid}/exe", os.F_OK), procs._PROC_EXE, procs.pid_alive(kid))
os.kill(kid, 9)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or os.getuid() != 0,
                    reason="needs root to become nobody, and Linux's prctl")
@pytest.mark.parametrize("state", ["live", "zombie"])
def test_a_process_we_may_not_inspect_is_judged_by_its_state(state: str, tmp_path: Path) -> None:
    root = os.path.dirname(os.path.dirname(os.path.abspath(procs.__file__)))
    script = tmp_path / "not_dumpable.py"
    script.write_text(NOT_DUMPABLE)
    os.chmod(tmp_path, 0o755)
    os.chmod(script, 0o644)
    out = subprocess.run([sys.executable, str(script), root, state], capture_output=True, text=True,
                         timeout=60, cwd="/")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-1] == ("True" if state == "live" else "False")
