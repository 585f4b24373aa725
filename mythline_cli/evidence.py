"""The evidence rule: a quote counts only when it is found in the fetched text of its source.

Deterministic, no LLM: both texts are normalised (case, whitespace, punctuation and the
typographic forms of quotes and dashes), then the quote must occur in the source, exactly or
as a fuzzy partial match (rapidfuzz) at or above the configured threshold (0-100).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass


def normalise(text: str) -> str:
    """Lower case, punctuation as spaces, runs of whitespace as one space."""
    text = unicodedata.normalize("NFKC", text).casefold()
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        out.append(" " if cat[0] in "PSZ" or ch.isspace() else ch)
    return " ".join("".join(out).split())


@dataclass(frozen=True)
class Match:
    """How well a quote matched its source (score 0-100) and whether that is enough."""

    found: bool
    score: float
    why: str | None = None


def check(quote: str, source_text: str, *, threshold: float, min_chars: int) -> Match:
    """Whether ``quote`` is in ``source_text`` (see the module docstring)."""
    q = normalise(quote)
    if len(q) < min_chars:
        return Match(False, 0.0, f"shorter than {min_chars} characters: quote a whole phrase")
    text = normalise(source_text)
    if q in text:
        return Match(True, 100.0)
    from rapidfuzz import fuzz

    score = float(fuzz.partial_ratio(q, text, score_cutoff=0) if len(q) <= len(text) else 0.0)
    if score >= threshold:
        return Match(True, round(score, 1))
    return Match(False, round(score, 1), f"not in that source (best match {score:.0f} < {threshold:g})")
