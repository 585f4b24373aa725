"""Grounded research end to end: real pages from tests/source_server.py, the real CLI and the
real openai SDK against the scripted chat server, whose answers depend on the prompt."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mythline_cli.cli import app

from factories import record
from helpers import MODEL, is_audit, topic_of
from llm_server import Reply, completion
from source_server import SourceServer

AGENT = "world-npcs"
FIRST = "Thrall"
runner = CliRunner()
EXCERPT = re.compile(r"\[(\d+)\] (.*?) \((\w+) source\)\nURL: (\S+)\n<<<\n(.*?)\n>>>", re.S)


def run(*args: str):
    return runner.invoke(app, list(args))


@pytest.fixture
def pages():
    with SourceServer() as server:
        yield server


@pytest.fixture
def grounded(config, pages):
    """A config whose agents read two different pages per topic from the local server."""
    def make(**defaults: Any) -> None:
        config(sections={
            "defaults": {"sources": [pages.base_url + "/wiki/{title}", pages.base_url + "/chronicle/{title}"],
                         "max_attempts": 2, **defaults},
            "agents.world-npcs": {"topics": [FIRST, "Jaina Proudmoore"]},
            "sources": {"host_delay": "0s"},
            "sources.tiers": {"127.0.0.1": "primary"},
        })
    make()
    return make


def given(request: dict[str, Any]) -> list[dict[str, Any]]:
    """The numbered sources the prompt shows: number, title, tier, URL, text."""
    text = request["body"]["messages"][-1]["content"]
    return [{"n": int(n), "title": t, "tier": tier, "url": u, "text": body}
            for n, t, tier, u, body in EXCERPT.findall(text)]


def faithful(request: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A record that cites every given source and quotes each one word for word."""
    srcs = given(request)
    quotes = []
    for field, src in zip(("summary", "notable_deeds"), srcs * 2, strict=False):
        body = [line for line in src["text"].splitlines() if len(line) > 60][0]
        quotes.append({"field": field, "source": src["n"], "quote": body.split(". ")[0]})
    rec = record(AGENT, topic_of(request), confidence=0.95,
                 sources=[{"source": s["n"], "url": s["url"]} for s in srcs], quotes=quotes)
    rec.update(changes)
    return rec


def answer(rec: dict[str, Any]) -> Reply:
    return completion(json.dumps(rec), prompt_tokens=900, completion_tokens=300, model=MODEL)


def audit(score: float = 0.9) -> Reply:
    return completion(json.dumps({"score": score, "issues": []}), prompt_tokens=500, completion_tokens=20, model=MODEL)


def stored(home: Path, topic: str = FIRST) -> dict[str, Any]:
    from mythline_cli.slug import slug

    return json.loads((home / "store" / "npcs" / f"{slug(topic)}.json").read_text())


def checkpoint(home: Path) -> dict[str, Any]:
    return json.loads((home / "agents" / AGENT / "checkpoint.json").read_text())


def events(home: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (home / "agents" / AGENT / "events.jsonl").read_text().splitlines()]


def test_a_record_that_quotes_its_sources_faithfully_is_stored_with_its_provenance(home, grounded, pages, llm_server):
    audits: list[dict[str, Any]] = []

    def respond(request):
        if is_audit(request):
            audits.append(request)
            return audit()
        return answer(faithful(request))

    llm_server.responder = respond
    result = run("run", AGENT)
    assert result.exit_code == 0, result.stderr
    doc = stored(home)
    prov = doc["provenance"]
    assert prov["grounded"] is True and len(prov["sources"]) == 2
    wiki, chron = prov["sources"]
    assert wiki["url"] == pages.base_url + "/wiki/Thrall" and wiki["final_url"] == wiki["url"]
    assert wiki["title"] == "Thrall" and chron["title"] == "The Chronicle of Thrall"
    assert wiki["tier"] == "primary"  # from [sources.tiers], not from the model
    assert re.fullmatch(r"[0-9a-f]{64}", wiki["sha256"]) and wiki["fetched_at"].startswith("20")
    assert wiki["quotes"][0]["field"] == "summary" and "of great renown in the lore" in wiki["quotes"][0]["quote"]
    # The model said 0.95; a record is trusted no more than its best supporting tier (primary = 0.9).
    assert doc["record"]["confidence"] == 0.9 and prov["confidence_claimed"] == 0.95
    # The audit judged against the same excerpts.
    assert "born in the old country during the long winter" in audits[0]["body"]["messages"][-1]["content"]
    outcomes = [e for e in events(home) if e["event"] == "source"]
    assert [e["status"] for e in outcomes] == ["ok", "ok"]


