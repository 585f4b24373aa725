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

CONFIG_NAME = "mythline.toml"
ENV_OVERRIDES = ("MYTHLINE_MODEL", "MYTHLINE_BASE_URL")
# The shape of the copy: bumped whenever what it holds changes (2: agents carry their kind,
# custom agents exist; 3: the breaker's provider and cooldown), so a copy written by older
# code is never read as this one.
FORMAT = 3


def locate(explicit: Path | None) -> Path | None | bool:
    """The config file the full path would use, None for built-in defaults, False when the
    full path would fail (a named file that is missing): then there is no fast answer."""
    if explicit is not None:
        return explicit if explicit.is_file() else False
    env = os.environ.get("MYTHLINE_CONFIG")
    if env:
        path = Path(env).expanduser()
        return path if path.is_file() else False
    for candidate in (Path.cwd() / CONFIG_NAME, paths.user_config_dir() / CONFIG_NAME):
        if candidate.is_file():
            return candidate
    return None


def fingerprint(source: Path | None) -> dict[str, Any]:
    # The content's hash, not just size and mtime: coarse file-system clocks and tools that
    # restore mtimes would otherwise let an edit go unnoticed. The file is small.
    return {
        "format": FORMAT,
        "version": __version__,
        "source": str(source.resolve()) if source is not None else None,
        "sha256": hashlib.sha256(source.read_bytes()).hexdigest() if source is not None else None,
        "env": {name: os.environ.get(name) for name in ENV_OVERRIDES},
    }


def _path(source: Path | None) -> Path:
    key = str(source.resolve()) if source is not None else "built-in"
    return paths.home() / "cache" / f"settings-{hashlib.sha256(key.encode()).hexdigest()[:12]}.json"


def save(settings: Any) -> None:
    """Leave a copy of the settings ``status`` needs; never fails a command."""
    try:
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


class CachedSettings:
    """Just enough of ``config.Settings`` for ``status.collect`` and ``Ledger.report``."""

    def __init__(self, doc: dict[str, Any], source: Path | None) -> None:
        self.source = source
        self.budget = SimpleNamespace(**doc["budget"])
        self.breaker = dict(doc["breaker"])
        self._agents = [Agent(**{**a, "topics": tuple(a["topics"])}) for a in doc["agents"]]

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
        source = locate(explicit)
        if source is False:
            return None
        doc = files.read_json(_path(source))
        if not isinstance(doc, dict) or doc.get("fingerprint") != fingerprint(source):
            return None
        return CachedSettings(doc, source)
    except Exception:  # noqa: BLE001 - any doubt means the full path
        return None
