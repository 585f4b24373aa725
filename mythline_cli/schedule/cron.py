"""The crontab block: its lines from the config, and what is installed of it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePath

from .. import grammar, launch, paths
from ..agent import valid_name
from ..config import Agent, Settings
from ..durations import format_duration
from ..errors import SchedulerError, UsageError
from .common import (
    WATCHDOG_MINUTES,
    Drift,
    carried_env,
    compare,
    config_lookup_env,
    cron_timing,
    keys_file_env,
    mythline_command,
)

BEGIN = "# BEGIN mythline"
END = "# END mythline"
FLEET = "--due"  # the key of the one-line fleet entry, `mythline run --due`
WATCHDOG = "--watchdog"  # the key of the watchdog entry, which every block holds
WATCHDOG_SPEC = "*/5 * * * *"

def sh_quote(text: str) -> str:
    """Single-quoted for /bin/sh, with cron's ``%`` (a newline to cron) escaped as ``\\%``."""
    if "\n" in text or "\r" in text:
        raise UsageError(f"{text!r} contains a line break; a crontab line cannot hold it")
    return ("'" + text.replace("'", "'\"'\"'") + "'").replace("%", "\\%")


def _log_under(home: PurePath, name: str) -> PurePath:
    # paths knows the layout; re-root its answer under the state home the entry will use.
    return home / paths.agent_log(name).relative_to(paths.home())


@dataclass
class CronPlan:
    """Everything a crontab block is made of."""

    agents: list[Agent]
    slots: dict[str, int]
    command: list[str]
    home: PurePath
    config: Path | None
    mailto: str
    fleet: bool = False
    header: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)  # carried from the shell, see carried_env


def plan_cron(settings: Settings, *, agent: str | None = None, fleet: bool = False,
              exe: str | None = None, home: str | None = None,
              which: Callable[[str], str | None] = shutil.which) -> CronPlan:
    """Resolve the agents, executable, state home and config the cron lines will use."""
    if fleet and agent:
        raise UsageError("--fleet is one line for every agent; leave out --agent")
    names = settings.agent_names
    chosen = [settings.agent(agent)] if agent else [a for a in settings.agents() if a.enabled]
    if agent and not chosen[0].enabled:
        raise UsageError(f"{agent} is disabled (agents.{agent}.enabled = false); enable it first")
    command = [exe] if exe else mythline_command(which=which)
    config = settings.source.absolute() if settings.source else None
    state = PurePath(home) if home else paths.home().absolute()
    if any(c in settings.config.schedule.mailto for c in "\r\n"):
        raise UsageError("schedule.mailto cannot contain a line break")
    # No config file: the lines carry no MYTHLINE_CONFIG, and look for one where this shell does.
    lookup = config_lookup_env() if config is None else {}
    return CronPlan(agents=chosen, slots={n: i for i, n in enumerate(names)}, command=command, home=state,
                    config=config, mailto=settings.config.schedule.mailto, fleet=fleet,
                    env={**lookup, **keys_file_env(), **carried_env()})


def _job(plan: CronPlan, args: list[str], log_name: str | None) -> str:
    env = [f"MYTHLINE_HOME={sh_quote(str(plan.home))}"]
    if plan.config is not None:
        env.append(f"MYTHLINE_CONFIG={sh_quote(str(plan.config))}")
    env += [f"{name}={sh_quote(value)}" for name, value in sorted(plan.env.items())]
    exe = [sh_quote(plan.command[0])] + plan.command[1:]
    if log_name is None:
        return " ".join(env + exe + args)
    log = sh_quote(str(_log_under(plan.home, log_name)))
    return " ".join(env + exe + args) + f" >> {log} 2>&1"


def watchdog_entry(plan: CronPlan) -> list[str]:
    # No redirect: what the watchdog prints is an alert it sent, and cron mails it.
    return [f"# the watchdog: every {WATCHDOG_MINUTES} minutes, alert on agents that stopped running "
            "(prints only the alerts it sends, so cron mails those)",
            f"{WATCHDOG_SPEC} " + _job(plan, ["watchdog"], None)]


