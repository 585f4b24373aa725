"""Agents of your own: `[agents.NAME]` with `kind` and `topics`, safe names, and every command
that goes by agent name (run, status on both paths, agents, schedule, pause, budget, alerts)."""

from __future__ import annotations

import json
import os
import tomllib
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from probe import status_modules
from typer.testing import CliRunner

from mythline_cli import alerts, paths, settings_cache
from mythline_cli.agent import MAX_NAME, RESERVED, WINDOWS_RESERVED, valid_name
from mythline_cli.cli import app
from mythline_cli.config import load_settings, parse_config
from mythline_cli.errors import ConfigError, UsageError
from mythline_cli.fleet.topics import DESCRIPTIONS, TOPICS
from mythline_cli.slug import slug
from mythline_cli.starter import starter_text
from mythline_cli.statusview import ATTENTION_ROWS, SUMMARY_ABOVE

from helpers import lore_responder, mythline

runner = CliRunner()

EASTERN = {"kind": "world-zones", "topics": ["Dun Morogh", "Elwynn Forest"], "interval": "1h"}


def one_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, f"expected exactly one line on stderr, got: {stderr!r}"
    assert "Traceback" not in stderr
    return lines[0]


def local_config(text: str) -> Path:
    path = Path.cwd() / "mythline.toml"
    path.write_text(text, encoding="utf-8")
    return path


def custom(name: str, kind: str = "world-zones", topics: str = '["Durotar"]') -> str:
    return f'[agents."{name}"]\nkind = "{kind}"\ntopics = {topics}\n'


# -- the name rule ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["a", "zones2", "eastern-zones", "con-zones", "nul1", "com10", "lpt-1",
                                  "a" * MAX_NAME, "x-", *TOPICS])
def test_valid_names(name: str) -> None:
    assert valid_name(name)


@pytest.mark.parametrize("name", ["", "Zones", "CON", "con", "nul", "NUL", "com0", "COM1", "com9", "lpt0", "lpt9",
                                  "aux", "prn", "fleet", "a" * (MAX_NAME + 1), "1zones", "-zones", "my zones",
                                  "my_zones", "zones.txt", "nul.txt", "a/b", "..", ".", "a\\b", "zö", "ｚones",
                                  "zones\x00", "zones\n", None, 3])
def test_invalid_names(name: object) -> None:
    assert not valid_name(name)


def test_reserved_names() -> None:
    assert {"con", "prn", "aux", "nul", "com0", "com9", "lpt0", "lpt9"} <= WINDOWS_RESERVED
    assert WINDOWS_RESERVED | {"fleet"} == RESERVED
    assert all(valid_name(name) for name in TOPICS)


# -- parsing: accepted -------------------------------------------------------------------------

def test_a_custom_agent_takes_its_kind_and_its_own_topics() -> None:
    s = parse_config({"agents": {"eastern-zones": dict(EASTERN, description="Zones of the Eastern Kingdoms.")}})
    agent = s.agent("eastern-zones")
    assert (agent.name, agent.kind, agent.domain) == ("eastern-zones", "world-zones", "zones")
    assert agent.topics == ("Dun Morogh", "Elwynn Forest")
    assert agent.description == "Zones of the Eastern Kingdoms."
    assert agent.interval == 3600.0 and agent.daily_usd == 0.5  # the fleet's defaults still apply
    assert agent.custom and not s.agent("world-zones").custom
    assert s.agent("world-zones").kind == "world-zones"


def test_description_defaults_to_the_kinds_and_extra_topics_add_to_its_own() -> None:
    s = parse_config({"agents": {"npcs-2": {"kind": "world-npcs", "topics": ["Rexxar"],
                                            "extra_topics": ["Rexxar", "Chen"]}}})
    agent = s.agent("npcs-2")
    assert agent.description == DESCRIPTIONS["world-npcs"] and agent.domain == "npcs"
    assert agent.topics == ("Rexxar", "Chen")


def test_an_empty_topic_list_is_an_explicit_empty_queue() -> None:
    assert parse_config({"agents": {"idle": {"kind": "world-lore", "topics": []}}}).agent("idle").topics == ()


