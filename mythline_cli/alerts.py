"""Alerts: an event line always, then an optional webhook and an optional command.

``send`` never raises: an alert must never break a run. Delivery and dedup (at most once
per key): docs/alerts.md.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from . import __version__, files, paths, statedocs
from .agent import valid_name
from .clock import utcnow
from .errors import WebhookFailed  # noqa: F401 - re-exported: alerts.WebhookFailed
from .redact import redact
from .redact import safe_url as redact_url
from .retry_after import retry_after as parse_retry_after

KINDS = ("budget-warn", "quarantine", "failures", "down", "recovered")
KEEP_KEYS = timedelta(days=60)
LOCK_TIMEOUT = 10.0
# Slack shows up to 40,000 characters, Discord's `content` only 2,000.
MAX_TEXT = 1900
MAX_RETRY_AFTER = 30.0
_URL = re.compile(r"(?i)\b(https?://)([^/\s?#]+)[^\s'\"<>]*")

# Retries wait 0.5 s, 1 s, 2 s ... (tests replace this to record the waits instead).
_sleep: Callable[[float], None] = time.sleep


def fleet_log() -> Path:
    """Where alerts about the whole fleet (no agent) are logged."""
    return paths.home() / "alerts.jsonl"


def scrub_urls(text: str) -> str:
    """``text`` with every URL cut to scheme and host: webhook URLs carry their token in the path."""
    return _URL.sub(lambda m: f"{m.group(1)}{m.group(2).rsplit('@', 1)[-1]}/[redacted]", text)


def safe_url(url: str) -> str:
    """A webhook URL that is fine to log: scheme and host only."""
    return redact_url(url, keep_path=False)


def post_json(url: str, body: dict[str, Any], *, timeout: float, retries: int,
              sleep: Callable[[float], None] = time.sleep) -> int:
    """POST ``body`` as JSON; retry connection errors, 5xx and 429. Returns the attempts made.

    A timeout is not retried: the hook may have posted the message already, and a second
    copy of every alert is worse than one late failure line.
    """
    import urllib.error
    import urllib.request

    data = json.dumps(body, ensure_ascii=False).encode("utf-8")
    headers = {"Content-Type": "application/json; charset=utf-8", "User-Agent": f"mythline/{__version__}"}
    for attempt in range(1, retries + 2):
        retry_after: float | None = None
        status: int | None = None
        try:
            request = urllib.request.Request(url, data=data, headers=headers, method="POST")
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - http(s) only
                response.read(65536)
            return attempt
        except urllib.error.HTTPError as exc:
            status = exc.code
            reason = f"HTTP {exc.code}"
            retryable = exc.code == 429 or 500 <= exc.code < 600
            asked = parse_retry_after(exc.headers)
            retry_after = None if asked is None else min(asked, MAX_RETRY_AFTER)
        except TimeoutError:
            raise WebhookFailed(f"no answer within {timeout:g}s", attempts=attempt) from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, (TimeoutError, socket.timeout)):
                raise WebhookFailed(f"no answer within {timeout:g}s", attempts=attempt) from None
            reason = f"cannot connect ({exc.reason})"
            retryable = True
        except (OSError, ValueError) as exc:  # connection reset, bad status line, malformed URL
            reason = f"{type(exc).__name__}: {exc}"
            retryable = not isinstance(exc, ValueError)
        if not retryable or attempt > retries:
            raise WebhookFailed(scrub_urls(reason), attempts=attempt, status=status)
        sleep(retry_after if retry_after is not None else min(0.5 * 2 ** (attempt - 1), 8.0))
    raise AssertionError("unreachable")


# -- alerts.json -----------------------------------------------------------------------------

def _stamp(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _incident(value: Any) -> bool:
    return (isinstance(value, dict) and isinstance(value.get("since"), str) and _stamp(value.get("opened"))
            and isinstance(value.get("key"), str) and isinstance(value.get("note"), (str, type(None))))


def checked(data: Any) -> dict[str, Any]:
    """alerts.json through its schema: ``ValueError`` when its shape is wrong; an entry with a
    bad value is dropped (forgetting a once-key risks one repeated alert, a crash stops every
    alert of the fleet)."""
    if not isinstance(data, dict):
        raise ValueError(f"the file holds a JSON {type(data).__name__}, not an object")
    for name in ("sent", "incidents"):
        if not isinstance(data.get(name, {}), dict):
            raise ValueError(f"{name} is a JSON {type(data[name]).__name__}, not an object")
    return {**data,
            "sent": {k: v for k, v in data.get("sent", {}).items() if _stamp(v)},
            "incidents": {k: v for k, v in data.get("incidents", {}).items() if _incident(v)}}


def _load_state() -> dict[str, Any]:
    docs = statedocs.backend()
    try:
        data = docs.read("alerts")
        return checked({} if data is None else data)
    except (files.CorruptFile, ValueError):
        # Losing the dedup memory risks one repeated alert; refusing every alert would be worse.
        docs.move_aside("alerts")
        return {"sent": {}, "incidents": {}}


def _update(change: Callable[[dict[str, Any]], Any]) -> Any:
    """Apply ``change`` to alerts.json under its lock, write it back, and return its result."""
    return statedocs.backend().update("alerts", "", change, load=_load_state, timeout=LOCK_TIMEOUT)


def _prune(sent: dict[str, Any], now: datetime) -> None:
    for key, when in list(sent.items()):
        try:
            stamp = datetime.fromisoformat(when)
        except (TypeError, ValueError):
            del sent[key]
            continue
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=timezone.utc)
        if now - stamp > KEEP_KEYS:
            del sent[key]


def claim(once_key: str, *, now: datetime) -> bool:
    """Record ``once_key`` and return True, or return False when it was recorded before."""
    def change(state: dict[str, Any]) -> bool:
        sent = state["sent"]
        _prune(sent, now)
        if once_key in sent:
            return False
        sent[once_key] = now.isoformat()
        return True

    return _update(change)


def open_incident(agent: str, *, since: str, now: datetime, note: str | None = None) -> dict[str, Any]:
    """The agent's open down-incident, opened now unless one for the same silence is open."""
    def change(state: dict[str, Any]) -> dict[str, Any]:
        incidents = state["incidents"]
        current = incidents.get(agent)
        if isinstance(current, dict) and current.get("since") == since and isinstance(current.get("key"), str):
            return current
        # The key carries the opening time, so a second outage after a recovery alerts again
        # even when the heartbeat it is judged by has not changed (paused, then unpaused).
        incident = {"since": since, "opened": now.isoformat(), "note": note,
                    "key": f"down:{agent}:{since}:{now.isoformat()}"}
        incidents[agent] = incident
        return incident

    return _update(change)