def entries(plan: CronPlan) -> dict[str, list[str]]:
    """The block's entries by key (agent name, or ``--due``): comment lines, then the job line."""
    slots = len(plan.slots)
    if plan.fleet:
        return {FLEET: [
            "# the whole fleet: every minute, start each agent whose next run is due",
            "* * * * * " + _job(plan, ["run", "--due"], "fleet"),
        ], WATCHDOG: watchdog_entry(plan)}
    found: dict[str, list[str]] = {}
    for agent in plan.agents:
        timing = cron_timing(agent.interval, plan.slots[agent.name], slots)
        lines = [f"# {agent.name}: every {format_duration(agent.interval)}"]
        if timing.note:
            lines[0] += f" ({timing.note})"
        lines.append(f"{timing.spec} " + _job(plan, ["run", agent.name], agent.name))
        found[agent.name] = lines
    found[WATCHDOG] = watchdog_entry(plan)
    return found


def preamble(plan: CronPlan) -> list[str]:
    """Lines at the top of the block: how it was made, MAILTO."""
    lines = list(plan.header)
    if plan.mailto:
        lines += [f"# MAILTO from schedule.mailto: cron mails {plan.mailto} only what a job prints outside its log "
                  "(it could not start); install keeps this block last so MAILTO reaches no other line",
                  f"MAILTO={plan.mailto}"]
    else:
        lines.append("# MAILTO: not set (schedule.mailto); each job appends its output to its log, so cron mails "
                     "only when a job cannot start")
    return lines


def render_block(plan: CronPlan, body: dict[str, list[str]] | None = None) -> str:
    body = entries(plan) if body is None else body
    lines = [BEGIN, *preamble(plan)]
    for entry in body.values():
        lines += entry
    lines.append(END)
    return "\n".join(lines) + "\n"


def job_key(line: str) -> str | None:
    """The agent a crontab job line runs (``--due`` for the fleet line, ``--watchdog``), or None."""
    tokens = line.split()
    cut = next((i for i, t in enumerate(tokens) if t.startswith((">", "2>", "1>", "&>"))), len(tokens))
    tokens = tokens[:cut]
    words = grammar.words(tokens)
    # The first command word: the schedule fields, variables and the executable are none.
    command = next((i for i, w in enumerate(words) if w in ("run", "watchdog")), None)
    if command is None:
        return None
    if words[command] == "watchdog":
        return WATCHDOG
    if FLEET in tokens[tokens.index("run"):]:
        return FLEET
    agent = words[command + 1:command + 2]
    return agent[0] if agent and valid_name(agent[0]) else None


