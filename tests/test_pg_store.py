"""The store of records on PostgreSQL: one store for every host, written once however many
processes store the same record, and read by ``store ls|search|show|export`` exactly as the
file backend reads its files."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from probe import run_main
from test_store import put

from mythline_cli import paths
from mythline_cli.slug import slug

from factories import record
from helpers import TEST_KEY, lore_responder, mythline

AGENT = "world-npcs"

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX processes")


def rows(dsn: str) -> list[tuple[str, str, Any]]:
    import psycopg

    with psycopg.connect(dsn) as conn:
        if conn.execute("SELECT to_regclass('mythline_records')").fetchone()[0] is None:
            return []  # never connected to by mythline
        return [tuple(r) for r in conn.execute("SELECT key, content_hash, doc FROM mythline_records ORDER BY key")]


def host(tmp_path: Path, name: str, dsn: str, config: Path) -> tuple[Path, dict[str, str]]:
    """A "host": its own working dir, state home and copy of the config; only the DSN in common."""
    root = tmp_path / name
    (root / "work").mkdir(parents=True, exist_ok=True)
    shutil.copy(config, root / "mythline.toml")
    return root / "work", {"MYTHLINE_STATE": dsn, "MYTHLINE_HOST": name, "MYTHLINE_HOME": str(root / "home"),
                           "MYTHLINE_CONFIG": str(root / "mythline.toml")}


def test_two_hosts_researching_the_same_topic_share_one_record(tmp_path, config, llm_server, pg_dsn):
    path = config(sections={"agents.world-npcs": {"topics": ["Thrall"]}})
    llm_server.responder = lore_responder(AGENT)
    hosts = [host(tmp_path, name, pg_dsn, path) for name in ("host-a", "host-b")]
    for cwd, env in hosts:
        result = mythline("run", AGENT, env=env, cwd=cwd)
        assert result.returncode == 0, result.stderr
    (key, digest, doc), = rows(pg_dsn)
    assert key == f"npcs/{slug('Thrall')}.json" and doc["content_hash"] == digest and doc["topic"] == "Thrall"
    assert doc["history"] == []  # the same content again changed nothing
    for cwd, env in hosts:
        listed = json.loads(mythline("store", "ls", "--json", env=env, cwd=cwd).stdout)
        assert [(r["name"], r["agent"], r["content_hash"]) for r in listed["records"]] == [("Thrall", AGENT, digest)]
        shown = json.loads(mythline("store", "show", "Thrall", "--json", env=env, cwd=cwd).stdout)
        assert shown["content_hash"] == digest and shown["key"] == key
        assert not list(Path(env["MYTHLINE_HOME"]).glob("store/*/*.json"))  # nothing kept per host


STORE = textwrap.dedent("""
    import json, os, sys, time
    from mythline_cli.store import store_record
    record, go = json.loads(sys.argv[1]), sys.argv[2]
    from mythline_cli.state import dsn_of, session
    session(dsn_of(None))  # connected before the start: the race is over the row only
    while not os.path.exists(go):
        time.sleep(0.002)
    print(json.dumps(store_record(domain="npcs", topic="Thrall", record=record, provenance={"agent": "world-npcs"})))
