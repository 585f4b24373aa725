"""The provider circuit breaker, shared by every agent through ``breaker.json``.

After ``breaker.failures`` failed calls in a row across the fleet (an outage, a 429 storm,
5xx), every agent skips its calls until ``breaker.cooldown`` has passed; then exactly one
call is let through as a probe, and its outcome closes or re-opens the breaker.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from . import files, paths
from .errors import MythlineError
from .procs import pid_alive
from .redact import safe_url

if TYPE_CHECKING:  # status reads the breaker without pydantic or filelock (tens of ms each)
    from .config import Settings

# Failures that say the provider is in trouble; a bad key or a bad request does not.
TRIPPING = {"timeout", "connection", "error-in-200", "empty", "bad-response", "http-408", "http-409", "http-429"}


def trips(kind: str | None, status: int | None) -> bool:
    return kind in TRIPPING or (status is not None and status >= 500)


class BreakerOpen(MythlineError):
    """The provider's breaker is open: skip the call."""

    exit_code = 5

    def __init__(self, base_url: str, until: datetime | None, failures: int, probing: bool) -> None:
        self.base_url = base_url
        self.until = until
        if probing:
            why = "another agent is probing it now"
        else:
            why = f"cooling down until {until:%H:%M:%S} UTC" if until else "cooling down"
        super().__init__(f"{safe_url(base_url)} failed {failures} calls in a row across the fleet; {why}. "
                         "Nothing was called; the next scheduled run tries again")


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Breaker:
    """Read-modify-write of ``breaker.json`` under its own short-held file lock."""

    def __init__(self, settings: Settings, *, now: Callable[[], datetime] = _utcnow) -> None:
        self.settings = settings
        # Keyed by the URL without user info or query: those may hold credentials.
        self.key = safe_url(settings.provider.base_url)
        self.now = now
        self.host = socket.gethostname()

    def _quiet(self) -> bool:
        """True when the breaker is closed with no failures counted: the everyday case,
        answered from the file alone (replaced atomically, so safe to read unlocked)."""
        entry = self.state()
        return not entry.get("failures") and not entry.get("opened_at") and not entry.get("probe")

    def _update(self, change: Callable[[dict[str, Any]], Any]) -> Any:
        from filelock import FileLock

        paths.home().mkdir(parents=True, exist_ok=True)
        with FileLock(str(paths.breaker_lock()), timeout=30):
            try:
                data = files.read_json(paths.breaker())
            except files.CorruptFile:
                # Losing breaker state only costs a few extra calls before it trips again.
                data = None
            if not isinstance(data, dict):
                data = {}
            entry = data.get(self.key)
            if not isinstance(entry, dict):
                entry = {"failures": 0, "opened_at": None, "probe": None}
            before = dict(entry)
            result = change(entry)
            if entry != before or self.key not in data:
                data[self.key] = entry
                files.write_json(paths.breaker(), data)
            return result

    def before_call(self, agent: str) -> None:
        """Raise ``BreakerOpen`` unless calls may go out (or this one is the probe)."""
        cfg = self.settings.config.breaker
        if self._quiet():
            return

        def change(entry: dict[str, Any]) -> None:
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

    def record(self, *, ok: bool, kind: str | None = None, status: int | None = None) -> dict[str, Any]:
        """Count a call's outcome; returns the entry after the change."""
        cfg = self.settings.config.breaker
        if ok and self._quiet():
            return {"failures": 0, "opened_at": None, "probe": None}

        def change(entry: dict[str, Any]) -> dict[str, Any]:
            was_probe = bool(entry.get("probe"))
            entry["probe"] = None
            if ok:
                entry.update(failures=0, opened_at=None)
            elif trips(kind, status):
                entry["failures"] = int(entry.get("failures", 0)) + 1
                if entry["failures"] >= cfg.failures or was_probe:
                    entry["opened_at"] = self.now().isoformat()
            return dict(entry)

        return self._update(change)

    def state(self) -> dict[str, Any]:
        try:
            data = files.read_json(paths.breaker())
        except (files.CorruptFile, OSError):
            return {"failures": 1}  # unknown: take the locked path, which repairs the file
        entry = (data if isinstance(data, dict) else {}).get(self.key)
        return entry if isinstance(entry, dict) else {}


def open_state(base_url: str, *, cooldown: float, now: datetime) -> dict[str, Any] | None:
    """The breaker of ``base_url`` as ``mythline status`` shows it, read without its lock:
    None when it is closed, else ``provider``, ``failures``, ``since``, ``until`` (ISO
    times), ``probing`` (a probe call is out now) and ``reason``."""
    try:
        data = files.read_json(paths.breaker())
    except (files.CorruptFile, OSError):
        return None
    key = safe_url(base_url)
    entry = data.get(key) if isinstance(data, dict) else None
    if not isinstance(entry, dict) or not isinstance(entry.get("opened_at"), str):
        return None
    try:
        opened = datetime.fromisoformat(entry["opened_at"])
        failures = int(entry.get("failures") or 0)
    except (TypeError, ValueError):
        return None
    if opened.tzinfo is None:
        opened = opened.replace(tzinfo=timezone.utc)
    until = opened + timedelta(seconds=cooldown)
    probing = isinstance(entry.get("probe"), dict)
    return {"provider": key, "failures": failures, "since": opened.isoformat(), "until": until.isoformat(),
            "probing": probing, "cooling_down": now < until,
            "reason": f"{failures} failed calls in a row across the fleet (timeouts, dropped connections, "
                      "429 or 5xx answers)"}
