"""``checkpoint.json``: the agent's queue position and the memo of every step's result.

A step's result is written (atomically) the moment it exists; a run that dies resumes at
the first step without a recorded result and never pays for a recorded one again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import files, paths
from .clock import stamp as _now
from .slug import slug

VERSION = 1
DONE, QUARANTINED = "done", "quarantined"


def _blank(agent: str) -> dict[str, Any]:
    return {"version": VERSION, "agent": agent, "topics": {}, "current": None}


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


def _defaults(data: dict[str, Any]) -> dict[str, Any]:
    for state in data["topics"].values():
        state.setdefault("status", "pending")
        state.setdefault("attempts", 0)
        state.setdefault("feedback", [])
    data.setdefault("current", None)
    return data


class Checkpoint:
    """One agent's checkpoint, loaded once per run and saved after every change."""

    def __init__(self, agent: str, data: dict[str, Any], *, moved_aside: Path | None = None,
                 problem: str | None = None) -> None:
        self.agent = agent
        self.data = data
        self.moved_aside = moved_aside
        self.problem = problem  # what was wrong with the file moved aside

    @classmethod
    def load(cls, agent: str, *, repair: bool = True) -> Checkpoint:
        """The saved checkpoint; one that is unreadable or holds a value that cannot be is moved
        aside (when ``repair``) and replaced."""
        path = paths.checkpoint(agent)
        found = None
        try:
            data = files.read_json(path)
        except files.CorruptFile as exc:
            data, found = None, exc.problem
        if data is not None:
            found = problem(data)
        if found is None:
            return cls(agent, _defaults(data) if data is not None else _blank(agent))
        moved = files.quarantine_corrupt(path) if repair else None
        return cls(agent, _blank(agent), moved_aside=moved or path, problem=found)

    def recover(self, queue: tuple[str, ...], *, domain: str) -> dict[str, int]:
        """After a corrupt checkpoint was moved aside: rebuild what the other files still say,
        so that finished work is not paid for again. A topic whose record is in the store is
        done; a topic the agent's event log saw quarantined stays quarantined. Saved at once.
        (Recorded steps of the attempt in progress are lost with the checkpoint.)"""
        done = quarantined = 0
        for topic in queue:
            try:
                doc = files.read_json(paths.record(domain, slug(topic)))
            except files.CorruptFile:
                continue
            if isinstance(doc, dict) and doc.get("topic") == topic:
                state = self.topic_state(topic)
                state.update(status=DONE, recovered=_now(),
                             stored={"path": str(paths.record(domain, slug(topic))), "hash": doc.get("content_hash")})
                done += 1
        wanted = set(queue)
        for event in files.iter_jsonl(paths.events(self.agent)):
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
        files.write_json(paths.checkpoint(self.agent), self.data)

    # -- the queue ------------------------------------------------------------------
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
        else:
            state["feedback"] = (state.get("feedback") or []) + [
                {"attempt": cur["attempt"], "issues": feedback}]
            state["status"] = QUARANTINED if state["attempts"] >= max_attempts else "pending"
        state["updated"] = _now()
        kept = {k: v for k, v in cur["steps"].items() if k in keep_steps}
        self.data["current"] = None
        if kept and state["status"] == "pending":
            self.data["current"] = {"topic": cur["topic"], "attempt": state["attempts"] + 1,
                                    "run_id": cur.get("run_id"), "started": _now(), "steps": kept}
        self.save()
        return state["status"]