""")


@pytest.mark.parametrize("versions", ["same", "different"])
def test_processes_storing_one_record_at_once_leave_one_row(tmp_path, pg_dsn, versions):
    from mythline_cli.store import content_hash

    n = 8
    records = [record(AGENT, "Thrall", summary="Warchief." if versions == "same" else f"Version {i}.")
               for i in range(n)]
    go = tmp_path / "go"
    env = {**os.environ, "MYTHLINE_STATE": pg_dsn, "MYTHLINE_HOME": str(tmp_path / "home")}
    procs = [subprocess.Popen([sys.executable, "-c", STORE, json.dumps(r), str(go)], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for r in records]
    time.sleep(2)
    go.touch()
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    (key, digest, doc), = rows(pg_dsn)
    actions = sorted(r["action"] for r in results)
    if versions == "same":
        assert actions == ["created"] + ["unchanged"] * (n - 1)
        assert {r["hash"] for r in results} == {digest} == {content_hash(records[0])}
        assert doc["history"] == []
    else:
        assert actions == ["created"] + ["replaced"] * (n - 1)
        # Every version is there once: the current one, the others in the order they were stored.
        chain = [h["content_hash"] for h in doc["history"]] + [digest]
        assert sorted(chain) == sorted(content_hash(r) for r in records)
        assert digest == content_hash(doc["record"])
    assert not (tmp_path / "home" / "store").exists()


# -- the same answers as the file backend ------------------------------------------------------

def fill_file_store() -> None:
    """The records of test_store's tests, in one store: names, aliases, content, a shared name,
    versions, sources and evidence; stored days apart, so that "age" reads the same a second later."""
    now = datetime.now(timezone.utc)
    sources = [{"url": "https://warcraft.wiki.gg/wiki/Thrall", "final_url": "https://warcraft.wiki.gg/wiki/Thrall_(lore)",
                "title": "Thrall - Warcraft Wiki", "tier": "secondary", "fetched_at": "2026-12-01T10:00:00+00:00",
                "sha256": "ab" * 32, "quotes": ["Thrall is the son of Durotan and Draka."]}]
    evidence = [{"field": "summary", "quote": "Thrall is the son of Durotan and Draka.", "source": 1}]
    put(AGENT, "Thrall", aliases=["Go'el"], summary="Warchief of the Horde, son of Durotan.", sources=sources,
        evidence=evidence)
    put(AGENT, "Thrall", aliases=["Go'el"], summary="Warchief of the Horde, son of Durotan.", sources=sources,
        evidence=evidence, role="Former Warchief", stored_at=(now - timedelta(days=10)).isoformat(), confidence=0.95)
    put(AGENT, "Durotan", summary="Chieftain of the Frostwolf clan; his son is Thrall.",
        stored_at=(now - timedelta(days=4)).isoformat(), confidence=0.6)
    put("world-zones", "Durotar", summary="Named by Thrall after his father.",
        stored_at=(now - timedelta(days=1)).isoformat(), confidence=0.8)
    put(AGENT, "Jaina Proudmoore", aliases=["Lady Proudmoore"], stored_at=(now - timedelta(days=2)).isoformat(),
        evidence=["Jaina founded Theramore."])
    put("world-factions", "Thrall", summary="A faction named for its leader.",
        stored_at=(now - timedelta(days=20)).isoformat())


COMMANDS = [
    ["store", "ls"], ["store", "ls", "--json"], ["store", "ls", "--agent", AGENT], ["store", "ls", "--domain", "zones"],
    ["store", "ls", "--since", "3d", "--json"], ["store", "ls", "--min-confidence", "0.8"], ["store", "ls", "--limit", "2"],
    ["store", "ls", "--all"], ["store", "ls", "--agent", "world-npc"], ["store", "ls", "--domain", "npc"],
    ["store", "search", "thrall", "--json"], ["store", "search", "goel"], ["store", "search", "Go'el", "--json"],
    ["store", "search", "frostwolf"], ["store", "search", "durot", "--json"], ["store", "search", "father thrall"],
    ["store", "search", "lady proud", "--json"], ["store", "search", "nothing-like-it"],
    ["store", "search", "thrall", "--limit", "1"], ["store", "search", "!!"],
    ["store", "show", "Thrall"], ["store", "show", "Thrall", "--domain", "npcs"],
    ["store", "show", "Thrall", "--domain", "npcs", "--json"], ["store", "show", "goel"],
    ["store", "show", "lady proudmoore", "--json"], ["store", "show", "Thral"], ["store", "show", "Nobody"],
    ["store", "export"],
]


def same(text: str, where: list[str]) -> str:
    """Output with the record's location (a file under the store, or the database's key) as one word."""
    for prefix in where:
        text = text.replace(prefix, "STORE/")
    return text


@pytest.fixture
def both(home, tmp_path, config, pg_dsn):
    """One store of records, on both backends: the file home's, imported into PostgreSQL."""
    fill_file_store()
    imported = mythline("state", "import", env={"MYTHLINE_STATE": pg_dsn})
    assert imported.returncode == 0, imported.stderr
    assert "5 stored record(s)" in imported.stdout
    from mythline_cli.state import describe

    return pg_dsn, [str(paths.store_dir()) + "/", describe(pg_dsn) + "#"]


@pytest.mark.parametrize("args", [COMMANDS], ids=["table"])
def test_store_commands_answer_the_same_on_both_backends(both, args):
    dsn, where = both
    for command in args:
        on_files = mythline(*command)
        on_pg = mythline(*command, env={"MYTHLINE_STATE": dsn})
        assert (on_pg.returncode, same(on_pg.stdout, where), same(on_pg.stderr, where)) == \
            (on_files.returncode, same(on_files.stdout, where), same(on_files.stderr, where)), command
        assert on_files.returncode in (0, 2) and "Traceback" not in on_pg.stderr, command


