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
    for args in (["status", "--json"], ["budget", "show", "--json"], ["budget", "report", "--json"]):
        result = run_main(*args)
        assert result.returncode == 0, result.stderr
        assert not result.llm_stack
    economics = json.loads(mythline("budget", "report", "--json").stdout)
    assert economics["agents"][AGENT]["usd"] > 0  # the journal read from PostgreSQL
    report = json.loads(mythline("budget", "show", "--json").stdout)
    assert report["agents"][AGENT]["usd"]["spent"] > 0


def _tree(root) -> dict[str, object]:
    """Every agent document and log of a file home: JSON parsed, logs as lists of entries."""
    found: dict[str, object] = {}
    for path in sorted(root.rglob("*")):
        name = str(path.relative_to(root))
        kept = name.startswith("agents/") or name in ("breaker.json", "alerts.json", "alerts.jsonl",
                                                      "start-failures.jsonl")
        if not path.is_file() or not kept or name.endswith(".lock"):
            continue
        text = path.read_text()
        if path.name == "inbox.jsonl":
            continue  # its position is the backend's own: compared as `topics ls` shows it
        if path.suffix == ".jsonl":
            found[name] = [json.loads(line) for line in text.splitlines()]
        elif path.suffix == ".json":
            found[name] = json.loads(text)
            if path.name == "checkpoint.json":
                found[name].pop("inbox_offset", None)  # type: ignore[union-attr]
        else:
            found[name] = text
    return found


def test_the_agents_documents_and_events_move_into_postgresql_and_back(home, tmp_path, config, llm_server, pg_dsn):
    from helpers import KEY_ENV

    llm_server.responder = lore_responder(AGENT)
    assert mythline("run", AGENT).returncode == 0
    assert mythline("pause", "world-zones", "--note", "checking sources").returncode == 0
    assert mythline("run", "world-items", env={KEY_ENV: ""}).returncode == 2  # a start failure
    assert mythline("run", "world-dragons").returncode == 2  # the fleet's start failure log
    (home / "breaker.json").write_text(json.dumps({"https://example.test/v1": {
        "failures": 1, "opened_at": None, "probe": None}}))
    (home / "alerts.json").write_text(json.dumps({"sent": {"failures:x": "2026-01-01T00:00:00+00:00"},
                                                  "incidents": {}}))
    # A queue change applied, and one that waits (its `topics add` killed before it applied it).
    assert mythline("topics", "add", AGENT, "Rexxar").returncode == 0
    with (home / "agents" / AGENT / "inbox.jsonl").open("a") as fh:
        fh.write(json.dumps({"at": "2026-01-01T00:00:00+00:00", "op": "add", "topic": "Cairne"}) + "\n")
    waiting = json.loads(mythline("topics", "ls", AGENT, "--json").stdout)
    assert [w["topic"] for w in waiting["waiting"]] == ["Cairne"]
    before = _tree(home)
    assert {"agents/world-npcs/checkpoint.json", "agents/world-npcs/heartbeat.json", "agents/world-npcs/events.jsonl",
            "agents/world-zones/paused", "agents/world-items/start-failure.json", "start-failures.jsonl",
            "breaker.json", "alerts.json"} <= set(before)
    status = json.loads(mythline("status", "--json").stdout)

    shared = {"MYTHLINE_STATE": pg_dsn}
    imported = mythline("state", "import", env=shared)
    assert imported.returncode == 0, imported.stderr
    assert "; 6 document(s) and " in imported.stdout
    on_pg = json.loads(mythline("status", "--json", env={**shared, "MYTHLINE_HOME": str(tmp_path / "empty")}).stdout)
    assert on_pg["agents"] == status["agents"]
    assert json.loads(mythline("topics", "ls", AGENT, "--json", env={**shared, "MYTHLINE_HOME": str(tmp_path / "empty")}
                               ).stdout) == waiting
    logs = mythline("logs", AGENT, "--json", "-n", "100", env={**shared, "MYTHLINE_HOME": str(tmp_path / "empty")})
    assert [json.loads(line) for line in logs.stdout.splitlines()] == before["agents/world-npcs/events.jsonl"]

    back = tmp_path / "back"
    exported = mythline("state", "export", env={**shared, "MYTHLINE_HOME": str(back)})
    assert exported.returncode == 0, exported.stderr
    assert _tree(back) == before
    assert json.loads(mythline("topics", "ls", AGENT, "--json", env={"MYTHLINE_HOME": str(back)}).stdout) == waiting
    again = mythline("state", "export", env={**shared, "MYTHLINE_HOME": str(back)})
    assert again.returncode == 2
