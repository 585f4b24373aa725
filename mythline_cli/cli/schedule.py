"""``mythline schedule cron|windows``: scheduler entries from the config."""

from __future__ import annotations

import shlex
from pathlib import Path

import typer

from ..errors import UsageError
from ._util import STATE, boundary, fail_line, out, settings

app = typer.Typer(no_args_is_help=True, help="Generate scheduler entries from the config: crontab lines "
                  "(Linux, macOS), Task Scheduler XML (Windows) or Kubernetes CronJobs. See docs/scheduling.md "
                  "and docs/many-hosts.md.")

CRON_HELP = """Print crontab lines that run every enabled agent at its interval.

Each line calls the absolute path of this mythline (cron's PATH is minimal) with this
state home (MYTHLINE_HOME) and config file (MYTHLINE_CONFIG), appends the output to the
agent's log under the state home, and starts at a fixed minute of its own so the fleet
does not start at once. An interval cron cannot express runs at the nearest shorter
schedule, with a comment that says so. The block ends with the watchdog's line (every 5
minutes, same home and config). The lines sit between "# BEGIN mythline" and
"# END mythline"; --install merges them into your crontab and keeps every other line.

No secret goes into the lines: store the API key with `mythline keys set NAME`.
MYTHLINE_MODEL and MYTHLINE_BASE_URL set in this shell are written into them.

Examples:

\b
  mythline schedule cron > mythline.cron && crontab -n mythline.cron
  mythline schedule cron --install
  mythline schedule cron --fleet --install     # one line: mythline run --due
"""

WINDOWS_HELP = """Write one Task Scheduler XML file per enabled agent, plus install.cmd and uninstall.cmd.

The tasks (and watchdog.xml, the watchdog every 5 minutes) run mythlinew.exe (no console
window; output goes to the agent's log), repeat
at the agent's interval from a staggered start, skip a start while a run is going, run on
battery, catch up a missed start, and are stopped after budget.run_timeout + 5 minutes.
A task has no environment: each passes --home (this state home) and --config (this config
file), and MYTHLINE_MODEL / MYTHLINE_BASE_URL from this shell as --model / --base-url; no
secret (store the key with `mythline keys set NAME`). The logon type comes from
schedule.windows_logon. Register them with DIR\\install.cmd.

Example:

\b
  mythline schedule windows --out windows_tasks
"""


def _posix_command(words: list[str]) -> str:
    return " ".join(shlex.quote(w) for w in words)


def _windows_word(word: str) -> str:
    # Double quotes read the same in cmd.exe and in a POSIX shell for these paths.
    if word and all(c.isalnum() or c in "-_./:=" for c in word):
        return word
    return '"' + word.replace('"', '\\"') + '"'


def _prefix() -> list[str]:
    return ["mythline"] + (["--config", str(STATE.config)] if STATE.config else [])


