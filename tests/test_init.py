"""``mythline init``: the starter config and the editable prompt copies."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from pydantic import BaseModel
from typer.testing import CliRunner

from mythline_cli import prompts
from mythline_cli.cli import app
from mythline_cli.config import DEFAULT_AGENT, Budget, Config, Provider, load_settings
from mythline_cli.fleet.topics import TOPICS
from mythline_cli.starter import starter_text

from helpers import mythline

runner = CliRunner()
WRITTEN = ["mythline.toml", "prompts/system.md", "prompts/research.md", "prompts/validate.md",
           "prompts/repair.md", "prompts/summarise.md"]


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_init_writes_config_and_prompts() -> None:
    work = Path.cwd()
    result = runner.invoke(app, ["init"])
    assert result.exit_code == 0, result.stderr
    assert sorted(snapshot(work)) == sorted(WRITTEN)
    for name in prompts.NAMES:
        assert (work / "prompts" / f"{name}.md").read_text(encoding="utf-8") == prompts.packaged(name)
    assert (work / "mythline.toml").read_text(encoding="utf-8") == starter_text()
    for name in WRITTEN:
        assert name in result.stdout


def test_second_init_refuses_and_changes_nothing() -> None:
    work = Path.cwd()
    assert runner.invoke(app, ["init"]).exit_code == 0
    (work / "prompts" / "research.md").write_text("my own research prompt $topic\n", encoding="utf-8")
    before = snapshot(work)
    result = runner.invoke(app, ["init"])
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1 and "already exists" in line and "--force" in line
    assert snapshot(work) == before


def test_init_refuses_when_only_a_prompt_exists() -> None:
    work = Path.cwd()
    (work / "prompts").mkdir()
    (work / "prompts" / "repair.md").write_text("mine\n", encoding="utf-8")
    result = runner.invoke(app, ["init"])
    assert result.exit_code == 2
    assert "repair.md" in result.stderr
    assert not (work / "mythline.toml").exists()
    assert (work / "prompts" / "repair.md").read_text(encoding="utf-8") == "mine\n"


def test_force_overwrites() -> None:
    work = Path.cwd()
    assert runner.invoke(app, ["init"]).exit_code == 0
    (work / "mythline.toml").write_text("# mine\n", encoding="utf-8")
    (work / "prompts" / "system.md").write_text("mine\n", encoding="utf-8")
    result = runner.invoke(app, ["init", "--force"])
    assert result.exit_code == 0, result.stderr
    assert (work / "mythline.toml").read_text(encoding="utf-8") == starter_text()
    assert (work / "prompts" / "system.md").read_text(encoding="utf-8") == prompts.packaged("system")


def test_init_path_option(tmp_path: Path) -> None:
    target = tmp_path / "conf" / "deep" / "fleet.toml"
    result = runner.invoke(app, ["init", "--path", str(target)])
    assert result.exit_code == 0, result.stderr
    assert target.is_file()
    assert sorted(p.name for p in (target.parent / "prompts").iterdir()) == sorted(f"{n}.md" for n in prompts.NAMES)
    assert list(Path.cwd().iterdir()) == []


def test_starter_parses_and_yields_the_defaults() -> None:
    assert runner.invoke(app, ["init"]).exit_code == 0
    s = load_settings()
    assert s.source == Path.cwd() / "mythline.toml"
    assert s.provider == Provider()
    assert s.budget == Budget()
    assert s.prompts_dir() == Path.cwd() / "prompts"
    for agent in s.agents():
        assert agent.topics == TOPICS[agent.name]
        assert (agent.interval, agent.grace, agent.max_attempts, agent.min_score, agent.min_sources,
                agent.daily_usd, agent.daily_tokens, agent.enabled) == (
            DEFAULT_AGENT.interval, DEFAULT_AGENT.grace, DEFAULT_AGENT.max_attempts, DEFAULT_AGENT.min_score,
            DEFAULT_AGENT.min_sources, DEFAULT_AGENT.daily_usd, DEFAULT_AGENT.daily_tokens, True)


def test_every_commented_setting_is_valid_when_uncommented() -> None:
    """Uncommenting the starter's settings must give a valid config equal to the defaults."""
    lines = []
    for line in starter_text().splitlines():
        stripped = line.removeprefix("# ")
        is_setting = line.startswith("# ") and ("=" in stripped or stripped.startswith("[")) \
            and not stripped.startswith(("[agents.", "[provider.prices", "extra_topics", "input_per", "output_per"))
        lines.append(stripped if is_setting else line)
    text = "\n".join(lines)
    data = tomllib.loads(text)
    assert set(data) >= {"provider", "budget", "defaults"}
    Path("mythline.toml").write_text(text, encoding="utf-8")
    s = load_settings()
    assert s.provider == Provider() and s.budget == Budget()
    agent = s.agent("world-items")
    assert (agent.interval, agent.grace, agent.daily_usd, agent.daily_tokens, agent.min_score) == (
        DEFAULT_AGENT.interval, DEFAULT_AGENT.grace, DEFAULT_AGENT.daily_usd, DEFAULT_AGENT.daily_tokens,
        DEFAULT_AGENT.min_score)


