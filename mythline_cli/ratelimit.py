"""Fleet-wide provider rate limits: requests and tokens per minute, shared through the state home.

Before each request, every process of the fleet takes its place in the same buckets:
pyrate-limiter's ``SQLiteBucket`` on ``ratelimit.sqlite``, whose file lock makes each
count-and-insert one at a time across processes. A limit is configured
(``provider.requests_per_minute`` / ``tokens_per_minute``) or learned from the provider's
``x-ratelimit-limit-*`` headers; the lower one counts. A provider's ``Retry-After`` on a
429, and a ``x-ratelimit-remaining-*`` of 0, are a wait for the whole fleet, kept where the
breaker keeps it (``Breaker.hold`` in ``breaker.json``).

A run waits for its turn when the wait is at most ``provider.max_retry_wait``; otherwise it
ends with exit 5 (``RateLimited`` or ``ProviderWait``) before any request is sent.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import files, paths
from .errors import RateLimited
from .redact import safe_url

if TYPE_CHECKING:
    from .breaker import Breaker
    from .config import Settings

# A request's trip to the provider takes a moment: a window a second longer than the
# provider's minute keeps the requests admitted in one window from landing in the same
# provider minute as the next window's.
WINDOW_MS = 61_000
# Tokens are counted in hundreds: the bucket stores one row per unit of weight.
TOKEN_UNIT = 100
LIMITS = ("requests_per_minute", "tokens_per_minute")


def _int(value: Any) -> int | None:
    try:
        number = int(float(str(value).strip()))
    except (TypeError, ValueError, OverflowError):
        return None
    return number if number > 0 else None


def _learned_all() -> dict[str, Any]:
    try:
        data = files.read_json(paths.ratelimit_learned())
    except (files.CorruptFile, OSError):
        return {}
    return data if isinstance(data, dict) else {}


def learned(base_url: str) -> dict[str, int]:
    """The limits the provider's headers have announced, per minute ({} when none)."""
    entry = _learned_all().get(safe_url(base_url))
    if not isinstance(entry, dict):
        return {}
    return {k: v for k in LIMITS if (v := _int(entry.get(k))) is not None}


def limits(settings: Settings) -> dict[str, tuple[int, str]]:
    """The limits in force: name -> (per minute, where it comes from)."""
    found = learned(settings.provider.base_url)
    out: dict[str, tuple[int, str]] = {}
    for name in LIMITS:
        configured = getattr(settings.provider, name)
        heard = found.get(name)
        if configured and (heard is None or configured <= heard):
            out[name] = (configured, f"provider.{name}")
        elif heard:
            out[name] = (heard, "learned from the provider's x-ratelimit headers")
    return out


def announced(headers: Mapping[str, str]) -> dict[str, int]:
    """The per-minute limits a response's headers announce (OpenAI's ``-requests`` /
    ``-tokens`` names, OpenRouter's bare ``x-ratelimit-limit`` for requests)."""
    h = {k.lower(): v for k, v in headers.items()}
    out = {}
    requests = _int(h.get("x-ratelimit-limit-requests") or h.get("x-ratelimit-limit"))
    tokens = _int(h.get("x-ratelimit-limit-tokens"))
    if requests:
        out["requests_per_minute"] = requests
    if tokens:
        out["tokens_per_minute"] = tokens
    return out


def exhausted(headers: Mapping[str, str]) -> bool:
    """True when a response says a limit has nothing left until it resets."""
    for key, value in headers.items():
        if key.lower().startswith("x-ratelimit-remaining") and str(value).strip() in ("0", "0.0"):
            return True
    return False


