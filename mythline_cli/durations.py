"""Durations as people write them in a config: ``"90s"``, ``"30m"``, ``"1h30m"``, ``"2d"``."""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone

_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_SECONDS = 366 * 86400.0  # far beyond any sane setting, far below what datetime arithmetic overflows on


def parse_duration(text: str | int | float) -> float:
    """Seconds in ``text``; a bare number is seconds. Raises ``ValueError`` with the rule."""
    if isinstance(text, bool):
        raise ValueError("expected a duration like '30m', '2h' or '1d'")
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        cleaned = text.strip().lower().replace(" ", "")
        pos, seconds = 0, 0.0
        for match in _PART.finditer(cleaned):
            if match.start() != pos:
                break
            seconds += float(match.group(1)) * _UNITS[match.group(2)]
            pos = match.end()
        if not cleaned or pos != len(cleaned):
            raise ValueError(f"{text!r} is not a duration; write it like '30m', '2h', '1h30m' or '1d'")
    if math.isnan(seconds):
        raise ValueError("expected a duration like '30m', '2h' or '1d'")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    if seconds > MAX_SECONDS:
        raise ValueError("a duration cannot be longer than 366d")
    return seconds


def in_range(text: str | int | float, low: float, high: float, why: str = "") -> float:
    """``parse_duration``, refusing a value outside ``low``..``high`` seconds (``why``: what the
    setting does, so the line says why zero is wrong there)."""
    seconds = parse_duration(text)
    if not low <= seconds <= high:
        raise ValueError(f"must be between {_spell(low)} and {_spell(high)} (got {_spell(seconds)})"
                         + (f"; {why}" if why else ""))
    return seconds


def _spell(seconds: float) -> str:
    # format_duration speaks whole seconds; a bound or a value like 0.5s is said as it is.
    return format_duration(seconds) if seconds == int(seconds) else f"{seconds:g}s"


def format_duration(seconds: float) -> str:
    """The shortest exact spelling of ``seconds``: 1800 -> '30m', 5400 -> '1h30m'."""
    seconds = round(seconds)
    if seconds == 0:
        return "0s"
    out = ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            out += f"{seconds // size}{unit}"
            seconds %= size
    return out


def local_clock(when: datetime, now: datetime | None = None) -> str:
    """``when`` as the user reads it: local ``HH:MM`` today, else local ``YYYY-MM-DD HH:MM``."""
    local, today = when.astimezone(), (now or datetime.now(timezone.utc)).astimezone()
    return f"{local:%H:%M}" if local.date() == today.date() else f"{local:%Y-%m-%d %H:%M}"
