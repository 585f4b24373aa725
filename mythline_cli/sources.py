"""Gathering an agent's sources for one topic: URL templates and local files, numbered.

A source spec is a URL template (``https://warcraft.wiki.gg/wiki/{title}``: ``{title}`` is the
topic in a wiki's page-name form, ``{query}`` the topic URL-encoded) or a local path or glob
(``notes/*.md``, ``lore/{slug}.md``), relative to the config file's folder. Every source that
gives text becomes a numbered ``Source``; every one that does not is an ``Outcome`` with a
reason, for the event log.
"""

from __future__ import annotations

import glob
import urllib.parse
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import fetch, tiers
from .slug import slug

LOCAL_SUFFIXES = (".md", ".markdown", ".txt", ".text")
MAX_LOCAL_FILES = 50


def wiki_title(topic: str) -> str:
    """``topic`` as a MediaWiki page name in a URL: spaces as underscores, first letter upper."""
    name = "_".join(topic.strip().split())
    if name:
        name = name[0].upper() + name[1:]
    return urllib.parse.quote(name, safe="_()'!,:")


def expand(spec: str, topic: str) -> str:
    """A spec with ``{title}``, ``{query}`` and ``{slug}`` filled in for ``topic``."""
    return (spec.replace("{title}", wiki_title(topic)).replace("{query}", urllib.parse.quote_plus(topic))
            .replace("{slug}", slug(topic)))


def is_url(spec: str) -> bool:
    return spec.startswith(("http://", "https://"))


@dataclass
class Source:
    """One retrieved source, numbered as the prompt shows it."""

    n: int
    url: str
    final_url: str
    title: str
    tier: str
    fetched_at: str
    sha256: str
    chars: int
    text: str = field(default="", repr=False)
    # What the prompts show instead of the text when it was too long: its map-reduced summary
    # and the verbatim passages kept from it. Quotes are still checked against ``text``.
    digest: str | None = field(default=None, repr=False)

    def meta(self) -> dict[str, Any]:
        """Everything but the text (the checkpoint keeps the text by its hash)."""
        out = asdict(self)
        out.pop("text")
        out.pop("digest")
        return out


@dataclass
class Outcome:
    """What became of one spec: ok, or dropped with a reason."""

    spec: str
    url: str
    status: str
    reason: str | None = None
    cached: str | None = None


def _local(path: Path) -> tuple[str, str] | None:
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    return path.stem.replace("_", " ").replace("-", " "), raw.decode("utf-8", "replace")


def gather(specs: tuple[str, ...], topic: str, *, fetcher: fetch.Fetcher | None, base_dir: Path | None,
           domains: Mapping[str, str], max_bytes: int) -> tuple[list[Source], list[Outcome]]:
    """Every source ``specs`` give for ``topic``, numbered from 1, and the outcome of each spec."""
    found: list[Source] = []
    outcomes: list[Outcome] = []
    seen: set[str] = set()

    def add(url: str, final: str, title: str, text: str, fetched_at: str, spec: str, cached: str | None) -> None:
        digest = fetch.save_text(text)
        if digest in seen:  # the same text under two URLs (a redirect to the same page) counts once
            outcomes.append(Outcome(spec, url, "duplicate", "same text as another source"))
            return
        seen.add(digest)
        found.append(Source(len(found) + 1, url, final, title or url, tiers.tier_of(final, domains),
                            fetched_at, digest, len(text), text))
        outcomes.append(Outcome(spec, url, "ok", cached=cached))

    for spec in specs:
        target = expand(spec, topic)
        if is_url(target):
            if fetcher is None:
                outcomes.append(Outcome(spec, target, "skipped", "no fetcher"))
                continue
            page = fetcher.fetch(target)
            if page.ok:
                add(target, page.final_url or target, page.title, page.text, page.fetched_at or "", spec,
                    page.cached)
            else:
                outcomes.append(Outcome(spec, target, page.status, page.reason))
            continue
        pattern = Path(target).expanduser()
        if not pattern.is_absolute() and base_dir is not None:
            pattern = base_dir / pattern
        matches = sorted(glob.glob(str(pattern), recursive=True)) if glob.has_magic(str(pattern)) else [str(pattern)]
        matches = [m for m in matches if Path(m).suffix.lower() in LOCAL_SUFFIXES and Path(m).is_file()]
        if not matches:
            outcomes.append(Outcome(spec, str(pattern), "gone", "no such file"))
            continue
        for name in matches[:MAX_LOCAL_FILES]:
            path = Path(name).resolve()
            if path.stat().st_size > max_bytes:
                outcomes.append(Outcome(spec, path.as_uri(), "skipped", "larger than sources.max_bytes"))
                continue
            got = _local(path)
            if got is None or not got[1].strip():
                outcomes.append(Outcome(spec, path.as_uri(), "skipped", "unreadable or empty"))
                continue
            stamp = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).isoformat()
            add(path.as_uri(), path.as_uri(), got[0], got[1], stamp, spec, None)
    return found, outcomes


def chunks(text: str, size: int) -> list[str]:
    """``text`` in pieces of at most ``size`` characters, cut at a paragraph or line end when
    one is near (so a sentence is rarely split between two summaries)."""
    out = []
    rest = text
    while len(rest) > size:
        cut = max(rest.rfind("\n\n", size // 2, size), rest.rfind("\n", size // 2, size))
        cut = cut if cut > 0 else size
        out.append(rest[:cut])
        rest = rest[cut:].lstrip("\n")
    if rest.strip():
        out.append(rest)
    return out


def restore(metas: list[dict[str, Any]]) -> list[Source] | None:
    """Sources recorded in a checkpoint, with their texts; None when a text is missing."""
    out = []
    for meta in metas:
        text = fetch.load_text(str(meta.get("sha256")))
        if text is None:
            return None
        out.append(Source(**{**meta, "text": text}))
    return out