def uncommented(text: str) -> str:
    """The starter with every documented setting switched on (the prices example and agent
    tables stay comments)."""
    lines = []
    for line in text.splitlines():
        stripped = line.removeprefix("# ")
        is_setting = line.startswith("# ") and ("=" in stripped or stripped.startswith("[")) \
            and not stripped.startswith(("[agents.", "[provider.prices", "extra_topics", "input_per", "output_per"))
        lines.append(stripped if is_setting else line)
    return "\n".join(lines)


def test_the_starter_documents_every_section_and_setting() -> None:
    data = tomllib.loads(uncommented(starter_text()))
    sections = {name for name, info in Config.model_fields.items()
                if isinstance(info.default, BaseModel) and name != "agents"}
    assert sections == {"provider", "budget", "defaults", "backoff", "breaker", "alerts", "schedule", "sources"}
    assert sections <= set(data), f"sections missing from the starter: {sections - set(data)}"
    for section in sections:
        model = type(getattr(Config(), section))
        keys = set(model.model_fields) - {"prices", "topics", "extra_topics", "model", "enabled"}
        missing = keys - set(data[section])
        assert not missing, f"[{section}] in the starter lacks {sorted(missing)}"
    assert "prompts_dir" in data
    assert "# [agents.world-npcs]" in starter_text()


def test_the_uncommented_starter_round_trips_to_the_defaults() -> None:
    Path("mythline.toml").write_text(uncommented(starter_text()), encoding="utf-8")
    written = load_settings().config
    assert written.model_dump(exclude={"prompts_dir", "defaults"}) == Config().model_dump(exclude={"prompts_dir",
                                                                                                   "defaults"})
    # The example sources and key fields are an illustration: the defaults are each kind's own.
    assert {k: v for k, v in written.defaults.model_dump().items()
            if v is not None and k not in ("sources", "key_fields", "audit_model")} == {
        k: v for k, v in DEFAULT_AGENT.model_dump().items() if v is not None}


def test_starter_mentions_every_agent() -> None:
    text = starter_text()
    for name in TOPICS:
        assert f"# [agents.{name}]" in text


def test_edited_research_prompt_is_used_by_dry_run() -> None:
    assert runner.invoke(app, ["init"]).exit_code == 0
    research = Path("prompts/research.md")
    marker = "EDITED-BY-THE-USER: answer like a dwarven chronicler."
    research.write_text(marker + "\n\n" + research.read_text(encoding="utf-8"), encoding="utf-8")
    result = runner.invoke(app, ["run", "world-npcs", "--dry-run", "--json"])
    assert result.exit_code == 0, result.stderr
    contents = [m["content"] for m in json.loads(result.stdout)["messages"]]
    assert any(marker in c for c in contents)
    assert any(f"**{TOPICS['world-npcs'][0]}**" in c for c in contents)


def test_deleted_prompt_falls_back_to_the_packaged_one() -> None:
    assert runner.invoke(app, ["init"]).exit_code == 0
    Path("prompts/research.md").unlink()
    result = runner.invoke(app, ["run", "world-npcs", "--dry-run", "--json"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["topic"] == TOPICS["world-npcs"][0]


def test_init_in_a_real_process_then_dry_run_sees_the_edit() -> None:
    proc = mythline("init")
    assert proc.returncode == 0, proc.stderr
    Path("prompts/research.md").write_text("Only this: $topic ZZZ-MARKER\n", encoding="utf-8")
    proc = mythline("run", "world-zones", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert f"Only this: {TOPICS['world-zones'][0]} ZZZ-MARKER" in proc.stdout
    again = mythline("init")
    assert again.returncode == 2
    assert len(again.stderr.strip().splitlines()) == 1 and "Traceback" not in again.stderr


def test_init_prints_paths_with_brackets_literally(tmp_path: Path) -> None:
    target = tmp_path / "[/x] [bold]" / "mythline.toml"
    result = runner.invoke(app, ["init", "--path", str(target)])
    assert result.exit_code == 0, result.stderr
    assert f"wrote {target}" in result.stdout
    assert target.is_file()