def test_built_ins_first_then_custom_agents_in_file_order() -> None:
    text = (custom("zeta") + '[agents.world-lore]\ninterval = "2h"\n' + custom("alpha", "world-items")
            + custom("mid", "quest-chains"))
    s = parse_config(tomllib.loads(text))
    assert s.agent_names == [*TOPICS, "zeta", "alpha", "mid"]
    assert [a.name for a in s.agents()] == s.agent_names
    assert [a.kind for a in s.agents()][-3:] == ["world-zones", "world-items", "quest-chains"]


def test_a_built_in_agent_may_name_its_own_kind() -> None:
    s = parse_config({"agents": {"world-npcs": {"kind": "world-npcs", "interval": "2h"}}})
    agent = s.agent("world-npcs")
    assert agent.kind == "world-npcs" and agent.topics == TOPICS["world-npcs"] and agent.interval == 7200.0


def test_the_longest_name_and_names_that_only_start_like_a_device() -> None:
    s = parse_config(tomllib.loads(custom("a" * MAX_NAME) + custom("con-zones") + custom("com10")))
    assert s.agent_names[-3:] == ["a" * MAX_NAME, "con-zones", "com10"]


def test_agents_are_resolved_once_per_config() -> None:
    s = parse_config({"agents": {"eastern-zones": EASTERN}})
    first = s.agents()
    assert s.agents() == first and s.agents()[-1] is first[-1]
    s.model_override = "other/model"  # what load_settings does for --model
    assert {a.model for a in s.agents()} == {"other/model"}


def test_unknown_agent_on_the_command_line_names_a_big_fleet_briefly() -> None:
    s = parse_config(tomllib.loads("".join(custom(f"agent-{i:03d}") for i in range(30))))
    with pytest.raises(UsageError) as err:
        s.agent("agent-999")
    text = str(err.value)
    assert "unknown agent 'agent-999'" in text and "and 30 more (see: mythline agents)" in text
    assert "agent-029" not in text and len(text) < 400


# -- parsing: refused, as one line and exit 2 -----------------------------------------------------

BUILT_INS = ", ".join(TOPICS)
REFUSED = {
    "custom without kind": ('[agents.zones2]\ntopics = ["Durotar"]\n', "agents",
                            f"unknown agent 'zones2': the built-in fleet is {BUILT_INS}; to add your own agent, "
                            'give its table kind = "<one of those>" and its own topics = [...]'),
    "misspelt built-in": ('[agents.world-npc]\ninterval = "1h"\n', "agents",
                          "unknown agent 'world-npc' (did you mean world-npcs?): the built-in fleet is"),
    "misspelt built-in with a bad key": ("[agents.world-npc]\nmodle = 1\n", "agents", "unknown agent 'world-npc'"),
    "custom without topics": ('[agents.zones2]\nkind = "world-zones"\n', "agents.zones2",
                              "a custom agent needs its own topics = [...] (it does not share the queue of "
                              "world-zones, which would research the same topics twice)"),
    "custom with only extra_topics": ('[agents.zones2]\nkind = "world-zones"\nextra_topics = ["Durotar"]\n',
                                      "agents.zones2", "a custom agent needs its own topics"),
    "unknown kind": ('[agents.zones2]\nkind = "world-dragons"\ntopics = []\n', "agents.zones2.kind",
                     f"unknown kind 'world-dragons'; use one of: {BUILT_INS}"),
    "kind of a custom agent's name": (custom("zones2") + custom("zones3", kind="zones2"), "agents.zones3.kind",
                                      "unknown kind 'zones2'"),
    "kind not a string": ('[agents.zones2]\nkind = 3\ntopics = []\n', "agents.zones2.kind", "valid string"),
    "built-in of another kind": ('[agents.world-npcs]\nkind = "world-zones"\n', "agents.world-npcs.kind",
                                 "world-npcs is a built-in agent, always of its own kind; for your own world-zones "
                                 'topics add a custom agent, e.g. [agents.my-zones] with kind = "world-zones" and '
                                 "topics = [...]"),
    "kind in defaults": ('[defaults]\nkind = "world-zones"\n', "defaults.kind", "unknown key"),
    "empty description": (custom("zones2") + 'description = ""\n', "agents.zones2.description", "at least 1"),
    "unknown key in a custom table": (custom("zones2") + "topic = []\n", "agents.zones2.topic", "unknown key"),
}


