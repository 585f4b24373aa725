"""Validation: rule checks, the LLM audit, and the verdict."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from . import evidence, negotiate, prompts
from .config import Agent
from .tiers import DEFAULT_WEIGHTS, at_least


class Audit(BaseModel):
    """What the auditing call must return."""

    model_config = ConfigDict(extra="forbid")
    score: float = Field(ge=0, le=1, description="Overall quality from 0 (wrong) to 1 (accurate, complete, sourced).")
    issues: list[str] = Field(description="Specific, actionable problems; empty when there are none.")


@dataclass
class Context:
    """What the rules check a record against: the sources retrieved this attempt (empty for
    an ungrounded agent) and the evidence settings."""

    sources: list[Any] = field(default_factory=list)
    threshold: float = 95.0
    min_quote_chars: int = 20
    weights: dict[str, float] = field(default_factory=lambda: {str(k): v for k, v in DEFAULT_WEIGHTS.items()})

    @property
    def grounded(self) -> bool:
        return bool(self.sources)

    def by_number(self) -> dict[int, Any]:
        return {s.n: s for s in self.sources}


class Rule:
    """A check on a record; returns the problems it finds."""

    def __call__(self, record: dict[str, Any], agent: Agent, ctx: Context) -> list[str]:
        raise NotImplementedError


class NonEmptyFields(Rule):
    """Every required text or list field holds something."""

    def __call__(self, record: dict[str, Any], agent: Agent, ctx: Context) -> list[str]:
        empty_ok = {"conflicts", "aliases", "sources", "quotes"}  # the source rules below speak for these
        out = []
        for key, value in record.items():
            if key in empty_ok:
                continue
            if isinstance(value, str) and not value.strip():
                out.append(f"{key}: must not be empty")
            elif isinstance(value, list) and not value:
                out.append(f"{key}: must list at least one entry")
        return out


def _cited(record: dict[str, Any], ctx: Context) -> dict[int, Any]:
    """The retrieved sources the record cites correctly (right number, its URL)."""
    known = ctx.by_number()
    out = {}
    for cite in record.get("sources") or []:
        src = known.get(n) if isinstance(cite, dict) and isinstance(n := cite.get("source"), int) else None
        if src is not None and cite.get("url") in (src.url, src.final_url):
            out[src.n] = src
    return out


class CitedSourcesRetrieved(Rule):
    """Every cited source is one retrieved in this attempt, by its number and URL."""

    def __call__(self, record: dict[str, Any], agent: Agent, ctx: Context) -> list[str]:
        cites = record.get("sources") or []
        if not ctx.grounded:
            return ["sources: no sources were retrieved for this agent, so none may be cited"] if cites else []
        known = ctx.by_number()
        listed = ", ".join(f"[{n}]" for n in known)
        out = []
        for i, cite in enumerate(cites):
            n, url = cite.get("source"), str(cite.get("url", ""))
            src = known.get(n)
            if src is None:
                out.append(f"sources.{i}: [{n}] {url} was not retrieved in this run; cite only {listed}")
            elif url not in (src.url, src.final_url):
                out.append(f"sources.{i}: {url} is not the URL of [{n}] ({src.url}); cite only the listed "
                           "sources, with their URLs exactly as listed")
        return out


class MinSources(Rule):
    """At least ``min_sources`` retrieved sources cited, one of them at or above ``min_tier``."""

    def __call__(self, record: dict[str, Any], agent: Agent, ctx: Context) -> list[str]:
        if not ctx.grounded:
            return []
        cited = _cited(record, ctx)
        need = min(agent.min_sources, len(ctx.sources))
        out = []
        if len(cited) < need:
            out.append(f"sources: {len(cited)} retrieved source(s) cited, at least {need} required")
        if cited and not any(at_least(s.tier, agent.min_tier) for s in cited.values()):
            better = [f"[{s.n}] ({s.tier})" for s in ctx.sources if at_least(s.tier, agent.min_tier)]
            hint = f"; cite {', '.join(better)}" if better else ""
            out.append(f"sources: none of the cited sources is {agent.min_tier} or better{hint}")
        return out


def quote_results(record: dict[str, Any], ctx: Context) -> list[tuple[int, dict[str, Any], Any]]:
    """(index, quote, evidence.Match or a reason string) for every quote of the record."""
    known = _cited(record, ctx)
    out: list[tuple[int, dict[str, Any], Any]] = []
    for i, q in enumerate(record.get("quotes") or []):
        src = known.get(q.get("source"))
        if src is None:
            out.append((i, q, f"[{q.get('source')}] is not a cited, retrieved source"))
            continue
        out.append((i, q, evidence.check(str(q.get("quote", "")), src.text, threshold=ctx.threshold,
                                         min_chars=ctx.min_quote_chars)))
    return out


class QuotesFound(Rule):
    """Every quote is found in its source's fetched text; every key field has one."""

    def __call__(self, record: dict[str, Any], agent: Agent, ctx: Context) -> list[str]:
        quotes = record.get("quotes") or []
        if not ctx.grounded:
            return ["quotes: no sources were retrieved for this agent, so there is nothing to quote"] if quotes else []
        out = []
        backed: set[str] = set()
        for i, q, result in quote_results(record, ctx):
            short = str(q.get("quote", ""))
            short = short if len(short) <= 90 else short[:87] + "..."
            if isinstance(result, str):
                out.append(f'quotes.{i}: "{short}" ({q.get("field")}): {result}')
            elif not result.found:
                out.append(f'quotes.{i}: "{short}" ({q.get("field")}, from [{q.get("source")}]) is '
                           f"{result.why}; copy the words exactly as the source has them")
            else:
                backed.add(str(q.get("field")))
        for key in agent.key_fields:
            value = record.get(key)
            if key in record and value not in ("", [], None) and key not in backed:
                out.append(f"quotes: no quote found in the sources backs `{key}`; add one copied from a cited source")
        return out


