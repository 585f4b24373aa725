"""One agent with every setting resolved: plain data, importable without pydantic."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Agent:
    """One agent with every setting resolved."""

    name: str
    domain: str
    description: str
    enabled: bool
    interval: float
    grace: float
    max_attempts: int
    min_score: float
    min_sources: int
    daily_usd: float | None
    daily_tokens: int | None
    model: str
    topics: tuple[str, ...]