@pytest.mark.parametrize("text,key,problem", REFUSED.values(), ids=list(REFUSED))
def test_refused_configs(text: str, key: str, problem: str) -> None:
    path = local_config(text)
    result = runner.invoke(app, ["status"])
    assert result.exit_code == 2, result.stdout
    line = one_line(result.stderr)
    assert line.startswith(f"mythline: {path}: {key}: "), line
    assert problem in line
    assert result.stdout == ""


HOSTILE = {
    "slash": "zones/../x",
    "backslash": "zones\\x",
    "dot-dot": "..",
    "NUL byte": "zones\x00x",
    "CON": "CON",
    "con": "con",
    "NUL": "NUL",
    "nul": "nul",
    "COM1": "COM1",
    "com1": "com1",
    "lpt9": "lpt9",
    "fleet": "fleet",
    "300 characters": "z" * 300,
    "41 characters": "z" * 41,
    "uppercase": "Zones",
    "space": "my zones",
    "unicode": "zönes",
    "leading digit": "1zones",
    "leading dash": "-zones",
    "dot": "zones.txt",
    "empty": "",
    "newline": "zones\nx",
}


@pytest.mark.parametrize("name", HOSTILE.values(), ids=list(HOSTILE))
def test_hostile_names_are_one_line_exit_2_and_touch_nothing(name: str, home: Path) -> None:
    escaped = json.dumps(name)  # a TOML basic string takes JSON's escapes
    path = local_config(f'[agents.{escaped}]\nkind = "world-zones"\ntopics = ["Durotar"]\n')
    for args in (["status"], ["schedule", "cron"], ["run", "world-zones", "--dry-run"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.stdout)
        line = one_line(result.stderr)
        assert line.startswith(f"mythline: {path}: agents: bad agent name "), line
        assert "\x00" not in line and len(line) < 400
    assert not home.exists()


def test_hostile_name_in_a_real_process(home: Path) -> None:
    local_config(custom("COM1"))
    proc = mythline("status")
    assert proc.returncode == 2 and proc.stdout == ""
    assert one_line(proc.stderr).endswith(
        "agents: bad agent name 'COM1': an agent name is lowercase ASCII letters, digits and '-', starting with a "
        "letter, at most 40 characters")
    local_config(custom("com1"))
    proc = mythline("status")
    assert proc.returncode == 2
    assert one_line(proc.stderr).endswith("agents: bad agent name 'com1': 'com1' is a reserved device name on "
                                          "Windows; pick another name")


def test_parse_config_raises_config_error_for_library_callers() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"agents": {"zones2": {"kind": "world-zones"}}})
    assert err.value.key == "agents.zones2"


def test_the_starters_example_is_a_valid_custom_agent() -> None:
    lines = starter_text().splitlines()
    start = lines.index("#[agents.eastern-zones]")
    example = "\n".join(line[1:].split("   #")[0] for line in lines[start:start + 4])
    agent = parse_config(tomllib.loads(example)).agent("eastern-zones")
    assert agent.kind == "world-zones" and agent.topics == ("Dun Morogh", "Redridge Mountains")
    assert agent.description == "Zones of the Eastern Kingdoms."


# -- a real cycle -----------------------------------------------------------------------------------

