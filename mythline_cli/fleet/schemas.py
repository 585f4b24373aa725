"""Pydantic v2 record models produced by the research agents.

Every field is required and no field has a default, so the generated JSON
Schema is usable with strict structured outputs (all properties required,
no additional properties).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Source(BaseModel):
    """A citation of one of the numbered sources the research prompt gave."""

    model_config = ConfigDict(extra="forbid")

    source: int = Field(description="The number of the source as the prompt lists it, e.g. 1 for [1].")
    url: str = Field(
        description="The URL of that numbered source, copied exactly from the prompt. Never a URL "
        "the prompt did not list."
    )


class Quote(BaseModel):
    """A verbatim quote from a numbered source backing one field of the record."""

    model_config = ConfigDict(extra="forbid")

    field: str = Field(description="The record field this quote supports, e.g. 'summary'.")
    source: int = Field(description="The number of the source the quote is copied from.")
    quote: str = Field(
        description="One or two sentences copied word for word from that source's text (at least "
        "a few words; no paraphrase, no ellipsis)."
    )


class RecordBase(BaseModel):
    """Fields shared by every research record."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Canonical name of the subject (the research topic).")
    aliases: list[str] = Field(
        description="Other names the subject is known by, e.g. Go'el for Thrall; an empty list if none."
    )
    summary: str = Field(description="A 2-5 sentence summary of the subject for a story writer.")
    sources: list[Source] = Field(
        description="The numbered sources the record relies on; an empty list if none were given."
    )
    quotes: list[Quote] = Field(
        description="Evidence: for the summary and each key field, a verbatim quote from a cited "
        "source; an empty list if no sources were given."
    )
    confidence: float = Field(
        ge=0,
        le=1,
        description="Calibrated confidence (0-1) that the record is accurate and complete.",
    )
    conflicts: list[str] = Field(
        description="Contradictions between sources or lore retcons; an empty list if none."
    )


class ZoneRecord(RecordBase):
    """A zone or region of Azeroth and beyond."""

    continent: str = Field(
        description="Continent or world the zone lies on, e.g. Eastern Kingdoms, Kalimdor, Northrend."
    )
    expansion: str = Field(
        description="Expansion that introduced the zone (or its current version), e.g. Classic, Wrath of the Lich King."
    )
    level_range: str = Field(
        description="Player level range as text, e.g. '1-10' or '68-80 (scaling)'."
    )
    controlling_faction: Literal["alliance", "horde", "contested", "neutral", "hostile"] = Field(
        description="Who controls the zone: alliance, horde, contested, neutral (sanctuary/neutral powers) or hostile (enemy forces)."
    )
    subzones: list[str] = Field(description="Notable subzones, towns and areas within the zone.")
    notable_landmarks: list[str] = Field(
        description="Landmarks, dungeons, raids and points of interest a story could use."
    )
    climate_and_terrain: str = Field(
        description="Short description of the climate, terrain, atmosphere and look of the zone."
    )
    inhabitants: list[str] = Field(
        description="Peoples, creatures and factions commonly found in the zone."
    )


class NpcRecord(RecordBase):
    """A named non-player character."""

    race: str = Field(description="Race of the character, e.g. Orc, Human, Blood Elf.")
    faction: str = Field(
        description="Primary faction allegiance, e.g. Horde, Alliance, Scourge, Neutral."
    )
    role: str = Field(
        description="The character's role or titles, e.g. Warchief of the Horde, Archmage."
    )
    location: str = Field(description="Where the character is usually found or was last seen.")
    affiliations: list[str] = Field(
        description="Organizations, factions and groups the character belongs or belonged to."
    )
    notable_deeds: list[str] = Field(
        description="Key actions and events in the character's history, in chronological order."
    )
    relationships: list[str] = Field(
        description="Important relationships, each as 'Name - relation', e.g. 'Durotan - father'."
    )
    status: Literal["alive", "dead", "undead", "unknown", "varies"] = Field(
        description="Current status as of the latest lore; 'varies' if it depends on timeline or phase."
    )


class FactionRecord(RecordBase):
    """An organization, faction or reputation group."""

    leader: str = Field(description="Current leader (note former leaders in the summary).")
    headquarters: str = Field(description="Main base, capital or headquarters of the faction.")
    allegiance: Literal["alliance", "horde", "neutral", "hostile"] = Field(
        description="Broad allegiance of the faction."
    )
    goals: list[str] = Field(description="The faction's aims, beliefs and motivations.")
    notable_members: list[str] = Field(description="Well-known members of the faction.")
    reputation_rewards: list[str] = Field(
        description="Notable player reputation rewards (mounts, gear, tabards); an empty list if the faction has no reputation."
    )
    expansion: str = Field(
        description="Expansion where the faction is most prominent or was introduced."
    )


class LoreRecord(RecordBase):
    """A lore topic, event or concept."""

    era: str = Field(
        description="Era or period of the lore, e.g. 'Ancient history', 'Second War', 'Post-Cataclysm'."
    )
    key_figures: list[str] = Field(description="Main characters or beings involved.")
    key_events: list[str] = Field(description="The main events, in chronological order.")
    locations: list[str] = Field(description="Places where the lore takes place.")
    significance: str = Field(
        description="Why this lore matters to the wider story of Warcraft."
    )
    related_topics: list[str] = Field(
        description="Related lore topics worth cross-referencing."
    )


