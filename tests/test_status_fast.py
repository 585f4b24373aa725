"""`mythline status` from the settings cache: the same answer as the full path, without
Typer or pydantic, and never from a cache that no longer matches the config."""

from __future__ import annotations

import json
from pathlib import Path

from probe import status_modules

from helpers import lore_responder, mythline


def without_now(text: str) -> dict:
    data = json.loads(text)
    data.pop("now")
    return data


def test_after_a_run_status_skips_validation_and_says_the_same(home, config, llm_server):
    llm_server.responder = lore_responder("world-npcs")
    assert mythline("run", "world-npcs").returncode == 0
    assert list((home / "cache").glob("settings-*.json"))
    fast, loaded = status_modules("status", "--json")
    assert fast.returncode == 0 and loaded == ""  # neither pydantic nor Typer, let alone openai
    (home / "cache").rename(home / "cache-off")
    slow, loaded_slow = status_modules("status", "--json")
    # No usable cache: the config is validated (pydantic), still without Typer, and cached again.
    assert loaded_slow == "pydantic"
    assert list((home / "cache").glob("settings-*.json"))
    assert without_now(fast.stdout) == without_now(slow.stdout)
    table, _ = status_modules("status")
    assert "world-npcs" in table.stdout and "fleet today" in table.stdout


def test_an_edited_config_is_never_read_from_a_stale_cache(home, config, llm_server):
    llm_server.responder = lore_responder("world-npcs")
    assert mythline("run", "world-npcs").returncode == 0
    path = config(sections={"agents.world-npcs": {"daily_usd": 0.25}})  # rewrites the file
    result, loaded = status_modules("status", "--json")
    assert "pydantic" in loaded  # the fingerprint no longer matched: the full path ran
    row = next(r for r in json.loads(result.stdout)["agents"] if r["agent"] == "world-npcs")
    assert row["usd_cap"] == 0.25
    # ...and that full load left a fresh copy, so the next status is fast again.
    again, loaded = status_modules("status", "--json")
    assert loaded == "" and without_now(again.stdout) == without_now(result.stdout)
    assert Path(path).exists()


def test_a_broken_config_is_reported_not_hidden_by_the_cache(home, config, llm_server, monkeypatch):
    llm_server.responder = lore_responder("world-npcs")
    assert mythline("run", "world-npcs").returncode == 0
    path = config()
    Path(path).write_text("[budget]\ndaily_usd = -1\n")
    result = mythline("status")
    assert result.returncode == 2 and "budget.daily_usd" in result.stderr
    monkeypatch.setenv("MYTHLINE_CONFIG", str(Path(path).with_name("missing.toml")))
    missing = mythline("status")
    assert missing.returncode == 2 and "no such file" in missing.stderr


def test_status_on_a_fresh_machine_creates_nothing(home):
    assert mythline("status").returncode == 0
    assert not home.exists()


def test_an_edit_that_keeps_size_and_mtime_is_still_noticed(home, config, llm_server):
    import os

    llm_server.responder = lore_responder("world-npcs")
    path = Path(config(sections={"budget": {"daily_usd": 1.0}}))
    assert mythline("run", "world-npcs").returncode == 0
    stat = path.stat()
    path.write_text(path.read_text().replace("daily_usd = 1.0", "daily_usd = 9.0"))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # a coarse clock, or a tool restoring mtimes
    assert path.stat().st_size == stat.st_size
    data = json.loads(mythline("status", "--json").stdout)
    assert data["fleet"]["day"]["usd"]["cap"] == 9.0


def test_status_all_is_answered_from_the_cache_too(home, config, llm_server):
    llm_server.responder = lore_responder("world-npcs")
    assert mythline("run", "world-npcs").returncode == 0
    fast, loaded = status_modules("status", "--all")
    assert fast.returncode == 0 and loaded == ""
    (home / "cache").rename(home / "cache-off")
    slow, _ = status_modules("status", "--all")
    rows = [ln.split()[:2] for ln in fast.stdout.splitlines() if "world-" in ln]
    assert rows == [ln.split()[:2] for ln in slow.stdout.splitlines() if "world-" in ln]
    assert ["world-npcs", "ok"] in rows and len(rows) == 5  # the world-* agents (ages differ by a second)
    # Anything else still takes the full path, which reports the mistake.
    bad, loaded_bad = status_modules("status", "--all", "--json")
    assert "typer" in loaded_bad


def test_budget_show_is_answered_from_the_cache_and_says_what_the_full_path_says(home, config, llm_server):
    llm_server.responder = lore_responder("world-npcs")
    assert mythline("run", "world-npcs").returncode == 0
    fast, loaded = status_modules("budget", "show", "--json")
    assert fast.returncode == 0 and loaded == ""  # neither pydantic nor Typer
    full, loaded_full = status_modules("--debug", "budget", "show", "--json")  # --debug: the full path
    assert full.returncode == 0 and "typer" in loaded_full
    report = json.loads(fast.stdout)
    assert report == json.loads(full.stdout)
    assert report["agents"]["world-npcs"]["usd"]["spent"] > 0
    table, loaded = status_modules("budget", "show")
    full_table, _ = status_modules("--debug", "budget", "show")
    assert table.returncode == 0 and loaded == "" and table.stdout == full_table.stdout
    assert "world-npcs" in table.stdout and "fleet (day)" in table.stdout


def test_budget_show_with_an_unreadable_ledger_is_reported_by_the_full_path(home, config, llm_server):
    llm_server.responder = lore_responder("world-npcs")
    assert mythline("run", "world-npcs").returncode == 0
    (home / "ledger.json").write_text("{torn")
    (home / "ledger-history.jsonl").write_text("")  # nothing to rebuild it from
    result, loaded = status_modules("budget", "show")
    assert result.returncode == 1 and "typer" in loaded
    lines = result.stderr.strip().splitlines()
    assert "ledger" in lines[0] and "Traceback" not in result.stderr
