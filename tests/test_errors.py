"""Every error class lives in mythline_cli/errors.py, and every exit code is an ``ExitCode``."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re

import mythline_cli
from mythline_cli import errors
from mythline_cli.cli import EXIT_CODES
from mythline_cli.errors import ExitCode, MythlineError

# CallFailure is the LLM client's record of one failed attempt (a dataclass the client fills
# in); it moves here with the client's rework of llm.py.
ELSEWHERE = {"mythline_cli.llm.CallFailure"}


def _modules() -> list[str]:
    return [m.name for m in pkgutil.walk_packages(mythline_cli.__path__, "mythline_cli.")]


def _error_classes() -> dict[str, type[BaseException]]:
    found = {}
    for name in _modules():
        module = importlib.import_module(name)
        for attr, value in vars(module).items():
            if (inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == name
                    and not attr.startswith("_")):
                found[f"{name}.{attr}"] = value
    return found


def test_every_error_class_is_defined_in_errors() -> None:
    elsewhere = {name for name in _error_classes() if not name.startswith("mythline_cli.errors.")}
    assert elsewhere == ELSEWHERE


def test_the_old_import_names_still_work() -> None:
    from mythline_cli import alerts, breaker, files, killswitch, locking, paths, schedule

    assert killswitch.Paused is errors.Paused
    assert breaker.BreakerOpen is errors.BreakerOpen and breaker.ProviderWait is errors.ProviderWait
    assert paths.StateHomeUnusable is errors.StateHomeUnusable
    assert schedule.SchedulerError is errors.SchedulerError
    assert files.CorruptFile is errors.CorruptFile
    assert locking.LockTimeout is errors.LockTimeout
    assert alerts.WebhookFailed is errors.WebhookFailed


def test_every_exit_code_is_documented_and_typed() -> None:
    for cls in [c for c in vars(errors).values() if inspect.isclass(c) and issubclass(c, MythlineError)]:
        if "exit_code" in vars(cls):
            assert isinstance(cls.exit_code, ExitCode), cls
    for code in ExitCode:
        assert re.search(rf"\b{int(code)}\b", EXIT_CODES), code
    # An IntEnum prints and serialises as the number it is.
    assert f"{ExitCode.PAUSED}" == "5" and str(ExitCode.USAGE) == "2"
