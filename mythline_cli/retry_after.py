"""How long a server asked us to wait: ``Retry-After`` and its relatives, read once."""

from __future__ import annotations

import email.utils
import math
import re
import time
from collections.abc import Callable
from typing import Any

_RESET_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_RESET_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def reset_seconds(value: str, now: float) -> float | None:
    """Seconds until an ``x-ratelimit-reset*`` value: a duration (OpenAI's ``6m0s``,
    ``20ms``), a Unix time in seconds or milliseconds (OpenRouter's), or seconds."""
    text = value.strip().lower()
    try:
        number = float(text)
    except ValueError:
        pos, seconds = 0, 0.0
        for match in _RESET_PART.finditer(text):
            if match.start() != pos:
                return None
            seconds += float(match.group(1)) * _RESET_UNITS[match.group(2)]
            pos = match.end()
        return seconds if text and pos == len(text) else None
    if number > 1e11:
        return number / 1000 - now  # epoch milliseconds
    if number > 1e9:
        return number - now  # epoch seconds
    return number


def retry_after(headers: Any, *, rate_limited: bool = False,
                clock: Callable[[], float] = time.time) -> float | None:
    """Seconds to wait, or None: ``retry-after-ms``, ``retry-after`` (seconds or an HTTP
    date), else, when ``rate_limited`` (a 429), the latest ``x-ratelimit-reset*``.

    ``headers``: any mapping with a case-insensitive ``get`` (httpx's, urllib's)."""
    if not headers:
        return None
    seconds: float | None = None
    ms = headers.get("retry-after-ms")
    value = headers.get("retry-after")
    if ms:
        try:
            seconds = float(ms) / 1000
        except ValueError:
            pass
    if seconds is None and value:
        try:
            seconds = float(value)
        except ValueError:
            try:
                parsed = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError, IndexError):
                parsed = None  # a header we cannot read is no instruction at all
            if parsed is not None:
                seconds = parsed.timestamp() - clock()
    if seconds is None and rate_limited:
        now = clock()
        resets = [reset_seconds(str(v), now) for k, v in headers.items()
                  if k.lower().startswith("x-ratelimit-reset")]
        found = [r for r in resets if r is not None and math.isfinite(r)]
        seconds = max(found) if found else None
    if seconds is None or not math.isfinite(seconds):
        return None
    return max(0.0, seconds)
