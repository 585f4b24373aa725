"""Mythline: a fleet of LLM research agents for MMORPG lore, run one short cycle at a time."""

__version__ = "0.1.0"