def open_incidents() -> dict[str, dict[str, Any]]:
    """Read-only view of the open incidents (no lock: a snapshot is enough to decide to look closer)."""
    try:
        data = statedocs.backend().read("alerts")
        incidents: dict[str, dict[str, Any]] = checked({} if data is None else data)["incidents"]
    except (files.CorruptFile, ValueError):  # the next locked change moves it aside
        return {}
    return incidents


def close_incident(agent: str, key: str) -> None:
    """Forget the agent's incident if it is still the one with ``key``."""
    def change(state: dict[str, Any]) -> None:
        current = state["incidents"].get(agent)
        if not isinstance(current, dict) or current.get("key") == key:
            state["incidents"].pop(agent, None)

    _update(change)


# -- sending ----------------------------------------------------------------------------------

def _secrets(settings: Any, url: str | None) -> tuple[str, ...]:
    found: list[str] = []
    if url:
        found.append(url)
        tail = url.split("://", 1)[-1]
        found.append(tail)
        if "/" in tail:
            found.append(tail.split("/", 1)[1])
    try:
        key_env = settings.provider.api_key_env
        key = _stored(key_env)[0] if key_env else None
        if key:
            found.append(key)
    except AttributeError:
        pass
    return tuple(found)


def _stored(name: str) -> tuple[str | None, str | None]:
    # The variable, else the key store: a watchdog under cron sees no shell variables.
    from . import keys
    from .errors import MythlineError

    try:
        return keys.lookup(name)
    except MythlineError:
        return os.environ.get(name, "").strip() or None, None