def test_a_custom_agent_runs_a_real_cycle_into_its_kinds_domain(home: Path, config, llm_server) -> None:
    config(sections={"agents.eastern-zones": dict(EASTERN, description="Zones of the Eastern Kingdoms.")})
    llm_server.responder = lore_responder("world-zones")
    proc = mythline("run", "eastern-zones", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert (out["agent"], out["result"], out["topic"]) == ("eastern-zones", "stored", "Dun Morogh")
    stored = json.loads((home / "store" / "zones" / f"{slug('Dun Morogh')}.json").read_text())
    assert stored["domain"] == "zones" and stored["provenance"]["agent"] == "eastern-zones"
    assert stored["record"]["continent"] == "continent of Dun Morogh"  # a ZoneRecord field
    research, audit = llm_server.requests
    schema = research["body"]["response_format"]["json_schema"]["schema"]
    assert "continent" in schema["properties"] and "level_range" in schema["properties"]
    assert "Knowledge area: Zones of the Eastern Kingdoms." in research["body"]["messages"][-1]["content"]
    # Its own files, by its own name: heartbeat, checkpoint, events, ledger bucket.
    adir = home / "agents" / "eastern-zones"
    assert json.loads((adir / "heartbeat.json").read_text())["state"] == "ok"
    assert json.loads((adir / "checkpoint.json").read_text())["topics"]["Dun Morogh"]["status"] == "done"
    assert {e["event"] for e in map(json.loads, (adir / "events.jsonl").read_text().splitlines())} >= {"store"}
    ledger = json.loads((home / "ledger.json").read_text())
    (day,) = [w for k, w in ledger["windows"].items() if k.startswith("day:")]
    assert day["agents"]["eastern-zones"]["tokens"] == 400 + 200 + 300 + 20
    assert not (home / "agents" / "world-zones").exists()


def test_the_same_topic_from_two_agents_of_a_kind_is_stored_once(home: Path, config, llm_server) -> None:
    # world-zones' first topic is Elwynn Forest; so is this custom agent's.
    config(sections={"agents.west-zones": {"kind": "world-zones", "topics": ["Elwynn Forest"]}})
    llm_server.responder = lore_responder("world-zones")
    first = json.loads(mythline("run", "world-zones", "--json").stdout)
    record = home / "store" / "zones" / f"{slug('Elwynn Forest')}.json"
    before = record.read_bytes()
    second = json.loads(mythline("run", "west-zones", "--json").stdout)
    assert (first["result"], second["result"]) == ("stored", "unchanged")
    assert record.read_bytes() == before  # still the built-in agent's record and provenance
    assert json.loads(before)["provenance"]["agent"] == "world-zones"
    assert sorted(p.name for p in (home / "store" / "zones").iterdir()) == [record.name]


def test_dry_run_and_unknown_custom_agent(config, llm_server) -> None:
    config(sections={"agents.eastern-zones": EASTERN})
    result = runner.invoke(app, ["run", "eastern-zones", "--dry-run", "--json"])
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["agent"], data["topic"], data["step"]) == ("eastern-zones", "Dun Morogh", "research")
    result = runner.invoke(app, ["run", "western-zones", "--dry-run"])
    assert result.exit_code == 2
    assert "unknown agent 'western-zones' (did you mean eastern-zones?); the fleet is: world-zones" in \
        one_line(result.stderr)
    assert "eastern-zones (see: mythline status)" in result.stderr


# -- status on both paths -------------------------------------------------------------------------

def test_status_lists_custom_agents_on_the_full_and_the_fast_path(home: Path, config, llm_server) -> None:
    config(sections={"agents.eastern-zones": EASTERN, "agents.npcs-2": {"kind": "world-npcs", "topics": ["Rexxar"]}})
    llm_server.responder = lore_responder("world-zones")
    assert mythline("run", "eastern-zones").returncode == 0  # leaves the settings cache
    fast, loaded = status_modules("status", "--json")
    assert loaded == ""  # the cache was used
    (home / "cache").rename(home / "cache-off")
    full, loaded = status_modules("status", "--json")
    assert "pydantic" in loaded
    fast_data, full_data = json.loads(fast.stdout), json.loads(full.stdout)
    fast_data.pop("now")
    full_data.pop("now")
    assert fast_data == full_data
    rows = {r["agent"]: r for r in full_data["agents"]}
    assert list(rows)[-2:] == ["eastern-zones", "npcs-2"] and len(rows) == 12
    assert rows["eastern-zones"]["state"] == "ok"
    assert rows["eastern-zones"]["topics"] == {"done": 1, "pending": 1, "quarantined": 0}
    assert rows["npcs-2"]["state"] == "never-run" and rows["npcs-2"]["topics"]["pending"] == 1
    table, loaded = status_modules("status")
    assert loaded == ""
    line = next(ln for ln in table.stdout.splitlines() if "eastern-zones" in ln)
    assert " ok " in line and "1/1/0" in line


def test_the_cache_keeps_each_agents_kind(home: Path, config, llm_server) -> None:
    config(sections={"agents.eastern-zones": EASTERN})
    settings = load_settings()
    home.mkdir(parents=True)
    settings_cache.save(settings)
    cached = settings_cache.load(None)
    assert cached is not None
    assert cached.agents() == settings.agents()
    assert cached.agent("eastern-zones").kind == "world-zones"


