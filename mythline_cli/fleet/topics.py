"""Topic queues, knowledge-area descriptions and storage domains for the built-in fleet."""

from __future__ import annotations

TOPICS: dict[str, tuple[str, ...]] = {
    "world-zones": (
        "Elwynn Forest",
        "Durotar",
        "Stranglethorn Vale",
        "Icecrown",
        "Tirisfal Glades",
        "Westfall",
        "The Barrens",
        "Ashenvale",
        "Eversong Woods",
        "Silithus",
        "Un'Goro Crater",
        "Howling Fjord",
        "Shadowmoon Valley",
        "The Jade Forest",
        "Zuldazar",
    ),
    "world-npcs": (
        "Thrall",
        "Jaina Proudmoore",
        "Sylvanas Windrunner",
        "Arthas Menethil",
        "Anduin Wrynn",
        "Varian Wrynn",
        "Illidan Stormrage",
        "Tyrande Whisperwind",
        "Malfurion Stormrage",
        "Garrosh Hellscream",
        "Vol'jin",
        "Bolvar Fordragon",
        "Khadgar",
        "Baine Bloodhoof",
        "Magni Bronzebeard",
    ),
    "world-factions": (
        "Argent Crusade",
        "Cenarion Circle",
        "Kirin Tor",
        "Knights of the Ebon Blade",
        "Darkspear Tribe",
        "Defias Brotherhood",
        "Scarlet Crusade",
        "Earthen Ring",
        "Shattered Sun Offensive",
        "The Aldor",
        "The Scryers",
        "Ravenholdt",
        "Steamwheedle Cartel",
        "Cult of the Damned",
        "Order of the Silver Hand",
    ),
    "world-lore": (
        "The Titans",
        "The Burning Legion",
        "The Well of Eternity",
        "The War of the Ancients",
        "The Sundering",
        "The Old Gods",
        "The Dark Portal",
        "The Scourge",
        "The Lich King",
        "The Emerald Dream",
        "The Naaru",
        "The Dragonflights",
        "The Void Lords",
        "The Light and the Void",
        "The Shadowlands",
    ),
    "world-items": (
        "Frostmourne",
        "Ashbringer",
        "Doomhammer",
        "Gorehowl",
        "Atiesh, Greatstaff of the Guardian",
        "Thunderfury, Blessed Blade of the Windseeker",
        "Sulfuras, Hand of Ragnaros",
        "The Warglaives of Azzinoth",
        "Shalamayne",
        "The Helm of Domination",
        "Quel'Delar",
        "The Skull of Gul'dan",
        "The Dragon Soul",
        "Val'anyr, Hammer of Ancient Kings",
        "Thori'dal, the Stars' Fury",
    ),
    "quest-chains": (
        "The Defias Brotherhood",
        "The Green Hills of Stranglethorn",
        "Battle for Undercity",
        "The Wrathgate",
        "Onyxia's Lair Attunement",
        "The Scepter of the Shifting Sands",
        "The Missing Diplomat",
        "The Legend of Stalvan",
        "The Light of Dawn",
        "Mankrik's Wife",
        "In Dreams",
        "The Battle for Gilneas City",
        "The Threads of Fate",
        "The Tome of Divinity",
    ),
    "character-archetypes": (
        "Paladin of the Silver Hand",
        "Orc Shaman",
        "Death Knight of the Ebon Blade",
        "Night Elf Druid",
        "Forsaken Apothecary",
        "Kirin Tor Archmage",
        "Blood Elf Magister",
        "Dwarven Explorer",
        "Goblin Trade Prince",
        "Pandaren Brewmaster",
        "Demon Hunter of the Illidari",
        "Troll Witch Doctor",
        "Draenei Vindicator",
        "Worgen of Gilneas",
        "SI7 Agent",
    ),
    "faction-dynamics": (
        "Alliance and Horde",
        "Night Elves and Forsaken",
        "Stormwind and Gilneas",
        "Quel'Thalas and the Alliance",
        "Aldor and Scryers",
        "Darkspear Trolls and Zandalari",
        "Tauren and Grimtotem",
        "Ironforge and the Dark Iron Dwarves",
        "Kirin Tor and the Horde",
        "Argent Crusade and the Scarlet Crusade",
        "Frostwolf Clan and Warsong Clan",
        "Knights of the Ebon Blade and the Scourge",
        "Theramore and Durotar",
        "Kul Tiras and Zandalar",
    ),
    "narrative-history": (
        "The First War",
        "The Second War",
        "The Third War",
        "The War of the Shifting Sands",
        "The Fall of Lordaeron",
        "The Nexus War",
        "The War Against the Lich King",
        "The Cataclysm",
        "The Siege of Orgrimmar",
        "The Iron Horde Invasion",
        "The Third Invasion of the Burning Legion",
        "The Fourth War",
        "The Shadowlands Crisis",
        "The War Against the Nightmare",
    ),
    "lore-crosscheck": (
        "Arthas took Frostmourne at Northrend",
        "Thrall was born on Draenor as the son of Durotan",
        "Sylvanas Windrunner was killed and raised as a banshee by Arthas",
        "Illidan Stormrage was imprisoned for ten thousand years",
        "Medivh opened the Dark Portal while possessed by Sargeras",
        "Garrosh Hellscream killed Cairne Bloodhoof in an honorable mak'gora",
        "Deathwing was once known as Neltharion the Earth-Warder",
        "Tirion Fordring was exiled for defending an orc",
        "The Lich King was originally the orc shaman Ner'zhul",
        "Anduin Wrynn is the son of Varian Wrynn and Tiffin Wrynn",
        "The night elves are descended from the trolls",
        "Gul'dan founded the Shadow Council",
        "Uther the Lightbringer was killed by Arthas at Andorhal",
        "Kael'thas Sunstrider died in the Magisters' Terrace",
        "Teldrassil was burned on the orders of Sylvanas Windrunner",
    ),
}