def test_an_invented_quote_is_rejected_by_name_and_fixed_on_the_retry(home, grounded, llm_server):
    prompts: list[str] = []
    invented = "Thrall was born on Draenor as the son of Durotan and Draka"

    def respond(request):
        if is_audit(request):
            return audit()
        prompts.append(request["body"]["messages"][-1]["content"])
        rec = faithful(request)
        if len(prompts) == 1:
            rec["quotes"][0]["quote"] = invented
        return answer(rec)

    llm_server.responder = respond
    assert run("run", AGENT).exit_code == 0
    issues = checkpoint(home)["topics"][FIRST]["feedback"][0]["issues"]
    assert invented in issues[0] and "is not in that source (best match" in issues[0]
    assert issues[1] == "quotes: no quote found in the sources backs `summary`; add one copied from a cited source"
    assert llm_server.count() == 1  # the rules rejected it: no audit paid for
    assert run("run", AGENT).exit_code == 0
    assert invented in prompts[1] and "is not in that source" in prompts[1]  # the retry says which quote
    assert stored(home)["provenance"]["attempt"] == 2


def test_a_url_the_model_was_not_given_is_a_rule_failure(home, grounded, llm_server):
    def respond(request):
        rec = faithful(request)
        rec["sources"].append({"source": 3, "url": "https://example.org/made-up"})
        return answer(rec)

    llm_server.responder = respond
    assert run("run", AGENT).exit_code == 0
    issues = checkpoint(home)["topics"][FIRST]["feedback"][0]["issues"]
    assert any("https://example.org/made-up was not retrieved in this run; cite only [1], [2]" in i for i in issues)
    assert not list((home / "store").rglob("*.json"))


def test_a_known_url_under_the_wrong_number_is_a_rule_failure(home, grounded, llm_server):
    def respond(request):
        rec = faithful(request)
        rec["sources"][0]["url"] = rec["sources"][1]["url"]
        return answer(rec)

    llm_server.responder = respond
    assert run("run", AGENT).exit_code == 0
    issues = checkpoint(home)["topics"][FIRST]["feedback"][0]["issues"]
    assert any("is not the URL of [1]" in i for i in issues)


def test_a_key_field_without_a_quote_is_rejected(home, grounded, llm_server):
    llm_server.responder = lambda request: answer(faithful(request, quotes=faithful(request)["quotes"][:1]))
    assert run("run", AGENT).exit_code == 0
    issues = checkpoint(home)["topics"][FIRST]["feedback"][0]["issues"]
    assert issues == ["quotes: no quote found in the sources backs `notable_deeds`; add one copied from a cited source"]


def test_min_tier_needs_one_good_enough_source(home, grounded, llm_server):
    grounded(min_tier="official")
    llm_server.responder = lambda request: answer(faithful(request))
    assert run("run", AGENT).exit_code == 0
    issues = checkpoint(home)["topics"][FIRST]["feedback"][0]["issues"]
    assert issues == ["sources: none of the cited sources is official or better"]


