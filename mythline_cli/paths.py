"""The state home and every path in it: the one place that knows the layout."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import StateHomeUnusable  # noqa: F401 - re-exported: paths.StateHomeUnusable

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


def ratelimit_db() -> Path:
    """The fleet's shared request and token buckets (SQLite, with ``.lock`` beside it)."""
    return home() / "ratelimit.sqlite"


def ratelimit_learned() -> Path:
    """Provider limits learned from ``x-ratelimit-*`` headers."""
    return home() / "ratelimits.json"


def provider_key() -> Path:
    """The provider key's limit and usage as ``budget reconcile`` last read them."""
    return home() / "provider-key.json"


def alerts_state() -> Path:
    return home() / "alerts.json"


def alerts_lock() -> Path:
    return home() / "alerts.lock"


def log_dir() -> Path:
    return home() / "logs"


def agent_log(agent: str) -> Path:
    return log_dir() / f"{agent}.log"


def check_home() -> Path:
    """The state home, made if missing; ``StateHomeUnusable`` when it is a file."""
    root = home()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise StateHomeUnusable(root, "is not a directory, so it cannot be the state home",
                                "point MYTHLINE_HOME at a directory, or move the file away") from None
    return root


def _outside(path: Path, root: Path) -> Path | None:
    """Where the link ``path`` leads when that is outside ``root`` (resolved), else None."""
    if not path.is_symlink():
        return None
    target = path.resolve()
    return None if target == root or root in target.parents else target


def check_inside(*targets: Path) -> Path:
    """The state home, checked: ``StateHomeUnusable`` when it is a file or one of ``targets``
    is a symbolic link leading out of it."""
    root = check_home().resolve()
    for path in targets:
        target = _outside(path, root)
        if target is not None:
            raise StateHomeUnusable(path, f"is a symbolic link to {target}, outside the state home",
                                    "mythline writes only inside it: replace the link with a real "
                                    "directory or file")
    return root


def prepare_agent(agent: str, *, domain: str) -> Path:
    """The agent's directory, made and checked before a run takes its lock.

    One clear line (``StateHomeUnusable``, exit 2) instead of an error halfway through: the
    home or the agent's directory is a file, ``run.lock`` is a directory, or a path the run
    writes is a symbolic link leading out of the state home (appending events to, or storing
    records in, a file somewhere else on the machine). Links that stay inside are followed,
    and so is a state home that is itself a link. Removes the temp files killed writers left
    in the agent's directory, the state home and the agent's store directory."""
    directory = agent_dir(agent)
    root = check_inside(home() / "agents", directory, store_dir(), store_dir() / domain, checkpoint(agent),
                        heartbeat(agent), events(agent), run_lock(agent), paused_flag(agent), backoff(agent))
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise StateHomeUnusable(directory, "is not a directory", "move it away and run again") from None
    if run_lock(agent).is_dir():
        raise StateHomeUnusable(run_lock(agent), "is a directory, not a lock file",
                                "remove that directory and run again")
    from . import files

    # Safe without a lock: a temp file is removed only when its writer is gone (or it is old).
    for place in (directory, root, store_dir() / domain):
        files.clean_temps(place)
    return directory


CONFIG_NAME = "mythline.toml"


def locate_config(explicit: Path | None) -> tuple[Path | None, str | None]:
    """The config file to use and the lookup step that found it: ``--config``,
    ``$MYTHLINE_CONFIG``, ./, the user config dir; (None, None) for the built-in defaults.

    Raises ``ConfigError`` for a named file that does not exist."""
    from .errors import ConfigError

    if explicit is not None:
        if not explicit.is_file():
            raise ConfigError("no such file (given with --config)", path=explicit)
        return explicit, "--config"
    env = os.environ.get("MYTHLINE_CONFIG")
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise ConfigError("no such file (given in MYTHLINE_CONFIG)", path=path)
        return path, "MYTHLINE_CONFIG"
    for candidate, step in ((Path.cwd() / CONFIG_NAME, "working directory"),
                            (user_config_dir() / CONFIG_NAME, "user config dir")):
        if candidate.is_file():
            return candidate, step
    return None, None
def sources_dir() -> Path:
    """Retrieval's shared state: the page cache, extracted texts, per-host politeness."""
    return home() / "sources"


def page_cache(key: str) -> Path:
    return sources_dir() / "cache" / f"{key}.json"


def source_text(sha256: str) -> Path:
    return sources_dir() / "text" / f"{sha256}.txt"


def hosts_state() -> Path:
    return sources_dir() / "hosts.json"


def hosts_lock() -> Path:
    return sources_dir() / "hosts.lock"