DESCRIPTIONS: dict[str, str] = {
    "world-zones": "Zones and regions of Azeroth and beyond: geography, settlements, landmarks and who controls them.",
    "world-npcs": "Named characters of Warcraft: their race, allegiances, deeds, relationships and fate.",
    "world-factions": "Organizations and factions: leadership, headquarters, goals, members and reputation.",
    "world-lore": "Cosmology, ancient history, peoples and the great forces of the Warcraft universe.",
    "world-items": "Legendary weapons, artifacts and relics: origins, powers, wielders and fate.",
    "quest-chains": "Notable quest chains and storylines: quest givers, steps, rewards and outcomes.",
    "character-archetypes": "Character archetypes by class, race and role: themes, motivations and canonical examples.",
    "faction-dynamics": "Relationships between factions and peoples: alliances, rivalries, wars and flashpoints.",
    "narrative-history": "The chronological arcs of Warcraft history: wars, invasions, turning points and consequences.",
    "lore-crosscheck": "Fact-checking lore claims against canonical sources, including retcons and disputed accounts.",
}

DOMAINS: dict[str, str] = {
    "world-zones": "zones",
    "world-npcs": "npcs",
    "world-factions": "factions",
    "world-lore": "lore",
    "world-items": "items",
    "quest-chains": "quests",
    "character-archetypes": "archetypes",
    "faction-dynamics": "faction-dynamics",
    "narrative-history": "history",
    "lore-crosscheck": "crosschecks",
}

# Which fields of a record name subjects that another built-in agent researches: the NPCs a
# faction is led by, the zone a quest chain takes place in. A run proposes those subjects to
# that agent's queue (see ``propose``).
MENTIONS: dict[str, dict[str, str]] = {
    "world-zones": {},
    "world-npcs": {"affiliations": "world-factions"},
    "world-factions": {"leader": "world-npcs", "notable_members": "world-npcs"},
    "world-lore": {"key_figures": "world-npcs", "locations": "world-zones"},
    "world-items": {"wielders": "world-npcs"},
    "quest-chains": {"zone": "world-zones", "quest_giver": "world-npcs"},
    "character-archetypes": {"example_characters": "world-npcs", "organizations": "world-factions"},
    "faction-dynamics": {"parties": "world-factions", "key_figures": "world-npcs"},
    "narrative-history": {"key_figures": "world-npcs"},
    "lore-crosscheck": {},
}

# Values that name no subject.
_NOBODY = {"none", "unknown", "various", "n a", "na", "nobody", "none known", "multiple", "several", "tbd"}
MAX_SUBJECT_WORDS = 6


