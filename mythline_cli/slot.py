"""One request at a time per local server, across the whole fleet.

A CPU server works through one generation at a time; a second request only waits behind
the first, its own timeout running. So each request to a local server holds
``slots/<server>.lock`` under the state home while it is out. A request that timed out is
still being worked on by the server: its slot records that, and until then (one more
``provider.timeout``) no request is sent to that server.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from . import files, paths
from .errors import SlotBusy
from .redact import safe_url


def _base(base_url: str) -> Path:
    name = hashlib.sha256(safe_url(base_url).encode()).hexdigest()[:16]
    return paths.home() / "slots" / name


def _abandoned_until(base: Path) -> float:
    try:
        data = files.read_json(base.with_suffix(".json"))
    except (files.CorruptFile, OSError, RecursionError):
        return 0.0
    value = data.get("abandoned_until") if isinstance(data, dict) else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


@contextmanager
def hold(base_url: str, *, wait: float, check: Callable[[], None] = lambda: None,
         clock: Callable[[], float] = time.time) -> Iterator[Callable[[float], None]]:
    """Hold the server's slot, waiting up to ``wait`` seconds for it (a ``stopping.cut_short``
    wait: a stop signal ends it at once; ``check`` is called before it); raises ``SlotBusy``. Yields a function
    that records an abandoned request the server may work on for that many more seconds."""
    from . import locking

    base = _base(base_url)
    base.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    check()
    try:
        # One wait, queued behind the request that is out; nothing is sent yet, so a stop
        # signal ends it at once.
        held = locking.acquire(base.with_suffix(".lock"), wait,
                               cut_short=f"waiting for the local server at {safe_url(base_url)} to be free")
    except locking.LockTimeout:
        raise SlotBusy(time.monotonic() - start) from None
    try:
        until = _abandoned_until(base)
        if clock() < until:
            raise SlotBusy(time.monotonic() - start, until)

        def abandoned(seconds: float) -> None:
            files.write_json(base.with_suffix(".json"), {"server": safe_url(base_url),
                                                         "abandoned_until": clock() + seconds})

        yield abandoned
    finally:
        held.release()
