"""The ``mythline`` command: one Typer app, one module per command group."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from .. import __version__
from . import agents, budget, doctor, init, keys, logs, pause, run, schedule, status, store, topics, watchdog
from . import state as state_cli
from ._util import STATE, OneLineErrors

EXIT_CODES = """Exit codes: 0 stored or nothing due · 1 the cycle failed · 2 usage or config error ·
3 over budget · 4 already running · 5 paused or backing off · 6 shared state unreachable ·
130/143 interrupted."""

app = typer.Typer(
    name="mythline",
    cls=OneLineErrors,
    help="Mythline: a fleet of LLM research agents that build a World of Warcraft lore store, "
    "one short, budgeted, crash-safe run at a time.\n\n" + EXIT_CODES,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mythline {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    config: Path = typer.Option(None, "--config", "-c", help="Config file to use (else $MYTHLINE_CONFIG, "
                                "./mythline.toml, the user config dir, then built-in defaults).",
                                dir_okay=False),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks instead of one-line errors."),
    home: Path = typer.Option(None, "--home", help="State home to use (else $MYTHLINE_HOME, then the user data "
                              "dir). Task Scheduler's tasks pass it: a task has no environment of its own.",
                              file_okay=False),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    STATE.config = config
    STATE.debug = debug
    if home is not None:
        # Read by paths.home() everywhere, the processes run --due starts included.
        os.environ["MYTHLINE_HOME"] = str(home.expanduser().absolute())


app.command("run", help=run.HELP)(run.run_cli)
app.command("status", help=status.HELP)(status.status_cli)
app.command("init", help=init.HELP)(init.init_cli)
app.command("home", help="Print the state home (set MYTHLINE_HOME to move it).")(status.home_cli)
app.add_typer(budget.app, name="budget")
app.command("pause", help=pause.PAUSE_HELP)(pause.pause_cli)
app.command("resume", help=pause.RESUME_HELP)(pause.resume_cli)
app.command("watchdog", help=watchdog.HELP)(watchdog.watchdog_cli)
app.command("logs", help=logs.HELP)(logs.logs_cli)
app.command("agents", help=agents.HELP)(agents.agents_cli)
app.add_typer(schedule.app, name="schedule")
app.command("doctor", help=doctor.HELP)(doctor.doctor_cli)
app.add_typer(keys.app, name="keys")
app.add_typer(store.app, name="store")
app.add_typer(topics.app, name="topics")
app.add_typer(state_cli.app, name="state")
