"""`mythline state init|import|export`, the schema's version check, and the read-only
commands on PostgreSQL."""

from __future__ import annotations

import json

import pytest
from probe import run_main

from mythline_cli.ledger import schema

from helpers import lore_responder, mythline

AGENT = "world-npcs"


def test_state_init_creates_the_schema_once_and_refuses_a_newer_one(home, config, pg_dsn):
    env = {"MYTHLINE_STATE": pg_dsn}
    for _ in range(2):
        result = mythline("state", "init", env=env)
        assert result.returncode == 0, result.stderr
        assert f"is at schema version {schema.VERSION}." in result.stdout and "postgresql://mythline@127.0.0.1" in result.stdout
    import psycopg

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("UPDATE mythline_meta SET value = '99' WHERE key = 'schema_version'")
    for command in (["run", AGENT], ["state", "init"], ["budget", "show"]):
        refused = mythline(*command, env=env)
        assert refused.returncode == 6
        assert refused.stderr.splitlines() == [
            "mythline: the shared state at " + refused.stderr.split(" at ", 1)[1].split(" has ")[0]
            + f" has schema version 99, newer than this mythline knows ({schema.VERSION}); upgrade mythline on this host"]


def test_state_commands_without_a_shared_state_say_how_to_name_one(home, config):
    result = mythline("state", "init")
    assert result.returncode == 2 and "set MYTHLINE_STATE=postgresql://" in result.stderr


def test_a_file_home_moves_into_postgresql_and_back_with_nothing_lost(home, tmp_path, config, llm_server, pg_dsn):
    llm_server.responder = lore_responder(AGENT)
    assert mythline("run", AGENT).returncode == 0  # spend in the file home
    before = json.loads(mythline("budget", "show", "--json").stdout)
    journal = (home / "ledger-history.jsonl").read_bytes()
    imported = mythline("state", "import", env={"MYTHLINE_STATE": pg_dsn})
    assert imported.returncode == 0, imported.stderr
    on_pg = json.loads(mythline("budget", "show", "--json", env={"MYTHLINE_STATE": pg_dsn}).stdout)
    assert on_pg == before
    again = mythline("state", "import", env={"MYTHLINE_STATE": pg_dsn})
    assert again.returncode == 6 and "already holds a ledger" in again.stderr  # never merged twice

    back = tmp_path / "back"
    exported = mythline("state", "export", env={"MYTHLINE_STATE": pg_dsn, "MYTHLINE_HOME": str(back)})
    assert exported.returncode == 0, exported.stderr
    assert (back / "ledger-history.jsonl").read_bytes() == journal
    assert json.loads(mythline("budget", "show", "--json", env={"MYTHLINE_HOME": str(back)}).stdout) == before
    refused = mythline("state", "export", env={"MYTHLINE_STATE": pg_dsn})
    assert refused.returncode == 2 and "exists; export into a state home without a ledger" in refused.stderr


@pytest.mark.parametrize("where", ["env", "config"])
def test_status_and_budget_show_read_postgresql_without_openai_or_tokencost(home, config, llm_server, pg_dsn,
                                                                            where, monkeypatch):
    llm_server.responder = lore_responder(AGENT)
    if where == "env":
        monkeypatch.setenv("MYTHLINE_STATE", pg_dsn)
    else:
        from urllib.parse import urlsplit

        path = config()
        parts = urlsplit(pg_dsn)  # without the password: a config file is no place for one
        dsn = f"postgresql://{parts.username}@{parts.hostname}:{parts.port}{parts.path}"
        path.write_text(f'state = "{dsn}"\n' + path.read_text())
    assert mythline("run", AGENT).returncode == 0
    assert not (home / "ledger.json").exists()  # the spend is in PostgreSQL only
    for args in (["status", "--json"], ["budget", "show", "--json"]):
        result = run_main(*args)
        assert result.returncode == 0, result.stderr
        assert not result.llm_stack
    report = json.loads(mythline("budget", "show", "--json").stdout)
    assert report["agents"][AGENT]["usd"]["spent"] > 0
