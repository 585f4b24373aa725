"""The kill switch: a ``paused`` flag file per agent, with an optional note."""

from __future__ import annotations

from datetime import datetime, timezone

from . import files, paths
from .errors import MythlineError


class Paused(MythlineError):
    """The agent is paused; nothing is called until it is resumed."""

    exit_code = 5

    def __init__(self, agent: str, note: str | None, *, mid_run: bool = False) -> None:
        self.agent = agent
        self.note = note
        where = "stopped at a step boundary, checkpoint saved" if mid_run else "nothing was called"
        about = f" ({note})" if note else ""
        super().__init__(f"{agent} is paused{about}; {where}. Run: mythline resume {agent}")


def note(agent: str) -> str | None:
    """The pause note, or None when the agent is not paused."""
    path = paths.paused_flag(agent)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None
    except OSError:
        return ""
    first = text.strip().splitlines()[:1]
    return first[0][:200] if first else ""


def is_paused(agent: str) -> bool:
    return paths.paused_flag(agent).exists()


def check(agent: str, *, mid_run: bool = False) -> None:
    text = note(agent)
    if text is not None:
        raise Paused(agent, text or None, mid_run=mid_run)


def pause(agent: str, text: str | None) -> None:
    stamp = datetime.now(timezone.utc).isoformat()
    body = (text.strip() if text else "") + f"\npaused at {stamp}\n"
    files.write_bytes_atomic(paths.paused_flag(agent), body.encode("utf-8"))


def resume(agent: str) -> bool:
    try:
        paths.paused_flag(agent).unlink()
    except FileNotFoundError:
        return False
    return True
