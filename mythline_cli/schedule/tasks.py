"""Task Scheduler: one task XML per agent plus the watchdog's, install.cmd and uninstall.cmd,
and what is registered of them."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path, PureWindowsPath
from xml.sax.saxutils import escape

from .. import files, paths
from ..config import Agent, Settings
from ..durations import format_duration
from ..errors import SchedulerError, UsageError
from .common import (
    WATCHDOG_MINUTES,
    Drift,
    _iso_minutes,
    _slot_minutes,
    carried_env,
    compare,
    task_interval,
    windowless_command,
)

TASK_NS = "http://schemas.microsoft.com/windows/2004/02/mit/task"
TASK_FOLDER = "Mythline"
# A fixed, past start date: the files are reproducible, and a past start with an endless
# repetition simply means "on the next slot from now".
START_DATE = datetime(2024, 1, 1)
# Task Scheduler kills a run after ExecutionTimeLimit; give a run past budget.run_timeout
# a little time to record its state before that.
KILL_MARGIN = 300.0

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
    # A task has no environment of its own: the state home, the config and what the shell set
    # go on its command line, as the crontab lines carry them in variables.
    state = home or str(paths.home().absolute())
    task_home = carried_home(home)
    if task_home:
        lead = lead + ["--home", task_home]
    if settings.source:
        lead = lead + ["--config", str(settings.source.absolute())]
    carried = carried_env()
    flags = [w for name, flag in (("MYTHLINE_MODEL", "--model"), ("MYTHLINE_BASE_URL", "--base-url"))
             if name in carried for w in (flag, carried[name])]
    limit = _iso_minutes(settings.budget.run_timeout + KILL_MARGIN)
    logon = settings.config.schedule.windows_logon
    plans = [TaskPlan(agent=a, slot=names.index(a.name), slots=len(names), command=command,
                      arguments=_win_args(lead + ["run", a.name] + flags), logon=logon,
                      time_limit=limit, home=state, regenerate=regenerate) for a in chosen]
    # The watchdog task comes with every set of tasks: it is what notices one that stopped.
    plans.append(TaskPlan(agent=None, slot=0, slots=1, command=command, arguments=_win_args(lead + ["watchdog"]),
                          logon=logon, time_limit=_iso_minutes(KILL_MARGIN), home=state, regenerate=regenerate))
    return plans, guess


# Where a task run finds the state home by itself: it runs as the user who wrote it.
DEFAULT_HOME = r"%LOCALAPPDATA%\mythline"


def carried_home(home: str | None) -> str | None:
    """The --home a task passes: the one given or set in MYTHLINE_HOME; none for the default."""
    if home is not None:
        return None if home.rstrip("\\/").lower() == DEFAULT_HOME.lower() else home
    return str(paths.home().absolute()) if os.environ.get("MYTHLINE_HOME") else None


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