def test_too_few_sources_spends_nothing_and_quarantines_with_the_reason(home, config, pages, llm_server):
    config(sections={"defaults": {"sources": [pages.base_url + "/gone/{title}", pages.base_url + "/binary"],
                                  "max_attempts": 2},
                     "agents.world-npcs": {"topics": [FIRST]}, "sources": {"host_delay": "0s"}})
    assert run("run", AGENT).exit_code == 0
    assert run("run", AGENT).exit_code == 0
    assert llm_server.count() == 0
    state = checkpoint(home)["topics"][FIRST]
    assert state["status"] == "quarantined"
    issue = state["feedback"][-1]["issues"][0]
    assert issue.startswith("only 0 of the 2 sources needed could be retrieved for 'Thrall'")
    assert "/gone/Thrall: HTTP 404 (not found)" in issue and "/binary: not text (image/png)" in issue
    dropped = [e for e in events(home) if e["event"] == "source"]
    assert {e["reason"] for e in dropped} == {"HTTP 404 (not found)", "not text (image/png)"}
    assert json.loads((home / "ledger.json").read_text())["reservations"] == {}


def test_a_resting_host_fails_the_run_without_counting_an_attempt(home, config, pages, llm_server):
    config(sections={"defaults": {"sources": [pages.base_url + "/flaky/{title}", pages.base_url + "/busy/{title}"]},
                     "agents.world-npcs": {"topics": [FIRST]}, "sources": {"host_delay": "0s"}})
    result = run("run", AGENT)
    assert result.exit_code == 1
    assert "nothing was sent to the model; the next run tries again" in result.stderr
    assert llm_server.count() == 0
    ck = home / "agents" / AGENT / "checkpoint.json"
    assert not ck.exists() or checkpoint(home)["topics"].get(FIRST, {}).get("attempts", 0) == 0


def test_local_notes_are_sources_with_the_local_tier(home, config, tmp_path, llm_server):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "thrall-early-life.md").write_text(
        "# Early life\n\nThrall was raised in Durnholde Keep by Aedelas Blackmoore, who trained him as a gladiator.\n")
    (notes / "thrall-later.txt").write_text(
        "Later, Thrall freed the orcs from the internment camps and founded the new Horde in Kalimdor.\n")
    config(sections={"defaults": {"sources": ["notes/thrall-*"]}, "agents.world-npcs": {"topics": [FIRST]}})

    def respond(request):
        if is_audit(request):
            return audit()
        srcs = given(request)
        assert [s["tier"] for s in srcs] == ["primary", "primary"]
        rec = record(AGENT, FIRST, sources=[{"source": s["n"], "url": s["url"]} for s in srcs], quotes=[
            {"field": "summary", "source": 1, "quote": "Thrall was raised in Durnholde Keep by Aedelas Blackmoore"},
            {"field": "notable_deeds", "source": 2, "quote": "founded the new Horde in Kalimdor"}])
        return answer(rec)

    llm_server.responder = respond
    assert run("run", AGENT).exit_code == 0, checkpoint(home)
    prov = stored(home)["provenance"]
    assert [s["url"] for s in prov["sources"]] == [(notes / "thrall-early-life.md").as_uri(),
                                                   (notes / "thrall-later.txt").as_uri()]


def test_a_crash_after_gathering_resumes_with_the_same_sources(home, grounded, pages, llm_server):
    # A research answer the model cannot give (500s) leaves the sources recorded in the checkpoint.
    llm_server.responder = None
    assert run("run", AGENT).exit_code == 1
    steps = checkpoint(home)["current"]["steps"]
    assert set(steps) == {"sources"} and steps["sources"]["usd"] == 0.0
    hits = pages.hits("/wiki/Thrall")
    pages.pages["Thrall"] = "<html><body><article><p>" + "Changed text about somebody else entirely. " * 9 + "</p></article></body></html>"
    llm_server.responder = lambda request: audit() if is_audit(request) else answer(faithful(request))
    assert run("run", AGENT, "--force").exit_code == 0
    assert pages.hits("/wiki/Thrall") == hits  # not fetched again: the attempt keeps its sources
    assert "of great renown in the lore" in stored(home)["provenance"]["sources"][0]["quotes"][0]["quote"]


