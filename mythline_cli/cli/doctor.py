"""``mythline doctor``: is this machine ready to run the fleet unattended?

Each check is a small function returning ``Check`` lines; the command prints them and exits
1 when any failed. Warnings and information never fail: a fleet run by hand, or by a
scheduler we cannot see, is not broken.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import typer

from ._util import STATE, boundary, is_tty, out, print_json

HELP = """Check that this machine can run the fleet unattended, one line per check.

Checks: the config is valid (and which file), the API key variable is set (its value is
never shown), the state home is writable, the budget timezone resolves, the installed
scheduler entries match the config (crontab on Linux/macOS, Task Scheduler on Windows),
which tokenizer works offline, and that the model has a known price when USD caps are set.
Exit 1 when any check fails; warnings (e.g. nothing scheduled yet) do not fail.

--probe sends one tiny request to the provider (reserved in the budget ledger like any
call, so it costs what the provider charges for a few tokens) and reports whether the key
and model work, the structured-output mode in use (what "auto" chose, and why) and the
model's context length.

--scheduled also runs each installed crontab line as cron would (env -i with HOME,
LOGNAME, PATH=/usr/bin:/bin, SHELL=/bin/sh, then the crontab's own variables), with the
same executable and variables but a probe in place of the run (no network, no writes), and
reports what that run sees: the key (found or not, and where; never its value), the
config, the state home and the executable. It also checks the watchdog line. On Windows it
shows each registered task's action and working directory.
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
    # Which file and why: ./mythline.toml found in the working directory is not what cron sees.
    return [Check("config", "ok", f"valid · {cfg.describe_source()}")], cfg


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
    if value and source == "env":
        # The shell's variable is invisible to cron and Task Scheduler.
        return [Check("api key", "ok", f"{env} is set in the environment (scheduled runs do not see it: store it "
                      f"with `mythline keys set {env}`, check with `mythline doctor --scheduled`)")]
    if value:
        return [Check("api key", "ok", f"{env} is set in the key store ({keys.path()})")]
    return [Check("api key", "fail", keys.missing(env))]


def check_home() -> list[Check]:
    from .. import paths

    home = paths.home()
    try:
        paths.check_home()
    except paths.StateHomeUnusable as bad:  # a file, not a permission problem
        return [Check("state home", "fail", str(bad))]
    try:
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
    drift: schedule.Drift | None
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
        text = ("chars (offline fallback: tiktoken's o200k_base file is not in its cache, and it is never "
                "downloaded; the byte count is an upper bound, see docs/configuration.md)")
    return [Check("tokenizer", "info", text)]


def check_prices(cfg: Any) -> list[Check]:
    from ..pricing import lookup_price, why_unpriced

    agents = [a for a in cfg.agents() if a.enabled]
    usd = cfg.budget.daily_usd is not None or cfg.budget.monthly_usd is not None
    models = sorted({m for a in agents if usd or a.daily_usd is not None for m in (a.model, a.auditor)})
    if not models:
        return [Check("prices", "info", "no USD cap is set, so no price is needed")]
    found = []
    for model in models:
        price = lookup_price(model, cfg.provider)
        if price is None:
            why = why_unpriced(model)
            found.append(Check("prices", "fail", f"no price known for model {model!r}"
                               f"{f' ({why})' if why else ''}, so its USD caps cannot be "
                               f'enforced and every run would stop; add [provider.prices."{model}"] with '
                               "input_per_million and output_per_million to mythline.toml (0 for a free local model)"))
        else:
            found.append(Check("prices", "ok", f"{model}: ${price.input * 1e6:g} in / ${price.output * 1e6:g} out "
                               f"per million tokens ({price.source})"))
    return found


def check_audit(cfg: Any) -> list[Check]:
    same = [a.name for a in cfg.agents() if a.enabled and a.auditor == a.model]
    if not same:
        return [Check("audit", "ok", "every enabled agent is audited by another model than its research model")]
    who = ", ".join(same) if len(same) <= 3 else f"{len(same)} agents"
    return [Check("audit", "info", f"{who} audit with their research model, and a model prefers its own answers; "
                  'set audit_model = "<another model>" in [defaults] or [agents.NAME]')]


# -- what a scheduled run sees ----------------------------------------------------------------

PROBE = ["doctor", "--seen"]
_REDIRECT = re.compile(r"\s*>>\s*(?:'(?:[^']|'\"'\"')*'|\S+)\s+2>&1\s*$")
# The command after the quoted executable (or `-m mythline_cli`), never a word inside a path.
_COMMAND = re.compile(r"(?:(?<=')|(?<=mythline_cli))\s+(?:run|watchdog)(?:\s.*)?$")
_VARIABLE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")


def probe() -> dict[str, Any]:
    """What this process sees, for ``doctor --scheduled``: paths and where the key is, never the key."""
    from .. import keys, paths, schedule
    from ..config import load_settings
    from ..errors import MythlineError

    found: dict[str, Any] = {"executable": " ".join(schedule.mythline_command()), "cwd": os.getcwd()}
    try:
        found["home"] = str(paths.home().absolute())
        found["keys_file"] = str(keys.path())
        cfg = load_settings(STATE.config)
        found["config"] = str(cfg.source.absolute()) if cfg.source else None
        env = cfg.provider.api_key_env
        value, source = keys.lookup(env) if env else (None, None)
        found["key"] = {"name": env, "found": bool(value), "source": source}
    except MythlineError as exc:
        found["error"] = str(exc)
    return found


def cron_environment(variables: dict[str, str]) -> dict[str, str]:
    """The environment cron gives a job: its four variables, then the crontab's own assignments."""
    import pwd

    user = pwd.getpwuid(os.getuid())
    env = {"HOME": user.pw_dir, "LOGNAME": user.pw_name, "PATH": "/usr/bin:/bin", "SHELL": "/bin/sh"}
    env.update(variables)
    return env


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def scheduled_lines(text: str) -> list[tuple[str, str, dict[str, str]]]:
    """(key, command, the crontab variables in force) for each job line of our block."""
    from .. import schedule

    variables: dict[str, str] = {}
    found = []
    inside = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped in (schedule.BEGIN, schedule.END):
            inside = stripped == schedule.BEGIN
            continue
        if not stripped or stripped.startswith("#"):
            continue
        match = _VARIABLE.match(stripped)
        if match and not stripped.startswith(("*", "@")) and not stripped[0].isdigit():
            variables[match.group(1)] = _unquote(match.group(2))
            continue
        if not inside:
            continue
        key = schedule.job_key(stripped)
        fields = stripped.split(None, 1 if stripped.startswith("@") else 5)
        if key is None or len(fields) < 2:
            continue
        # Cron turns an unescaped % into a line break, and \% into %.
        found.append((key, fields[-1].replace("\\%", "%"), dict(variables)))
    return found


def probe_line(command: str, variables: dict[str, str]) -> dict[str, Any]:
    """Run ``command``, its run or watchdog swapped for the probe, as cron would."""
    import json
    import shlex
    import subprocess

    bare = _REDIRECT.sub("", command)
    probe_command = _COMMAND.sub(" " + " ".join(shlex.quote(w) for w in PROBE), bare)
    if probe_command == bare:
        return {"error": "cannot tell the mythline command in this line apart; reinstall it with: "
                         "mythline schedule cron --install"}
    env = cron_environment(variables)
    shell = env.get("SHELL") or "/bin/sh"
    try:
        proc = subprocess.run([shell, "-c", probe_command], env=env, cwd=env["HOME"], capture_output=True,
                              text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"error": f"cannot run it with {shell}: {exc}"}
    try:
        data = json.loads(proc.stdout)
        if isinstance(data, dict):
            return data
    except json.JSONDecodeError:
        pass
    last = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}, no output"])[-1]
    return {"error": f"it does not start under cron: {last}"}