def test_a_cache_from_before_custom_agents_is_not_read(home: Path, config, llm_server) -> None:
    config(sections={"agents.eastern-zones": EASTERN})
    home.mkdir(parents=True)
    settings_cache.save(load_settings())
    (cache,) = (home / "cache").glob("settings-*.json")
    doc = json.loads(cache.read_text())
    # What the previous format looked like: no format number, agents without a kind.
    del doc["fingerprint"]["format"]
    for agent in doc["agents"]:
        del agent["kind"]
    cache.write_text(json.dumps(doc))
    assert settings_cache.load(None) is None
    result, loaded = status_modules("status", "--json")
    assert "pydantic" in loaded and "eastern-zones" in result.stdout


# -- a big fleet: the summary and --all --------------------------------------------------------------

def big_fleet(n: int) -> str:
    kinds = list(TOPICS)
    return "".join(custom(f"agent-{i:03d}", kinds[i % 10], f'["Topic {i}"]') for i in range(n))


def heartbeat(agent: str, state: str, *, minutes_ago: int = 5, error: str | None = None) -> None:
    end = datetime.now(timezone.utc) - timedelta(minutes=minutes_ago)
    path = paths.heartbeat(agent)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"agent": agent, "state": state, "started": end.isoformat(),
                                "finished": end.isoformat(), "last_error": error,
                                "topics": {"done": 0, "pending": 1, "quarantined": 0}}), encoding="utf-8")


def test_a_big_fleet_is_summarised_with_the_urgent_agents_first() -> None:
    local_config(big_fleet(SUMMARY_ABOVE))  # 10 + 50 agents
    for i in range(25):
        heartbeat(f"agent-{i:03d}", "failed", error=f"agent-{i:03d}: provider said no")
    heartbeat("agent-040", "ok", minutes_ago=120)  # past due + grace: down
    heartbeat("agent-041", "ok")
    result = runner.invoke(app, ["status"], env={"COLUMNS": "160"})
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0] == "Mythline fleet: 60 agents · 1 ok · 1 down · 25 failed · 33 never-run"
    assert lines[1] == f"Needing attention: {ATTENTION_ROWS} of 26"
    shown = [ln.split()[0] for ln in lines if ln.startswith(" agent-")]
    assert shown == ["agent-040"] + [f"agent-{i:03d}" for i in range(ATTENTION_ROWS - 1)]
    assert "40 more agent(s) not shown; every agent: mythline status --all (or --json)" in result.stdout
    assert "fleet today" in result.stdout
    assert "agent-000: provider said no" in result.stdout
    assert "agent-024: provider said no" not in result.stdout  # not shown, so neither is its error
    assert "agent-041" not in result.stdout and "world-zones" not in result.stdout


def test_all_lists_every_agent_and_json_always_does() -> None:
    local_config(big_fleet(SUMMARY_ABOVE))
    heartbeat("agent-003", "failed", error="agent-003: broke")
    result = runner.invoke(app, ["status", "--all"], env={"COLUMNS": "160"})
    assert result.exit_code == 1
    names = load_settings().agent_names
    rows = [ln.split()[0] for ln in result.stdout.splitlines() if ln.split() and ln.split()[0] in names]
    assert rows == names
    assert "not shown" not in result.stdout and "Mythline fleet" in result.stdout
    data = json.loads(runner.invoke(app, ["status", "--json"]).stdout)
    assert len(data["agents"]) == 60 and data["failing"] == ["agent-003"]


def test_a_fleet_at_the_threshold_gets_the_full_table() -> None:
    local_config(big_fleet(SUMMARY_ABOVE - 10))  # exactly SUMMARY_ABOVE agents
    result = runner.invoke(app, ["status"], env={"COLUMNS": "160"})
    assert result.exit_code == 0
    assert result.stdout.startswith("Mythline fleet\n")
    assert all(f" {name} " in result.stdout for name in load_settings().agent_names)


# -- the other commands that go by agent name --------------------------------------------------------