def test_markdown_exports_are_the_same_on_both_backends(both, tmp_path):
    dsn, _ = both
    pages = {}
    for name, env in (("files", {}), ("pg", {"MYTHLINE_STATE": dsn})):
        out = tmp_path / name
        result = mythline("store", "export", "--format", "markdown", "--out", str(out), env=env)
        assert result.returncode == 0 and "Wrote 5 records" in result.stdout, result.stderr
        pages[name] = {p.relative_to(out).as_posix(): p.read_text() for p in out.rglob("*.md")}
    assert pages["pg"] == pages["files"] and len(pages["files"]) == 6


def test_state_export_brings_every_record_back_as_it_was(both, tmp_path):
    dsn, _ = both
    before = {p.relative_to(paths.store_dir()).as_posix(): p.read_text()
              for p in paths.store_dir().glob("*/*.json")}
    assert mythline("state", "import", env={"MYTHLINE_STATE": dsn}).returncode == 6  # never twice
    back = tmp_path / "back"
    exported = mythline("state", "export", env={"MYTHLINE_STATE": dsn, "MYTHLINE_HOME": str(back)})
    assert exported.returncode == 0, exported.stderr
    assert "and 5 stored record(s)" in exported.stdout
    after = {p.relative_to(back / "store").as_posix(): p.read_text() for p in (back / "store").glob("*/*.json")}
    assert after.keys() == before.keys()
    for key, text in after.items():  # the same documents, keys in the same order
        assert json.dumps(json.loads(text)) == json.dumps(json.loads(before[key])), key
    listed = mythline("store", "ls", "--json", env={"MYTHLINE_HOME": str(back)})
    assert json.loads(listed.stdout)["total"] == 5
    again = mythline("state", "export", env={"MYTHLINE_STATE": dsn, "MYTHLINE_HOME": str(back)})
    assert again.returncode == 2 and "exists; export into a state home without a ledger" in again.stderr


def test_an_unreadable_record_file_stops_an_import_before_anything_moves(home, config, pg_dsn):
    put(AGENT, "Thrall")
    broken = paths.store_dir() / "npcs" / "broken.json"
    broken.write_text("{not json")
    result = mythline("state", "import", env={"MYTHLINE_STATE": pg_dsn})
    assert result.returncode == 2
    assert result.stderr.startswith(f"mythline: {broken}: not valid JSON"), result.stderr
    assert result.stderr.endswith("; fix or remove it, then import again\n") and len(result.stderr.splitlines()) == 1
    assert rows(pg_dsn) == []


# -- a run and the read commands on PostgreSQL ---------------------------------------------------

def test_a_corrupt_checkpoint_is_rebuilt_from_the_shared_store(home, config, llm_server, pg_dsn, monkeypatch):
    monkeypatch.setenv("MYTHLINE_STATE", pg_dsn)
    llm_server.responder = lore_responder(AGENT)
    assert mythline("run", AGENT).returncode == 0
    import psycopg

    def checkpoint_body(conn):
        return conn.execute("SELECT body FROM mythline_docs WHERE kind = 'checkpoint' AND agent = %s",
                            (AGENT,)).fetchone()[0]

    with psycopg.connect(pg_dsn, autocommit=True) as conn:  # the checkpoint is shared too: tear its row
        assert json.loads(checkpoint_body(conn))["topics"]["Thrall"]["status"] == "done"
        conn.execute("UPDATE mythline_docs SET body = %s WHERE kind = 'checkpoint' AND agent = %s",
                     ('{"topics": {"Thr', AGENT))
    result = mythline("run", AGENT)
    assert result.returncode == 0, result.stderr
    assert "(1 topics done, 0 quarantined)" in result.stderr
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        done = json.loads(checkpoint_body(conn))["topics"]["Thrall"]
    assert done["status"] == "done" and done["stored"]["hash"] == {k: h for k, h, _ in rows(pg_dsn)}[
        f"npcs/{slug('Thrall')}.json"]
    assert done["stored"]["path"].endswith(f"#npcs/{slug('Thrall')}.json")


@pytest.mark.parametrize("args", [["store", "ls"], ["store", "ls", "--json"], ["store", "search", "thrall"]],
                         ids=" ".join)
def test_ls_and_search_on_postgresql_start_without_the_llm_stack(home, pg_dsn, monkeypatch, args):
    monkeypatch.setenv("MYTHLINE_STATE", pg_dsn)
    put(AGENT, "Thrall")
    assert not paths.store_dir().exists()  # stored in PostgreSQL only
    report = run_main(*args)
    assert report.returncode == 0, report.stderr
    assert "Thrall" in report.stdout
    assert report.loaded == set(), report.loaded