def _seen(data: dict[str, Any]) -> str:
    key = data.get("key") or {}
    if not key.get("name"):
        where = "none needed"
    elif key.get("found"):
        where = f"{key['name']} found ({'key store' if key.get('source') == 'key file' else 'environment'})"
    else:
        where = f"{key['name']} NOT found"
    return (f"key {where} · config {data.get('config') or 'none (built-in defaults)'} · home {data.get('home')} · "
            f"exe {data.get('executable')}")


def check_scheduled(cfg: Any, *, windows: bool | None = None,
                    query: Callable[[str], str | None] | None = None) -> list[Check]:
    """Each installed entry as the scheduler will run it."""
    from .. import keys, paths, schedule
    from ..errors import MythlineError

    windows = (os.name == "nt") if windows is None else windows
    if windows:
        return _check_tasks(cfg, query or schedule.query_task)
    try:
        text = schedule.read_crontab()
    except MythlineError as exc:
        return [Check("scheduled", "fail", str(exc))]
    lines = scheduled_lines(text or "")
    if not lines:
        return [Check("scheduled", "warn", "no mythline lines in your crontab to check; install them with: "
                      "mythline schedule cron --install")]
    here_config = str(cfg.source.absolute()) if cfg.source else None
    here_home = str(paths.home().absolute())
    checks: list[Check] = []
    seen: dict[str, dict[str, Any]] = {}
    for key, command, variables in lines:
        name = "scheduled watchdog" if key == schedule.WATCHDOG else f"scheduled {key}"
        data = probe_line(command, variables)
        seen[key] = data
        if "error" in data:
            checks.append(Check(name, "fail", str(data["error"])))
            continue
        problems = []
        info = data.get("key") or {}
        if info.get("name") and not info.get("found") and key != schedule.WATCHDOG:
            store, cron_home = data.get("keys_file"), schedule.cron_home()
            if store and store != str(keys.path()) and info["name"] in keys.load():
                # Stored from this shell, in a store the job does not read: storing it again would not help.
                why = (f" (cron starts jobs with HOME={cron_home}, this shell has HOME={Path.home()})"
                       if cron_home is not None and cron_home != Path.home() else "")
                problems.append(f"{info['name']} is in this shell's key store {keys.path()}, but the line reads "
                                f"{store}{why}; reinstall from this shell with: mythline schedule cron --install "
                                "(the lines then name the store)")
            else:
                problems.append(keys.missing(info["name"]))
        if data.get("config") != here_config:
            problems.append(f"it reads config {data.get('config') or 'none (built-in defaults)'}, this shell "
                            f"{here_config or 'none'}; reinstall from this shell with: mythline schedule cron --install")
        if data.get("home") != here_home:
            problems.append(f"its state home is {data.get('home')}, this shell's {here_home}")
        status = "fail" if problems else "ok"
        message = _seen(data) + ("" if not problems else "; " + "; ".join(problems))
        if info.get("source") == "env" and info.get("name") in variables:
            status = "fail" if status == "fail" else "warn"
            message += (f"; {info['name']} is set in the crontab, and cron copies crontab variables into the "
                        "X-Cron-Env headers of every mail it sends: remove it there and store it with "
                        f"`mythline keys set {info['name']}`")
        checks.append(Check(name, status, message))
    runs = [data for key, data in seen.items() if key != schedule.WATCHDOG and "error" not in data]
    dog = seen.get(schedule.WATCHDOG)
    if dog is None:
        checks.append(Check("scheduled watchdog", "fail", "no watchdog line, so nothing notices an agent that stops "
                            "running; add it with: mythline schedule cron --install"))
    elif "error" not in dog and any((d.get("home"), d.get("config")) != (dog.get("home"), dog.get("config"))
                                    for d in runs):
        checks.append(Check("scheduled watchdog", "fail", "the watchdog line watches another state home or config "
                            "than the agents' lines; reinstall with: mythline schedule cron --install"))
    return checks