def subject(text: object) -> str | None:
    """The subject a field's entry names ("Durotan - father" -> "Durotan", "Orgrimmar (capital)" ->
    "Orgrimmar"), or None when it is a description rather than a name."""
    import re

    from ..checkpoint import topic_problem
    from ..storeindex import normal

    if not isinstance(text, str):
        return None
    name = re.split(r"\s+[-\u2013\u2014]\s+|\s*\(|;|:", text.strip(), maxsplit=1)[0].strip(" .,")
    if not name or not (name[0].isupper() or name[0].isdigit()) or len(name.split()) > MAX_SUBJECT_WORDS:
        return None
    if normal(name) in _NOBODY or topic_problem(name) is not None:
        return None
    return name


def mentioned(kind: str, record: dict) -> list[tuple[str, str]]:
    """(agent kind, subject) for every subject the record names in a field ``MENTIONS`` lists."""
    out = []
    for field, target in MENTIONS.get(kind, {}).items():
        value = record.get(field)
        for item in value if isinstance(value, list) else [value]:
            name = subject(item)
            if name is not None:
                out.append((target, name))
    return out


def stale_topic(ck, agent, *, now=None):  # noqa: ANN001, ANN201 - Checkpoint, Agent
    """The done topic checked longest ago, when that is longer ago than the agent's
    ``refresh_after``; marked for a refresh (pending again, attempts from zero) and saved. None
    when nothing is stale or refreshing is off."""
    from datetime import datetime, timedelta, timezone

    from ..checkpoint import DONE

    if agent.refresh_after is None:
        return None
    now = now or datetime.now(timezone.utc)
    limit = now - timedelta(seconds=agent.refresh_after)
    oldest = None
    for topic in ck.queue(agent.topics):
        state = ck.peek(topic)
        if state.get("status") != DONE:
            continue
        when = checked_at(state)
        if when is not None and when < limit and (oldest is None or when < oldest[0]):
            oldest = (when, topic)
    if oldest is None:
        return None
    state = ck.topic_state(oldest[1])
    state.update(status="pending", attempts=0, refresh=now.isoformat())
    ck.save()
    return oldest[1]


def checked_at(state: dict):  # noqa: ANN201 - datetime | None
    """When a done topic's record was last researched (stored or found unchanged)."""
    from datetime import datetime, timezone

    for key in ("checked", "updated", "recovered"):
        value = state.get(key)
        if isinstance(value, str):
            try:
                when = datetime.fromisoformat(value)
            except ValueError:
                continue
            return when if when.tzinfo else when.replace(tzinfo=timezone.utc)
    return None


def propose(agents, source, topic: str, record: dict, *, index=None) -> list[dict]:  # noqa: ANN001
    """Propose the subjects ``record`` names to the agents that research them: appended to each
    one's inbox, unless its queue, its pending inbox or its store has the subject already (by
    normal name and aliases); at most ``source.max_proposals`` per run. Returns the proposals."""
    from ..checkpoint import Checkpoint, pending_changes, send
    from ..storeindex import normal

    by_name = {a.name: a for a in agents if a.enabled}
    sent: list[dict] = []
    seen: dict[str, set[str]] = {}
    for target_kind, name in mentioned(source.kind, record):
        if len(sent) >= source.max_proposals:
            break
        target = by_name.get(target_kind)
        if target is None or target.name == source.name:
            continue
        if target.name not in seen:
            ck = Checkpoint.load(target.name, repair=False)
            names = {normal(t) for t in ck.queue(target.topics)}
            names |= {normal(c["topic"]) for c in pending_changes(ck) if isinstance(c.get("topic"), str)}
            seen[target.name] = names
        if normal(name) in seen[target.name] or in_store(target.domain, name, index):
            continue
        seen[target.name].add(normal(name))
        sent.append(send(target.name, {"op": "propose", "topic": name, "agent": source.name, "record": topic}))
        sent[-1]["to"] = target.name
    return sent


# -- the cycle's hooks: each one never fails a run ----------------------------------------------

