"""Page extraction loads only the parts of trafilatura a page needs, and gives exactly what
trafilatura's own ``bare_extraction(with_metadata=True)`` gives: the same title, the same text."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from probe import EXTRACTION_DEFERRED, run_main

from helpers import grounded_responder
from source_server import SourceServer, article, chronicle

LONG = "Thrall led the Horde across the sea to Kalimdor and founded a new home for the orcs there. " * 8
# Pages that take each way to a title and each fallback of the extractor: meta tags, JSON-LD
# (and a broken block), the page title, a heading only, tables, a page too thin for the main
# extractor (the justext rescue), an empty one, a non-ASCII one.
PAGES = {
    "article": article("Thrall"),
    "chronicle": chronicle("Jaina_Proudmoore"),
    "article-odd-name": article("Vol'jin_(Darkspear)"),
    "opengraph": ('<html><head><meta property="og:title" content="Frostmourne &amp; Its Wielders">'
                  '<meta property="og:url" content="https://wiki.example/wiki/Frostmourne">'
                  f'<title>Frostmourne - Wiki</title></head><body><article><p>{LONG}</p></article></body></html>'),
    "twitter": ('<html><head><meta name="twitter:title" content="The Lich King">'
                '<meta name="twitter:url" content="https://wiki.example/t"><meta name="author" content="Single">'
                f'</head><body><article><p>{LONG}</p></article></body></html>'),
    "json-ld": ('<html><head><script type="application/ld+json">{"@type": "Article", "headline": "Arthas Menethil",'
                ' "author": {"@type": "Person", "name": "Jo Doe"}}</script><title>Arthas | Lore</title></head>'
                f'<body><main><h2>Arthas</h2><p>{LONG}</p></main></body></html>'),
    "json-ld-broken": ('<html><head><script type="application/ld+json">{"headline": "Half, </script>'
                       f'<title>Broken | Lore</title></head><body><main><p>{LONG}</p></main></body></html>'),
    "heading-only": f"<html><body><div><h1>Sylvanas Windrunner</h1><p>{LONG}</p></div></body></html>",
    "table": ("<html><head><title>Orc clans</title></head><body><article><table><tr><th>Clan</th><th>Chieftain</th>"
              "</tr><tr><td>Frostwolf</td><td>Durotan</td></tr><tr><td>Warsong</td><td>Grom</td></tr></table>"
              f"<p>{LONG}</p></article></body></html>"),
    "thin": ('<html><head><title>Stub | Wiki</title></head><body><div class="nav">Home Random</div>'
             "<span>A stub about a minor character.</span><footer>Footer</footer></body></html>"),
    "empty": "<html><body></body></html>",
    "non-ascii": ("<html><head><meta charset='utf-8'><title>Quel’Thalas — « Eversong »</title></head><body><article>"
                  f"<p>Les elfes de sang de Quel’Thalas… {LONG}</p></article></body></html>"),
}

REFERENCE = """
import json, sys, trafilatura
out = {}
for name, html in json.load(open(sys.argv[1])).items():
    doc = trafilatura.bare_extraction(html, with_metadata=True, include_comments=False, include_tables=True)
    out[name] = ["", ""] if doc is None else [(doc.title or "").strip(), (doc.text or "").strip()]
print(json.dumps(out))
"""

OURS = """
import json, sys
from mythline_cli.fetch import extract
print(json.dumps({name: list(extract(html)) for name, html in json.load(open(sys.argv[1])).items()}))
"""

LOADED = """
import json, sys
from mythline_cli.fetch import extract
plain = [extract(html) for html in json.load(open(sys.argv[1]))]
before = [m for m in sys.argv[2:] if m in sys.modules]
import trafilatura  # the whole package is still there for whoever wants it
print(json.dumps({"before": before, "titles": [t for t, _ in plain],
                  "whole": trafilatura.extract(json.load(open(sys.argv[1]))[0])[:40]}))
"""


def python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc


def test_title_and_text_are_what_trafilatura_itself_gives(tmp_path: Path):
    pages = tmp_path / "pages.json"
    pages.write_text(json.dumps(PAGES), encoding="utf-8")
    reference = json.loads(python(REFERENCE, str(pages)).stdout)
    ours = python(OURS, str(pages))  # a fresh interpreter: the deferred load, not a plain import
    assert json.loads(ours.stdout) == reference
    assert ours.stderr == ""  # trafilatura's log lines ("discarding data") stay off stderr, as before
    assert reference["article"][0] == "Thrall" and reference["opengraph"][0] == "Frostmourne & Its Wielders"
    assert reference["thin"][1] and reference["table"][1]


def test_a_wiki_page_loads_none_of_the_deferred_packages(tmp_path: Path):
    pages = tmp_path / "pages.json"
    pages.write_text(json.dumps([article("Thrall"), chronicle("Thrall")]), encoding="utf-8")
    report = json.loads(python(LOADED, str(pages), *EXTRACTION_DEFERRED, "dateutil").stdout)
    assert report["before"] == []
    assert report["titles"] == ["Thrall", "The Chronicle of Thrall"]
    assert report["whole"].startswith("Thrall\nThrall is a figure")


def test_a_page_that_needs_a_deferred_package_loads_it(tmp_path: Path):
    pages = tmp_path / "pages.json"
    pages.write_text(json.dumps([PAGES["thin"], PAGES["opengraph"]]), encoding="utf-8")
    report = json.loads(python(LOADED, str(pages), "justext", "courlan", "htmldate").stdout)
    assert report["before"] == ["justext", "courlan"]  # the rescue, a URL in a meta tag; never dates
    assert report["titles"] == ["Stub", "Frostmourne & Its Wielders"]


@pytest.fixture
def pages():
    with SourceServer() as server:
        yield server


def test_a_grounded_run_imports_none_of_them(home, config, pages, llm_server):
    config(sections={
        "defaults": {"sources": [pages.base_url + "/wiki/{title}", pages.base_url + "/chronicle/{title}"]},
        "sources": {"host_delay": "0s"},
        "sources.tiers": {"127.0.0.1": "primary"},
    })
    llm_server.responder = grounded_responder("world-npcs")
    report = run_main("run", "world-npcs")
    assert report.returncode == 0, report.stderr
    assert len(list((home / "store").rglob("*.json"))) == 1
    assert pages.hits("/wiki/Thrall") == 1  # the page was downloaded and extracted in this run
    assert report.loaded & set(EXTRACTION_DEFERRED) == set()