def _check_tasks(cfg: Any, query: Callable[[str], str | None]) -> list[Check]:
    import xml.etree.ElementTree as ET

    from .. import schedule

    checks = []
    ns = {"t": schedule.TASK_NS}
    for name in [*cfg.agent_names, schedule.WATCHDOG_TASK]:
        text = query(schedule.task_name(name))
        if text is None:
            if name == schedule.WATCHDOG_TASK:
                checks.append(Check("scheduled watchdog", "fail", "no Mythline\\watchdog task, so nothing notices "
                                    "an agent that stops running; add it with: mythline schedule windows --out DIR, "
                                    "then DIR\\install.cmd"))
            continue
        try:
            root = ET.fromstring(re.sub(r"^\s*(\ufeff)?\s*<\?xml[^>]*\?>", "", text))
        except ET.ParseError:
            checks.append(Check(f"scheduled {name}", "fail", "its task definition cannot be read; re-register it "
                                "with install.cmd"))
            continue
        command = root.findtext("t:Actions/t:Exec/t:Command", default="", namespaces=ns).strip()
        arguments = root.findtext("t:Actions/t:Exec/t:Arguments", default="", namespaces=ns).strip()
        cwd = root.findtext("t:Actions/t:Exec/t:WorkingDirectory", default="", namespaces=ns).strip()
        where = cwd or r"none (Task Scheduler starts it in C:\Windows\System32)"
        status, note = "ok", ""
        words = arguments.split()
        if "--config" not in words and cfg.source is not None:
            status, note = "fail", (f"; it names no --config, so it will not read {cfg.source}: regenerate with "
                                    "mythline schedule windows --out DIR")
        elif "--home" not in words and (home := schedule.carried_home(None)):
            status, note = "fail", (f"; it names no --home, so it will not use the state home {home} "
                                    "(MYTHLINE_HOME here): regenerate with mythline schedule windows --out DIR")
        label = "scheduled watchdog" if name == schedule.WATCHDOG_TASK else f"scheduled {name}"
        checks.append(Check(label, status, f"runs {command} {arguments} · working directory {where}{note}"))
    if not checks:
        checks.append(Check("scheduled", "warn", "no Mythline tasks registered; see: mythline schedule windows"))
    return checks


