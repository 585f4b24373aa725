"""A fork server for the sweeps, which start a few hundred cycles each.

    with Zygotes(2) as zygotes:
        done = zygotes.run(["run", "world-npcs"], env=env, kill_at=7, log=path)

Each command runs in a child forked from a process that has already imported the CLI and the
libraries a run loads: the child is a real process (its own pid, environment, working
directory and standard streams, stopped for real by SIGKILL) that starts where a fresh
interpreter would be after its imports, in ``mythline_cli.__main__.main()``. It skips the
interpreter's start and the imports, about a second of the 1.3 a cycle takes here, and nothing
a sweep checks happens there: the launcher's hook counts writes under the state home, and
imports write none. ``tests/test_zygote.py`` checks that a forked cycle makes the same writes,
in the same order, as a fresh process.

Run as a script, this file is the server: one JSON request per line on stdin, two lines back
per request on stdout (the child's pid when it starts, its exit status when it ends; a signal
is ``-signum``, as ``subprocess`` reports it).
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

# What a cycle imports on its way (the fast path, the config, the cycle, the SDK, extraction).
# A module left out is imported by the child itself: slower, never different.
PRELOAD = (
    "mythline_cli.__main__", "mythline_cli.config", "mythline_cli.runner", "mythline_cli.cycle",
    "mythline_cli.planner", "mythline_cli.llm", "mythline_cli.research", "mythline_cli.fetch",
    "mythline_cli.evidence", "mythline_cli.store", "mythline_cli.ledger", "mythline_cli.pricing",
    "mythline_cli.launch", "mythline_cli.statedocs", "openai", "httpx", "tenacity",
    "trafilatura.core", "trafilatura.metadata", "trafilatura.utils", "rapidfuzz",
)


# -- the client ----------------------------------------------------------------------------

class _Server:
    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, bufsize=1, env=os.environ.copy())
        assert self.proc.stdout is not None and self.proc.stdin is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the zygote did not start")

    def run(self, request: dict[str, Any], timeout: float) -> int:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        pid = int(self.proc.stdout.readline())
        answer: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: answer.put(self.proc.stdout.readline()), daemon=True).start()  # type: ignore[union-attr]
        try:
            line = answer.get(timeout=timeout)
        except queue.Empty:
            os.kill(pid, signal.SIGKILL)
            answer.get()
            raise subprocess.TimeoutExpired(request["argv"], timeout) from None
        return int(line)

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


class Zygotes:
    """``count`` servers, so that as many threads can each run a command at a time."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.free: queue.Queue[_Server] = queue.Queue()
        self.all: list[_Server] = []

    def __enter__(self) -> Zygotes:
        for _ in range(self.count):
            server = _Server()
            self.all.append(server)
            self.free.put(server)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for server in self.all:
            server.close()

    def run(self, argv: Sequence[str], *, env: dict[str, str], cwd: Path | str | None = None,
            kill_at: int = 0, log: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """``mythline *argv`` in a forked child, like ``subprocess.run(..., capture_output=True,
        text=True)``. With ``log``, the crash launcher's hook lists every write there and stops
        the child at write ``kill_at`` (SIGKILL, or the OSError ``CRASH_ERRNO`` in ``env``)."""
        server = self.free.get()
        try:
            import tempfile

            with tempfile.TemporaryDirectory(prefix="zygote-") as tmp:
                out, err = Path(tmp, "out"), Path(tmp, "err")
                code = server.run({"argv": list(argv), "env": env, "cwd": str(cwd or os.getcwd()),
                                   "kill_at": kill_at, "log": str(log) if log else None,
                                   "out": str(out), "err": str(err)}, timeout)
                return subprocess.CompletedProcess(["mythline", *argv], code,
                                                   out.read_text(errors="replace"), err.read_text(errors="replace"))
        finally:
            self.free.put(server)


# -- the server ----------------------------------------------------------------------------

def _child(request: dict[str, Any], private: tuple[int, int]) -> None:
    """Become the command: its streams, directory, environment and arguments; never returns."""
    code: Any = 1
    try:
        for fd in private:
            os.close(fd)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        os.dup2(os.open(request["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), 1)
        os.dup2(os.open(request["err"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), 2)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = ["mythline", *request["argv"]]
        if request["log"]:
            from crash_launcher import install

            install(request["kill_at"], request["log"])
        try:
            from mythline_cli.__main__ import main

            main()
            code = 0
        except SystemExit as exc:  # what the interpreter makes of it
            code = exc.code
            if code is None:
                code = 0
            elif not isinstance(code, int):
                print(code, file=sys.stderr)
                code = 1
        except BaseException:  # noqa: BLE001 - as an uncaught exception ends an interpreter
            import traceback

            traceback.print_exc()
            code = 1
        import atexit

        atexit._run_exitfuncs()
        threading._shutdown()  # type: ignore[attr-defined]  # non-daemon threads, as at exit
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
    finally:
        os._exit(code if isinstance(code, int) else 1)


def serve() -> None:
    # What __main__.main() sets before anything imports pydantic's models.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    import importlib

    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    requests = os.fdopen(os.dup(0), "r", encoding="utf-8")
    answers = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    private = (requests.fileno(), answers.fileno())
    answers.write("ready\n")
    for line in requests:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(request, private)
        answers.write(f"{pid}\n")
        _, status = os.waitpid(pid, 0)
        answers.write(f"{os.waitstatus_to_exitcode(status)}\n")


if __name__ == "__main__":
    serve()