@dataclass
class Crontab:
    """A user's crontab split around our block."""

    before: list[str]
    block: list[str] | None  # the lines strictly between the markers
    after: list[str]

    @classmethod
    def parse(cls, text: str) -> Crontab:
        lines = text.splitlines()
        starts = [i for i, line in enumerate(lines) if line.strip() == BEGIN]
        ends = [i for i, line in enumerate(lines) if line.strip() == END]
        if not starts and not ends:
            return cls(lines, None, [])
        if len(starts) != 1 or len(ends) != 1 or ends[0] < starts[0]:
            raise SchedulerError(f"the crontab has a broken mythline block (lines {BEGIN!r} and {END!r} must "
                                 "appear once each, in order); fix it with: crontab -e")
        return cls(lines[: starts[0]], lines[starts[0] + 1: ends[0]], lines[ends[0] + 1:])

    def jobs(self) -> dict[str, str]:
        """Job and MAILTO lines of our block by key."""
        found: dict[str, str] = {}
        for number, line in enumerate(self.block or [], start=1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            if text.startswith("MAILTO="):
                found["MAILTO"] = text
                continue
            key = job_key(text)
            if key is None:
                # Named by its place, never by its text: a line someone added may hold a key.
                variable = re.match(r"([A-Za-z_][A-Za-z0-9_]*)\s*=", text)
                key = f"variable {variable.group(1)}" if variable else f"line {number} of the block"
            found[key] = text
        return found

    def render(self, block_text: str | None) -> str:
        # Ours goes last: a MAILTO line in it then changes no one else's jobs.
        lines = self.before + self.after
        text = "\n".join(lines) + ("\n" if lines else "")
        return text + (block_text or "")


def _configured_jobs(plan: CronPlan) -> dict[str, str]:
    jobs = {key: lines[-1] for key, lines in entries(plan).items()}
    if plan.mailto:
        jobs = {"MAILTO": f"MAILTO={plan.mailto}", **jobs}
    return jobs


def merged_entries(plan: CronPlan, current: Crontab, *, remove: bool = False) -> dict[str, list[str]]:
    """The block's entries after installing (or removing) only ``plan``'s agents."""
    ours: dict[str, list[str]] = {}
    pending: list[str] = []
    for line in current.block or []:
        text = line.strip()
        if not text or text.startswith("#"):
            pending.append(line)
            continue
        key = job_key(text)
        if key is not None:
            ours[key] = pending[-1:] + [line]  # the job and the comment that names it
        pending = []
    if FLEET in ours and not remove:
        raise UsageError("the installed block holds the fleet line (run --due), which already runs every agent; "
                         "to switch to one line per agent run: mythline schedule cron --install (without --agent)")
    for name, lines in entries(plan).items():
        if remove and name != WATCHDOG:
            ours.pop(name, None)
        elif not remove:
            ours[name] = lines
    if set(ours) <= {WATCHDOG}:
        return {}  # the watchdog alone watches nothing
    if WATCHDOG in ours:
        ours[WATCHDOG] = watchdog_entry(plan)  # with this home and config
    order = {name: i for i, name in enumerate([*plan.slots, FLEET, WATCHDOG])}
    return dict(sorted(ours.items(), key=lambda kv: order.get(kv[0], len(order))))


def crontab_program() -> str:
    """The crontab executable: ``$MYTHLINE_CRONTAB`` (tests, unusual systems) or ``crontab``."""
    return os.environ.get("MYTHLINE_CRONTAB") or "crontab"


def read_crontab(program: str | None = None) -> str | None:
    """The user's crontab text ('' when there is none); None when there is no crontab program."""
    program = program or crontab_program()
    try:
        proc = subprocess.run([program, "-l"], capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SchedulerError(f"cannot run {program} -l: {exc.strerror or exc}") from None
    if proc.returncode != 0:
        if "no crontab" in proc.stderr.lower():
            return ""
        raise SchedulerError(f"{program} -l failed: {proc.stderr.strip() or f'exit {proc.returncode}'}")
    return proc.stdout


def write_crontab(text: str, program: str | None = None) -> None:
    program = program or crontab_program()
    try:
        proc = subprocess.run([program, "-"], input=text, capture_output=True, text=True, timeout=30)
    except OSError as exc:
        raise SchedulerError(f"cannot run {program}: {exc.strerror or exc}; is cron installed?") from None
    if proc.returncode != 0:
        raise SchedulerError(f"{program} refused the new crontab: {proc.stderr.strip() or f'exit {proc.returncode}'}")


@dataclass
class CronChange:
    """What ``--install`` or ``--uninstall`` did."""

    action: str  # "installed", "removed", "unchanged"
    keys: list[str]
    text: str


def install_cron(plan: CronPlan, *, remove: bool = False, partial: bool = False,
                 program: str | None = None) -> CronChange:
    """Merge (or remove) our block in the user's crontab; every other line stays as it was.

    ``partial``: touch only the plan's agents (``--agent``) and keep the block's other entries.
    """
    program = program or crontab_program()
    before = read_crontab(program)
    if before is None:
        raise SchedulerError(f"no {program!r} program; install cron (Debian/Ubuntu: apt-get install cron)")
    current = Crontab.parse(before)
    keys = list(entries(plan))
    if remove and current.block is None:
        return CronChange("unchanged", keys, before)
    if partial:
        body = merged_entries(plan, current, remove=remove)
    else:
        body = {} if remove else entries(plan)
    after = current.render(render_block(plan, body) if body else None)
    if after == before:
        return CronChange("unchanged", keys, after)
    if not remove:
        # The redirect into the log fails (and cron mails) if the directory is missing.
        paths.log_dir().mkdir(parents=True, exist_ok=True)
    write_crontab(after, program)
    launch.schedule_changed([a.name for a in plan.agents], removed=remove, partial=partial)
    return CronChange("removed" if remove else "installed", keys, after)


def cron_drift(settings: Settings, *, program: str | None = None) -> Drift | None:
    """Our crontab block against what ``schedule cron`` would write; None without a crontab program."""
    text = read_crontab(program)
    if text is None:
        return None
    installed = Crontab.parse(text).jobs()
    fleet = FLEET in installed
    plan = plan_cron(settings, fleet=fleet)
    drift = compare(installed, _configured_jobs(plan))
    drift.mode = "fleet" if fleet else "agents"
    return drift
