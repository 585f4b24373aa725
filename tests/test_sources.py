"""Source specs, tiers from domains, the evidence rule, and the [sources] config."""

from __future__ import annotations

import pytest

from mythline_cli import evidence, sources, tiers
from mythline_cli.config import parse_config
from mythline_cli.errors import ConfigError
from mythline_cli.fleet.schemas import RECORD_MODELS
from mythline_cli.fleet.topics import KEY_FIELDS, SOURCES, TOPICS


@pytest.mark.parametrize("topic, title", [
    ("Jaina Proudmoore", "Jaina_Proudmoore"), ("Vol'jin", "Vol'jin"), ("  the  Lich King ", "The_Lich_King"),
    ("Atiesh, Greatstaff of the Guardian", "Atiesh,_Greatstaff_of_the_Guardian"), ("Un'Goro Crater", "Un'Goro_Crater"),
    ("Quel'Thalas & Silvermoon?", "Quel'Thalas_%26_Silvermoon%3F"),
])
def test_title_is_the_wiki_page_name(topic, title):
    assert sources.wiki_title(topic) == title


def test_query_is_url_encoded():
    assert sources.expand("https://w.example/index.php?search={query}", "Arthas took Frostmourne") == \
        "https://w.example/index.php?search=Arthas+took+Frostmourne"


@pytest.mark.parametrize("url, tier", [
    ("https://warcraft.wiki.gg/wiki/Thrall", "primary"), ("https://news.blizzard.com/en-us/x", "official"),
    ("https://www.wowhead.com/npc=4949", "secondary"), ("https://WARCRAFT.wiki.gg./wiki/X", "primary"),
    ("https://reddit.com/r/wow", "tertiary"), ("file:///home/me/notes/a.md", "primary"),
    ("https://evilwarcraft.wiki.gg.example.org/", "tertiary"),
])
def test_tiers_come_from_the_domain_table(url, tier):
    assert tiers.tier_of(url, tiers.DEFAULT_DOMAINS) == tier


TEXT = ("Thrall, son of Durotan, was raised in Durnholde Keep. He later became Warchief of the Horde — "
        "and led his people to Kalimdor.")


@pytest.mark.parametrize("quote", [
    "Thrall, son of Durotan, was raised in Durnholde Keep.",
    "“thrall son of durotan was raised in  Durnholde keep”",
    "He later became Warchief of the Horde, and led his people to Kalimdor",
    "He later became Warchief of the Hord and led his people to Kalimdor",  # a typo
])
def test_a_quote_in_the_text_is_found_whatever_its_case_spacing_or_punctuation(quote):
    assert evidence.check(quote, TEXT, threshold=95, min_chars=20).found


@pytest.mark.parametrize("quote", [
    "Thrall, son of Durotan, was raised in Stormwind Keep.",
    "He later became King of Stormwind and led his people to Kalimdor",
    "Garrosh Hellscream was raised in Nagrand by the Mag'har.",
])
def test_a_changed_or_invented_quote_is_not_found(quote):
    match = evidence.check(quote, TEXT, threshold=95, min_chars=20)
    assert not match.found and match.why.startswith("not in that source (best match")


def test_a_quote_too_short_to_prove_anything_is_refused():
    assert evidence.check("Thrall", TEXT, threshold=95, min_chars=20).why == \
        "shorter than 20 characters: quote a whole phrase"


def test_the_built_in_fleet_is_grounded_and_its_key_fields_exist():
    settings = parse_config({})
    for agent in settings.agents():
        assert agent.grounded and agent.sources == SOURCES[agent.kind]
        for field in agent.key_fields:
            assert field in RECORD_MODELS[agent.kind].model_fields
    assert set(KEY_FIELDS) == set(TOPICS)


def test_sources_config_is_checked():
    with pytest.raises(ConfigError) as bad:
        parse_config({"sources": {"tiers": {"example.org": "gold"}}})
    assert "sources.tiers.example.org" in str(bad.value)
    with pytest.raises(ConfigError) as rising:
        parse_config({"sources": {"weights": {"tertiary": 0.95}}})
    assert "weights must not rise from official to tertiary" in str(rising.value)
    with pytest.raises(ConfigError) as field:
        parse_config({"agents": {"world-npcs": {"key_fields": ["not_a_field"]}}})
    assert "'not_a_field' is not a field of the record" in str(field.value)
    ok = parse_config({"sources": {"tiers": {"wowhead.com": "primary"}}, "defaults": {"sources": []}})
    assert ok.config.sources.tiers["warcraft.wiki.gg"] == "primary"  # added to, not replaced
    assert ok.config.sources.tiers["wowhead.com"] == "primary"
    assert not ok.agent("world-npcs").grounded


def test_local_globs_are_relative_to_the_config_and_sorted(tmp_path, home):
    (tmp_path / "notes").mkdir()
    for name in ("b.md", "a.txt", "c.png", "empty.md"):
        (tmp_path / "notes" / name).write_text("" if name == "empty.md" else f"Notes {name} about the topic.\n")
    found, outcomes = sources.gather(("notes/*",), "Thrall", fetcher=None, base_dir=tmp_path,
                                     domains=tiers.DEFAULT_DOMAINS, max_bytes=10_000)
    assert [s.title for s in found] == ["a", "b"] and [s.n for s in found] == [1, 2]
    assert [o.reason for o in outcomes if o.status != "ok"] == ["unreadable or empty"]
    missing, why = sources.gather(("nope/{slug}.md",), "Thrall", fetcher=None, base_dir=tmp_path,
                                  domains=tiers.DEFAULT_DOMAINS, max_bytes=10_000)
    assert missing == [] and why[0].reason == "no such file"


def test_a_source_url_with_a_password_is_refused():
    with pytest.raises(ConfigError) as bad:
        parse_config({"defaults": {"sources": ["https://me:hunter2@wiki.example/wiki/{title}"]}})
    assert "a source URL carries a user name or password" in str(bad.value) and "hunter2" not in str(bad.value)
