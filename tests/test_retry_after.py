"""The one Retry-After reader (the LLM client's and the webhook's), with the clock passed in."""

from __future__ import annotations

from email.message import Message

import pytest

from mythline_cli.retry_after import retry_after

NOW = 1_790_000_000.0  # 2026-09-21, a Unix time
DATE = "Mon, 21 Sep 2026 14:13:20 GMT"  # NOW + 0s


def clock() -> float:
    return NOW


@pytest.mark.parametrize("headers,rate_limited,seconds", [
    ({"retry-after": "3"}, False, 3.0),
    ({"retry-after": "2.5", "retry-after-ms": "1500"}, False, 1.5),  # the finer one wins
    ({"retry-after": DATE.replace("14:13:20", "14:14:20")}, False, 60.0),
    ({"retry-after": DATE.replace("14:13:20", "14:12:20")}, False, 0.0),  # already past: now
    ({"retry-after": "soon"}, False, None),  # unreadable: no instruction at all
    ({"retry-after": "nan"}, False, None),
    ({"retry-after": "-5"}, False, 0.0),
    ({"x-ratelimit-reset-requests": "6m0s", "x-ratelimit-reset-tokens": "20ms"}, True, 360.0),
    ({"x-ratelimit-reset": str(int(NOW + 30) * 1000)}, True, 30.0),  # epoch milliseconds
    ({"x-ratelimit-reset": str(int(NOW + 30))}, True, 30.0),  # epoch seconds
    ({"x-ratelimit-reset": "12"}, False, None),  # only a 429 makes a window reset a wait
    ({}, True, None),
])
def test_retry_after(headers: dict[str, str], rate_limited: bool, seconds: float | None) -> None:
    assert retry_after(headers, rate_limited=rate_limited, clock=clock) == seconds


def test_urllibs_headers_are_read_whatever_their_case() -> None:
    # What urllib's HTTPError carries: an email Message, case-insensitive.
    headers = Message()
    headers["Retry-After"] = DATE.replace("14:13:20", "14:13:50")
    assert retry_after(headers, clock=clock) == 30.0