def _webhook_url(cfg: Any) -> tuple[str | None, str | None]:
    """(url, problem): the URL from the named variable, else from the file."""
    if cfg.webhook_url_env:
        value = _stored(cfg.webhook_url_env)[0] or ""
        if value:
            if not value.startswith(("http://", "https://")):
                return None, f"${cfg.webhook_url_env} does not hold an http(s) URL"
            return value, None
        if not cfg.webhook_url:
            return None, f"alerts.webhook_url_env names ${cfg.webhook_url_env}, which is not set"
    return (cfg.webhook_url or None), None


def _log(agent: str | None, entry: dict[str, Any]) -> None:
    # Any configured agent has its own log; a name that is not a safe file name never becomes a path.
    if valid_name(agent):
        statedocs.backend().append("events", str(agent), [entry])
    else:
        statedocs.backend().append("alerts", "", [entry])


def send(settings, *, kind: str, message: str, agent: str | None = None, once_key: str | None = None,
         data: dict | None = None, now: datetime | None = None) -> dict | None:
    """Deliver one alert; ``None`` when ``once_key`` was sent before. Never raises.

    Returns what happened: the alert's fields plus ``event`` (the line was written),
    ``webhook`` and ``command`` (``None`` when not configured, else ``{"ok": ...}``).
    """
    try:
        return _send(settings, kind=kind, message=message, agent=agent, once_key=once_key, data=data, now=now)
    except Exception:  # noqa: BLE001 - the last line of defence: an alert must never break a run
        return {"kind": kind, "agent": agent, "message": scrub_urls(str(message)), "once_key": once_key,
                "event": False, "webhook": None, "command": None}


def _send(settings: Any, *, kind: str, message: str, agent: str | None, once_key: str | None,
          data: dict | None, now: datetime | None) -> dict | None:
    now = now or utcnow()
    if now.tzinfo is None:
        now = now.replace(tzinfo=timezone.utc)
    if isinstance(data, dict) and data.get("scope") == "fleet" and agent is not None:
        # About the whole fleet (its caps), whichever agent's run noticed: filed under the fleet.
        data, agent = {**data, "triggered_by": agent}, None
    try:
        cfg = settings.config.alerts
        url, url_problem = _webhook_url(cfg)
        secrets = _secrets(settings, url)
    except Exception:  # noqa: BLE001 - a broken settings object still gets its event line
        cfg, url, url_problem, secrets = None, None, None, ()
    base = {"ts": now.isoformat(), "agent": agent, "run_id": "alert"}

    def failed(channel: str, error: str, **extra: Any) -> None:
        entry = redact({**base, "event": "alert-failed", "kind": kind, "channel": channel,
                        "error": scrub_urls(str(error)), **extra}, secrets)
        try:
            _log(agent, entry)
        except Exception:  # noqa: BLE001 - nowhere left to report to
            pass

    if once_key is not None:
        try:
            if not claim(once_key, now=now):
                return None
        except Exception as exc:  # noqa: BLE001 - e.g. the lock timed out
            # Not recorded, so not sent: whoever calls next with this key tries again.
            failed("dedup", f"cannot record the alert in alerts.json ({type(exc).__name__}: {exc}); not sent")
            return None

    payload = redact({"kind": kind, "agent": agent, "message": message, "data": data or {},
                      "once_key": once_key, "ts": now.isoformat()}, secrets)
    result: dict[str, Any] = {**payload, "event": False, "webhook": None, "command": None}
    try:
        _log(agent, {**base, "event": "alert", "kind": kind, "message": payload["message"],
                     "data": payload["data"], "once_key": once_key,
                     "channels": [c for c, on in (("webhook", url), ("command", cfg and cfg.command)) if on]})
        result["event"] = True
    except Exception:  # noqa: BLE001 - the other channels may still work
        pass
    if cfg is None:
        return result

    if url_problem:
        failed("webhook", url_problem)
        result["webhook"] = {"ok": False, "error": url_problem}
    elif url:
        text = f"[mythline] {kind}" + (f" · {agent}" if agent else "") + f": {payload['message']}"
        if len(text) > MAX_TEXT:
            text = text[: MAX_TEXT - 1] + "…"
        body = {"text": text, "content": text, **{k: payload[k] for k in ("kind", "agent", "message", "data", "ts")}}
        try:
            attempts = post_json(url, body, timeout=cfg.timeout, retries=cfg.retries, sleep=_sleep)
            result["webhook"] = {"ok": True, "attempts": attempts}
        except WebhookFailed as exc:
            failed("webhook", exc.reason, webhook=safe_url(url), attempts=exc.attempts, status=exc.status)
            result["webhook"] = {"ok": False, "attempts": exc.attempts, "error": redact(exc.reason, secrets)}
        except Exception as exc:  # noqa: BLE001
            reason = scrub_urls(f"{type(exc).__name__}: {exc}")
            failed("webhook", reason, webhook=safe_url(url))
            result["webhook"] = {"ok": False, "error": redact(reason, secrets)}

    if cfg.command:
        outcome = _run_command(cfg.command, payload, timeout=cfg.timeout)
        if not outcome["ok"]:
            outcome["error"] = redact(scrub_urls(outcome["error"]), secrets)
            failed("command", outcome["error"], **({"exit_code": outcome["exit_code"]} if "exit_code" in outcome else {}))
        result["command"] = outcome
    return result


