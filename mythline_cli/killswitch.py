"""The kill switch: a ``paused`` flag file per agent, with an optional note."""

from __future__ import annotations

from datetime import datetime, timezone

from . import files, paths, statedocs
from .errors import Paused  # noqa: F401 - re-exported: killswitch.Paused

MAX_NOTE = 200
STAMP = "paused at "  # the line pause() adds under the note


def _flag_lines(agent: str) -> list[str] | None:
    """The flag's printable lines (None when the agent is not paused), from its first bytes only."""
    # Unreadable (a directory, no permission): no lines, still a thrown switch. A huge flag is never read whole.
    text = statedocs.backend().read_text("paused", agent, 4 * MAX_NOTE)
    if text is None:
        return None
    # A control character could rewrite the terminal that shows it.
    return [clean for line in text.splitlines() if (clean := "".join(ch for ch in line if ch.isprintable()).strip())]


def note(agent: str) -> str | None:
    """The pause note, or None when the agent is not paused.

    The flag's first line that is not its ``paused at`` stamp, at most ``MAX_NOTE``
    characters; "" when there is none or the flag cannot be read."""
    lines = _flag_lines(agent)
    return None if lines is None else _note_of(lines)


def _note_of(lines: list[str]) -> str:
    return next((line for line in lines if not line.startswith(STAMP)), "")[:MAX_NOTE].strip()


def state(agent: str) -> tuple[str, datetime | None] | None:
    """(note, when the pause began) from one read of the flag; None when not paused."""
    from .heartbeat import parse_time

    lines = _flag_lines(agent)
    if lines is None:
        return None
    stamp = next((line.removeprefix(STAMP).strip() for line in lines if line.startswith(STAMP)), None)
    return _note_of(lines), parse_time(stamp) if stamp else None


def describe(agent: str) -> str | None:
    """The note with when the pause began, as the user reads times (``upgrading, since 14:05``);
    None when the agent is not paused, "" when the flag says neither."""
    from .durations import local_clock

    found = state(agent)
    if found is None:
        return None
    text, at = found
    return ", ".join(part for part in (text, f"since {local_clock(at)}" if at else "") if part)


def is_paused(agent: str) -> bool:
    return statedocs.backend().exists("paused", agent)


def check(agent: str, *, mid_run: bool = False) -> None:
    text = describe(agent)
    if text is not None:
        raise Paused(agent, text or None, mid_run=mid_run)


def pause(agent: str, text: str | None) -> None:
    docs = statedocs.backend()
    if not docs.shared:
        paths.check_home()
    stamp = datetime.now(timezone.utc).isoformat()
    body = (text.strip() if text else "") + f"\n{STAMP}{stamp}\n"
    docs.write_text("paused", agent, body)


def resume(agent: str) -> bool:
    docs = statedocs.backend()
    if not docs.shared:
        flag = paths.paused_flag(agent)
        if flag.is_dir() and not flag.is_symlink():
            raise paths.StateHomeUnusable(flag, "is a directory, not the pause flag",
                                          "remove that directory to resume the agent")
    text = docs.read_text("paused", agent, 1 << 20)
    if text is None:
        return False
    paused_at = None
    for line in text.splitlines():
        if line.startswith(STAMP):
            paused_at = line.removeprefix(STAMP).strip()
    # Left beside the agent's files, so the watchdog does not count the pause as silence.
    docs.write("resumed", agent, {"paused_at": paused_at, "resumed_at": datetime.now(timezone.utc).isoformat()},
               durable=False)
    return docs.remove("paused", agent)


RESUMED = "resumed.json"


def last_pause(agent: str) -> tuple[datetime | None, datetime] | None:
    """(paused at, resumed at) of the agent's last pause, or None when it never was resumed."""
    from .heartbeat import parse_time

    try:
        data = statedocs.backend().read("resumed", agent)
    except (files.CorruptFile, OSError):
        return None
    if not isinstance(data, dict):
        return None
    resumed, paused = parse_time(data.get("resumed_at")), parse_time(data.get("paused_at"))
    if resumed is None or (paused is not None and paused > resumed):  # no pause ends before it began
        return None
    return paused, resumed