def test_agents_shows_the_kind_of_custom_agents() -> None:
    local_config(custom("eastern-zones", topics='["Dun Morogh", "Durotar"]'))
    rows = {r["agent"]: r for r in json.loads(runner.invoke(app, ["agents", "--json"]).stdout)}
    assert (rows["eastern-zones"]["kind"], rows["eastern-zones"]["custom"], rows["eastern-zones"]["domain"]) == (
        "world-zones", True, "zones")
    assert (rows["world-npcs"]["kind"], rows["world-npcs"]["custom"]) == ("world-npcs", False)
    assert rows["eastern-zones"]["topics"] == {"total": 2, "done": 0, "pending": 2, "quarantined": 0}
    text = runner.invoke(app, ["agents"], env={"COLUMNS": "100"}).stdout
    header = next(ln for ln in text.splitlines() if ln.split()[:2] == ["agent", "kind"])
    assert header
    assert next(ln for ln in text.splitlines() if " eastern-zones " in ln).split()[:3] == [
        "eastern-zones", "world-zones", "yes"]
    assert next(ln for ln in text.splitlines() if " world-npcs " in ln).split()[:3] == ["world-npcs", "built-in", "yes"]


def test_cron_and_windows_entries_for_custom_agents(home: Path, tmp_path: Path, fake_crontab: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_CONFIG_HOME")  # else the lines name the key store (MYTHLINE_KEYS_FILE)
    # ... as they do when $HOME is not the passwd entry's home, which cron uses: make it so.
    from mythline_cli.schedule import common

    monkeypatch.setattr(common, "cron_home", lambda: Path(os.environ["HOME"]))
    config = local_config(custom("eastern-zones") + 'interval = "1h"\n' + custom("npcs-2", "world-npcs"))
    result = runner.invoke(app, ["schedule", "cron", "--exe", "/opt/venv/bin/mythline"])
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    i = lines.index("# eastern-zones: every 1h")
    assert lines[i + 1] == (f"50 * * * * MYTHLINE_HOME='{home}' MYTHLINE_CONFIG='{config}' '/opt/venv/bin/mythline' "
                            f"run eastern-zones >> '{home}/logs/eastern-zones.log' 2>&1")
    assert lines[-5:-3] == ["# npcs-2: every 30m", lines[-4]] and " run npcs-2 >> " in lines[-4]
    assert runner.invoke(app, ["schedule", "cron", "--install"]).exit_code == 0
    assert " run eastern-zones >> " in fake_crontab.read_text()
    result = runner.invoke(app, ["schedule", "windows", "--out", str(tmp_path / "tasks"), "--exe",
                                 "C:\\venv\\Scripts\\mythlinew.exe"])
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "tasks" / "eastern-zones.xml").is_file()
    assert 'schtasks /Create /TN "Mythline\\eastern-zones" /XML "%~dp0eastern-zones.xml"' in (
        tmp_path / "tasks" / "install.cmd").read_text()


def test_pause_resume_and_budget_reset_by_custom_name(home: Path) -> None:
    local_config(custom("eastern-zones"))
    assert runner.invoke(app, ["pause", "eastern-zones", "--note", "review"]).exit_code == 0
    assert (home / "agents" / "eastern-zones" / "paused").is_file()
    row = next(r for r in json.loads(runner.invoke(app, ["status", "--json"]).stdout)["agents"]
               if r["agent"] == "eastern-zones")
    assert (row["state"], row["note"]) == ("paused", "review")
    assert runner.invoke(app, ["resume", "eastern-zones"]).exit_code == 0
    assert not (home / "agents" / "eastern-zones" / "paused").exists()
    assert runner.invoke(app, ["pause", "--all"]).exit_code == 0
    assert (home / "agents" / "eastern-zones" / "paused").is_file()
    result = runner.invoke(app, ["budget", "reset", "--agent", "eastern-zones", "--yes"])
    assert result.exit_code == 0, result.stderr
    events = (home / "agents" / "eastern-zones" / "events.jsonl").read_text()
    assert '"budget-reset"' in events


def test_an_alert_about_a_custom_agent_goes_to_its_own_events(home: Path) -> None:
    alerts.send(None, kind="failures", agent="eastern-zones", message="3 failures in a row")
    (entry,) = [json.loads(ln) for ln in (home / "agents" / "eastern-zones" / "events.jsonl").read_text().splitlines()]
    assert entry["kind"] == "failures" and entry["agent"] == "eastern-zones"
    # Anything that is not a safe agent name is never made into a path.
    alerts.send(None, kind="failures", agent="../../evil", message="m")
    assert not (home / "evil").exists() and not (home.parent / "evil").exists()
    assert [json.loads(ln)["agent"] for ln in (home / "alerts.jsonl").read_text().splitlines()] == ["../../evil"]