def _run_command(command: str, payload: dict[str, Any], *, timeout: float) -> dict[str, Any]:
    import tempfile

    alert = {"MYTHLINE_ALERT_KIND": str(payload["kind"]), "MYTHLINE_ALERT_AGENT": str(payload["agent"] or ""),
             "MYTHLINE_ALERT_MESSAGE": str(payload["message"]),
             "MYTHLINE_ALERT_JSON": json.dumps(payload, ensure_ascii=False, default=str)}
    # An environment value cannot hold NUL; a message quoting binary junk must still go out.
    env = {**os.environ, **{k: v.replace("\x00", "") for k, v in alert.items()}}
    # Its own process group, so a timeout stops the shell's children too; stderr to a file,
    # not a pipe, so a child that outlives the shell cannot keep us waiting for EOF.
    group: dict[str, Any]
    if sys.platform == "win32":
        group = {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
    else:
        group = {"start_new_session": True}
    with tempfile.TemporaryFile() as stderr:
        try:
            proc = subprocess.Popen(command, shell=True, env=env, stdin=subprocess.DEVNULL,  # noqa: S602
                                    stdout=subprocess.DEVNULL, stderr=stderr, **group)
        except (OSError, ValueError) as exc:
            return {"ok": False, "error": f"alerts.command could not start ({getattr(exc, 'strerror', None) or exc})"}
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_tree(proc)
            return {"ok": False, "error": f"alerts.command did not finish within {timeout:g}s"}
        if code == 0:
            return {"ok": True, "exit_code": 0}
        stderr.seek(0, os.SEEK_END)
        stderr.seek(max(0, stderr.tell() - 4096))
        text = stderr.read().decode("utf-8", errors="replace")
    # The command line itself is never logged: people put tokens in it.
    last = (text.strip().splitlines() or [""])[-1].strip()[:200]
    return {"ok": False, "exit_code": code, "error": f"alerts.command exited {code}" + (f": {last}" if last else "")}


def _kill_tree(proc: subprocess.Popen) -> None:
    try:
        if os.name == "nt":
            subprocess.run(["taskkill", "/F", "/T", "/PID", str(proc.pid)], capture_output=True, timeout=10)
        else:
            import signal

            os.killpg(proc.pid, signal.SIGKILL)
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        proc.kill()
        proc.wait(timeout=10)
    except (OSError, subprocess.SubprocessError):
        pass
