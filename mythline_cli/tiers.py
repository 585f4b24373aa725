"""Source tiers: derived from the domain through the config's table, never from the model."""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from typing import Literal

Tier = Literal["official", "primary", "secondary", "tertiary"]
TIERS: tuple[Tier, ...] = ("official", "primary", "secondary", "tertiary")
# How far a record backed only by sources of a tier may be trusted: its confidence is capped here.
DEFAULT_WEIGHTS: dict[Tier, float] = {"official": 1.0, "primary": 0.9, "secondary": 0.7, "tertiary": 0.4}
# Keys are domains (a key also covers its subdomains); "local" is the owner's own files.
DEFAULT_DOMAINS: dict[str, Tier] = {
    "blizzard.com": "official",
    "worldofwarcraft.blizzard.com": "official",
    "news.blizzard.com": "official",
    "warcraft.wiki.gg": "primary",
    "wowpedia.fandom.com": "primary",
    "wowwiki-archive.fandom.com": "secondary",
    "wowhead.com": "secondary",
    "local": "primary",
}
UNKNOWN = "tertiary"


def host_of(url: str) -> str:
    if url.startswith("file:"):
        return "local"
    return (urllib.parse.urlsplit(url).hostname or "").lower().rstrip(".")


def tier_of(url: str, domains: Mapping[str, str]) -> str:
    """The tier of ``url``: its host's entry, else its closest parent domain's, else tertiary."""
    host = host_of(url)
    table = {k.lower().rstrip("."): v for k, v in domains.items()}
    parts = host.split(".")
    for i in range(len(parts)):
        tier = table.get(".".join(parts[i:]))
        if tier is not None:
            return tier
    return UNKNOWN


def rank(tier: str) -> int:
    """0 for official, larger for weaker tiers (unknown names are the weakest)."""
    return TIERS.index(tier) if tier in TIERS else len(TIERS)


def at_least(tier: str, floor: str) -> bool:
    return rank(tier) <= rank(floor)
