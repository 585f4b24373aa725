"""``checkpoint.json``: the agent's queue position and the memo of every step's result.

A step's result is written (atomically) the moment it exists; a run that dies resumes at
the first step without a recorded result and never pays for a recorded one again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import files, statedocs
from .clock import stamp as _now

VERSION = 1
DONE, QUARANTINED = "done", "quarantined"


def _blank(agent: str) -> dict[str, Any]:
    return {"version": VERSION, "agent": agent, "topics": {}, "current": None, "added": [], "removed": [],
            "inbox_offset": 0}


STATUSES = ("pending", DONE, QUARANTINED)


def _count(value: Any) -> bool:
    return type(value) is int and value >= 0  # bool is no count


def _money(value: Any) -> bool:
    return value is None or (type(value) in (int, float) and 0 <= value < float("inf"))


def _topic_problem(state: Any) -> str | None:
    if type(state) is not dict:
        return "is not an object"
    if state.get("status", "pending") not in STATUSES:
        return f"status {state.get('status')!r} is none of {', '.join(STATUSES)}"
    if not _count(state.get("attempts", 0)):
        return f"attempts {state.get('attempts')!r} is not a count"
    feedback = state.get("feedback", [])
    if type(feedback) is not list or not all(
            type(f) is dict and type(f.get("attempt")) is int and type(f.get("issues")) is list
            and all(type(i) is str for i in f["issues"]) for f in feedback):
        return "feedback is not a list of {attempt, issues}"
    if state.get("stored") is not None and type(state["stored"]) is not dict:
        return "stored is not an object"
    return None


def _step_problem(step: Any) -> str | None:
    if type(step) is not dict:
        return "is not an object"
    if type(step.get("content")) is not str:
        return "content is not text"
    if not (_count(step.get("prompt_tokens")) and _count(step.get("completion_tokens"))):
        return "its token counts are not counts"
    if not _money(step.get("usd")):
        return f"usd {step.get('usd')!r} is not an amount"
    if type(step.get("recorded")) is not str:
        return "recorded is not a timestamp"
    return None


def _current_problem(cur: Any) -> str | None:
    if type(cur) is not dict:
        return "is not an object"
    if type(cur.get("topic")) is not str:
        return "topic is not text"
    if not _count(cur.get("attempt")) or cur["attempt"] < 1:
        return f"attempt {cur.get('attempt')!r} is not a number from 1"
    steps = cur.get("steps")
    if type(steps) is not dict:
        return "steps is not an object"
    for name, step in steps.items():
        problem = _step_problem(step)
        if problem:
            return f"step {name!r}: {problem}"
    return None


def problem(data: Any) -> str | None:
    """What makes ``data`` no checkpoint (a wrong shape or a value that cannot be), else None.

    Lenient where the format grows: unknown keys are kept, and a topic's missing keys read as
    their defaults (a pending topic with no attempts)."""
    if type(data) is not dict or type(data.get("topics")) is not dict:
        return "wrong shape: topics is not an object"
    for topic, state in data["topics"].items():
        found = _topic_problem(state)
        if found:
            return f"topic {topic!r}: {found}"
    if data.get("current") is not None:
        found = _current_problem(data["current"])
        if found:
            return f"current attempt: {found}"
    return None


def _names(value: Any) -> list[str]:
    return [v for v in value if type(v) is str] if type(value) is list else []


def _defaults(data: dict[str, Any]) -> dict[str, Any]:
    for state in data["topics"].values():
        state.setdefault("status", "pending")
        state.setdefault("attempts", 0)
        state.setdefault("feedback", [])
    data.setdefault("current", None)
    # Queue changes made with `mythline topics` (or proposed by other agents): topics added to
    # the configured queue, topics taken out of it, and how much of the inbox is applied.
    data["added"] = _names(data.get("added"))
    data["removed"] = _names(data.get("removed"))
    if not _count(data.get("inbox_offset", 0)):
        data["inbox_offset"] = 0
    return data


class Checkpoint:
    """One agent's checkpoint, loaded once per run and saved after every change."""

    def __init__(self, agent: str, data: dict[str, Any], *, moved_aside: Path | str | None = None,
                 problem: str | None = None) -> None:
        self.agent = agent
        self.data = data
        self.moved_aside = moved_aside
        self.problem = problem  # what was wrong with the file moved aside

    @classmethod
    def load(cls, agent: str, *, repair: bool = True) -> Checkpoint:
        """The saved checkpoint; one that is unreadable or holds a value that cannot be is moved
        aside (when ``repair``) and replaced."""
        docs = statedocs.backend()
        found = None
        try:
            data = docs.read("checkpoint", agent)
        except files.CorruptFile as exc:
            data, found = None, exc.problem
        if data is not None:
            found = problem(data)
        if found is None:
            return cls(agent, _defaults(data) if data is not None else _blank(agent))
        moved = docs.move_aside("checkpoint", agent) if repair else None
        return cls(agent, _blank(agent), moved_aside=moved or docs.where("checkpoint", agent), problem=found)

    def recover(self, queue: tuple[str, ...], *, domain: str, settings: Any = None) -> dict[str, int]:
        """After a corrupt checkpoint was moved aside: rebuild what the other files still say,
        so that finished work is not paid for again. A topic whose record is in the store is
        done; a topic the agent's event log saw quarantined stays quarantined. Saved at once.
        (Recorded steps of the attempt in progress are lost with the checkpoint.)"""
        from .store import stored as stored_record

        done = quarantined = 0
        for topic in queue:
            found = stored_record(domain, topic, settings)  # the file's or the shared row's
            if found is not None and found[1].get("topic") == topic:
                state = self.topic_state(topic)
                state.update(status=DONE, recovered=_now(), stored={"path": found[0], "hash": found[1].get("content_hash")})
                done += 1
        wanted = set(queue)
        for event in statedocs.backend().entries("events", self.agent):
            named = event.get("topic")
            if event.get("event") == "quarantine" and named in wanted and self.peek(named)["status"] != DONE:
                state = self.topic_state(named)
                if state["status"] != QUARANTINED:
                    quarantined += 1
                attempts = event.get("attempts")
                state.update(status=QUARANTINED, recovered=_now(), attempts=attempts if _count(attempts) else 0)
        if done or quarantined:
            self.save()
        return {"done": done, "quarantined": quarantined}

    def save(self) -> None:
        statedocs.backend().write("checkpoint", self.agent, self.data)

    # -- the queue ------------------------------------------------------------------
    def queue(self, configured: tuple[str, ...]) -> tuple[str, ...]:
        """The queue this run works on: the configured topics, then the ones added with
        ``mythline topics add`` or proposed by other agents, less the ones taken out."""
        removed = set(self.data.get("removed") or ())
        extra = [t for t in self.data.get("added") or () if t not in configured]
        return tuple(t for t in (*configured, *extra) if t not in removed)

    def fold_inbox(self, configured: tuple[str, ...], *, known: Any = None) -> list[dict[str, Any]]:
        """Apply the queue changes waiting in the agent's inbox (``topics add|rm|requeue`` and
        proposals), in order, and save once; returns the changes applied. The caller holds the
        run lock: the inbox is the only file others write for this agent, and only by appending.
        ``known(name)``: whether a proposed subject is in this agent's store already."""
        offset = self.data.get("inbox_offset") or 0
        changes, end = read_inbox(self.agent, offset)
        if end == offset:
            return []
        applied = []
        for change in changes:
            done = self.apply(change, configured, known=known)
            if done is not None:
                applied.append(done)
        self.data["inbox_offset"] = end
        self.save()
        return applied

    def apply(self, change: dict[str, Any], configured: tuple[str, ...], *, known: Any = None) -> dict[str, Any] | None:
        """One queue change; returns what it did, or None when there was nothing to do."""
        op, topic = change.get("op"), change.get("topic")
        if type(topic) is not str or topic_problem(topic) is not None:
            return None
        queue = self.queue(configured)
        added, removed = self.data["added"], self.data["removed"]
        if op in ("add", "propose"):
            if topic in queue:
                return None
            if op == "propose" and (_normal(topic) in {_normal(t) for t in queue} or (known and known(topic))):
                return None  # the same subject under another spelling, or an alias of a stored one
            if topic in removed:
                removed.remove(topic)
            if topic not in configured and topic not in added:
                added.append(topic)
            state = self.topic_state(topic)
            state["added"] = change.get("at") or _now()
            if op == "propose":
                state["proposed_by"] = {k: change[k] for k in ("agent", "record") if type(change.get(k)) is str}
            return {"op": op, "topic": topic, **({"by": change["agent"]} if op == "propose" else {})}
        if op == "rm":
            if topic not in queue:
                return None
            if topic in added:
                added.remove(topic)
            if topic in configured:
                removed.append(topic)
            cur = self.data.get("current")
            if cur and cur.get("topic") == topic:
                self.data["current"] = None  # its recorded steps go with it
            return {"op": op, "topic": topic}
        if op == "requeue":
            state = self.data["topics"].get(topic)
            if topic not in queue or not state or state.get("status") != QUARANTINED:
                return None
            state.update(status="pending", attempts=0, requeued=change.get("at") or _now())
            return {"op": op, "topic": topic}
        return None

    def topic_state(self, topic: str) -> dict[str, Any]:
        return self.data["topics"].setdefault(topic, {"status": "pending", "attempts": 0, "feedback": []})

    def peek(self, topic: str) -> dict[str, Any]:
        return self.data["topics"].get(topic) or {"status": "pending", "attempts": 0, "feedback": []}

    def next_topic(self, queue: tuple[str, ...]) -> str | None:
        """The topic in progress, else the first pending one in queue order."""
        current = self.data.get("current")
        if current and current.get("topic") in queue:
            return current["topic"]
        for topic in queue:
            if self.peek(topic)["status"] not in (DONE, QUARANTINED):
                return topic
        return None

    def counts(self, queue: tuple[str, ...]) -> dict[str, int]:
        done = sum(1 for t in queue if self.peek(t)["status"] == DONE)
        quarantined = sum(1 for t in queue if self.peek(t)["status"] == QUARANTINED)
        return {"done": done, "pending": len(queue) - done - quarantined, "quarantined": quarantined}

    # -- the attempt in progress ------------------------------------------------------
    def current(self, topic: str, run_id: str) -> dict[str, Any]:
        """The attempt in progress for ``topic``, started if there is none."""
        cur = self.data.get("current")
        if not cur or cur.get("topic") != topic:
            state = self.topic_state(topic)
            cur = {"topic": topic, "attempt": state["attempts"] + 1, "run_id": run_id,
                   "started": _now(), "steps": {}}
            self.data["current"] = cur
        return cur

    def record_step(self, name: str, result: dict[str, Any]) -> None:
        self.data["current"]["steps"][name] = {**result, "recorded": _now()}
        self.save()

    def finish_attempt(self, *, passed: bool, feedback: list[str], max_attempts: int,
                       stored: dict[str, Any] | None = None, keep_steps: tuple[str, ...] = ()) -> str:
        """Close the attempt in one write; returns the topic's new status. ``keep_steps``:
        recorded steps a failed attempt hands to the next one (paid for, still good)."""
        cur = self.data["current"]
        state = self.topic_state(cur["topic"])
        state["attempts"] += 1
        if passed:
            state["status"] = DONE
            state["stored"] = stored
            state["checked"] = _now()
            state.pop("refresh", None)
        else:
            state["feedback"] = (state.get("feedback") or []) + [
                {"attempt": cur["attempt"], "issues": feedback}]
            state["status"] = QUARANTINED if state["attempts"] >= max_attempts else "pending"
            if state["status"] == QUARANTINED and state.pop("refresh", None):
                # A refresh that keeps failing leaves the stored record as it was, until the next refresh.
                state.update(status=DONE, checked=_now(), refresh_failed=_now())
        state["updated"] = _now()
        kept = {k: v for k, v in cur["steps"].items() if k in keep_steps}
        self.data["current"] = None
        if kept and state["status"] == "pending":
            self.data["current"] = {"topic": cur["topic"], "attempt": state["attempts"] + 1,
                                    "run_id": cur.get("run_id"), "started": _now(), "steps": kept}
        self.save()
        return state["status"]


