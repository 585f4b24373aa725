"""A plain-JSON copy of the validated settings, so ``mythline status`` can start fast.

Validating ``mythline.toml`` needs pydantic, and Typer's option handling builds pydantic
adapters too: together most of the start-up of a command that otherwise reads a dozen small
files. Every full load of the settings leaves this copy under the state home, fingerprinted
by the config file it came from (path and content hash), the environment overrides
and the package version. ``status`` uses it only when the fingerprint still matches, and
takes the full path otherwise; nothing here is ever a source of truth.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import fields
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from . import __version__, files, paths
from .agent import Agent
from .redact import safe_url

ENV_OVERRIDES = ("MYTHLINE_MODEL", "MYTHLINE_BASE_URL")
# The shape of the copy: bumped whenever what it holds changes (2: agents carry their kind,
# custom agents exist; 3: environment values are hashed; 4: the breaker's provider and
# cooldown), so a copy written by older code is never read as this one.
FORMAT = 4


def locate(explicit: Path | None) -> Path | bool | None:
    """The config file the full path would use, None for built-in defaults, False when the
    full path would fail (a named file that is missing): then there is no fast answer."""
    from .errors import ConfigError

    try:
        return paths.locate_config(explicit)[0]
    except ConfigError:
        return False


def fingerprint(source: Path | None) -> dict[str, Any]:
    # The content's hash, not just size and mtime: coarse file-system clocks and tools that
    # restore mtimes would otherwise let an edit go unnoticed. The file is small.
    return {
        "format": FORMAT,
        "version": __version__,
        "source": str(source.resolve()) if source is not None else None,
        "sha256": hashlib.sha256(source.read_bytes()).hexdigest() if source is not None else None,
        # Hashed, never kept: a base URL may carry a token (a query key, a path secret).
        "env": {name: _digest(os.environ.get(name)) for name in ENV_OVERRIDES},
    }


def _digest(value: str | None) -> str | None:
    return None if value is None else hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


def _path(source: Path | None) -> Path:
    key = str(source.resolve()) if source is not None else "built-in"
    return paths.home() / "cache" / f"settings-{hashlib.sha256(key.encode()).hexdigest()[:12]}.json"


def save(settings: Any) -> None:
    """Leave a copy of the settings ``status`` needs; never fails a command."""
    try:
        if getattr(settings.config, "state", None):
            return  # the copy has no room for the DSN: status then reads the config itself
        names = [f.name for f in fields(Agent)]
        doc = {
            "fingerprint": fingerprint(settings.source),
            "budget": settings.budget.model_dump(),
            # The URL without user info or query (the breaker's own key): no credential in a cache.
            "breaker": {"provider": safe_url(settings.provider.base_url),
                        "cooldown": settings.config.breaker.cooldown},
            # An Agent holds only flat values (topics a tuple): this is what asdict() builds,
            # without its deep copy of every value (a thousand agents make that count).
            "agents": [{name: getattr(agent, name) for name in names} for agent in settings.agents()],
        }
        # Compact, and so written by json's C encoder: never read by people, and with a
        # thousand agents the indented form costs a tenth of a second to write.
        data = files.dumps_compact(doc).encode("utf-8")
        path = _path(settings.source)
        try:
            if path.read_bytes() == data:
                return
        except OSError:
            pass
        files.write_bytes_atomic(path, data, durable=False)
    except Exception:  # noqa: BLE001 - a cache that cannot be written is only a slower status
        return


def _number(value: Any, low: float = 0.0) -> bool:
    return type(value) in (int, float) and low <= value < float("inf")


def _cap(value: Any) -> bool:
    return value is None or _number(value)


# What each cached value must be to describe a config that validated; a field not named here
# (a newer one) is left to the Agent it builds.
_AGENT_RULES = {
    "name": lambda v: type(v) is str, "kind": lambda v: type(v) is str, "domain": lambda v: type(v) is str,
    "description": lambda v: type(v) is str, "model": lambda v: type(v) is str,
    "enabled": lambda v: type(v) is bool, "interval": lambda v: _number(v) and v > 0, "grace": _number,
    "max_attempts": lambda v: type(v) is int and v >= 1, "min_score": _number,
    "min_sources": lambda v: type(v) is int and v >= 0, "daily_usd": _cap,
    "daily_tokens": lambda v: v is None or (type(v) is int and v >= 0),
    "topics": lambda v: type(v) is list and all(type(t) is str for t in v),
}
_BUDGET_RULES = {
    "timezone": lambda v: type(v) is str, "daily_usd": _cap, "daily_tokens": _cap, "monthly_usd": _cap,
    "monthly_tokens": _cap, "run_timeout": lambda v: _number(v) and v > 0,
}


def problem(doc: Any) -> str | None:
    """What makes ``doc`` no copy of validated settings, else None."""
    if type(doc) is not dict or type(doc.get("budget")) is not dict or type(doc.get("agents")) is not list:
        return "wrong shape"
    for name, rule in _BUDGET_RULES.items():
        if not rule(doc["budget"].get(name)):
            return f"budget.{name} is {doc['budget'].get(name)!r}"
    for agent in doc["agents"]:
        if type(agent) is not dict:
            return "an agent is not an object"
        for name, rule in _AGENT_RULES.items():
            if not rule(agent.get(name)):
                return f"agents.{agent.get('name')}.{name} is {agent.get(name)!r}"
    return None


class CachedSettings:
    """Just enough of ``config.Settings`` for ``status.collect`` and ``Ledger.report``."""

    def __init__(self, doc: dict[str, Any], source: Path | None) -> None:
        self.source = source
        self.budget = SimpleNamespace(**doc["budget"])
        self.breaker = dict(doc["breaker"])
        # JSON gives lists back where an Agent holds tuples (topics, sources, key fields).
        fields: list[dict[str, Any]] = [{k: tuple(v) if isinstance(v, list) else v for k, v in a.items()}
                                        for a in doc["agents"]]
        self._agents = [Agent(**f) for f in fields]

    @property
    def agent_names(self) -> list[str]:
        return [a.name for a in self._agents]

    def agents(self) -> list[Agent]:
        return list(self._agents)

    def agent(self, name: str) -> Agent:
        for agent in self._agents:
            if agent.name == name:
                return agent
        raise KeyError(name)


def load(explicit: Path | None) -> CachedSettings | None:
    """The cached settings when they still describe what a full load would give, else None."""
    try:
        found = locate(explicit)
        if found is False or found is True:
            return None
        source = found
        doc = files.read_json(_path(source))
        if not isinstance(doc, dict) or doc.get("fingerprint") != fingerprint(source):
            return None
        if problem(doc) is not None:
            return None  # a value no validated config has: the full path, which rewrites the copy
        cached = CachedSettings(doc, source)
        if cached.budget.timezone != "local":
            from zoneinfo import ZoneInfo

            ZoneInfo(cached.budget.timezone)  # an unknown zone raises: the full path says so
        return cached
    except Exception:  # noqa: BLE001 - any doubt means the full path
        return None
