"""mythline.toml: validation errors, the lookup order, setting precedence and agent settings."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mythline_cli.cli import app
from mythline_cli.config import DEFAULT_AGENT, DEFAULT_MODEL, OPENROUTER_BASE_URL, load_settings
from mythline_cli.errors import ConfigError
from mythline_cli.fleet.topics import TOPICS

from helpers import mythline

runner = CliRunner()


def invoke(*args: str, env: dict[str, str] | None = None):
    return runner.invoke(app, list(args), env=env)


def one_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, f"expected exactly one line on stderr, got: {stderr!r}"
    assert "Traceback" not in stderr
    return lines[0]


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def local_config(text: str | bytes) -> Path:
    return write(Path.cwd() / "mythline.toml", text)


LONG_NAME = "x" * 5000

# (file text, key the message must name, problem the message must state)
INVALID = {
    "wrong type": ('[budget]\ndaily_usd = "lots"\n', "budget.daily_usd", "valid number"),
    "unknown top-level key": ('bogus = 1\n', "bogus", "unknown key"),
    "unknown nested key": ('[provider]\nmodle = "x"\n', "provider.modle", "unknown key"),
    "unknown key in an agent table": ('[agents.world-npcs]\nintervall = "1h"\n',
                                      "agents.world-npcs.intervall", "unknown key"),
    "negative cap": ("[budget]\ndaily_usd = -1\n", "budget.daily_usd", "greater than 0"),
    "zero cap": ("[budget]\ndaily_tokens = 0\n", "budget.daily_tokens", "greater than 0"),
    "zero agent cap": ("[agents.world-lore]\ndaily_usd = 0\n", "agents.world-lore.daily_usd", "greater than 0"),
    "boolean cap": ("[budget]\ndaily_usd = true\n", "budget.daily_usd", "positive number"),
    "interval below 1m": ('[defaults]\ninterval = "30s"\n', "defaults.interval", "between 1m and 31d"),
    "bare-number interval below 1m": ("[defaults]\ninterval = 59\n", "defaults.interval", "between 1m and 31d"),
    "interval above 31d": ('[agents.world-zones]\ninterval = "32d"\n', "agents.world-zones.interval",
                           "between 1m and 31d"),
    "malformed duration": ('[defaults]\ngrace = "ten minutes"\n', "defaults.grace", "not a duration"),
    "negative duration": ('[budget]\nrun_timeout = "-5m"\n', "budget.run_timeout", "not a duration"),
    "empty duration": ('[provider]\ntimeout = ""\n', "provider.timeout", "not a duration"),
    "unknown agent": ("[agents.world-dragons]\nenabled = true\n", "agents", "unknown agent 'world-dragons'"),
    "unknown agent with a bad key": ("[agents.world-dragons]\nmodle = 1\n", "agents", "unknown agent"),
    "agent name with a slash": ('[agents."world-npcs/../x"]\n', "agents",
                                "bad agent name 'world-npcs/../x': an agent name is lowercase ASCII letters"),
    "agent name ..": ('[agents.".."]\n', "agents", "bad agent name '..': an agent name is lowercase"),
    "agent name CON": ('[agents."CON"]\n', "agents", "bad agent name 'CON': an agent name is lowercase"),
    "agent name con": ('[agents.con]\nkind = "world-zones"\ntopics = ["Durotar"]\n', "agents",
                       "bad agent name 'con': 'con' is a reserved device name on Windows"),
    "agent name with NUL": ('[agents."world\\u0000npcs"]\n', "agents", "bad agent name 'world\\x00npcs'"),
    "very long agent name": (f'[agents."{LONG_NAME}"]\n', "agents", "an agent name is at most 40 characters"),
    "bad timezone": ('[budget]\ntimezone = "Mars/Olympus_Mons"\n', "budget.timezone", "unknown timezone"),
    "timezone path": ('[budget]\ntimezone = "../../etc/passwd"\n', "budget.timezone", "unknown timezone"),
    "min_score above 1": ("[defaults]\nmin_score = 1.5\n", "defaults.min_score", "less than or equal to 1"),
    "agent min_score above 1": ("[agents.quest-chains]\nmin_score = 2\n", "agents.quest-chains.min_score",
                                "less than or equal to 1"),
    "fractional token cap": ("[budget]\ndaily_tokens = 1.5\n", "budget.daily_tokens", "integer"),
    "base_url without scheme": ('[provider]\nbase_url = "localhost:11434/v1"\n', "provider.base_url",
                                "http:// or https://"),
    "empty model": ('[provider]\nmodel = ""\n', "provider.model", "at least 1 character"),
    "negative price": ('[provider.prices."m"]\ninput_per_million = -1\noutput_per_million = 0\n',
                       "provider.prices.m.input_per_million", "greater than or equal to 0"),
    "agents not a table": ("agents = 3\n", "agents", "dictionary"),
    "nan cap": ("[budget]\ndaily_usd = nan\n", "budget.daily_usd", "finite number"),
    "infinite agent cap": ("[agents.world-npcs]\ndaily_usd = inf\n", "agents.world-npcs.daily_usd",
                           "finite number"),
    "infinite price": ('[provider.prices."m"]\ninput_per_million = inf\noutput_per_million = 0\n',
                       "provider.prices.m.input_per_million", "finite number"),
    "infinite grace": ("[defaults]\ngrace = inf\n", "defaults.grace", "longer than 366d"),
    "nan run_timeout": ("[budget]\nrun_timeout = nan\n", "budget.run_timeout", "duration"),
    "huge duration": ('[defaults]\ngrace = "99999999999d"\n', "defaults.grace", "longer than 366d"),
    # A zero timeout fails every call at once; a zero run_timeout reclaims every reservation as hung.
    "zero provider timeout": ('[provider]\ntimeout = "0s"\n', "provider.timeout", "between 1s and 1d (got 0s)"),
    "bare zero provider timeout": ("[provider]\ntimeout = 0\n", "provider.timeout", "between 1s and 1d"),
    "sub-second provider timeout": ("[provider]\ntimeout = 0.2\n", "provider.timeout", "between 1s and 1d"),
    "zero run_timeout": ("[budget]\nrun_timeout = 0\n", "budget.run_timeout", "between 1m and 31d (got 0s)"),
    "short run_timeout": ('[budget]\nrun_timeout = "30s"\n', "budget.run_timeout", "between 1m and 31d"),
    "zero breaker cooldown": ('[breaker]\ncooldown = "0s"\n', "breaker.cooldown", "between 1s and 31d"),
    "zero alert timeout": ('[alerts]\ntimeout = "0m"\n', "alerts.timeout", "between 0.1s and 1d (got 0s)"),
    "tiny alert timeout": ("[alerts]\ntimeout = 0.01\n", "alerts.timeout", "between 0.1s and 1d (got 0.01s)"),
}


@pytest.mark.parametrize("text,key,problem", INVALID.values(), ids=list(INVALID))
def test_invalid_config_is_one_line_exit_2(text: str, key: str, problem: str) -> None:
    path = local_config(text)
    result = invoke("status")
    assert result.exit_code == 2, result.stdout
    line = one_line(result.stderr)
    assert line.startswith("mythline: ")
    assert f"{path}: {key}: " in line
    assert problem in line
    assert result.stdout == ""


def test_very_long_agent_name_is_cut_short() -> None:
    local_config(f'[agents."{LONG_NAME}"]\n')
    result = invoke("status")
    assert result.exit_code == 2
    line = one_line(result.stderr)
    assert "bad agent name 'xxxx" in line and "at most 40 characters" in line
    assert len(line) < 600


def test_nul_in_agent_name_is_escaped() -> None:
    local_config('[agents."world\\u0000npcs"]\n')
    result = invoke("status")
    line = one_line(result.stderr)
    assert "\x00" not in line
    assert "\\x00" in line


def test_several_problems_are_counted_in_the_one_line() -> None:
    path = local_config('[budget]\ndaily_usd = -1\ndaily_tokens = "many"\n')
    result = invoke("status")
    assert result.exit_code == 2
    line = one_line(result.stderr)
    assert str(path) in line and "budget.daily_usd" in line and "(and 1 more problem)" in line


@pytest.mark.parametrize("data,problem", [
    (b"[budget\ndaily_usd = 1\n", "not valid TOML"),
    (b'[budget]\ndaily_usd = 1\ndaily_usd = 2\n', "not valid TOML"),
    (b"\xff\xfe[\x00b\x00]\x00", "not UTF-8"),
    (b'[provider]\nmodel = "caf\xe9"\n', "not UTF-8"),
], ids=["unclosed table", "duplicate key", "utf-16", "latin-1"])
def test_unreadable_file_names_the_file(data: bytes, problem: str) -> None:
    path = local_config(data)
    result = invoke("status")
    assert result.exit_code == 2
    line = one_line(result.stderr)
    assert f"mythline: {path}: " in line and problem in line


def test_missing_explicit_config(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "mythline.toml"
    result = invoke("--config", str(missing), "status")
    assert result.exit_code == 2
    line = one_line(result.stderr)
    assert str(missing) in line and "no such file" in line and "--config" in line


def test_missing_env_config(tmp_path: Path) -> None:
    missing = tmp_path / "gone.toml"
    result = invoke("status", env={"MYTHLINE_CONFIG": str(missing)})
    assert result.exit_code == 2
    line = one_line(result.stderr)
    assert str(missing) in line and "no such file" in line and "MYTHLINE_CONFIG" in line


def test_bad_env_value_is_not_blamed_on_the_file() -> None:
    path = local_config('[provider]\nmodel = "file/model"\n')
    result = invoke("status", env={"MYTHLINE_BASE_URL": "ftp://example.org"})
    assert result.exit_code == 2
    line = one_line(result.stderr)
    assert "MYTHLINE_BASE_URL" in line and "http:// or https://" in line
    assert str(path) not in line


def test_bad_flag_value_names_the_flag() -> None:
    result = invoke("run", "world-npcs", "--dry-run", "--base-url", "nope")
    assert result.exit_code == 2
    line = one_line(result.stderr)
    assert "--base-url" in line and "http:// or https://" in line


def test_unknown_agent_for_run() -> None:
    result = invoke("run", "world-dragons", "--dry-run")
    assert result.exit_code == 2
    line = one_line(result.stderr)
    assert "unknown agent 'world-dragons'" in line and "world-npcs" in line


def test_unknown_agent_name_is_cut_short_for_run() -> None:
    result = invoke("run", "y" * 3000, "--dry-run")
    assert result.exit_code == 2
    assert len(one_line(result.stderr)) < 600


def test_debug_shows_the_traceback() -> None:
    local_config('[budget]\ndaily_usd = "lots"\n')
    result = invoke("--debug", "status")
    assert isinstance(result.exception, ConfigError)


# -- the same failures through a real process, as cron would see them ---------------------------

SUBPROCESS_CASES = {
    "wrong type": (b'[budget]\ndaily_usd = "lots"\n', "budget.daily_usd", "valid number"),
    "unknown nested key": (b'[provider]\nmodle = "x"\n', "provider.modle", "unknown key"),
    "interval below 1m": (b'[defaults]\ninterval = "30s"\n', "defaults.interval", "between 1m and 31d"),
    "unknown agent": (b"[agents.world-dragons]\n", "agents", "unknown agent 'world-dragons'"),
    "zero provider timeout": (b'[provider]\ntimeout = "0s"\n', "provider.timeout", "between 1s and 1d"),
    "invalid TOML": (b"[budget\n", None, "not valid TOML"),
    "non-UTF-8": (b"\xff\xfe\x00\x00garbage", None, "not UTF-8"),
}


@pytest.mark.parametrize("data,key,problem", SUBPROCESS_CASES.values(), ids=list(SUBPROCESS_CASES))
def test_invalid_config_in_a_real_process(data: bytes, key: str | None, problem: str) -> None:
    path = local_config(data)
    proc = mythline("status")
    assert proc.returncode == 2
    line = one_line(proc.stderr)
    assert line.startswith(f"mythline: {path}: ")
    if key:
        assert f": {key}: " in line
    assert problem in line
    assert proc.stdout == ""


def test_missing_files_in_a_real_process(tmp_path: Path) -> None:
    proc = mythline("--config", str(tmp_path / "a.toml"), "status")
    assert proc.returncode == 2
    assert "a.toml: no such file" in one_line(proc.stderr)
    proc = mythline("status", env={"MYTHLINE_CONFIG": str(tmp_path / "b.toml")})
    assert proc.returncode == 2
    assert "b.toml: no such file" in one_line(proc.stderr)


def test_unknown_agent_in_a_real_process() -> None:
    proc = mythline("run", "world-dragons")
    assert proc.returncode == 2
    assert "unknown agent 'world-dragons'" in one_line(proc.stderr)


# -- lookup order ------------------------------------------------------------------------------

def model_file(path: Path, model: str) -> Path:
    return write(path, f'[provider]\nmodel = "{model}"\n')


@pytest.fixture
def every_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A config in each place of the lookup, each naming its place as its model."""
    user = model_file(Path(os.environ["XDG_CONFIG_HOME"]) / "mythline" / "mythline.toml", "place/user")
    local = model_file(Path.cwd() / "mythline.toml", "place/cwd")
    env = model_file(tmp_path / "env" / "mythline.toml", "place/env")
    flag = model_file(tmp_path / "flag" / "custom.toml", "place/flag")
    monkeypatch.setenv("MYTHLINE_CONFIG", str(env))
    return {"user": user, "cwd": local, "env": env, "flag": flag}