# -- the inbox: queue changes waiting for the agent's run lock --------------------------------

MAX_TOPIC = 200


def topic_problem(topic: str) -> str | None:
    """Why ``topic`` cannot be a topic (a subject's name), or None."""
    if not topic.strip():
        return "a topic is a subject's name and cannot be empty"
    if len(topic) > MAX_TOPIC:
        return f"a topic is at most {MAX_TOPIC} characters"
    if any(ord(c) < 32 or ord(c) == 127 for c in topic):
        return "a topic cannot hold control characters (a tab, a newline)"
    stripped = topic.strip()
    if "/" in topic or "\\" in topic or stripped in (".", "..") or stripped.startswith("~"):
        return (f"{topic!r} looks like a path; a topic is a subject's name, e.g. 'Thrall' "
                "(no slashes; to research your own files, name them in the config)")
    return None


def send(agent: str, change: dict[str, Any]) -> dict[str, Any]:
    """Append one queue change to ``agent``'s inbox (no lock: one whole-line append); the agent
    applies it under its run lock, at once or when its next run starts."""
    entry = {"at": _now(), **change}
    statedocs.backend().append("inbox", agent, [entry])
    return entry


def read_inbox(agent: str, offset: int) -> tuple[list[dict[str, Any]], int]:
    """(the complete changes after ``offset`` (a byte offset in the file, a row id in PostgreSQL),
    the offset after them). A torn last line (its writer killed mid-append) is left for later:
    the next append starts on a fresh line; an inbox removed and started again is read from
    its start."""
    out, end = statedocs.backend().follow("inbox", agent, offset)
    return out, int(end)


def pending_changes(ck: Checkpoint) -> list[dict[str, Any]]:
    """The changes in the inbox that the agent has not applied yet (for ``topics ls``)."""
    return read_inbox(ck.agent, ck.data.get("inbox_offset") or 0)[0]


def _normal(name: str) -> str:
    from .storeindex import normal

    return normal(name)