class ConfidenceInRange(Rule):
    """``confidence`` lies in 0..1."""

    def __call__(self, record: dict[str, Any], agent: Agent, ctx: Context) -> list[str]:
        value = record.get("confidence")
        if not isinstance(value, (int, float)) or not 0 <= value <= 1:
            return [f"confidence: {value!r} is not between 0 and 1"]
        return []


RULES: tuple[Rule, ...] = (NonEmptyFields(), CitedSourcesRetrieved(), MinSources(), QuotesFound(),
                           ConfidenceInRange())


def check_rules(record: dict[str, Any], agent: Agent, ctx: Context | None = None) -> list[str]:
    ctx = ctx or Context()
    return [problem for rule in RULES for problem in rule(record, agent, ctx)]


def confidence_cap(record: dict[str, Any], ctx: Context) -> float:
    """The highest tier weight among the sources whose quotes were found (tertiary's when
    ungrounded): a record is trusted no more than its best supporting source."""
    if not ctx.grounded:
        return ctx.weights["tertiary"]
    known = ctx.by_number()
    supporting = {q.get("source") for _, q, r in quote_results(record, ctx) if not isinstance(r, str) and r.found}
    weights = [ctx.weights.get(known[n].tier, ctx.weights["tertiary"]) for n in supporting if n in known]
    return max(weights, default=ctx.weights["tertiary"])


def provenance_sources(record: dict[str, Any], ctx: Context) -> list[dict[str, Any]]:
    """Each cited source as the store keeps it: where it came from, its tier, its text's hash, and
    the quotes that were checked against it."""
    found: dict[int, list[dict[str, Any]]] = {}
    for _, q, r in quote_results(record, ctx):
        if not isinstance(r, str) and r.found:
            found.setdefault(q["source"], []).append({"field": q.get("field"), "quote": q.get("quote"),
                                                      "match": r.score})
    return [{"n": s.n, "url": s.url, "final_url": s.final_url, "title": s.title, "tier": s.tier,
             "fetched_at": s.fetched_at, "sha256": s.sha256, "quotes": found.get(s.n, [])}
            for s in _cited(record, ctx).values()]


def audit_messages(agent: Agent, topic: str, record: dict[str, Any], prompts_dir: Path | None,
                   mode: str, sources: list[Any] | None = None, max_excerpt_chars: int = 6000) -> list[dict[str, str]]:
    from .research import excerpts, with_sources

    listed = excerpts(sources, max_excerpt_chars)
    user = prompts.render("validate", prompts_dir, agent_description=agent.description, topic=topic,
                          record=json.dumps(record, indent=2, ensure_ascii=False), sources=listed)
    user = with_sources("validate", prompts_dir, user, listed)
    if mode == "json_object":
        user += "\n\n## JSON Schema\n\n" + json.dumps(negotiate.json_schema(Audit), indent=1)
    return [{"role": "user", "content": user}]