class ItemRecord(RecordBase):
    """A notable artifact, weapon or item."""

    item_type: str = Field(
        description="Kind of item, e.g. two-handed sword, hammer, staff, relic, tome."
    )
    quality: Literal["poor", "common", "uncommon", "rare", "epic", "legendary", "artifact", "lore-only"] = Field(
        description="In-game quality; 'lore-only' if the item never appeared as a player item."
    )
    origin: str = Field(description="Who made the item, how and where.")
    wielders: list[str] = Field(description="Known wielders or owners, in chronological order.")
    powers: list[str] = Field(description="Powers, properties and curses of the item in lore.")
    current_location_or_status: str = Field(
        description="Where the item is now or what became of it (destroyed, reforged, lost)."
    )


class QuestStep(BaseModel):
    """One quest in a quest chain."""

    model_config = ConfigDict(extra="forbid")

    title: str = Field(description="Exact in-game quest title.")
    objective: str = Field(description="What the player must do in this quest.")


class QuestChainRecord(RecordBase):
    """A quest chain or storyline of quests."""

    zone: str = Field(description="Zone (or zones) where the chain takes place.")
    faction: Literal["alliance", "horde", "neutral", "both"] = Field(
        description="Which players can do the chain: alliance, horde, neutral, or both (separate versions)."
    )
    level: str = Field(description="Level requirement or range as text, e.g. '18-30'.")
    quest_giver: str = Field(description="NPC who starts the chain.")
    steps: list[QuestStep] = Field(description="The quests of the chain in order.")
    rewards: list[str] = Field(description="Notable rewards from the chain.")
    story_outcome: str = Field(description="How the storyline ends and what it changes.")


class ArchetypeRecord(RecordBase):
    """A character archetype for writing Warcraft characters."""

    class_or_role: str = Field(
        description="Class or social role of the archetype, e.g. Paladin, Shaman, Death Knight."
    )
    races: list[str] = Field(description="Races that canonically fit this archetype.")
    themes: list[str] = Field(description="Core themes, e.g. redemption, duty, corruption.")
    motivations: list[str] = Field(description="Typical motivations and drives.")
    example_characters: list[str] = Field(
        description="Canonical characters who exemplify the archetype."
    )
    organizations: list[str] = Field(
        description="Orders, guilds or groups associated with the archetype."
    )
    story_hooks: list[str] = Field(
        description="Story hook ideas consistent with canon for this archetype."
    )


class FactionDynamicsRecord(RecordBase):
    """The relationship between two or more factions or peoples."""

    parties: list[str] = Field(description="The factions or peoples involved.")
    relationship: Literal["allied", "hostile", "tense", "neutral", "shifting"] = Field(
        description="Overall relationship as of the latest lore."
    )
    history: list[str] = Field(
        description="Key moments that shaped the relationship, in chronological order."
    )
    flashpoints: list[str] = Field(
        description="Events, places or issues that cause conflict between the parties."
    )
    key_figures: list[str] = Field(description="Characters who drive the relationship.")
    current_state: str = Field(description="State of the relationship as of the latest lore.")


class NarrativeHistoryRecord(RecordBase):
    """A period or arc of Warcraft's narrative history."""

    period: str = Field(description="Name of the period or arc, e.g. 'The Third War'.")
    start_and_end: str = Field(
        description="When it began and ended, in-universe years (e.g. Year 20-21 ADP) and/or events."
    )
    key_figures: list[str] = Field(description="The main characters of the period.")
    turning_points: list[str] = Field(description="The decisive events, in chronological order.")
    consequences: list[str] = Field(description="Lasting consequences for the world.")
    expansions: list[str] = Field(
        description="Games, expansions or novels that tell this story, e.g. Warcraft III, Legion."
    )


class CrosscheckRecord(RecordBase):
    """A lore claim checked against canonical sources."""

    claim: str = Field(description="The claim being checked, stated exactly.")
    verdict: Literal["confirmed", "contradicted", "disputed", "unverifiable"] = Field(
        description="Result of the check against canonical lore."
    )
    correct_version: str = Field(
        description="The accurate canonical version of the claim, restated in full."
    )
    evidence: list[str] = Field(
        description="Specific evidence for the verdict, each naming where it comes from."
    )
    retcons: list[str] = Field(
        description="Retcons affecting the claim; an empty list if none."
    )


RECORD_MODELS: dict[str, type[RecordBase]] = {
    "world-zones": ZoneRecord,
    "world-npcs": NpcRecord,
    "world-factions": FactionRecord,
    "world-lore": LoreRecord,
    "world-items": ItemRecord,
    "quest-chains": QuestChainRecord,
    "character-archetypes": ArchetypeRecord,
    "faction-dynamics": FactionDynamicsRecord,
    "narrative-history": NarrativeHistoryRecord,
    "lore-crosscheck": CrosscheckRecord,
}