def cron_cli(
    agent: str = typer.Option(None, "--agent", help="Only this agent (with --install/--uninstall: only its line; "
                              "the block's other lines stay)."),
    fleet: bool = typer.Option(False, "--fleet", help="One line for the whole fleet: every minute, "
                               "`mythline run --due` starts the agents that are due."),
    install: bool = typer.Option(False, "--install", help="Merge the lines into your crontab between the "
                                 "markers; every other line is kept. Running it again changes nothing."),
    uninstall: bool = typer.Option(False, "--uninstall", help="Remove the mythline block (or, with --agent, that "
                                   "agent's line) from your crontab; every other line is kept."),
    exe: str = typer.Option(None, "--exe", help="mythline executable to call (default: the one running, or "
                            "python -m mythline_cli when run that way)."),
    home: str = typer.Option(None, "--home", help="State home the lines use (default: this one, "
                             "see: mythline home)."),
    out_file: Path = typer.Option(None, "--out", help="Write the lines to this file instead of printing them.",
                                  dir_okay=False),
) -> None:
    with boundary():
        from .. import schedule

        if install and uninstall:
            raise UsageError("choose one of --install and --uninstall")
        if out_file is not None and (install or uninstall):
            raise UsageError("--out writes a file; it cannot be combined with --install or --uninstall")
        plan = schedule.plan_cron(settings(), agent=agent, fleet=fleet, exe=exe, home=home)
        opts = (["--fleet"] if fleet else []) + (["--exe", exe] if exe else []) + (["--home", home] if home else [])
        if install or uninstall:
            plan.header = [f"# Update: {_posix_command(_prefix() + ['schedule', 'cron', '--install'] + opts)}"
                           f"; remove: mythline schedule cron --uninstall"]
            change = schedule.install_cron(plan, remove=uninstall, partial=agent is not None)
            _report_change(change, uninstall, agent)
            return
        words = _prefix() + ["schedule", "cron"] + (["--agent", agent] if agent else []) + opts
        words += ["--out", str(out_file)] if out_file is not None else []
        plan.header = [f"# Regenerate: {_posix_command(words)}"]
        text = schedule.render_block(plan)
        if out_file is None:
            typer.echo(text, nl=False)
            return
        schedule.write_file(out_file, text.encode("utf-8"))
        out().print(f"wrote {out_file}; check it with: crontab -n {shlex.quote(str(out_file))}", markup=False)


def _report_change(change, uninstall: bool, agent: str | None) -> None:  # noqa: ANN001 - schedule.CronChange
    con = out()
    what = f"{agent}'s line" if agent else "the mythline block"
    if change.action == "unchanged":
        con.print(f"your crontab already {'has no' if uninstall else 'has'} {what} as configured; nothing changed",
                  markup=False)
    elif uninstall:
        con.print(f"removed {what} from your crontab; every other line is as it was", markup=False)
    else:
        con.print(f"installed {len(change.keys)} line(s) in your crontab between '# BEGIN mythline' and "
                  "'# END mythline'; see them with: crontab -l", markup=False)


def windows_cli(
    out_dir: Path = typer.Option(..., "--out", help="Directory for the XML files, install.cmd and uninstall.cmd "
                                 "(created if missing).", file_okay=False),
    agent: str = typer.Option(None, "--agent", help="Only this agent's task."),
    exe: str = typer.Option(None, "--exe", help="Windowless launcher the tasks run (default: mythlinew.exe beside "
                            "the installed mythline.exe)."),
    home: str = typer.Option(None, "--home", help="State home the tasks use, passed to each run as --home "
                             "(default: this one)."),
) -> None:
    with boundary():
        from .. import schedule

        cfg = settings()
        opts = ["--out", str(out_dir)] + (["--agent", agent] if agent else []) + (["--exe", exe] if exe else [])
        opts += ["--home", home] if home else []
        regenerate = " ".join(_windows_word(w) for w in _prefix() + ["schedule", "windows"] + opts)
        plans, guess = schedule.plan_windows(cfg, agent=agent, exe=exe, home=home, regenerate=regenerate)
        stale = [] if agent else [n for n in cfg.agent_names if n not in {p.name for p in plans}]
        written = schedule.write_windows(plans, out_dir, regenerate, stale=stale)
        if guess:
            fail_line(f"not on Windows, so the tasks run {plans[0].command if plans else 'mythlinew.exe'}, a guess; "
                      r"pass --exe C:\path\to\.venv\Scripts\mythlinew.exe")
        out().print(f"wrote {len(written) - 3} agent task file(s), watchdog.xml, install.cmd and uninstall.cmd to "
                    f"{out_dir}; "
                    f"register them on Windows with: {Path(out_dir) / 'install.cmd'}", markup=False)


app.command("cron", help=CRON_HELP)(cron_cli)
app.command("windows", help=WINDOWS_HELP)(windows_cli)

from .kubernetes import HELP as KUBERNETES_HELP  # noqa: E402 - its own module, registered here
from .kubernetes import kubernetes_cli  # noqa: E402

app.command("kubernetes", help=KUBERNETES_HELP)(kubernetes_cli)
