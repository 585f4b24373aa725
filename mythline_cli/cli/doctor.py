"""``mythline doctor``: is this machine ready to run the fleet unattended?

Each check is a small function returning ``Check`` lines; the command prints them and exits
1 when any failed. Warnings and information never fail: a fleet run by hand, or by a
scheduler we cannot see, is not broken.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import typer

from ._util import STATE, boundary, is_tty, out, print_json

HELP = """Check that this machine can run the fleet unattended, one line per check.

Checks: the config is valid (and which file), the API key variable is set (its value is
never shown), the state home is writable, the budget timezone resolves, the installed
scheduler entries match the config (crontab on Linux/macOS, Task Scheduler on Windows),
which tokenizer works offline, and that the model has a known price when USD caps are set.
Exit 1 when any check fails; warnings (e.g. nothing scheduled yet) do not fail.
"""

SYMBOLS = {"ok": "✓", "fail": "✗", "warn": "!", "info": "·"}
WORDS = {"ok": "ok", "fail": "FAIL", "warn": "warn", "info": "info"}
STYLES = {"ok": "green", "fail": "bold red", "warn": "yellow", "info": "dim"}


@dataclass
class Check:
    """One line of the report."""

    name: str
    status: str  # ok, fail, warn, info
    message: str


def check_config() -> tuple[list[Check], Any]:
    from ..config import load_settings
    from ..errors import MythlineError

    try:
        cfg = load_settings(STATE.config)
    except MythlineError as exc:
        return [Check("config", "fail", str(exc))], None
    where = str(cfg.source) if cfg.source else "no file: built-in defaults (create one with: mythline init)"
    return [Check("config", "ok", f"valid · {where}")], cfg


def check_key(cfg: Any) -> list[Check]:
    from .. import keys
    from ..errors import MythlineError

    env = cfg.provider.api_key_env
    if not env:
        return [Check("api key", "ok", "none needed (provider.api_key_env is empty)")]
    try:
        value, source = keys.lookup(env)
    except MythlineError as exc:  # an unreadable key store
        return [Check("api key", "fail", str(exc))]
    if value:
        where = "in the environment" if source == "env" else f"in the key store ({keys.path()})"
        return [Check("api key", "ok", f"{env} is set {where}")]
    return [Check("api key", "fail", keys.missing(env))]


def check_home() -> list[Check]:
    from .. import paths

    home = paths.home()
    try:
        home.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=home, prefix=".doctor-", delete=True) as fh:
            fh.write(b"ok")
            fh.flush()
    except OSError as exc:
        return [Check("state home", "fail", f"{home} is not writable ({exc.strerror or exc}); fix its permissions "
                      "or point MYTHLINE_HOME elsewhere")]
    return [Check("state home", "ok", f"{home} is writable")]


def check_timezone(cfg: Any) -> list[Check]:
    from datetime import datetime

    from ..ledger import window_keys, zone

    name = cfg.budget.timezone
    try:
        tz = zone(name)
        now = datetime.now(tz)
        day = window_keys(now, tz)["day"]
    except Exception as exc:  # noqa: BLE001 - any failure here would stop every run
        return [Check("timezone", "fail", f"budget.timezone {name!r} does not resolve ({exc})")]
    label = f"local ({now.tzname()}, UTC{now.strftime('%z')})" if name == "local" else name
    return [Check("timezone", "ok", f"{label}; today's budget window is {day}")]


def check_scheduler(cfg: Any, *, windows: bool | None = None,
                    query: Callable[[str], str | None] | None = None) -> list[Check]:
    from .. import schedule
    from ..errors import MythlineError

    windows = (os.name == "nt") if windows is None else windows
    fix = "mythline schedule windows --out DIR, then DIR\\install.cmd" if windows else \
        "mythline schedule cron --install"
    try:
        if windows:
            drift = schedule.windows_drift(cfg, query=query or schedule.query_task)
            where = "Task Scheduler"
        else:
            drift = schedule.cron_drift(cfg)
            where = "crontab"
            if drift is None:
                return [Check("scheduler", "warn", f"no {schedule.crontab_program()!r} program, so nothing "
                              "runs the fleet on a schedule; install cron, or run agents by hand")]
    except MythlineError as exc:  # an unreadable crontab, a mailto cron cannot hold
        return [Check("scheduler", "fail", str(exc))]
    if not drift.installed:
        return [Check("scheduler", "warn", f"no mythline entries in your {where}; the fleet runs only by hand. "
                      f"Schedule it with: {fix}")]
    if drift.matches:
        what = "the fleet line (run --due)" if drift.mode == "fleet" else f"{drift.count} entries"
        return [Check("scheduler", "ok", f"{where}: {what} match the config")]
    parts = [f"{label} {', '.join(keys)}" for label, keys in
             (("missing", drift.missing), ("extra", drift.extra), ("stale", drift.stale)) if keys]
    return [Check("scheduler", "fail", f"{where} differs from the config: {'; '.join(parts)}; update it with: {fix}")]


def check_tokenizer(cfg: Any) -> list[Check]:
    from ..pricing import count_messages

    mode = cfg.provider.tokenizer
    _, method = count_messages([{"role": "user", "content": "Mythline doctor"}], mode)
    if method == "tiktoken":
        text = "tiktoken"
    elif mode == "chars":
        text = "chars (provider.tokenizer = \"chars\")"
    else:
        text = "chars (offline fallback: tiktoken's files could not be loaded; estimates err on the high side)"
    return [Check("tokenizer", "info", text)]


def check_prices(cfg: Any) -> list[Check]:
    from ..pricing import lookup_price

    agents = [a for a in cfg.agents() if a.enabled]
    usd = cfg.budget.daily_usd is not None or cfg.budget.monthly_usd is not None
    models = sorted({a.model for a in agents if usd or a.daily_usd is not None})
    if not models:
        return [Check("prices", "info", "no USD cap is set, so no price is needed")]
    found = []
    for model in models:
        price = lookup_price(model, cfg.provider)
        if price is None:
            found.append(Check("prices", "fail", f"no price known for model {model!r}, so its USD caps cannot be "
                               f'enforced and every run would stop; add [provider.prices."{model}"] with '
                               "input_per_million and output_per_million to mythline.toml (0 for a free local model)"))
        else:
            found.append(Check("prices", "ok", f"{model}: ${price.input * 1e6:g} in / ${price.output * 1e6:g} out "
                               f"per million tokens ({price.source})"))
    return found


def run_checks() -> list[Check]:
    checks, cfg = check_config()
    if cfg is not None:
        checks += check_key(cfg)
    checks += check_home()
    if cfg is not None:
        for check in (check_timezone, check_scheduler, check_tokenizer, check_prices):
            checks += check(cfg)
    return checks


def doctor_cli(json_out: bool = typer.Option(False, "--json", help="Print the checks as JSON.")) -> None:
    with boundary():
        checks = run_checks()
        failed = any(c.status == "fail" for c in checks)
        if json_out:
            print_json({"ok": not failed, "checks": [asdict(c) for c in checks]})
        elif is_tty():
            from rich.markup import escape

            con = out()
            for c in checks:
                con.print(f"[{STYLES[c.status]}]{SYMBOLS[c.status]}[/] {c.name}: {escape(c.message)}", markup=True)
        else:
            for c in checks:
                sys.stdout.write(f"{WORDS[c.status]:<4} {c.name}: {c.message}\n")
    raise typer.Exit(1 if failed else 0)