class Limiter:
    """The fleet's buckets for one provider, and what its answers teach about them."""

    def __init__(self, settings: Settings, breaker: Breaker, *, agent: str,
                 sleep: Callable[[float], None] = time.sleep, check: Callable[[], None] = lambda: None,
                 force: bool = False, on_repair: Callable[[Path], None] = lambda moved: None) -> None:
        self.settings = settings
        self.on_repair = on_repair
        self.force = force  # `run --force` calls inside the provider's wait (the buckets still count)
        self.breaker = breaker
        self.agent = agent
        self.sleep = sleep
        self.check = check
        self.key = safe_url(settings.provider.base_url)
        self._buckets: dict[str, Any] = {}
        self._uncounted: dict[str, int] = {}

    def _bucket(self, name: str, limit: int) -> Any:
        from pyrate_limiter import Rate, SQLiteBucket  # only a run that calls pays for it

        bucket = self._buckets.get(name)
        rates = [Rate(limit, WINDOW_MS)]
        if bucket is None:
            import sqlite3

            table = f"{name.split('_')[0]}_{hashlib.sha1(self.key.encode()).hexdigest()[:12]}"
            paths.home().mkdir(parents=True, exist_ok=True)
            db = paths.ratelimit_db()
            try:
                bucket = SQLiteBucket.init_from_file(rates, table=table, db_path=str(db), use_file_lock=True)
            except sqlite3.DatabaseError:
                # Only the last minute's places are lost: moved aside, the buckets start empty.
                moved = files.quarantine_corrupt(db)
                self.on_repair(moved)
                bucket = SQLiteBucket.init_from_file(rates, table=table, db_path=str(db), use_file_lock=True)
            self._buckets[name] = bucket
        bucket.rates = rates  # a limit learned meanwhile applies at once
        return bucket

    def call(self, tokens: int) -> Gate:
        """The gate one call's requests pass: ``tokens`` is its estimate (prompt + max output)."""
        return Gate(self, tokens)

    def close(self) -> None:
        for bucket in self._buckets.values():
            bucket.close()
        self._buckets.clear()

    def admit(self, tokens: int) -> float:
        """Wait for the provider's wait and for a place in every bucket; returns the seconds
        waited. Raises ``ProviderWait`` / ``RateLimited`` instead of waiting longer than
        ``provider.max_retry_wait``."""
        bound = self.settings.provider.max_retry_wait
        waited = self._provider_wait(bound)
        found = limits(self.settings)
        # A request sent while a limit is unknown is counted once its answer announces one.
        self._uncounted = {name: tokens for name in LIMITS if name not in found}
        for name, (limit, source) in found.items():
            from pyrate_limiter import RateItem  # only a fleet with a limit pays for it

            unit = 1 if name == "requests_per_minute" else TOKEN_UNIT
            capacity = max(1, limit // unit)
            weight = 1 if unit == 1 else min(capacity, max(1, math.ceil(tokens / unit)))
            bucket = self._bucket(name, capacity)
            what = "requests" if unit == 1 else "tokens"
            while True:
                now = bucket.now()
                bucket.leak(now)
                item = RateItem(self.key, now, weight)
                if bucket.put(item):
                    break
                wait = max(0.05, (bucket.waiting(item) or 0) / 1000)
                if waited + wait > bound:
                    raise RateLimited(self.agent, self.key, what, limit, wait, source)
                self.sleep(wait)
                waited += wait
                self.check()
        return waited

    def _provider_wait(self, bound: float) -> float:
        remaining = 0.0 if self.force else self.breaker.wait_remaining()
        if remaining <= 0:
            return 0.0
        if remaining > bound:
            self.breaker.check_wait(self.agent)  # raises ProviderWait with the provider's words
            return 0.0
        self.sleep(remaining)
        self.check()
        return remaining

    def learn(self, status: int | None, headers: Mapping[str, str] | None, wait: float | None) -> None:
        """Keep the limits ``headers`` announce; a 429 with a wait, or a spent limit with a
        reset time, holds the whole fleet back for ``wait`` seconds."""
        if not headers:
            return
        heard = announced(headers)
        if heard and heard != learned(self.settings.provider.base_url):
            entry = {**heard, "learned_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            path = paths.ratelimit_learned()
            files.update_json(path, path.with_name(path.name + ".lock"), lambda data: data.update({self.key: entry}),
                              load=lambda _: _learned_all(), timeout=30)
            self._count_late(heard)
        if wait is not None and wait > 0 and (status == 429 or exhausted(headers)):
            self.breaker.hold(wait, agent=self.agent)


    def _count_late(self, heard: dict[str, int]) -> None:
        """Put the request just answered into the buckets of the limits its answer announced."""
        from pyrate_limiter import RateItem

        for name, (limit, _) in limits(self.settings).items():
            if name not in heard or name not in self._uncounted:
                continue
            unit = 1 if name == "requests_per_minute" else TOKEN_UNIT
            capacity = max(1, limit // unit)
            weight = 1 if unit == 1 else min(capacity, max(1, math.ceil(self._uncounted.pop(name) / unit)))
            bucket = self._bucket(name, capacity)
            bucket.put(RateItem(self.key, bucket.now(), weight))  # a full bucket already counts enough


class Gate:
    """One call's side of the limiter, handed to ``LLMClient.chat``."""

    def __init__(self, limiter: Limiter, tokens: int) -> None:
        self.limiter = limiter
        self.tokens = tokens
        self.waited = 0.0

    def before_request(self) -> None:
        self.waited += self.limiter.admit(self.tokens)

    def learn(self, status: int | None, headers: Mapping[str, str] | None, wait: float | None) -> None:
        self.limiter.learn(status, headers, wait)
