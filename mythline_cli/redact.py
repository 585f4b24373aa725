"""Keeps secrets out of everything we write or print."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

MASK = "[redacted]"
# An HTTP Basic credential as a server or gateway echoes it: "Basic " and base64.
_BASIC = re.compile(r"(?i)(\bbasic\s+)([A-Za-z0-9+/]{4,}={0,2})")


def redact(value: Any, secrets: tuple[str, ...]) -> Any:
    """``value`` with every occurrence of each secret (of 8+ characters) masked, and every
    HTTP Basic credential too, known or not."""
    live = tuple(s for s in secrets if s and len(s) >= 8)
    return _walk(value, live)


def _basic(match: re.Match[str]) -> str:
    # Only base64 of "user:password" is a credential: "Basic training" stays as it is.
    token = match.group(2)
    try:
        decoded = base64.b64decode(token + "=" * (-len(token) % 4), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return match.group(0)
    return match.group(1) + MASK if ":" in decoded and decoded.isprintable() else match.group(0)


def _walk(value: Any, secrets: tuple[str, ...]) -> Any:
    if isinstance(value, str):
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, MASK)
        if "basic" in value.lower():
            value = _BASIC.sub(_basic, value)
        return value
    if isinstance(value, dict):
        return {k: _walk(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_walk(v, secrets) for v in value]
    return value


def safe_url(url: str, *, keep_path: bool = True) -> str:
    """``url`` without what may carry a credential: user info, query and fragment — and,
    with ``keep_path=False``, the path too (a webhook URL carries its token there)."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
        host = parts.hostname or ("" if keep_path else "?")
        if parts.port:
            host += f":{parts.port}"
    except ValueError:
        return "[unparseable URL]" if keep_path else "[redacted]"
    if not keep_path:
        return f"{parts.scheme}://{host}/[redacted]"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))
