"""The key store: secrets for runs that do not start from your shell (cron, Task Scheduler).

A JSON object of name -> value in ``keys.json`` in the user config dir, readable by its
owner only. A name is the environment variable it stands in for (``OPENROUTER_API_KEY``,
``MYTHLINE_WEBHOOK_URL``): the variable, when set, wins over the file, so a shell can
always override what a scheduled run uses.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from . import files, paths
from .errors import ConfigError, MythlineError, UsageError

FILE_NAME = "keys.json"
NOTE_KEY = "// Note"
NOTE = "Secret credentials for mythline (see: mythline keys --help). Do not share this file."
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


def path() -> Path:
    """``$MYTHLINE_KEYS_FILE``, else ``keys.json`` in the user config dir."""
    env = os.environ.get("MYTHLINE_KEYS_FILE", "").strip()
    if env:
        return Path(env).expanduser().absolute()
    return (paths.user_config_dir() / FILE_NAME).absolute()


def check_name(name: str) -> str:
    if not NAME.match(name or ""):
        raise UsageError(f"{name!r} is not a key name; use the environment variable's name, e.g. OPENROUTER_API_KEY")
    return name


def load(where: Path | None = None) -> dict[str, str]:
    """Every stored key; {} when there is no file."""
    where = where or path()
    try:
        text = where.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read the key store ({exc.strerror or exc}); fix its permissions "
                          "(chmod 600) or move it aside", path=where) from None
    try:
        data = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as exc:
        # The position only: the error text itself could quote a key.
        raise ConfigError(f"the key store is not valid JSON (line {exc.lineno}); fix it or remove it and "
                          "store the keys again with: mythline keys set NAME", path=where) from None
    if not isinstance(data, dict):
        raise ConfigError("the key store must be a JSON object of name: value; remove it and store the keys "
                          "again with: mythline keys set NAME", path=where)
    return {k: v for k, v in data.items() if k != NOTE_KEY and isinstance(v, str) and NAME.match(k)}


def lookup(name: str) -> tuple[str | None, str | None]:
    """(value, source) for ``name``: source is "env" or "key file"; (None, None) when neither has it."""
    value = os.environ.get(name, "").strip()
    if value:
        return value, "env"
    value = load().get(name, "").strip()
    if value:
        return value, "key file"
    return None, None


def missing(name: str) -> str:
    """The line for a key that is nowhere: both ways to provide it."""
    return (f"{name} is not set; export {name}=... in your shell, or store it for scheduled runs with: "
            f"mythline keys set {name} (or set provider.api_key_env = \"\" for a local server that needs no key)")


def _write(data: dict[str, str], where: Path) -> None:
    body = {NOTE_KEY: NOTE, **dict(sorted(data.items()))}
    # mkstemp creates the temporary file 0600 and the rename keeps that mode: the file is
    # never readable by others, not even for an instant.
    files.write_bytes_atomic(where, (json.dumps(body, indent=2) + "\n").encode("utf-8"))
    if os.name != "nt":
        os.chmod(where, 0o600)  # a file copied in by hand with looser permissions is tightened


@contextmanager
def _locked(where: Path) -> Iterator[None]:
    # Two `keys set` at once must not lose one of the keys.
    from . import locking

    where.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
    try:
        held = locking.acquire(where.with_name(where.name + ".lock"), 10)
    except locking.LockTimeout:
        raise MythlineError(f"another mythline keys command is changing {where}; try again") from None
    try:
        yield
    finally:
        held.release()


def store(name: str, value: str) -> Path:
    """Save ``name`` = ``value``; returns the file."""
    check_name(name)
    value = value.strip()
    if not value:
        raise UsageError(f"no value given for {name}; nothing stored")
    if any(c in value for c in "\r\n\x00"):
        raise UsageError(f"the value for {name} holds a line break; a key is one line")
    where = path()
    with _locked(where):
        data = load(where)
        data[name] = value
        _write(data, where)
    return where


def remove(name: str) -> bool:
    """Forget ``name``; False when it was not stored."""
    check_name(name)
    where = path()
    with _locked(where):
        data = load(where)
        if name not in data:
            return False
        del data[name]
        _write(data, where)
    return True