def check_provider(cfg: Any) -> list[Check]:
    """One tiny request, paid through the ledger: key, model, structured outputs, context."""
    from pydantic import BaseModel

    from .. import negotiate, pricing
    from ..cycle import api_key, new_run_id
    from ..errors import LLMError, MythlineError
    from ..ledger import Ledger
    from ..llm import LLMClient

    class Probe(BaseModel):
        ok: bool

    p = cfg.provider
    agents = [a for a in cfg.agents() if a.enabled] or cfg.agents()
    agent = agents[0]  # the probe's spend is booked to the first agent, and to the fleet
    try:
        key = api_key(cfg)
    except MythlineError as exc:
        return [Check("probe", "fail", str(exc))]
    messages = [{"role": "user", "content": 'Answer with the JSON object {"ok": true} and nothing else.'}]
    ledger, run_id = Ledger(cfg), new_run_id()
    client = LLMClient(p, key)
    checks: list[Check] = []
    try:
        for _ in negotiate.LADDER:
            mode = negotiate.mode(p, agent.model)
            fmt = negotiate.response_format(Probe, mode, name="probe")
            est = pricing.estimate(messages, model=agent.model, max_output_tokens=64, provider=p,
                                   response_format=fmt)
            res = ledger.reserve(agent, est, run_id=run_id, step="doctor-probe")
            try:
                result = client.chat(messages, model=agent.model, max_tokens=64, response_format=fmt)
            except LLMError as exc:
                if exc.billed is None:  # the provider may have billed it: charge the estimate
                    ledger.settle(res, usd=res.usd, tokens=res.tokens, unsettled=True)
                else:
                    ledger.release(res)
                if exc.kind == "response-format" and negotiate.step_down(p, agent.model, mode, str(exc)):
                    continue
                return [Check("probe", "fail", f"{agent.model}: {exc}")]
            usd = result.provider_cost if result.provider_cost is not None else \
                pricing.cost_of(result.prompt_tokens, result.completion_tokens, est.price)
            ledger.settle(res, usd=usd, tokens=result.tokens)
            negotiate.accepted(p, agent.model, mode)
            checks.append(Check("probe", "ok", f"key and model {agent.model} answered in {result.latency:.1f}s "
                                f"({result.tokens} tokens)"))
            break
    except MythlineError as exc:  # over budget, unknown price, an unreadable ledger
        return [Check("probe", "fail", str(exc))]
    finally:
        client.close()
    facts = negotiate.entry(p, agent.model)
    if p.structured_outputs == "auto":
        why = facts.get("structured_why")
        text = f"auto chose {negotiate.mode(p, agent.model)}" + (f" ({why})" if why else " (the server took it)")
    else:
        text = f"{p.structured_outputs} (provider.structured_outputs)"
    checks.append(Check("structured outputs", "ok", text))
    limit, source = negotiate.context_length(p, agent.model, key=key)
    if limit is None:
        try:
            found = negotiate.ask_context(p, agent.model, key=key)
        except ConnectionError:
            found = None
        limit, source = found if found else (None, "")
    if limit is None:
        checks.append(Check("context", "info", "the server does not say its context length; set "
                            "provider.context_length to have prompts that cannot fit refused before the call"))
    else:
        fits = p.max_output_tokens < limit
        checks.append(Check("context", "ok" if fits else "fail",
                            f"{limit:,} tokens (from {source}); provider.max_output_tokens is {p.max_output_tokens:,}"
                            + ("" if fits else ": lower it, or start the server with a larger context")))
    return checks


