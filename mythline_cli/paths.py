"""The state home and every path in it: the one place that knows the layout."""

from __future__ import annotations

import os
from pathlib import Path

APP = "mythline"


def home() -> Path:
    """The state home: ``$MYTHLINE_HOME``, else the platform's user data dir."""
    env = os.environ.get("MYTHLINE_HOME")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir(APP, appauthor=False))


def user_config_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_config_dir(APP, appauthor=False))


def ledger() -> Path:
    return home() / "ledger.json"


def ledger_lock() -> Path:
    return home() / "ledger.lock"


def ledger_history() -> Path:
    return home() / "ledger-history.jsonl"


def agent_dir(agent: str) -> Path:
    return home() / "agents" / agent


def checkpoint(agent: str) -> Path:
    return agent_dir(agent) / "checkpoint.json"


def heartbeat(agent: str) -> Path:
    return agent_dir(agent) / "heartbeat.json"


def events(agent: str) -> Path:
    return agent_dir(agent) / "events.jsonl"


def run_lock(agent: str) -> Path:
    return agent_dir(agent) / "run.lock"


def store_dir() -> Path:
    return home() / "store"


def record(domain: str, slug: str) -> Path:
    return store_dir() / domain / f"{slug}.json"


def paused_flag(agent: str) -> Path:
    return agent_dir(agent) / "paused"


def backoff(agent: str) -> Path:
    return agent_dir(agent) / "backoff.json"


def breaker() -> Path:
    return home() / "breaker.json"


def breaker_lock() -> Path:
    return home() / "breaker.lock"


def alerts_state() -> Path:
    return home() / "alerts.json"


def alerts_lock() -> Path:
    return home() / "alerts.lock"


def log_dir() -> Path:
    return home() / "logs"


def agent_log(agent: str) -> Path:
    return log_dir() / f"{agent}.log"
