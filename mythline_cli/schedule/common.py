"""What the cron and Task Scheduler entries share: the executable they start, the carried
environment, the timing of each agent's slot, and the installed-against-configured check."""

from __future__ import annotations

import math
import os
import shutil
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath

from ..durations import format_duration

WATCHDOG_MINUTES = 5
# What the user's shell set that the scheduled runs must see too (they are not secrets).
CARRIED_ENV = ("MYTHLINE_MODEL", "MYTHLINE_BASE_URL")
WINDOWLESS_EXE = "mythlinew.exe"

MINUTE_STEPS = (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30)  # divide an hour evenly
HOUR_STEPS = (1, 2, 3, 4, 6, 8, 12)  # divide a day evenly
DAY, WEEK = 86400.0, 7 * 86400.0
MONTHLY_MIN = 31 * 86400.0  # months are 28-31 days apart: monthly is never longer than 31d


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


def cron_home() -> Path | None:
    """The HOME cron gives this user's jobs: the passwd entry's, not this shell's $HOME."""
    try:
        import pwd
    except ImportError:  # Windows: no cron
        return None
    try:
        return Path(pwd.getpwuid(os.getuid()).pw_dir)
    except KeyError:  # a uid without a passwd entry (some containers)
        return None


def cron_keys_path() -> Path | None:
    """Where a cron job finds the key store by itself: the user config dir under cron's HOME,
    with no XDG_CONFIG_HOME and no MYTHLINE_KEYS_FILE."""
    from .. import keys

    home = cron_home()
    if home is None:
        return None
    config = "Library/Application Support" if sys.platform == "darwin" else ".config"
    return home / config / "mythline" / keys.FILE_NAME


def config_lookup_env() -> dict[str, str]:
    """With no config file, what makes a cron job look for one where this shell does.

    The shell read the built-in defaults, and reads the user config dir's mythline.toml once
    it exists; a job must do the same, not read a file this shell never saw. Cron starts jobs
    in the passwd home with no XDG_CONFIG_HOME: a different user config dir is carried as
    XDG_CONFIG_HOME, and a mythline.toml in the passwd home (the job's working directory) is
    refused, as the job would read it and this shell does not."""
    from .. import paths
    from ..errors import UsageError

    home = cron_home()
    if home is None or sys.platform == "win32":
        return {}
    stray = home / paths.CONFIG_NAME
    if stray.is_file():
        raise UsageError(f"cron starts jobs in {home}, so the lines would read {stray}, which this shell does not "
                         f"(it uses the built-in defaults); pass --config {stray}, or move that file into "
                         f"{paths.user_config_dir()}")
    here = paths.user_config_dir().absolute()
    if sys.platform == "darwin" or here == home / ".config" / paths.APP:
        return {}  # macOS reads no XDG_CONFIG_HOME: its config dir follows HOME alone
    return {"XDG_CONFIG_HOME": str(here.parent)}


def keys_file_env() -> dict[str, str]:
    """MYTHLINE_KEYS_FILE for the lines, when cron would not find the key store by itself.

    Cron starts jobs with the passwd entry's HOME and none of the shell's XDG_* variables: a
    store found through $XDG_CONFIG_HOME, $MYTHLINE_KEYS_FILE or a $HOME that is not the
    passwd one would be missing there.
    """
    from .. import keys

    if sys.platform == "win32":
        return {}
    here = keys.path()
    cron = cron_keys_path()
    if cron is not None and here == cron.absolute():
        return {}
    return {"MYTHLINE_KEYS_FILE": str(here)}


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
