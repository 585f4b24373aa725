"""``python -m mythline_cli``, the ``mythline`` console script and the windowless ``mythlinew``."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from . import collector, grammar

if TYPE_CHECKING:
    from datetime import datetime


def _global_options(argv: list[str]) -> tuple[Path | None, bool, list[str]] | None:
    """(config, debug, the rest from the command on), when the fast paths read every option
    before the command (``grammar.GLOBAL``, ``fast=True``); else None."""
    args = list(argv)
    config: Path | None = None
    debug = False
    while args and args[0] not in grammar.COMMANDS_WITH_FAST_PATHS:
        name, eq, value = args.pop(0).partition("=")
        option = grammar.find(grammar.GLOBAL, name)
        # Click reads "-c=x" as the value "=x": only a long option takes "=value".
        if (option is None or not option.fast or (option.valued and not (eq or args))
                or (eq and not (option.valued and name.startswith("--")))):
            return None
        if option.names[0] == "--config":
            config = Path(value if eq else args.pop(0))
        elif option.names[0] == "--debug":
            debug = True
    return config, debug, args


def _apply_home(argv: list[str]) -> None:
    """``--home DIR`` before the command sets MYTHLINE_HOME before anything reads it (the
    windowless launcher opens its log under the state home first)."""
    args = list(argv)
    while args:
        name, eq, value = args.pop(0).partition("=")
        option = grammar.find(grammar.GLOBAL, name)
        if option is None:
            return
        if option.valued and not eq:
            if not args:
                return
            value = args.pop(0)
        if option.names[0] == "--home" and value:
            os.environ["MYTHLINE_HOME"] = str(Path(value).expanduser().absolute())


def _fast_read(argv: list[str]) -> int | None:
    """``mythline [--config PATH] status [--json | --all]`` and ``... budget show [--json]``
    without Typer: from the settings cache (neither Typer nor pydantic, most of a command's
    start-up), or, when the config changed since the cache was written, from the config
    validated here, which refreshes the cache. None: take the full path instead (it reports
    a broken config or an unreadable ledger, for one)."""
    parsed = _global_options(argv)
    if parsed is None:
        return None
    config, debug, args = parsed
    # With --debug, a failure's traceback is what is wanted: the full path shows it.
    if debug:
        return None
    if args[:1] == ["status"] and args[1:] in ([], ["--json"], ["--all"]):
        command, option = "status", args[1:]
    elif args[:2] == ["budget", "show"] and args[2:] in ([], ["--json"]):
        command, option = "budget", args[2:]
    else:
        return None
    with collector.paused():  # a short read: nothing it allocates is worth collecting
        return _read(command, option, config)


def _read(command: str, option: list[str], config: Path | None) -> int | None:
    from . import settings_cache

    settings: Any = settings_cache.load(config)
    from .console import print_json

    data: Any  # status.StatusReport or Ledger.report(), by command
    try:
        if settings is None:
            from . import paths
            from .config import load_settings

            settings = load_settings(config)
            if paths.home().exists():  # never create a state home just to cache
                settings_cache.save(settings)
        # The cache has what these read: caps, intervals, queues.
        if command == "status":
            from .status import collect

            data = collect(settings)
        else:
            from .ledger import Ledger

            data = Ledger(settings).report()
    except Exception:  # noqa: BLE001 - the full path reports whatever this was, properly
        return None
    # Output has started: from here on, failures end like the full path's, never twice.
    try:
        if option == ["--json"]:
            print_json(data)
        elif command == "status":
            from .statusview import render

            render(data, all_rows=option == ["--all"])
        else:
            from .statusview import render_budget

            render_budget(data)
        sys.stdout.flush()
    except BrokenPipeError:
        # `mythline status | head`: the reader left; stay quiet at exit too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("mythline: interrupted\n")
        return 130
    return 1 if command == "status" and data["failing"] else 0


def _fast_run(argv: list[str]) -> int | None:
    """``mythline run AGENT`` as the scheduler starts it, without Typer: the same code as the
    ``run`` command, minus the cost of building the whole command line interface. None:
    anything the fast path does not read takes the full path, which also reports mistakes."""
    parsed = _global_options(argv)
    if parsed is None:
        return None
    config, debug, args = parsed
    if args[:1] != ["run"] or (config is not None and not config.is_file()):
        return None
    parsed_run = _fast_run_args(args)
    if parsed_run is None:
        return None
    agent, flags, values = parsed_run
    from .console import report_failure
    from .launch import StartGuard

    guard = StartGuard(agent)
    try:
        with guard, collector.paused():  # until the LLM client exists (Cycle.client)
            from .config import load_settings
            from .runner import run_once

            cfg = load_settings(config, {"model": values.get("--model"), "base_url": values.get("--base-url")})
            guard.known(cfg)
            return run_once(cfg, agent, json_out="--json" in flags, force="--force" in flags)
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - the same boundary as the full path's
        if debug:
            raise
        return report_failure(exc)


def _fast_run_args(args: list[str]) -> tuple[str, set[str], dict[str, str]] | None:
    """``run AGENT [options]`` as (agent, flags, option values), when the fast path reads every
    option in it (``grammar.RUN``, ``fast=True``); else None."""
    if args[:1] != ["run"]:
        return None
    agent: str | None = None
    flags: set[str] = set()
    values: dict[str, str] = {}
    rest = args[1:]
    while rest:
        word = rest.pop(0)
        name, eq, value = word.partition("=")
        option = grammar.find(grammar.RUN, name) if name.startswith("-") else None
        if option is not None and option.fast:
            if not option.valued and not eq:
                flags.add(option.names[0])
            elif option.valued and eq and name.startswith("--"):
                values[option.names[0]] = value
            elif option.valued and rest:
                values[option.names[0]] = rest.pop(0)
            else:
                return None
        elif agent is None and word and not word.startswith("-"):
            agent = word
        else:
            return None
    return None if agent is None else (agent, flags, values)


def _fast_store(argv: list[str]) -> int | None:
    """``mythline store ls|search ...`` without Typer (see ``storeview.fast``); None: the full path."""
    if argv[:1] != ["store"]:
        return None
    from .console import report_failure
    from .storeview import fast

    try:
        return fast(argv[1:])
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - the same boundary as the full path's
        return report_failure(exc)


def main() -> None:
    from .clock import utcnow

    started = utcnow()
    # Pydantic scans every installed package for plugins on first use; Mythline uses none,
    # and the scan costs tens of milliseconds on every command that validates the config.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    argv = sys.argv[1:]
    _apply_home(argv)
    code = _fast_read(argv)
    if code is None:
        code = _fast_run(argv)
    if code is None:
        code = _fast_store(argv)
    if code is not None:
        collector.final()
        sys.exit(code)
    from .cli import app

    try:
        app(prog_name="mythline")
    except SystemExit as exc:
        if exc.code == 2:
            _record_usage_error(argv, started)
        collector.final()
        raise


def _record_usage_error(argv: list[str], started: datetime) -> None:
    """A scheduled ``run`` that the command line parser refused (exit 2, its message already
    on stderr) still leaves a start failure for status and the watchdog, unless the run
    command recorded one itself."""
    is_run, agent = run_target(argv)
    from . import launch, paths

    if not is_run or launch.recorded_here():
        return
    guard = launch.StartGuard(agent, started=started)
    try:
        from .cli._util import settings

        guard.known(settings())
    except Exception:  # noqa: BLE001 - a config that cannot be read leaves it unknown
        pass
    from .cli import _util

    # The command line itself is not quoted: a --base-url may carry a password. Click's line
    # quotes at most one value; any URL in it loses its credentials.
    command = "mythline run" + (f" {agent}" if agent else "")
    reason = _util.last_usage_error
    if reason:
        import re

        from .redact import safe_url

        reason = re.sub(r"[a-zA-Z][a-zA-Z0-9+.-]*://\S+", lambda m: safe_url(m.group(0)), reason)
        guard.failed(f"{command} was refused as a usage error (exit 2): {reason}", 2)
        return
    guard.failed(f"{command} was refused as a usage error (exit 2); the reason is the line on stderr before "
                 f"this (under the schedule: in {paths.agent_log(log_name(argv))})", 2)


def run_target(argv: list[str]) -> tuple[bool, str | None]:
    """(whether ``argv`` is a ``run`` command, the agent it names or None)."""
    words = grammar.words(argv)
    if not words or words[0] != "run":
        return False, None
    return True, (words[1] if len(words) > 1 else None)


def log_name(argv: list[str]) -> str:
    """The log a windowless run writes to: the agent's for ``run AGENT``, else the fleet's."""
    from .agent import valid_name

    words = grammar.words(argv)
    # Any safe agent name, configured or not: the config is not read to choose a log.
    if len(words) >= 2 and words[0] == "run" and valid_name(words[1]):
        return words[1]
    return "fleet"


def _open_log(argv: list[str]) -> TextIO:
    from . import paths

    log = paths.agent_log(log_name(argv))
    try:
        log.parent.mkdir(parents=True, exist_ok=True)
        return open(log, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - lives as long as the process
    except OSError:
        # Nowhere to write: the run still records its heartbeat and events.
        return open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115


def main_windowless() -> None:
    """The ``mythlinew`` gui-script: no console window, output appended to the agent's log.

    Started by pythonw (Task Scheduler), there is no console, and ``sys.stdout`` and
    ``sys.stderr`` are None: anything printed would be lost or raise. Point both at the log.
    """
    if sys.stdout is None or sys.stderr is None:
        _apply_home(sys.argv[1:])
        stream = _open_log(sys.argv[1:])
        if sys.stdout is None:
            sys.stdout = stream
        if sys.stderr is None:
            sys.stderr = stream
    main()


if __name__ == "__main__":
    # Also right for `pythonw -m mythline_cli`: with a console nothing is redirected.
    main_windowless()