def test_the_state_in_the_config_file_moves_the_store_too(home, config, pg_dsn):
    from urllib.parse import urlsplit

    path = config()
    parts = urlsplit(pg_dsn)  # no password in a config file: the cluster trusts loopback
    path.write_text(f'state = "postgresql://{parts.username}@{parts.hostname}:{parts.port}{parts.path}"\n'
                    + path.read_text())
    from mythline_cli.store import content_hash, store_record

    store_record(domain="npcs", topic="Thrall", record=record(AGENT, "Thrall"), provenance={"agent": AGENT},
                 settings=_settings(path))
    assert not paths.store_dir().exists()
    for args in (["store", "ls", "--json"], ["store", "search", "thrall", "--json"]):
        result = run_main(*args)
        assert result.returncode == 0, result.stderr
        assert [r["content_hash"] for r in json.loads(result.stdout)["records"]] == \
            [content_hash(record(AGENT, "Thrall"))]


def _settings(path: Path) -> Any:
    from mythline_cli.config import load_settings

    return load_settings(path)


@pytest.mark.parametrize("args", [["store", "ls"], ["store", "search", "thrall"], ["store", "show", "Thrall"],
                                  ["store", "export"], ["store", "reindex"]], ids=" ".join)
def test_an_unreachable_database_is_one_line_and_exit_6(home, args):
    dsn = f"postgresql://mythline:{TEST_KEY}@127.0.0.1:1/mythline"  # nothing listens there
    result = mythline(*args, env={"MYTHLINE_STATE": dsn})
    assert result.returncode == 6, result.stderr
    line, = result.stderr.splitlines()
    assert re.match(r"mythline: the shared state at postgresql://mythline@127\.0\.0\.1:1/mythline is unreachable "
                    r"or refused the connection \(.+\); nothing was called\.", line), line
    assert not paths.store_dir().exists()  # no quiet fallback to the state home's files


def test_lore_crosscheck_finds_a_contradiction_in_the_shared_store(home, config, llm_server, pg_dsn, monkeypatch):
    from mythline_cli.store import store_record

    monkeypatch.setenv("MYTHLINE_STATE", pg_dsn)
    config(sections={"agents.lore-crosscheck": {"topics": ["Thrall was born on Draenor"]}})
    first = record(AGENT, "Cairne Bloodhoof", status="dead")
    store_record(domain="npcs", topic="Cairne Bloodhoof", record=first, provenance={"agent": AGENT})
    other = {**first, "name": "Cairne", "aliases": ["Cairne Bloodhoof"], "status": "alive"}
    store_record(domain="npcs", topic="Cairne", record=other, provenance={"agent": "my-npcs"})
    llm_server.responder = lore_responder("lore-crosscheck")
    for _ in range(2):  # found again on the next run: stored once
        result = mythline("run", "lore-crosscheck")
        assert result.returncode == 0, result.stderr
    found = [doc for key, _, doc in rows(pg_dsn) if key.startswith("crosschecks/contradiction-")]
    (doc,) = found
    assert doc["kind"] == "contradiction" and doc["record"]["field"] == "status"
    assert sorted(c["path"] for c in doc["record"]["claims"]) == sorted(
        [f"npcs/{slug('Cairne Bloodhoof')}.json", f"npcs/{slug('Cairne')}.json"])
    shown = mythline("store", "show", "Cairne")
    assert shown.returncode == 0 and "Contradictions" in shown.stdout and "'dead'" in shown.stdout
    assert not paths.store_dir().exists()


@pytest.mark.parametrize("text,code,line", [
    ("state = \n", 2, "not valid TOML (Invalid value (at line 1, column 9))"),
    ("state = 5\n", 2, "state: must be a string: postgresql://USER@HOST:5432/DATABASE, or unset for the state home's files"),
])
def test_a_config_that_cannot_say_where_the_store_is_is_one_line(home, tmp_path, monkeypatch, text, code, line):
    path = tmp_path / "mythline.toml"
    path.write_text(text)
    monkeypatch.setenv("MYTHLINE_CONFIG", str(path))
    for args in (["store", "ls"], ["store", "show", "Thrall"]):
        result = mythline(*args)
        assert (result.returncode, result.stderr) == (code, f"mythline: {path}: {line}\n"), args


def test_a_state_that_is_no_postgresql_url_stops_the_store_commands(home, tmp_path, monkeypatch):
    path = tmp_path / "mythline.toml"
    path.write_text('state = "mysql://lore@db/lore"\n')
    monkeypatch.setenv("MYTHLINE_CONFIG", str(path))
    result = mythline("store", "search", "thrall")
    assert result.returncode == 6
    assert result.stderr == ("mythline: state in mythline.toml is not a PostgreSQL URL (mysql://lore@db/lore); write "
                             "postgresql://USER@HOST:5432/DATABASE, or leave it unset for the state home's files\n")
