"""Validation: rule checks, the LLM audit, and the verdict."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from . import prompts
from .config import Agent


class Audit(BaseModel):
    """What the auditing call must return."""

    model_config = ConfigDict(extra="forbid")
    score: float = Field(ge=0, le=1, description="Overall quality from 0 (wrong) to 1 (accurate, complete, sourced).")
    issues: list[str] = Field(description="Specific, actionable problems; empty when there are none.")


class Rule:
    """A check on a record; returns the problems it finds."""

    def __call__(self, record: dict[str, Any], agent: Agent) -> list[str]:
        raise NotImplementedError


class NonEmptyFields(Rule):
    """Every required text or list field holds something."""

    def __call__(self, record: dict[str, Any], agent: Agent) -> list[str]:
        empty_ok = {"conflicts", "aliases"}
        out = []
        for key, value in record.items():
            if key in empty_ok:
                continue
            if isinstance(value, str) and not value.strip():
                out.append(f"{key}: must not be empty")
            elif isinstance(value, list) and not value:
                out.append(f"{key}: must list at least one entry")
        return out


class MinSources(Rule):
    """At least ``min_sources`` sources, each with an http(s) URL."""

    def __call__(self, record: dict[str, Any], agent: Agent) -> list[str]:
        sources = record.get("sources") or []
        out = []
        if len(sources) < agent.min_sources:
            out.append(f"sources: {len(sources)} given, at least {agent.min_sources} required")
        for i, src in enumerate(sources):
            if not str(src.get("url", "")).startswith(("http://", "https://")):
                out.append(f"sources.{i}.url: not an http(s) URL")
        return out


class ConfidenceInRange(Rule):
    """``confidence`` lies in 0..1."""

    def __call__(self, record: dict[str, Any], agent: Agent) -> list[str]:
        value = record.get("confidence")
        if not isinstance(value, (int, float)) or not 0 <= value <= 1:
            return [f"confidence: {value!r} is not between 0 and 1"]
        return []


RULES: tuple[Rule, ...] = (NonEmptyFields(), MinSources(), ConfidenceInRange())


def check_rules(record: dict[str, Any], agent: Agent) -> list[str]:
    return [problem for rule in RULES for problem in rule(record, agent)]


def audit_messages(agent: Agent, topic: str, record: dict[str, Any], prompts_dir: Path | None,
                   mode: str) -> list[dict[str, str]]:
    user = prompts.render("validate", prompts_dir, agent_description=agent.description, topic=topic,
                          record=json.dumps(record, indent=2, ensure_ascii=False))
    if mode == "json_object":
        user += "\n\n## JSON Schema\n\n" + json.dumps(Audit.model_json_schema(), indent=1)
    return [{"role": "user", "content": user}]