def fold(ck, agent, emit, settings=None):  # noqa: ANN001, ANN201 - Checkpoint, Agent, event callback -> Agent
    """At the start of a run (its lock held): apply the queue changes in the agent's inbox, and
    return the agent with the queue it works on (configured, added, less removed)."""
    import dataclasses

    index = None
    try:
        index = run_index(settings)
        for change in ck.fold_inbox(agent.topics, known=lambda name: in_store(agent.domain, name, index)):
            emit(f"topic-{change['op']}", **{k: v for k, v in change.items() if k != "op"})
        if ck.moved_aside is not None and ck.data["added"]:
            # A checkpoint rebuilt after corruption read its inbox again from the start (the
            # inbox is the journal of queue changes): the added topics already stored are done.
            ck.recover(tuple(ck.data["added"]), domain=agent.domain, settings=settings)
    except Exception as exc:  # noqa: BLE001 - the queue as it was is still a queue
        emit("queue-change-failed", error=f"{type(exc).__name__}: {exc}")
    finally:
        if index is not None:
            index.close()
    return dataclasses.replace(agent, topics=ck.queue(agent.topics))


def normal_name(name: str) -> str:
    from ..storeindex import normal

    return normal(name)


def in_store(domain: str, name: str, index=None) -> bool:  # noqa: ANN001 - StoreIndex | None
    """Whether ``domain`` has a record of ``name``: its file (the exact topic), or, through the
    index as it stands (never rebuilt by a run), a record with that normal name or alias."""
    from .. import paths
    from ..slug import slug

    if paths.record(domain, slug(name)).is_file():
        return True
    return index is not None and index.has_name(domain, name)


def run_index(settings=None):  # noqa: ANN001, ANN201 - Settings -> StoreIndex | PgRecords | None
    """The store's index for a run's look-ups, if there is one to use as it stands."""
    from ..store import run_index as index_for_run

    return index_for_run(settings)


def after_store(settings, agent, topic: str, record: dict, emit) -> None:  # noqa: ANN001
    """After a record was stored: propose the subjects it names to the agents that research them."""
    if not agent.max_proposals or not MENTIONS.get(agent.kind):
        return
    index = None
    try:
        index = run_index(settings)
        for entry in propose(settings.agents(), agent, topic, record, index=index):
            emit("proposed", topic=entry["topic"], to=entry["to"], record=topic)
    except Exception as exc:  # noqa: BLE001 - a proposal is never worth a failed run
        emit("proposal-failed", error=f"{type(exc).__name__}: {exc}")
    finally:
        if index is not None:
            index.close()


# -- `mythline topics`: the queue, read and changed ------------------------------------------

def rows(agent, *, now=None) -> dict:  # noqa: ANN001 - Agent
    """The agent's queue as ``topics ls`` shows it: each topic with its state, and the changes
    waiting in its inbox for its next run. Reads files only."""
    from datetime import datetime, timedelta, timezone

    from ..checkpoint import DONE, QUARANTINED, Checkpoint, pending_changes

    now = now or datetime.now(timezone.utc)
    ck = Checkpoint.load(agent.name, repair=False)
    cur = (ck.data.get("current") or {}).get("topic")
    out = []
    for topic in ck.queue(agent.topics):
        state = ck.peek(topic)
        status, note = state.get("status", "pending"), None
        if status == QUARANTINED:
            issues = [i for f in state.get("feedback") or [] for i in f.get("issues", [])]
            note = issues[-1] if issues else None
        elif status == DONE and agent.refresh_after is not None:
            when = checked_at(state)
            if when is not None and when < now - timedelta(seconds=agent.refresh_after):
                status = "stale"
        elif topic == cur:
            status = "in progress"
        elif state.get("refresh"):
            status = "refreshing"
        by = state.get("proposed_by") or {}
        out.append({"topic": topic, "state": status, "attempts": state.get("attempts", 0), "reason": note,
                    "proposed_by": by.get("agent"), "proposed_from": by.get("record"),
                    "added": state.get("added"), "configured": topic in agent.topics})
    waiting = [{k: c.get(k) for k in ("op", "topic", "agent", "record", "at")} for c in pending_changes(ck)]
    counts: dict[str, int] = {}
    for row in out:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    return {"agent": agent.name, "topics": out, "counts": counts, "waiting": waiting,
            "checkpoint_problem": ck.problem}