def test_lookup_explicit_wins(every_place: dict[str, Path]) -> None:
    s = load_settings(every_place["flag"])
    assert s.source == every_place["flag"] and s.provider.model == "place/flag"


def test_lookup_env_beats_cwd(every_place: dict[str, Path]) -> None:
    s = load_settings()
    assert s.source == every_place["env"] and s.provider.model == "place/env"


def test_lookup_cwd_beats_user_dir(every_place: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MYTHLINE_CONFIG")
    s = load_settings()
    assert s.source == every_place["cwd"] and s.provider.model == "place/cwd"


def test_lookup_user_dir(every_place: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MYTHLINE_CONFIG")
    every_place["cwd"].unlink()
    s = load_settings()
    assert s.source == every_place["user"] and s.provider.model == "place/user"


def test_lookup_built_in_defaults(every_place: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MYTHLINE_CONFIG")
    every_place["cwd"].unlink()
    every_place["user"].unlink()
    s = load_settings()
    assert s.source is None
    assert s.provider.model == DEFAULT_MODEL and s.provider.base_url == OPENROUTER_BASE_URL
    assert s.budget.daily_usd == 5.0 and s.budget.timezone == "local"


def test_lookup_empty_env_var_is_unset(every_place: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MYTHLINE_CONFIG", "")
    assert load_settings().source == every_place["cwd"]


def test_lookup_via_cli_option(every_place: dict[str, Path]) -> None:
    result = invoke("-c", str(every_place["flag"]), "run", "world-npcs", "--dry-run", "--json")
    assert json.loads(result.stdout)["model"] == "place/flag"


def test_every_lookup_step_says_how_it_found_the_file(every_place: dict[str, Path],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    flag = load_settings(every_place["flag"])
    assert (flag.found_by, flag.describe_source()) == ("--config", f"{every_place['flag']} (given with --config)")
    env = load_settings()
    assert (env.found_by, env.describe_source()) == ("MYTHLINE_CONFIG", f"{every_place['env']} (from MYTHLINE_CONFIG)")
    monkeypatch.delenv("MYTHLINE_CONFIG")
    cwd = load_settings()
    assert cwd.found_by == "working directory"
    # Found through the working directory: the one step a scheduled run may not repeat.
    assert cwd.describe_source() == (f"{every_place['cwd']} (./mythline.toml in the working directory; a run "
                                     "started elsewhere, as cron starts it, would not find it: pass --config or "
                                     "set MYTHLINE_CONFIG)")
    every_place["cwd"].unlink()
    user = load_settings()
    assert (user.found_by, user.describe_source()) == ("user config dir",
                                                       f"{every_place['user']} (the user config dir)")
    every_place["user"].unlink()
    none = load_settings()
    assert none.found_by is None
    assert none.describe_source() == (f"built-in defaults (no --config, no MYTHLINE_CONFIG, no mythline.toml in "
                                      f"the working directory {Path.cwd()} or in {every_place['user'].parent}; "
                                      "create one with: mythline init)")


def test_dry_run_says_which_config_it_uses_and_why(every_place: dict[str, Path],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MYTHLINE_CONFIG")
    proc = mythline("run", "world-npcs", "--dry-run")
    assert proc.returncode in (0, 3), proc.stderr  # 3: the place models have no price under the USD cap
    assert f"config {every_place['cwd']} (./mythline.toml in the working directory; " in proc.stdout
    proc = mythline("run", "world-npcs", "--dry-run", "--json", env={"MYTHLINE_CONFIG": str(every_place["env"])})
    assert json.loads(proc.stdout)["config"] == {"path": str(every_place["env"]), "found_by": "MYTHLINE_CONFIG"}


def test_invalid_file_earlier_in_the_lookup_is_not_skipped(every_place: dict[str, Path],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MYTHLINE_CONFIG")
    write(every_place["cwd"], "[budget]\ndaily_usd = -3\n")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.path == every_place["cwd"] and info.value.key == "budget.daily_usd"


# -- precedence of settings --------------------------------------------------------------------

PRICED = """[provider]
model = "file/model"
base_url = "http://file.invalid/v1"
[provider.prices."file/model"]
input_per_million = 1
output_per_million = 1
[provider.prices."env/model"]
input_per_million = 1
output_per_million = 1
[provider.prices."flag/model"]
input_per_million = 1
output_per_million = 1
"""


def test_env_beats_file(monkeypatch: pytest.MonkeyPatch) -> None:
    local_config(PRICED)
    assert load_settings().provider.model == "file/model"
    monkeypatch.setenv("MYTHLINE_MODEL", "env/model")
    monkeypatch.setenv("MYTHLINE_BASE_URL", "http://env.invalid/v1/")
    s = load_settings()
    assert s.provider.model == "env/model"
    assert s.provider.base_url == "http://env.invalid/v1"
    assert s.agent("world-npcs").model == "env/model"


def test_flag_beats_env(monkeypatch: pytest.MonkeyPatch) -> None:
    local_config(PRICED)
    monkeypatch.setenv("MYTHLINE_MODEL", "env/model")
    monkeypatch.setenv("MYTHLINE_BASE_URL", "http://env.invalid/v1")
    s = load_settings(None, {"model": "flag/model", "base_url": "http://flag.invalid/v1"})
    assert s.provider.model == "flag/model" and s.provider.base_url == "http://flag.invalid/v1"
    assert s.agent("world-zones").model == "flag/model"


def test_unset_flags_leave_env_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MYTHLINE_MODEL", "env/model")
    s = load_settings(None, {"model": None, "base_url": None})
    assert s.provider.model == "env/model" and s.provider.base_url == OPENROUTER_BASE_URL


def test_flag_and_env_beat_an_agent_model_in_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    local_config(PRICED + '[agents.world-npcs]\nmodel = "agent/model"\n')
    assert load_settings().agent("world-npcs").model == "agent/model"
    assert load_settings().agent("world-zones").model == "file/model"
    monkeypatch.setenv("MYTHLINE_MODEL", "env/model")
    assert load_settings().agent("world-npcs").model == "env/model"
    assert load_settings(None, {"model": "flag/model"}).agent("world-npcs").model == "flag/model"


def dry(*args: str) -> dict:
    result = invoke("run", "world-npcs", "--dry-run", "--json", *args)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_precedence_through_the_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    local_config(PRICED)
    out = dry()
    assert (out["model"], out["base_url"]) == ("file/model", "http://file.invalid/v1")
    monkeypatch.setenv("MYTHLINE_MODEL", "env/model")
    monkeypatch.setenv("MYTHLINE_BASE_URL", "http://env.invalid/v1")
    out = dry()
    assert (out["model"], out["base_url"]) == ("env/model", "http://env.invalid/v1")
    out = dry("--model", "flag/model", "--base-url", "http://flag.invalid/v1")
    assert (out["model"], out["base_url"]) == ("flag/model", "http://flag.invalid/v1")


def test_precedence_in_a_real_process() -> None:
    local_config(PRICED)
    proc = mythline("run", "world-npcs", "--dry-run", "--json", "--model", "flag/model",
                    env={"MYTHLINE_MODEL": "env/model", "MYTHLINE_BASE_URL": "http://env.invalid/v1"})
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["model"] == "flag/model" and out["base_url"] == "http://env.invalid/v1"


def test_defaults_dry_run_needs_no_file() -> None:
    out = dry()
    assert out["model"] == DEFAULT_MODEL and out["base_url"] == OPENROUTER_BASE_URL
    assert out["topic"] == TOPICS["world-npcs"][0]


# -- agent settings ----------------------------------------------------------------------------

def test_built_in_agent_defaults() -> None:
    s = load_settings()
    agent = s.agent("world-lore")
    assert agent.enabled is True
    assert (agent.interval, agent.grace) == (DEFAULT_AGENT.interval, DEFAULT_AGENT.grace) == (1800.0, 900.0)
    assert (agent.max_attempts, agent.min_score, agent.min_sources) == (3, 0.7, 2)
    assert (agent.daily_usd, agent.daily_tokens) == (0.5, 500_000)
    assert agent.topics == TOPICS["world-lore"]
    assert [a.name for a in s.agents()] == list(TOPICS)


def test_defaults_override_built_ins_and_agents_override_defaults() -> None:
    local_config("""
[defaults]
interval = "2h"
min_score = 0.8
daily_usd = 2
[agents.world-npcs]
interval = "1h30m"
enabled = false
daily_tokens = 1000
""")
    s = load_settings()
    npcs, zones = s.agent("world-npcs"), s.agent("world-zones")
    assert zones.interval == 7200 and zones.min_score == 0.8 and zones.daily_usd == 2 and zones.enabled
    assert zones.daily_tokens == 500_000 and zones.grace == 900
    assert npcs.interval == 5400 and npcs.min_score == 0.8 and npcs.daily_usd == 2
    assert npcs.enabled is False and npcs.daily_tokens == 1000


def test_none_switches_a_cap_off() -> None:
    local_config("""
[budget]
daily_usd = "none"
monthly_tokens = 123
[defaults]
daily_tokens = "None"
[agents.world-items]
daily_usd = " none "
""")
    s = load_settings()
    assert s.budget.daily_usd is None and s.budget.monthly_tokens == 123 and s.budget.daily_tokens == 5_000_000
    items, lore = s.agent("world-items"), s.agent("world-lore")
    assert items.daily_usd is None and items.daily_tokens is None
    assert lore.daily_usd == 0.5 and lore.daily_tokens is None


def test_agent_cap_can_come_back_after_defaults_switched_it_off() -> None:
    local_config('[defaults]\ndaily_usd = "none"\n[agents.world-items]\ndaily_usd = 0.25\n')
    s = load_settings()
    assert s.agent("world-items").daily_usd == 0.25 and s.agent("world-zones").daily_usd is None


def test_topics_replace_and_extra_topics_append() -> None:
    local_config("""
[agents.world-zones]
topics = ["Azshara", "Feralas"]
[agents.world-npcs]
extra_topics = ["Rexxar", "Thrall", "  "]
""")
    s = load_settings()
    assert s.agent("world-zones").topics == ("Azshara", "Feralas")
    # appended at the end; a topic already in the queue or a blank one adds nothing
    assert s.agent("world-npcs").topics == TOPICS["world-npcs"] + ("Rexxar",)
    assert s.agent("world-lore").topics == TOPICS["world-lore"]


def test_topics_and_extra_topics_together() -> None:
    local_config('[agents.world-zones]\ntopics = ["A"]\nextra_topics = ["B"]\n')
    assert load_settings().agent("world-zones").topics == ("A", "B")


def test_an_empty_topics_list_empties_the_queue() -> None:
    local_config("[agents.world-zones]\ntopics = []\n")
    assert load_settings().agent("world-zones").topics == ()
    out = invoke("run", "world-zones", "--dry-run", "--json")
    assert out.exit_code == 0
    assert json.loads(out.stdout)["topic"] is None


def test_zero_run_timeout_is_refused_by_the_run_cron_starts() -> None:
    path = local_config("[budget]\nrun_timeout = 0\n")
    proc = mythline("run", "world-npcs")
    assert proc.returncode == 2
    assert one_line(proc.stderr) == (f"mythline: {path}: budget.run_timeout: must be between 1m and 31d "
                                     "(got 0s); a run older than this is treated as hung")


def test_zero_is_accepted_where_it_means_something() -> None:
    """No grace (down as soon as late), no backoff, no wait between retries: each a real choice."""
    local_config('[defaults]\ngrace = 0\n[backoff]\nbase = "0s"\nmax = 0\n'
                 '[provider]\nmax_retry_wait = "0s"\nmax_retry_time = 0\n')
    s = load_settings()
    assert s.agent("world-npcs").grace == 0
    assert (s.config.backoff.base, s.config.backoff.max) == (0, 0)
    assert (s.provider.max_retry_wait, s.provider.max_retry_time) == (0, 0)


def test_durations_are_accepted_in_every_spelling() -> None:
    local_config('[defaults]\ninterval = "1h30m"\ngrace = 600\n[budget]\nrun_timeout = "1.5h"\n'
                 '[agents.world-zones]\ninterval = "31d"\n[agents.world-npcs]\ninterval = "1m"\n')
    s = load_settings()
    assert s.agent("world-lore").interval == 5400 and s.agent("world-lore").grace == 600
    assert s.budget.run_timeout == 5400
    assert s.agent("world-zones").interval == 31 * 86400 and s.agent("world-npcs").interval == 60


def test_prompts_dir_is_relative_to_the_config_file(tmp_path: Path) -> None:
    path = write(tmp_path / "elsewhere" / "m.toml", 'prompts_dir = "my-prompts"\n')
    assert load_settings(path).prompts_dir() == tmp_path / "elsewhere" / "my-prompts"
    assert load_settings().prompts_dir() is None


# -- durations ---------------------------------------------------------------------------------

@pytest.mark.parametrize("text,seconds", [
    ("90s", 90), ("30m", 1800), ("1h30m", 5400), ("2d", 172800), ("1.5h", 5400), (" 1h 30m ", 5400),
    ("2H", 7200), (45, 45), (2.5, 2.5), ("0s", 0), ("366d", 366 * 86400),
])
def test_parse_duration(text: str | int | float, seconds: float) -> None:
    from mythline_cli.durations import parse_duration

    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "  ", "5", "1h30", "h", "1w", "-5m", "1e3s", "m5", "1h-30m", True,
                                  -1, float("nan"), float("inf"), "367d"])
def test_parse_duration_rejects(text: str | int | float) -> None:
    from mythline_cli.durations import parse_duration

    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize("seconds,text", [(0, "0s"), (59, "59s"), (1800, "30m"), (5400, "1h30m"),
                                          (86400 + 61, "1d1m1s")])
def test_format_duration_round_trips(seconds: int, text: str) -> None:
    from mythline_cli.durations import format_duration, parse_duration

    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds
