"""The provider circuit breaker, shared by every agent through ``breaker.json``.

After ``breaker.failures`` failed calls in a row across the fleet (an outage, a 429 storm,
5xx), every agent skips its calls until ``breaker.cooldown`` has passed; then exactly one
call is let through as a probe, and its outcome closes or re-opens the breaker.

The same file carries a provider's own request to wait (a ``Retry-After`` longer than a run
may sleep): until then no agent of the fleet calls that provider.
"""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import files, statedocs
from .clock import utcnow as _utcnow
from .durations import format_duration, local_clock
from .errors import BreakerOpen, ProviderWait  # noqa: F401 - re-exported
from .procs import pid_alive
from .redact import safe_url

if TYPE_CHECKING:  # status reads the breaker without pydantic or filelock (tens of ms each)
    from .config import Settings

# Failures that say the provider is in trouble; a bad key or a bad request does not.
TRIPPING = {"timeout", "connection", "error-in-200", "empty", "bad-response", "http-408", "http-409", "http-429"}
_WAIT_KEYS = ("wait_until", "wait_s", "wait_asked_s", "wait_set")


# Failures that say nothing about the provider's health whatever their status: a server that
# rejects the request's response_format answers every such request the same way (a 500 from
# llama-cpp-python), up or down.
NOT_TRIPPING = {"response-format"}


def trips(kind: str | None, status: int | None) -> bool:
    if kind in NOT_TRIPPING:
        return False
    return kind in TRIPPING or (status is not None and status >= 500)


def _say(seconds: float) -> str:
    # Whole minutes past the first: "asked to wait 15m", not "14m58s" a moment later.
    if seconds >= 60:
        return format_duration(round(seconds / 60) * 60)
    return format_duration(math.ceil(seconds))


def wait_line(entry: dict[str, Any], now: datetime | None = None) -> str:
    """What the user reads about a provider's wait: how long it asked for, and when the next
    call may go out (local time)."""
    until = datetime.fromisoformat(entry["wait_until"])
    asked, waited = float(entry.get("wait_asked_s") or 0), float(entry.get("wait_s") or 0)
    when = local_clock(until, now)
    capped = f"; waiting {_say(waited)} (backoff.max)" if waited < asked else ""
    return f"the provider asked to wait {_say(asked)}{capped}; next try after {when}"


def _aware(value: datetime | None) -> datetime | None:
    # A hand-written time without an offset is read as UTC, never compared naive-to-aware.
    return value if value is None or value.tzinfo else value.replace(tzinfo=timezone.utc)


@cache
def _schema() -> Any:
    # Built on first use: `mythline status` reads the breaker too, and must not pay for pydantic.
    from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator

    class _Probe(BaseModel):
        model_config = ConfigDict(extra="ignore")
        agent: str = ""
        pid: int = 0
        host: str = ""
        started: datetime
        _started = field_validator("started")(_aware)

    class _Entry(BaseModel):
        model_config = ConfigDict(extra="ignore")
        failures: int = Field(default=0, ge=0)
        opened_at: datetime | None = None
        probe: _Probe | None = None
        wait_until: datetime | None = None
        wait_s: float | None = Field(default=None, ge=0, allow_inf_nan=False)
        wait_asked_s: float | None = Field(default=None, ge=0, allow_inf_nan=False)
        wait_set: datetime | None = None
        _times = field_validator("opened_at", "wait_until", "wait_set")(_aware)

    return TypeAdapter(dict[str, _Entry])


def _validate(data: Any) -> dict[str, dict[str, Any]]:
    """Every entry of ``breaker.json`` checked and put in one form; raises ``ValueError``
    naming the first bad value."""
    from pydantic import ValidationError

    try:
        entries = _schema().validate_python(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"][1:]) or "entry"
        raise ValueError(f"{where}: {first['msg']}") from None
    out: dict[str, dict[str, Any]] = {}
    for key, e in entries.items():
        entry: dict[str, Any] = {
            "failures": e.failures, "opened_at": e.opened_at.isoformat() if e.opened_at else None,
            "probe": {**e.probe.model_dump(), "started": e.probe.started.isoformat()} if e.probe else None}
        if e.wait_until is not None:
            entry.update(wait_until=e.wait_until.isoformat(), wait_s=e.wait_s, wait_asked_s=e.wait_asked_s)
            if e.wait_set is not None:
                entry["wait_set"] = e.wait_set.isoformat()
        out[key] = entry
    return out


def _load(docs: statedocs.Docs) -> tuple[dict[str, dict[str, Any]], str | None]:
    """(the breaker's entries, None), or ({}, what is wrong) for a file that cannot be used."""
    try:
        data = docs.read("breaker")
    except files.CorruptFile as exc:
        return {}, exc.problem
    except RecursionError:
        return {}, "nested too deep"
    if data is None:
        return {}, None
    if not isinstance(data, dict):
        return {}, f"expected an object, found {type(data).__name__}"
    try:
        return _validate(data), None
    except ValueError as exc:
        return {}, str(exc)


class Breaker:
    """Read-modify-write of ``breaker.json`` under its own short-held file lock."""

    def __init__(self, settings: Settings, *, now: Callable[[], datetime] = _utcnow,
                 on_repair: Callable[[Path | str, str], None] = lambda moved, problem: None) -> None:
        self.settings = settings
        # Keyed by the URL without user info or query: those may hold credentials.
        self.key = safe_url(settings.provider.base_url)
        self.now = now
        self.host = socket.gethostname()
        self.on_repair = on_repair

    def _quiet(self) -> bool:
        """True when the breaker is closed with no failures counted and no wait: the everyday
        case, answered from the file alone (replaced atomically, so safe to read unlocked)."""
        entry = self.state()
        return not entry.get("failures") and not entry.get("opened_at") and not entry.get("probe") \
            and not entry.get("wait_until")

    def _update(self, change: Callable[[dict[str, Any]], Any]) -> Any:
        docs = statedocs.backend()

        def load() -> dict[str, Any]:
            data, problem = _load(docs)
            if problem is not None:
                # Losing breaker state only costs a few extra calls before it trips again; a bad
                # value left in place would stop every agent of the fleet.
                self.on_repair(docs.move_aside("breaker"), problem)
            return data

        def apply(data: dict[str, Any]) -> Any:
            entry = data.get(self.key) or {"failures": 0, "opened_at": None, "probe": None}
            data[self.key] = entry
            return change(entry)

        return docs.update("breaker", "", apply, load=load, timeout=30)

    def _check_wait(self, entry: dict[str, Any], agent: str) -> None:
        until = entry.get("wait_until")
        if not until:
            return
        if self.now() < datetime.fromisoformat(until):
            raise ProviderWait(agent, entry)
        for key in _WAIT_KEYS:
            entry.pop(key, None)

    def check_wait(self, agent: str, *, max_wait: float = 0.0, sleep: Callable[[float], None] | None = None) -> None:
        """Raise ``ProviderWait`` while the provider's requested wait lasts (and repair a bad
        file, so the run that finds it says so); a wait of at most ``max_wait`` seconds is
        slept through instead."""
        if self._quiet():
            return
        remaining = self.wait_remaining()
        if sleep is not None and 0 < remaining <= max_wait:
            sleep(remaining)
        self._update(lambda entry: self._check_wait(entry, agent))

    def wait_remaining(self) -> float:
        """Seconds left of the provider's requested wait (0 when there is none); read without
        the lock, from the file every agent writes it to."""
        until = self.state().get("wait_until")
        if not until:
            return 0.0
        try:
            end = _aware(datetime.fromisoformat(until))
        except (TypeError, ValueError):
            return 0.0
        return max(0.0, (end - self.now()).total_seconds()) if end else 0.0

    def hold(self, asked: float, *, agent: str) -> dict[str, Any]:
        """The provider asked for ``asked`` seconds: no agent calls it before then (at most
        ``backoff.max``). Returns the entry, for ``wait_line``."""
        wait = min(asked, self.settings.config.backoff.max)
        until = self.now() + timedelta(seconds=wait)

        def change(entry: dict[str, Any]) -> dict[str, Any]:
            current = entry.get("wait_until")
            if not current or datetime.fromisoformat(current) < until:
                entry.update(wait_until=until.isoformat(), wait_s=wait, wait_asked_s=asked,
                             wait_set=self.now().isoformat())
            return dict(entry)

        return self._update(change)

    def before_call(self, agent: str, *, force: bool = False) -> None:
        """Raise ``ProviderWait`` (unless ``force``) or ``BreakerOpen`` unless calls may go
        out (or this one is the probe)."""
        cfg = self.settings.config.breaker
        if self._quiet():
            return

        def change(entry: dict[str, Any]) -> None:
            if not force:
                self._check_wait(entry, agent)
            opened = entry.get("opened_at")
            if not opened:
                return
            until = datetime.fromisoformat(opened) + timedelta(seconds=cfg.cooldown)
            if self.now() < until:
                raise BreakerOpen(self.key, until, entry["failures"], probing=False)
            probe = entry.get("probe")
            if probe and self._probe_alive(probe):
                raise BreakerOpen(self.key, until, entry["failures"], probing=True)
            entry["probe"] = {"agent": agent, "pid": os.getpid(), "host": self.host, "started": self.now().isoformat()}

        self._update(change)

    def _probe_alive(self, probe: dict[str, Any]) -> bool:
        started = datetime.fromisoformat(probe["started"])
        if (self.now() - started).total_seconds() > self.settings.budget.run_timeout:
            return False
        if probe.get("host") == self.host and not pid_alive(int(probe.get("pid", 0))):
            return False
        return True

    def record(self, *, ok: bool, kind: str | None = None, status: int | None = None,
               started: datetime | None = None) -> dict[str, Any]:
        """Count a call's outcome; returns the entry after the change. A success clears the
        provider's wait, unless the wait was asked for after the call ``started`` (its own
        answer said a limit is spent)."""
        cfg = self.settings.config.breaker
        if ok and self._quiet():
            return {"failures": 0, "opened_at": None, "probe": None}

        def change(entry: dict[str, Any]) -> dict[str, Any]:
            was_probe = bool(entry.get("probe"))
            entry["probe"] = None
            if ok:
                entry.update(failures=0, opened_at=None)
                newer = started is not None and entry.get("wait_set") and \
                    datetime.fromisoformat(entry["wait_set"]) >= started
                for key in () if newer else _WAIT_KEYS:
                    entry.pop(key, None)
            elif trips(kind, status):
                entry["failures"] = int(entry.get("failures", 0)) + 1
                if entry["failures"] >= cfg.failures or was_probe:
                    entry["opened_at"] = self.now().isoformat()
            return dict(entry)

        return self._update(change)

    def state(self) -> dict[str, Any]:
        """This provider's entry, read without the lock; a file that cannot be used reads as
        not quiet, so the next change takes the locked path, which moves it aside."""
        try:
            data, problem = _load(statedocs.backend())
        except OSError:
            problem = "unreadable"
        if problem is not None:
            return {"failures": 1}
        return data.get(self.key) or {}


def open_state(base_url: str, *, cooldown: float, now: datetime) -> dict[str, Any] | None:
    """The breaker of ``base_url`` as ``mythline status`` shows it, read without its lock:
    None when it is closed, else ``provider``, ``failures``, ``since``, ``until`` (ISO
    times), ``probing`` (a probe call is out now) and ``reason``."""
    try:
        data = statedocs.backend().read("breaker")
    except (files.CorruptFile, OSError):
        return None
    key = safe_url(base_url)
    entry = data.get(key) if isinstance(data, dict) else None
    if not isinstance(entry, dict):
        return None
    wait = _wait_state(key, entry, now)
    if not isinstance(entry.get("opened_at"), str):
        return wait
    try:
        opened = datetime.fromisoformat(entry["opened_at"])
        failures = int(entry.get("failures") or 0)
    except (TypeError, ValueError):
        return None
    if opened.tzinfo is None:
        opened = opened.replace(tzinfo=timezone.utc)
    until = opened + timedelta(seconds=cooldown)
    probing = isinstance(entry.get("probe"), dict)
    if wait is not None and (now >= until or wait["until"] > until.isoformat()):
        return wait
    return {"provider": key, "kind": "breaker", "failures": failures, "since": opened.isoformat(),
            "until": until.isoformat(), "probing": probing, "cooling_down": now < until,
            "reason": f"{failures} failed calls in a row across the fleet (timeouts, dropped connections, "
                      "429 or 5xx answers)"}


def _wait_state(key: str, entry: dict[str, Any], now: datetime) -> dict[str, Any] | None:
    """A provider's own request to wait, shaped like an open breaker for ``status``."""
    try:
        until = _aware(datetime.fromisoformat(entry["wait_until"]))
        waited = float(entry.get("wait_s") or 0)
    except (KeyError, TypeError, ValueError):
        return None
    if until is None or now >= until:
        return None
    return {"provider": key, "kind": "wait", "failures": 0, "since": (until - timedelta(seconds=waited)).isoformat(),
            "until": until.isoformat(), "probing": False, "cooling_down": True, "reason": wait_line(entry, now)}
