"""The one probe for "which heavy modules did this command import": a fresh interpreter runs
the command and reports the watched modules it had loaded by the end."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass

from helpers import TEST_KEY

# What a read-only command must never pay for: the LLM stack, and the page extraction and
# quote matching that only a grounded run needs.
LLM_STACK = frozenset({"openai", "tokencost", "anthropic", "tiktoken", "trafilatura", "rapidfuzz"})
# What page extraction loads only for the pages that need it (fetch._DEFERRED_MODULES).
EXTRACTION_DEFERRED = ("courlan", "htmldate", "justext", "charset_normalizer", "urllib3")
WATCHED = (*sorted(LLM_STACK), "pydantic", "typer", "mythline_cli.cli", *EXTRACTION_DEFERRED)
MARK = "PROBE-MODULES "

# ``mythline ARGS`` exactly as the console script runs it (fast paths included); the report
# is stderr's last line, written at exit.
_MAIN = f"""
import atexit, json, runpy, sys
def report():
    sys.stderr.write("\\n{MARK}" + json.dumps([m for m in {WATCHED!r} if m in sys.modules]) + "\\n")
atexit.register(report)
sys.argv = ["mythline"] + sys.argv[1:]
runpy.run_module("mythline_cli", run_name="__main__")
"""

# The Typer app itself (no fast path), through Click's test runner.
_APP = f"""
import json, sys
from typer.testing import CliRunner
from mythline_cli.cli import app
result = CliRunner().invoke(app, json.loads(sys.argv[1]))
print(json.dumps({{"exit": result.exit_code, "stdout": result.stdout, "stderr": result.stderr,
                  "loaded": [m for m in {WATCHED!r} if m in sys.modules]}}))
"""


@dataclass(frozen=True)
class Probe:
    returncode: int  # the command's exit code
    stdout: str
    stderr: str  # without the probe's own line
    loaded: frozenset[str]  # the watched modules that were imported

    @property
    def llm_stack(self) -> frozenset[str]:
        return self.loaded & LLM_STACK


def _checked(proc: subprocess.CompletedProcess) -> None:
    assert TEST_KEY not in proc.stdout + proc.stderr, "the API key leaked to the output"


def run_main(*args: str, timeout: float = 60) -> Probe:
    """``mythline ARGS`` in a fresh interpreter, through ``__main__``."""
    proc = subprocess.run([sys.executable, "-c", _MAIN, *args], capture_output=True, text=True, timeout=timeout)
    _checked(proc)
    stderr, mark, report = proc.stderr.rpartition("\n" + MARK)
    assert mark, proc.stderr
    return Probe(proc.returncode, proc.stdout, stderr, frozenset(json.loads(report)))


def run_app(args: list[str], timeout: float = 120) -> Probe:
    """``mythline ARGS`` in a fresh interpreter, through the Typer app (never a fast path)."""
    proc = subprocess.run([sys.executable, "-c", _APP, json.dumps(args)], capture_output=True, text=True,
                          timeout=timeout)
    _checked(proc)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    return Probe(report["exit"], report["stdout"], report["stderr"], frozenset(report["loaded"]))


def status_modules(*args: str) -> tuple[Probe, str]:
    """``run_main(*args)`` and which of pydantic, Typer, openai and tokencost it imported, in
    that order ("" for none): what the status fast path is judged by."""
    report = run_main(*args)
    return report, " ".join(m for m in ("pydantic", "typer", "openai", "tokencost") if m in report.loaded)
