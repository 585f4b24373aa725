"""Keeps secrets out of everything we write or print."""

from __future__ import annotations

from typing import Any

MASK = "[redacted]"


def redact(value: Any, secrets: tuple[str, ...]) -> Any:
    """``value`` with every occurrence of each secret (of 8+ characters) masked."""
    live = tuple(s for s in secrets if s and len(s) >= 8)
    if not live:
        return value
    return _walk(value, live)


def _walk(value: Any, secrets: tuple[str, ...]) -> Any:
    if isinstance(value, str):
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, MASK)
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