def test_the_audit_goes_to_audit_model_when_one_is_set(home, grounded, llm_server, config):
    grounded(audit_model="test/auditor")
    config_text = Path(__import__("os").environ["MYTHLINE_CONFIG"]).read_text()
    Path(__import__("os").environ["MYTHLINE_CONFIG"]).write_text(
        config_text + '[provider.prices."test/auditor"]\ninput_per_million = 3.0\noutput_per_million = 6.0\n')
    models = []

    def respond(request):
        models.append(request["body"]["model"])
        return audit() if is_audit(request) else answer(faithful(request))

    llm_server.responder = respond
    assert run("run", AGENT).exit_code == 0
    assert models == [MODEL, "test/auditor"]


def test_doctor_says_when_the_audit_uses_the_research_model(home, grounded):
    result = run("doctor", "--json")
    audit_check = [c for c in json.loads(result.stdout)["checks"] if c["name"] == "audit"][0]
    assert "audit with their research model, and a model prefers its own answers" in audit_check["message"]


def test_a_long_source_is_summarised_chunk_by_chunk_and_a_crash_repays_no_chunk(home, config, pages, llm_server):
    paragraphs = [f"Paragraph {i} of the long chronicle tells how Thrall crossed river number {i} in the year {100 + i}."
                  for i in range(400)]
    pages.pages["Thrall"] = ("<html><head><title>Thrall</title></head><body><article>"
                             + "".join(f"<p>{p}</p>" for p in paragraphs) + "</article></body></html>")
    config(sections={"defaults": {"sources": [pages.base_url + "/wiki/{title}", pages.base_url + "/chronicle/{title}"]},
                     "agents.world-npcs": {"topics": [FIRST]},
                     "sources": {"host_delay": "0s", "max_excerpt_chars": 2000, "chunk_chars": 10000},
                     "sources.tiers": {"127.0.0.1": "primary"}})
    summaries: list[str] = []
    fail_after = {"n": 2}

    def respond(request):
        fmt = request["body"]["response_format"]["json_schema"]["name"]
        if fmt == "summary":
            summaries.append(request["body"]["messages"][-1]["content"])
            if len(summaries) > fail_after["n"]:
                return Reply(status=400, json={"error": {"message": "stop here", "type": "invalid_request_error"}})
            text = request["body"]["messages"][-1]["content"].split("<<<\n", 1)[1]
            line = [ln for ln in text.splitlines() if ln.startswith("Paragraph")][0]
            return completion(json.dumps({"summary": "Thrall crosses many rivers.",
                                          "passages": [line, "A sentence the text never had at all, invented."]}),
                              model=MODEL)
        if is_audit(request):
            return audit()
        srcs = given(request)
        long_src = [s for s in srcs if "Summary of a long source" in s["text"]][0]
        passage = long_src["text"].split('"')[1]
        rec = record(AGENT, FIRST, sources=[{"source": s["n"], "url": s["url"]} for s in srcs], quotes=[
            {"field": "summary", "source": long_src["n"], "quote": passage},
            {"field": "notable_deeds", "source": long_src["n"], "quote": passage}])
        return answer(rec)

    llm_server.responder = respond
    assert run("run", AGENT).exit_code == 1  # the third chunk's call fails
    steps = checkpoint(home)["current"]["steps"]
    assert {"summary-1-1", "summary-1-2"} <= set(steps) and "summary-1-3" not in steps
    paid = len(summaries)
    fail_after["n"] = 10_000
    assert run("run", AGENT, "--force").exit_code == 0
    parts = int(re.search(r"part 1 of (\d+)", summaries[0]).group(1))
    again = [int(re.search(r"part (\d+) of", text).group(1)) for text in summaries[paid:]]
    assert again == list(range(3, parts + 1))  # the failed chunk again, the recorded ones never
    doc = stored(home)
    quote = doc["provenance"]["sources"][0]["quotes"][0]["quote"]
    assert quote.startswith("Paragraph 0 of the long chronicle")  # checked against the original text
    research_prompt = [r for r in llm_server.requests if r["body"]["response_format"]["json_schema"]["name"]
                       not in ("summary", "audit")][-1]["body"]["messages"][-1]["content"]
    assert "invented" not in research_prompt  # a passage not in the text is never offered


