"""``mythline store``: records listed, shown, searched and exported through the SQLite index beside them."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from probe import run_app, run_main
from typer.testing import CliRunner

from mythline_cli import paths
from mythline_cli.cli import app
from mythline_cli.store import store_record
from mythline_cli.storeindex import VERSION, index_path

from factories import record
from helpers import grounded_responder, lore_responder, mythline, wait_for
from source_server import SourceServer

AGENT = "world-npcs"


def cli(*args: str):
    return CliRunner().invoke(app, list(args))


def put(agent: str, topic: str, *, stored_at: str | None = None, sources: list | None = None,
        evidence: list | None = None, **changes) -> Path:
    """A record stored as the cycle stores it (store_record), optionally back-dated."""
    from mythline_cli.fleet.topics import DOMAINS

    rec = record(agent, topic, **changes)
    prov = {"agent": agent, "model": "test/model", "run_id": "r1"}
    if sources is None:  # as a grounded run keeps them
        sources = [{"n": n, "url": f"https://{host}/wiki/{topic.replace(' ', '_')}", "title": topic, "tier": "primary",
                    "sha256": "0" * 64, "quotes": []}
                   for n, host in ((1, "warcraft.wiki.gg"), (2, "wowpedia.fandom.com"))]
    prov["sources"] = sources
    if evidence is not None:
        prov["evidence"] = evidence
    result = store_record(domain=DOMAINS[agent], topic=topic, record=rec, provenance=prov)
    path = Path(result["path"])
    if stored_at is not None:
        doc = json.loads(path.read_text())
        doc["provenance"]["stored_at"] = stored_at
        path.write_text(json.dumps(doc))
    return path


def test_a_real_run_is_listed_shown_and_found(home, config, llm_server):
    # A grounded run, as a new user's first one: two pages per topic from a local wiki.
    with SourceServer() as pages:
        config(sections={"defaults": {"sources": [pages.base_url + "/wiki/{title}",
                                                  pages.base_url + "/chronicle/{title}"]},
                         "sources": {"host_delay": "0s"}, "sources.tiers": {"127.0.0.1": "primary"}})
        llm_server.responder = grounded_responder(AGENT)
        assert cli("run", AGENT).exit_code == 0
    result = mythline("store", "ls")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "Stored records (1)"
    header = lines[2].split()
    assert header[:3] == ["name", "agent", "conf"] and "tier" in lines[2] and "age" in lines[2]
    assert lines[4].split()[:5] == ["Thrall", AGENT, "0.90", "primary", "2"]
    listed = json.loads(mythline("store", "ls", "--json").stdout)
    (row,) = listed["records"]
    assert row["name"] == "Thrall" and row["agent"] == AGENT and row["tiers"] == {"primary": 2}
    assert Path(row["path"]).is_file()
    shown = mythline("store", "show", "thrall")  # case does not matter
    assert shown.returncode == 0, shown.stderr
    assert "Thrall" in shown.stdout and "Citations" in shown.stdout
    assert re.search(r"\[1\] primary: .*http://127\.0\.0\.1:\d+/wiki/Thrall", shown.stdout), shown.stdout
    assert "\u201c" in shown.stdout  # the evidence quotes checked against the page
    assert "History (1 version)" in shown.stdout
    found = mythline("store", "search", "thrall")
    assert found.returncode == 0 and "Records matching 'thrall' (1)" in found.stdout


def test_filters_by_agent_domain_date_and_confidence(home):
    now = datetime.now(timezone.utc)
    put("world-npcs", "Thrall", stored_at=(now - timedelta(days=10)).isoformat(), confidence=0.95)
    put("world-npcs", "Jaina Proudmoore", stored_at=(now - timedelta(hours=2)).isoformat(), confidence=0.6)
    put("world-zones", "Durotar", stored_at=(now - timedelta(days=1)).isoformat(), confidence=0.8)

    def names(*args: str) -> list[str]:
        result = mythline("store", "ls", "--json", *args)
        assert result.returncode == 0, result.stderr
        return [r["name"] for r in json.loads(result.stdout)["records"]]

    assert names() == ["Jaina Proudmoore", "Durotar", "Thrall"]  # newest first
    assert names("--agent", "world-npcs") == ["Jaina Proudmoore", "Thrall"]
    assert names("--domain", "zones") == ["Durotar"]
    assert names("--since", "3d") == ["Jaina Proudmoore", "Durotar"]
    assert names("--since", (now - timedelta(hours=5)).isoformat()) == ["Jaina Proudmoore"]
    assert names("--min-confidence", "0.8") == ["Durotar", "Thrall"]
    limited = json.loads(mythline("store", "ls", "--json", "--limit", "1").stdout)
    assert limited["total"] == 3 and limited["shown"] == 1
    table = mythline("store", "ls", "--limit", "2")
    assert "2 of 3 shown; --limit N or --all for more." in table.stdout


@pytest.mark.parametrize("args,line", [
    (["store", "ls", "--agent", "world-npc"], "mythline: unknown agent 'world-npc'"),
    (["store", "ls", "--domain", "npc"], "mythline: unknown domain 'npc'; the store's domains are: archetypes,"),
    (["store", "ls", "--since", "yesterday"], "mythline: --since 'yesterday' is neither a date"),
    (["store", "show", "Nobody"], "mythline: no stored record is named 'Nobody'"),
    (["store", "search", "!!"], "mythline: nothing to search for in '!!'"),
    (["store", "export", "--format", "csv"], "mythline: --format 'csv' is not one of: jsonl, markdown"),
    (["store", "export", "--format", "markdown"], "mythline: a markdown export is one page per record"),
    (["store", "ls", "--min-confidence", "2"], "mythline: invalid value for '--min-confidence'"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_bad_input_is_one_line_and_exit_2(home, args, line):
    put("world-npcs", "Thrall")
    result = mythline(*args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(line), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_an_unknown_record_gets_suggestions_and_a_shared_name_asks_for_the_domain(home):
    put("world-npcs", "Thrall")
    put("world-factions", "Thrall")  # the same name in two domains
    result = mythline("store", "show", "Thrall")
    assert result.returncode == 2
    assert "2 records are named 'Thrall': Thrall (factions), Thrall (npcs); add --domain" in result.stderr
    assert mythline("store", "show", "Thrall", "--domain", "npcs").returncode == 0
    near = mythline("store", "show", "Thral")
    assert near.returncode == 2 and "did you mean 'Thrall'" in near.stderr


def test_search_finds_names_aliases_and_content_name_first(home):
    put("world-npcs", "Thrall", aliases=["Go'el"], summary="Warchief of the Horde, son of Durotan.")
    put("world-npcs", "Durotan", summary="Chieftain of the Frostwolf clan; his son is Thrall.")
    put("world-zones", "Durotar", summary="Named by Thrall after his father.")

    def hits(text: str) -> list[str]:
        return [r["name"] for r in json.loads(mythline("store", "search", text, "--json").stdout)["records"]]

    assert hits("thrall")[0] == "Thrall" and set(hits("thrall")) == {"Thrall", "Durotan", "Durotar"}
    assert hits("goel") == ["Thrall"] and hits("Go'el") == ["Thrall"]  # the alias, however written
    assert hits("frostwolf") == ["Durotan"]  # content
    assert hits("durot")[0] in ("Durotan", "Durotar")  # a word matches as a prefix
    assert hits("father thrall") == ["Durotar"]  # every word must appear
    assert hits("nothing-like-it") == []
    shown = mythline("store", "show", "goel")  # show finds a record by its alias too
    assert shown.returncode == 0 and "also known as: Go'el" in shown.stdout


def test_show_renders_provenance_evidence_and_history(home):
    sources = [{"url": "https://warcraft.wiki.gg/wiki/Thrall", "final_url": "https://warcraft.wiki.gg/wiki/Thrall_(lore)",
                "title": "Thrall - Warcraft Wiki", "tier": "secondary", "fetched_at": "2026-12-01T10:00:00+00:00",
                "sha256": "ab" * 32, "quotes": ["Thrall is the son of Durotan and Draka."]}]
    evidence = [{"field": "summary", "quote": "Thrall is the son of Durotan and Draka.", "source": 1}]
    put("world-npcs", "Thrall", sources=sources, evidence=evidence)
    put("world-npcs", "Thrall", sources=sources, evidence=evidence, role="Former Warchief")  # a new version
    result = mythline("store", "show", "Thrall")
    out = result.stdout
    assert "[1] secondary: Thrall - Warcraft Wiki https://warcraft.wiki.gg/wiki/Thrall" in out
    assert "final URL https://warcraft.wiki.gg/wiki/Thrall_(lore)" in out
    assert "fetched 2026-12-01T10:00:00+00:00 · sha256 abababababababab" in out
    assert "summary: \u201cThrall is the son of Durotan and Draka.\u201d [1]" in out
    assert "History (2 versions)" in out and out.count("  was  ") == 1
    data = json.loads(mythline("store", "show", "Thrall", "--json").stdout)
    assert data["sources"][0]["sha256"] == "ab" * 32 and data["evidence"][0]["source"] == 1
    assert data["record"]["role"] == "Former Warchief"
    assert data["history"][0]["record"]["role"] != "Former Warchief"  # the old version itself is kept
    assert json.loads(mythline("store", "ls", "--json").stdout)["records"][0]["tiers"] == {"secondary": 1}


def test_export_jsonl_and_markdown(home, tmp_path):
    put("world-npcs", "Thrall", evidence=["Thrall led the orcs out of the internment camps."])
    put("world-zones", "Durotar")
    lines = mythline("store", "export").stdout.splitlines()
    docs = [json.loads(line) for line in lines]
    assert sorted(d["topic"] for d in docs) == ["Durotar", "Thrall"] and all("record" in d for d in docs)
    out = tmp_path / "export"
    result = mythline("store", "export", "--format", "jsonl", "--out", str(out), "--json")
    assert json.loads(result.stdout) == {"records": 2, "written": str(out / "store.jsonl")}
    assert len((out / "store.jsonl").read_text().splitlines()) == 2
    md = tmp_path / "md"
    result = mythline("store", "export", "--format", "markdown", "--out", str(md))
    assert result.returncode == 0 and "Wrote 2 records" in result.stdout
    index = (md / "index.md").read_text()
    assert "## npcs" in index and "## zones" in index
    page_link = next(line for line in index.splitlines() if "[Thrall]" in line)
    page = md / page_link.split("(")[1].rstrip(")")
    text = page.read_text()
    assert text.startswith("# Thrall") and "## Citations" in text and "(primary)" in text
    assert "## Evidence" in text and "internment camps" in text and "## History" in text


# -- the index ------------------------------------------------------------------------------

def count() -> int:
    return json.loads(mythline("store", "ls", "--json").stdout)["total"]


def test_the_index_follows_files_added_replaced_and_removed_by_others(home):
    put("world-npcs", "Thrall")
    assert count() == 1 and index_path().is_file()
    path = put("world-npcs", "Jaina Proudmoore")  # as a run in another process writes it
    assert count() == 2
    path.unlink()
    assert count() == 1
    put("world-npcs", "Thrall", summary="A different summary about Frostwolves.")
    found = json.loads(mythline("store", "search", "frostwolves", "--json").stdout)
    assert found["total"] == 1


def test_the_index_trusts_an_old_folder_time_and_reindex_reads_everything(home):
    path = put("world-npcs", "Thrall")
    old = time.time() - 3600
    os.utime(path.parent, (old, old))  # a folder time well past the doubt window
    assert count() == 1
    doc = json.loads(path.read_text())
    doc["record"]["summary"] = "Edited in place by hand: Doomhammer."
    path.write_text(json.dumps(doc))  # no rename: the folder time does not change
    os.utime(path.parent, (old, old))
    assert json.loads(mythline("store", "search", "doomhammer", "--json").stdout)["total"] == 0
    result = mythline("store", "reindex")
    assert result.returncode == 0 and "Indexed 1 records" in result.stdout
    assert json.loads(mythline("store", "search", "doomhammer", "--json").stdout)["total"] == 1


@pytest.mark.parametrize("damage", ["garbage", "empty", "old-version", "directory"])
def test_a_broken_index_is_rebuilt_from_the_records(home, damage):
    put("world-npcs", "Thrall")
    put("world-zones", "Durotar")
    assert count() == 2
    target = index_path()
    if damage == "garbage":
        target.write_bytes(b"this is not a database at all" * 100)
    elif damage == "empty":
        target.write_bytes(b"")
    elif damage == "old-version":
        with sqlite3.connect(target) as conn:
            conn.execute(f"PRAGMA user_version={VERSION + 7}")
    else:
        target.unlink()
        target.mkdir()  # cannot be a database at all: the command still answers
    result = mythline("store", "ls", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["total"] == 2


def test_an_unreadable_record_is_named_not_fatal(home):
    put("world-npcs", "Thrall")
    (paths.store_dir() / "npcs" / "broken-12345678.json").write_text("{not json")
    result = mythline("store", "ls")
    assert result.returncode == 0
    assert "Stored records (1)" in result.stdout
    assert "unreadable: npcs/broken-12345678.json: not valid JSON" in result.stdout


BUILD = """
import sys
from mythline_cli.storeindex import StoreIndex
print("building", flush=True)
with StoreIndex.open() as index:
    print(index.count(), flush=True)
