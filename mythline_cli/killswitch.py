"""The kill switch: a ``paused`` flag file per agent, with an optional note."""

from __future__ import annotations

from datetime import datetime, timezone

from . import files, paths, statedocs
from .errors import Paused  # noqa: F401 - re-exported: killswitch.Paused

MAX_NOTE = 200


def note(agent: str) -> str | None:
    """The pause note, or None when the agent is not paused.

    Whatever the flag holds: its first line, at most ``MAX_NOTE`` printable characters (a
    control character could rewrite the terminal that shows it); "" when it cannot be read."""
    # Unreadable (a directory, no permission): "", still a thrown switch. A huge flag is never read whole.
    raw = statedocs.backend().read_text("paused", agent, 4 * MAX_NOTE)
    if raw is None:
        return None
    text = raw.strip()
    first = text.splitlines()[:1]
    return "".join(ch for ch in first[0] if ch.isprintable())[:MAX_NOTE].strip() if first else ""


def is_paused(agent: str) -> bool:
    return statedocs.backend().exists("paused", agent)


def check(agent: str, *, mid_run: bool = False) -> None:
    text = note(agent)
    if text is not None:
        raise Paused(agent, text or None, mid_run=mid_run)


def pause(agent: str, text: str | None) -> None:
    docs = statedocs.backend()
    if not docs.shared:
        paths.check_home()
    stamp = datetime.now(timezone.utc).isoformat()
    body = (text.strip() if text else "") + f"\npaused at {stamp}\n"
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
        if line.startswith("paused at "):
            paused_at = line.removeprefix("paused at ").strip()
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
    resumed = parse_time(data.get("resumed_at"))
    return (parse_time(data.get("paused_at")), resumed) if resumed is not None else None