def search_reply(urls: list[str]) -> Reply:
    reply = completion("Pages found.", prompt_tokens=50, completion_tokens=10, model=MODEL)
    reply.json["choices"][0]["message"]["annotations"] = [
        {"type": "url_citation", "url_citation": {"url": u, "title": "found", "content": "...", "start_index": 0,
                                                  "end_index": 1}} for u in urls]
    return reply


def test_web_search_results_become_sources_and_the_search_is_reserved(home, config, pages, llm_server):
    config(sections={"defaults": {"sources": [], "web_search": True},
                     "agents.world-npcs": {"topics": [FIRST]},
                     "sources": {"host_delay": "0s"}, "sources.tiers": {"127.0.0.1": "primary"},
                     "sources.web_search": {"max_results": 2, "usd_per_result": 0.01}})
    found = [pages.base_url + "/wiki/Thrall", pages.base_url + "/chronicle/Thrall"]

    def respond(request):
        if request["body"].get("plugins"):
            return search_reply(found + ["https://example.org/third"])
        return audit() if is_audit(request) else answer(faithful(request))

    llm_server.responder = respond
    assert run("run", AGENT).exit_code == 0
    search = llm_server.requests[0]["body"]
    assert search["plugins"] == [{"id": "web", "max_results": 2}]
    request_event = [e for e in events(home) if e["event"] == "llm-request"][0]
    assert request_event["step"] == "search" and request_event["estimate"]["search_usd"] == 0.02
    assert request_event["estimate"]["usd"] > 0.02
    journal = [json.loads(line) for line in (home / "ledger-history.jsonl").read_text().splitlines()]
    reserved = [op for op in journal if op["event"] == "reserve" and op["step"] == "search"][0]
    settled = [op for op in journal if op["event"] == "settle" and op["reservation"] == reserved["reservation"]][0]
    assert reserved["usd"] > 0.02  # tokens and the two results, before the search was sent
    # No provider cost in the answer: 50 x $1/M + 10 x $2/M for the tokens, plus 2 x $0.01 for the results.
    assert settled["usd"] == pytest.approx(0.00007 + 0.02)
    prov = stored(home)["provenance"]
    assert [s["url"] for s in prov["sources"]] == found  # max_results: the third is not fetched


def test_a_search_that_would_pass_a_cap_is_refused_before_it_is_sent(home, config, pages, llm_server):
    config(sections={"defaults": {"sources": [], "web_search": True, "daily_usd": 0.05},
                     "agents.world-npcs": {"topics": [FIRST]},
                     "sources.web_search": {"max_results": 10, "usd_per_result": 0.01}})
    result = run("run", AGENT)
    assert result.exit_code == 3, result.stderr
    assert llm_server.count() == 0


def test_dry_run_shows_the_sources_the_run_will_fetch_and_fetches_nothing(home, grounded, pages):
    result = run("run", AGENT, "--dry-run", "--json")
    assert result.exit_code == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["step"] == "sources"
    assert plan["sources"] == [pages.base_url + "/wiki/Thrall", pages.base_url + "/chronicle/Thrall"]
    assert "the run retrieves these sources first" in plan["messages"][-1]["content"]
    assert plan["estimate"]["prompt_tokens"] > 0
    assert pages.requests == []