def change(agent, op: str, topic: str) -> dict:  # noqa: ANN001 - Agent
    """Add, remove or requeue one topic of ``agent``'s queue. The change is appended to the agent's
    inbox, then applied to its checkpoint under its run lock at once; while the agent runs, the
    lock is not taken and the change applies when its next run starts. Returns what happened."""
    from .. import paths
    from ..checkpoint import QUARANTINED, Checkpoint, pending_changes, send, topic_problem
    from ..errors import UsageError
    from ..events import EventLog

    problem = topic_problem(topic)
    if problem is not None:
        raise UsageError(f"topic {topic[:80]!r}: {problem}" if not problem.startswith(repr(topic)) else problem)
    ck = Checkpoint.load(agent.name, repair=False)
    queue = ck.queue(agent.topics)
    waiting = [c for c in pending_changes(ck) if c.get("topic") == topic]
    last = waiting[-1]["op"] if waiting else None
    listed = (topic in queue and last != "rm") or last in ("add", "propose")
    hint = f"see: mythline topics ls {agent.name}"
    if op == "add" and listed:
        return {"agent": agent.name, "op": op, "topic": topic, "result": "already-queued"}
    if op == "rm" and not listed:
        raise UsageError(f"{topic!r} is not in {agent.name}'s queue ({hint})")
    if op == "requeue":
        status = ck.peek(topic).get("status")
        if not listed:
            raise UsageError(f"{topic!r} is not in {agent.name}'s queue ({hint})")
        if status != QUARANTINED and last != "requeue":
            raise UsageError(f"{topic!r} is {status}, not quarantined: only a quarantined topic is requeued ({hint})")
    paths.check_inside(paths.agent_dir(agent.name), paths.checkpoint(agent.name))
    send(agent.name, {"op": op, "topic": topic, "by": "mythline topics"})
    from contextlib import ExitStack

    from .. import statedocs
    from ..errors import AlreadyRunning

    # The run lock wherever the state is: on PostgreSQL a run on another host holds it.
    lock = ExitStack()
    try:
        lock.enter_context(statedocs.run_lock(agent.name))
    except AlreadyRunning:
        return {"agent": agent.name, "op": op, "topic": topic, "result": "next-run"}
    try:
        ck = Checkpoint.load(agent.name, repair=False)
        if ck.moved_aside is not None:
            # An unreadable checkpoint is the run's to repair (it rebuilds what it can): the
            # change waits in the inbox for that run.
            return {"agent": agent.name, "op": op, "topic": topic, "result": "next-run",
                    "checkpoint_problem": ck.problem}
        from ..state import dsn_for
        from ..store import open_index
        from ..storeindex import IndexUnavailable

        try:  # a command, not a run: the index may be brought up to date
            index = open_index(dsn=dsn_for(None), timeout=5.0)
        except IndexUnavailable:
            index = None
        try:
            applied = ck.fold_inbox(agent.topics, known=lambda name: in_store(agent.domain, name, index))
        finally:
            if index is not None:
                index.close()
        log = EventLog(agent.name, "topics")
        for done in applied:
            log.emit(f"topic-{done['op']}", **{k: v for k, v in done.items() if k != "op"}, by="mythline topics")
    finally:
        lock.close()
    return {"agent": agent.name, "op": op, "topic": topic, "result": "applied"}
# Where each agent looks first: the two big Warcraft wikis, one page per topic. A topic that
# is a claim rather than a page name (lore-crosscheck) goes through the wiki's search, which
# lands on the page when one matches closely enough.
WIKI_PAGES: tuple[str, ...] = (
    "https://warcraft.wiki.gg/wiki/{title}",
    "https://wowpedia.fandom.com/wiki/{title}",
)
WIKI_SEARCH: tuple[str, ...] = (
    "https://warcraft.wiki.gg/index.php?search={query}&go=Go",
    "https://wowpedia.fandom.com/index.php?search={query}&go=Go",
)
SOURCES: dict[str, tuple[str, ...]] = dict.fromkeys(TOPICS, WIKI_PAGES) | {"lore-crosscheck": WIKI_SEARCH}

# The fields, beyond summary, whose claims each record must back with a quote.
KEY_FIELDS: dict[str, tuple[str, ...]] = {
    "world-zones": (),
    "world-npcs": ("notable_deeds",),
    "world-factions": ("leader",),
    "world-lore": ("key_events",),
    "world-items": ("origin",),
    "quest-chains": ("story_outcome",),
    "character-archetypes": (),
    "faction-dynamics": ("current_state",),
    "narrative-history": ("turning_points",),
    "lore-crosscheck": ("correct_version",),
}