def run_checks() -> tuple[list[Check], Any]:
    """The default checks, and the settings they used (None when the config is invalid)."""
    checks, cfg = check_config()
    if cfg is not None:
        checks += check_key(cfg)
    checks += check_home()
    if cfg is not None:
        for check in (check_timezone, check_scheduler, check_tokenizer, check_prices, check_audit):
            checks += check(cfg)
    return checks, cfg


def doctor_cli(json_out: bool = typer.Option(False, "--json", help="Print the checks as JSON."),
               scheduled: bool = typer.Option(False, "--scheduled", help="Also run each installed scheduler "
                                              "entry as the scheduler would, with a probe instead of the run, and "
                                              "report the key, config, state home and executable it sees."),
               live: bool = typer.Option(False, "--probe", help="Also send one tiny request to the provider "
                                         "(reserved in the budget ledger): checks the key, the model, the "
                                         "structured-output mode (what auto chose) and the context length."),
               probe_only: bool = typer.Option(False, "--seen", hidden=True, help="Print what this process sees "
                                               "(paths, where the key is) as JSON; what --scheduled runs.")) -> None:
    with boundary():
        if probe_only:
            print_json(probe())
            raise typer.Exit(0)
        checks, cfg = run_checks()
        if live and cfg is not None:
            checks += check_provider(cfg)
        if scheduled and cfg is not None:
            checks += check_scheduled(cfg)
        failed = any(c.status == "fail" for c in checks)
        try:
            if json_out:
                print_json({"ok": not failed, "checks": [asdict(c) for c in checks]})
            elif is_tty():
                from rich.markup import escape

                con = out()
                for c in checks:
                    con.print(f"[{STYLES[c.status]}]{SYMBOLS[c.status]}[/] {c.name}: {escape(c.message)}",
                              markup=True)
            else:
                for c in checks:
                    sys.stdout.write(f"{WORDS[c.status]:<4} {c.name}: {c.message}\n")
            sys.stdout.flush()
        except BrokenPipeError:
            # `mythline doctor | head -1`: the reader left; nothing more to say, at exit either.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    raise typer.Exit(1 if failed else 0)