"""


def test_a_rebuild_killed_midway_leaves_an_index_that_is_complete_after(home):
    from mythline_cli.fleet.topics import DOMAINS

    doc = json.loads(put("world-npcs", "Thrall").read_text())
    for domain in DOMAINS.values():  # enough files that the rebuild takes a while
        folder = paths.store_dir() / domain
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(300):
            (folder / f"r-{i}.json").write_text(json.dumps({**doc, "topic": f"{domain} {i}"}))
    total = 1 + 300 * len(DOMAINS)
    for attempt in range(3):
        proc = subprocess.Popen([sys.executable, "-c", BUILD], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "building"
        wait_for(lambda: index_path().exists(), timeout=30)
        time.sleep(0.05 * attempt)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert count() == total
    assert json.loads(mythline("store", "search", "zones 299", "--json").stdout)["total"] >= 1


def test_a_run_stores_its_record_whatever_state_the_index_is_in(home, config, llm_server):
    paths.store_dir().mkdir(parents=True)
    index_path().write_bytes(b"\x00garbage" * 64)
    llm_server.responder = lore_responder("world-factions")
    result = mythline("run", "world-factions")
    assert result.returncode == 0, result.stderr
    assert count() == 1


def test_a_run_indexes_its_record_but_never_builds_the_index_of_a_big_store(home, monkeypatch):
    from mythline_cli import storeindex

    put("world-npcs", "Thrall")  # a small store: the first record builds the index
    with storeindex.StoreIndex.existing() as index:
        assert index.count() == 1
    put("world-npcs", "Jaina Proudmoore", aliases=["Lady Proudmoore"])
    with storeindex.StoreIndex.existing() as index:  # learnt at once, without a refresh
        assert index.count() == 2 and index.has_name("npcs", "lady proudmoore")
    index_path().unlink()
    monkeypatch.setattr(storeindex, "RUN_BUILD_LIMIT", 2)
    put("world-npcs", "Khadgar")  # three files now: too many for a run to read them all
    assert not index_path().exists()
    assert count() == 3  # the first store command builds it


# -- cheap to start ---------------------------------------------------------------------------

@pytest.mark.parametrize("args", [["store", "ls"], ["store", "search", "thrall"], ["store", "ls", "--json"]],
                         ids=" ".join)
def test_ls_and_search_start_without_typer_pydantic_or_the_llm_stack(home, args):
    put("world-npcs", "Thrall")
    report = run_main(*args)
    assert report.returncode == 0, report.stderr
    assert report.loaded == set(), report.loaded


@pytest.mark.parametrize("args", [
    ["store", "show", "Thrall"], ["store", "show", "Thrall", "--json"], ["store", "export"], ["store", "reindex"],
    ["store", "ls", "--agent", "world-npcs"], ["topics", "ls", "world-npcs"], ["topics", "ls", "world-npcs", "--json"],
    ["topics", "add", "world-npcs", "Rexxar"], ["topics", "rm", "world-npcs", "Khadgar"],
    ["store", "--help"], ["topics", "--help"],
], ids=" ".join)
def test_store_and_topics_do_not_import_the_llm_stack(home, args):
    put("world-npcs", "Thrall")
    report = run_app(args)
    assert report.returncode == 0, report.stderr
    assert report.llm_stack == set(), report.loaded
