"""Crontab lines and Task Scheduler XML from the config, and what is installed of them.

Nothing of ours runs between two cycles: the scheduler is the loop. So the entries must
call the same executable with the same state home and config as the shell that made
them, and the fleet must not start in the same second: every agent gets a fixed slot
(its place in the fleet) spread across its interval.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path, PurePath, PureWindowsPath
from xml.sax.saxutils import escape

from . import files, grammar, launch, paths
from .agent import valid_name
from .config import Agent, Settings
from .durations import format_duration
from .errors import SchedulerError, UsageError

BEGIN = "# BEGIN mythline"
END = "# END mythline"
FLEET = "--due"  # the key of the one-line fleet entry, `mythline run --due`
WATCHDOG = "--watchdog"  # the key of the watchdog entry, which every block holds
WATCHDOG_SPEC = "*/5 * * * *"
WATCHDOG_MINUTES = 5
# What the user's shell set that the scheduled runs must see too (they are not secrets).
CARRIED_ENV = ("MYTHLINE_MODEL", "MYTHLINE_BASE_URL")
TASK_NS = "http://schemas.microsoft.com/windows/2004/02/mit/task"
TASK_FOLDER = "Mythline"
WINDOWLESS_EXE = "mythlinew.exe"
# A fixed, past start date: the files are reproducible, and a past start with an endless
# repetition simply means "on the next slot from now".
START_DATE = datetime(2024, 1, 1)
# Task Scheduler kills a run after ExecutionTimeLimit; give a run past budget.run_timeout
# a little time to record its state before that.
KILL_MARGIN = 300.0

MINUTE_STEPS = (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30)  # divide an hour evenly
HOUR_STEPS = (1, 2, 3, 4, 6, 8, 12)  # divide a day evenly
DAY, WEEK = 86400.0, 7 * 86400.0
MONTHLY_MIN = 31 * 86400.0  # months are 28-31 days apart: monthly is never longer than 31d


# -- the executable ---------------------------------------------------------------------------

def mythline_command(*, which: Callable[[str], str | None] = shutil.which,
                     executable: str = sys.executable, argv0: str | None = None) -> list[str]:
    """The absolute command that starts this mythline: cron's PATH will not find it.

    The one that is running (``sys.argv[0]``), not the first on PATH: that may be another
    install, and the schedule must run the version that wrote it.
    """
    ran = Path(sys.argv[0] if argv0 is None else argv0)
    if ran.name in ("mythline", "mythline.exe") and ran.is_file():
        return [str(ran.absolute())]
    if ran.name == "__main__.py" and ran.parent.name == "mythline_cli":  # python -m mythline_cli
        return [os.path.abspath(executable), "-m", "mythline_cli"]
    # Started some other way (imported): the script beside this Python, then PATH.
    scripts = Path(executable).parent
    for name in ("mythline", "mythline.exe"):
        if (scripts / name).is_file():
            return [str((scripts / name).absolute())]
    found = which("mythline")
    if found:
        return [os.path.abspath(found)]
    return [os.path.abspath(executable), "-m", "mythline_cli"]


def carried_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """MYTHLINE_MODEL / MYTHLINE_BASE_URL from this shell, which the schedule must carry.

    A scheduler starts runs without the shell's variables: dropping them would schedule a
    different model or provider than the one ``mythline run`` uses here. (A base URL with a
    password never gets this far: the config refuses it.)
    """
    env: Mapping[str, str] = os.environ if environ is None else environ
    return {name: env[name] for name in CARRIED_ENV if env.get(name)}


def keys_file_env() -> dict[str, str]:
    """MYTHLINE_KEYS_FILE for the lines, when cron would not find the key store by itself.

    Cron starts jobs with HOME and none of the shell's XDG_* variables: a store found
    through $XDG_CONFIG_HOME or $MYTHLINE_KEYS_FILE here would be missing there.
    """
    from . import keys

    xdg = os.environ.get("XDG_CONFIG_HOME", "")
    if xdg and Path(xdg).expanduser().absolute() == Path("~/.config").expanduser().absolute():
        xdg = ""  # where cron looks anyway
    if sys.platform == "win32" or not (os.environ.get("MYTHLINE_KEYS_FILE") or xdg):
        return {}
    return {"MYTHLINE_KEYS_FILE": str(keys.path())}


def windowless_command(*, which: Callable[[str], str | None] = shutil.which,
                       executable: str = sys.executable,
                       windows: bool = sys.platform == "win32") -> tuple[str, list[str], bool]:
    """(command, leading arguments, is_a_guess) for Task Scheduler's windowless launcher.

    On Windows it is ``mythlinew.exe`` beside ``mythline.exe`` (the venv's Scripts dir). On
    another system there is no such file: the result is a Windows-looking path built from
    this Python's directory, and ``is_a_guess`` is True so the caller can say to use --exe.
    """
    found = mythline_command(which=which, executable=executable)
    if not windows:
        return str(PureWindowsPath(Path(executable).parent) / WINDOWLESS_EXE), [], True
    if len(found) == 1:
        return str(Path(found[0]).with_name(WINDOWLESS_EXE)), [], False
    # No launcher installed: pythonw.exe runs the module without a console window.
    pythonw = Path(executable).with_name("pythonw.exe")
    return str(pythonw), ["-m", "mythline_cli"], False


# -- timing -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Timing:
    """When one agent runs under cron, and how far apart its runs really are."""

    spec: str  # the five cron fields
    every: float  # seconds between runs (a monthly run: 31d at most)
    note: str | None  # why it differs from the configured interval, if it does


def _slot_minutes(period_minutes: int, slot: int, slots: int) -> int:
    # The fleet's agents sit at even fractions of the period: distinct whenever it has room.
    return (slot * period_minutes) // max(slots, 1)


def cron_timing(interval: float, slot: int = 0, slots: int = 1) -> Timing:
    """Cron fields for ``interval`` seconds: the nearest expressible schedule not longer than it."""
    minutes = interval / 60
    if minutes < 60:
        step = max(s for s in MINUTE_STEPS if s <= max(minutes, 1))
        off = _slot_minutes(step, slot, slots)
        spec = "* * * * *" if step == 1 else f"{off}-59/{step} * * * *"
        every = step * 60.0
        shape = f"every {step} minutes" if step > 1 else "every minute"
    elif interval < DAY:
        hours = max(h for h in HOUR_STEPS if h * 60 <= minutes)
        hour, minute = divmod(_slot_minutes(hours * 60, slot, slots), 60)
        spec = f"{minute} * * * *" if hours == 1 else f"{minute} {hour}-23/{hours} * * *"
        every = hours * 3600.0
        shape = "hourly" if hours == 1 else f"every {hours} hours"
    elif interval < WEEK:
        hour, minute = divmod(_slot_minutes(1440, slot, slots), 60)
        spec, every, shape = f"{minute} {hour} * * *", DAY, "daily"
    elif interval < MONTHLY_MIN:
        day, rest = divmod(_slot_minutes(7 * 1440, slot, slots), 1440)
        hour, minute = divmod(rest, 60)
        spec, every, shape = f"{minute} {hour} * * {day}", WEEK, "weekly"
    else:
        # Day 1-28 exists in every month.
        dom = 1 + _slot_minutes(28, slot, slots)
        hour, minute = divmod(_slot_minutes(1440, slot, slots), 60)
        return Timing(f"{minute} {hour} {dom} * *", MONTHLY_MIN,
                      f"cron cannot run every {format_duration(interval)}; monthly instead (28 to 31 days apart)")
    note = None
    if every != interval:
        note = (f"cron cannot run every {format_duration(interval)}; {shape} instead "
                "(the nearest schedule that is not longer)")
    return Timing(spec, every, note)


def task_interval(interval: float) -> str:
    """ISO 8601 duration for Task Scheduler, whole minutes (it repeats PT1M..P31D)."""
    total = max(1, int(interval // 60))
    days, rest = divmod(total, 1440)
    hours, minutes = divmod(rest, 60)
    text = "P" + (f"{days}D" if days else "")
    if hours or minutes:
        text += "T" + (f"{hours}H" if hours else "") + (f"{minutes}M" if minutes else "")
    return text


def _iso_minutes(seconds: float) -> str:
    total = math.ceil(seconds / 60)
    hours, minutes = divmod(total, 60)
    return "PT" + (f"{hours}H" if hours else "") + (f"{minutes}M" if minutes or not hours else "")


# -- cron -------------------------------------------------------------------------------------

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
    return CronPlan(agents=chosen, slots={n: i for i, n in enumerate(names)}, command=command, home=state,
                    config=config, mailto=settings.config.schedule.mailto, fleet=fleet,
                    env={**keys_file_env(), **carried_env()})


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


@dataclass
class Drift:
    """Installed scheduler entries against the configured ones."""

    installed: bool
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    count: int = 0
    mode: str = "agents"

    @property
    def matches(self) -> bool:
        return self.installed and not (self.missing or self.extra or self.stale)


def compare(installed: dict[str, str], configured: dict[str, str]) -> Drift:
    return Drift(
        installed=bool(installed),
        missing=[k for k in configured if k not in installed],
        extra=[k for k in installed if k not in configured],
        stale=[k for k in configured if k in installed and installed[k] != configured[k]],
        count=len(installed),
    )


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


# -- Task Scheduler -----------------------------------------------------------------------------

@dataclass
class TaskPlan:
    """One agent's Task Scheduler task, or the watchdog's (``agent`` None)."""

    agent: Agent | None
    slot: int
    slots: int
    command: str
    arguments: str
    logon: str
    time_limit: str
    home: str
    regenerate: str
    watchdog_interval: float = WATCHDOG_MINUTES * 60.0

    @property
    def name(self) -> str:
        return self.agent.name if self.agent else WATCHDOG_TASK

    @property
    def interval(self) -> float:
        return self.agent.interval if self.agent else self.watchdog_interval


WATCHDOG_TASK = "watchdog"


def _win_args(args: Sequence[str]) -> str:
    return subprocess.list2cmdline(list(args))


def plan_windows(settings: Settings, *, agent: str | None = None, exe: str | None = None,
                 home: str | None = None, regenerate: str = "",
                 which: Callable[[str], str | None] = shutil.which,
                 windows: bool = sys.platform == "win32") -> tuple[list[TaskPlan], bool]:
    """One task per enabled agent (or the one named) and whether the command is a guess."""
    names = settings.agent_names
    chosen = [settings.agent(agent)] if agent else [a for a in settings.agents() if a.enabled]
    if agent and not chosen[0].enabled:
        raise UsageError(f"{agent} is disabled (agents.{agent}.enabled = false); enable it first")
    lead: list[str]
    if exe:
        command, lead, guess = exe, [], False
    else:
        command, lead, guess = windowless_command(which=which, windows=windows)
    if settings.source:
        lead = lead + ["--config", str(settings.source.absolute())]
    # A task has no environment of its own: what the shell set goes on the run's command line.
    carried = carried_env()
    flags = [w for name, flag in (("MYTHLINE_MODEL", "--model"), ("MYTHLINE_BASE_URL", "--base-url"))
             if name in carried for w in (flag, carried[name])]
    state = home or str(paths.home().absolute())
    limit = _iso_minutes(settings.budget.run_timeout + KILL_MARGIN)
    logon = settings.config.schedule.windows_logon
    plans = [TaskPlan(agent=a, slot=names.index(a.name), slots=len(names), command=command,
                      arguments=_win_args(lead + ["run", a.name] + flags), logon=logon,
                      time_limit=limit, home=state, regenerate=regenerate) for a in chosen]
    # The watchdog task comes with every set of tasks: it is what notices one that stopped.
    plans.append(TaskPlan(agent=None, slot=0, slots=1, command=command, arguments=_win_args(lead + ["watchdog"]),
                          logon=logon, time_limit=_iso_minutes(KILL_MARGIN), home=state, regenerate=regenerate))
    return plans, guess


def task_xml(plan: TaskPlan) -> str:
    """The task definition, as text (see ``task_bytes`` for the file)."""
    minutes = max(1, int(plan.interval // 60))
    start = START_DATE + timedelta(minutes=_slot_minutes(minutes, plan.slot, plan.slots))
    log = PureWindowsPath(plan.home) / "logs" / f"{plan.name if plan.agent else 'fleet'}.log"
    every = format_duration(plan.interval)
    if minutes * 60 != plan.interval:
        every += f" (Task Scheduler repeats in whole minutes: every {format_duration(minutes * 60)})"
    if plan.agent is None:
        description = (f"Mythline watchdog: every {every}, alert on agents that stopped running "
                       f"(see [alerts] in the config). Output goes to {log}.")
    else:
        description = (f"Mythline agent {plan.name}: one research, validate and store cycle every {every}. "
                       f"Output goes to {log}.")
    e = escape
    lines = [
        '<?xml version="1.0" encoding="UTF-16"?>',
        # XML comments cannot hold "--": the exact command is in install.cmd.
        "<!-- Regenerate with the command at the top of install.cmd (mythline schedule windows). -->"
        if plan.regenerate else None,
        f'<Task version="1.2" xmlns="{TASK_NS}">',
        "  <RegistrationInfo>",
        f"    <Description>{e(description)}</Description>",
        f"    <URI>\\{TASK_FOLDER}\\{e(plan.name)}</URI>",
        "  </RegistrationInfo>",
        "  <Triggers>",
        "    <TimeTrigger>",
        "      <Repetition>",
        f"        <Interval>{task_interval(plan.interval)}</Interval>",
        "        <StopAtDurationEnd>false</StopAtDurationEnd>",
        "      </Repetition>",
        f"      <StartBoundary>{start.isoformat()}</StartBoundary>",
        "      <Enabled>true</Enabled>",
        "    </TimeTrigger>",
        "  </Triggers>",
        "  <Principals>",
        '    <Principal id="Author">',
        f"      <LogonType>{plan.logon}</LogonType>",
        "      <RunLevel>LeastPrivilege</RunLevel>",
        "    </Principal>",
        "  </Principals>",
        "  <Settings>",
        "    <MultipleInstancesPolicy>IgnoreNew</MultipleInstancesPolicy>",
        "    <DisallowStartIfOnBatteries>false</DisallowStartIfOnBatteries>",
        "    <StopIfGoingOnBatteries>false</StopIfGoingOnBatteries>",
        "    <AllowHardTerminate>true</AllowHardTerminate>",
        "    <StartWhenAvailable>true</StartWhenAvailable>",
        "    <RunOnlyIfNetworkAvailable>false</RunOnlyIfNetworkAvailable>",
        "    <AllowStartOnDemand>true</AllowStartOnDemand>",
        "    <Enabled>true</Enabled>",
        "    <Hidden>false</Hidden>",
        "    <RunOnlyIfIdle>false</RunOnlyIfIdle>",
        "    <WakeToRun>false</WakeToRun>",
        f"    <ExecutionTimeLimit>{plan.time_limit}</ExecutionTimeLimit>",
        "    <Priority>7</Priority>",
        "  </Settings>",
        '  <Actions Context="Author">',
        "    <Exec>",
        f"      <Command>{e(plan.command)}</Command>",
        f"      <Arguments>{e(plan.arguments)}</Arguments>",
        "    </Exec>",
        "  </Actions>",
        "</Task>",
    ]
    return "\r\n".join(line for line in lines if line is not None) + "\r\n"


def task_bytes(plan: TaskPlan) -> bytes:
    # schtasks /XML reads UTF-16LE with a BOM reliably; UTF-8 files have failed to import.
    return b"\xff\xfe" + task_xml(plan).encode("utf-16-le")


def task_name(agent: str) -> str:
    return f"{TASK_FOLDER}\\{agent}"


def _cmd_script(lines: list[str]) -> bytes:
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def install_script(plans: list[TaskPlan], regenerate: str) -> bytes:
    password = any(p.logon == "Password" for p in plans)
    lines = ["@echo off", "rem Registers the Mythline agents with Task Scheduler (the tasks run as you).",
             f"rem Regenerate: {regenerate}" if regenerate else None]
    if password:
        lines.append("rem LogonType Password: schtasks asks for your Windows password once per task and stores it.")
    lines += ["setlocal", "set FAILED="]
    for p in plans:
        extra = ' /RU "%USERDOMAIN%\\%USERNAME%" /RP *' if p.logon == "Password" else ""
        lines.append(f'schtasks /Create /TN "{task_name(p.name)}" /XML "%~dp0{p.name}.xml" /F{extra}'
                     " || set FAILED=1")
    lines += ["if defined FAILED (", "  echo Some Mythline tasks were not registered; see the errors above.",
              "  exit /b 1", ")", f"echo Registered {len(plans)} Mythline task(s). See them with: "
              f'schtasks /Query /TN "{TASK_FOLDER}\\"']
    return _cmd_script([line for line in lines if line is not None])


def uninstall_script(plans: list[TaskPlan], regenerate: str) -> bytes:
    lines = ["@echo off", "rem Removes the Mythline agents' tasks from Task Scheduler.",
             f"rem Regenerate: {regenerate}" if regenerate else None]
    for p in plans:
        lines.append(f'schtasks /Delete /TN "{task_name(p.name)}" /F')
    return _cmd_script([line for line in lines if line is not None])


def write_file(path: Path, data: bytes) -> None:
    """Atomic write of a file meant for people, with the usual permissions (not mkstemp's 0600)."""
    files.write_bytes_atomic(path, data)
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def write_windows(plans: list[TaskPlan], out: Path, regenerate: str, *, stale: Sequence[str] = ()) -> list[Path]:
    """Write one XML per task plus install.cmd and uninstall.cmd; return the files written.

    ``stale``: agents (now disabled) whose old XML in ``out`` would otherwise look current.
    """
    for name in stale:
        (out / f"{name}.xml").unlink(missing_ok=True)
    written = []
    for plan in plans:
        path = out / f"{plan.name}.xml"
        write_file(path, task_bytes(plan))
        written.append(path)
    for name, data in (("install.cmd", install_script(plans, regenerate)),
                       ("uninstall.cmd", uninstall_script(plans, regenerate))):
        write_file(out / name, data)
        written.append(out / name)
    return written


def task_fields(xml_text: str) -> dict[str, str]:
    """What decides a task's behaviour here; Windows adds its own defaults to an export."""
    import xml.etree.ElementTree as ET

    # A str cannot carry its UTF-16 declaration into the parser: drop it.
    root = ET.fromstring(re.sub(r"^\s*(\ufeff)?\s*<\?xml[^>]*\?>", "", xml_text))
    ns = {"t": TASK_NS}
    found = {}
    for key, path in (("command", "t:Actions/t:Exec/t:Command"), ("arguments", "t:Actions/t:Exec/t:Arguments"),
                      ("interval", "t:Triggers/t:TimeTrigger/t:Repetition/t:Interval"),
                      ("logon", "t:Principals/t:Principal/t:LogonType"),
                      ("time limit", "t:Settings/t:ExecutionTimeLimit")):
        node = root.find(path, ns)
        found[key] = (node.text or "").strip() if node is not None else ""
    return found


def query_task(name: str, program: str = "schtasks") -> str | None:
    """The registered task's XML, or None when there is no such task."""
    try:
        proc = subprocess.run([program, "/Query", "/TN", name, "/XML"], capture_output=True, text=True, timeout=30)
    except OSError as exc:
        raise SchedulerError(f"cannot run {program}: {exc.strerror or exc}") from None
    return proc.stdout if proc.returncode == 0 and proc.stdout.strip() else None


def windows_drift(settings: Settings, *, query: Callable[[str], str | None] = query_task,
                  exe: str | None = None) -> Drift:
    """Registered tasks against the ones ``schedule windows`` would write, field by field."""
    from xml.etree.ElementTree import ParseError

    plans, _ = plan_windows(settings, exe=exe, windows=True)
    configured = {p.name: repr(task_fields(task_xml(p))) for p in plans}
    installed: dict[str, str] = {}
    for name in [*settings.agent_names, WATCHDOG_TASK]:
        text = query(task_name(name))
        if text is None:
            continue
        try:
            installed[name] = repr(task_fields(text))
        except ParseError:
            installed[name] = "unreadable"  # as stale as a wrong one
    return compare(installed, configured)
