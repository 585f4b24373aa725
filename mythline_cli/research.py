"""Research: the messages that ask for a record, and turning an answer into one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from . import negotiate, prompts
from .config import Agent

MAX_ECHO = 6000


UNGROUNDED = ("No sources were retrieved for this agent (its config sets sources = []): leave `sources` "
              "and `quotes` empty, and keep the confidence modest: the record rests on memory alone.")


def excerpts(sources: list[Any] | None, max_chars: int) -> str:
    """The numbered sources as the prompts show them: number, title, tier, URL, text."""
    if not sources:
        return UNGROUNDED
    blocks = []
    for src in sources:
        if getattr(src, "digest", None):
            text = src.digest
        elif len(src.text) <= max_chars:
            text = src.text
        else:
            text = src.text[:max_chars] + f"\n[... {len(src.text) - max_chars:,} more characters not shown]"
        blocks.append(f"[{src.n}] {src.title} ({src.tier} source)\nURL: {src.url}\n<<<\n{text}\n>>>")
    return "\n\n".join(blocks)


def with_sources(name: str, prompts_dir: Path | None, rendered: str, text: str) -> str:
    """``rendered`` with the sources appended when the user's copy of the prompt has no $sources."""
    template = prompts.load(name, prompts_dir)
    if "${sources}" in template or "$sources" in template:
        return rendered
    return rendered + "\n\n## Sources\n\n" + text


def messages(agent: Agent, topic: str, feedback: list[dict[str, Any]], prompts_dir: Path | None,
             schema: type[BaseModel], mode: str, sources: list[Any] | None = None,
             max_excerpt_chars: int = 6000) -> list[dict[str, str]]:
    text = "None — this is the first attempt."
    if feedback:
        text = "\n".join(f"- attempt {f['attempt']}: {issue}" for f in feedback for issue in f["issues"])
    listed = excerpts(sources, max_excerpt_chars)
    keys = ", ".join(f"`{k}`" for k in agent.key_fields) if sources else "none (no sources were given)"
    user = prompts.render("research", prompts_dir, agent_description=agent.description, topic=topic, feedback=text,
                          sources=listed, key_fields=keys)
    user = with_sources("research", prompts_dir, user, listed)
    if mode == "json_object":
        # Without structured outputs the schema has to travel in the prompt.
        user += "\n\n## JSON Schema\n\n" + json.dumps(negotiate.json_schema(schema), indent=1)
    return [{"role": "system", "content": prompts.render("system", prompts_dir)}, {"role": "user", "content": user}]


class Summary(BaseModel):
    """What a summarising call returns for one part of a long source."""

    model_config = ConfigDict(extra="forbid")
    summary: str = Field(description="What this part says about the topic, briefly; empty if nothing.")
    passages: list[str] = Field(description="Sentences about the topic copied word for word from the text.")


def summary_messages(topic: str, src: Any, part: int, parts: int, text: str, prompts_dir: Path | None, *,
                     words: int, passages: int, mode: str) -> list[dict[str, str]]:
    user = prompts.render("summarise", prompts_dir, topic=topic, title=src.title, url=src.url, part=str(part),
                          parts=str(parts), text=text, words=str(words), passages=str(passages))
    if mode == "json_object":
        user += "\n\n## JSON Schema\n\n" + json.dumps(negotiate.json_schema(Summary), indent=1)
    return [{"role": "system", "content": prompts.render("system", prompts_dir)}, {"role": "user", "content": user}]


def digest(partials: list[tuple[str, list[str]]]) -> str:
    """The prompts' view of a summarised source: its summaries, then the passages that can be quoted."""
    summary = "\n".join(f"- {s.strip()}" for s, _ in partials if s.strip()) or "- (nothing about the topic)"
    kept = [p.strip() for _, ps in partials for p in ps if p.strip()]
    out = "Summary of a long source (not quotable):\n" + summary
    if kept:
        out += "\n\nPassages copied from the source (quote only these):\n" + "\n".join(f"\"{p}\"" for p in kept)
    return out


def search_messages(agent: Agent, topic: str) -> list[dict[str, str]]:
    """The web search call: the plugin searches; the answer itself is not used, only its citations."""
    return [{"role": "user", "content": f"Find reference pages about this World of Warcraft topic: {topic}\n"
             f"(knowledge area: {agent.description}). Reply with one short line per page."}]


def repair_messages(original: list[dict[str, str]], output: str, error: str,
                    prompts_dir: Path | None) -> list[dict[str, str]]:
    echo = clean_text(output[:MAX_ECHO]) if isinstance(output, str) else repr(output)[:MAX_ECHO]
    user = prompts.render("repair", prompts_dir, error=error, output=echo)
    return [*original, {"role": "assistant", "content": echo}, {"role": "user", "content": user}]


# Bounds on what parse reads. An answer is at most llm.MAX_ANSWER_CHARS long when it is
# recorded; the same bound here covers a hand-edited checkpoint. No record nests deeper than
# a few levels: the depth bound keeps json (and pydantic after it) far from the recursion limit.
MAX_PARSE_CHARS = 1_000_000
MAX_DEPTH = 32
_FENCE = "```"
_REPLACEMENT = "\ufffd"


def clean_text(text: str) -> str:
    """``text`` with every lone surrogate (half of a split character, which UTF-8 cannot hold)
    replaced by U+FFFD; a text without one is returned as it is."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # UTF-16 pairs up surrogates that belong together; only the lone ones are replaced.
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return text


def clean(value: Any) -> Any:
    """``clean_text`` over every string of a JSON-shaped value (keys included)."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, list):
        return [clean(v) for v in value]
    if isinstance(value, dict):
        return {clean_text(k) if isinstance(k, str) else k: clean(v) for k, v in value.items()}
    return value


def unfence(content: str) -> str:
    """The text inside one Markdown code fence (```` ```json ... ``` ````) around the whole
    answer, else the answer as it is. String methods only: linear in the answer's length."""
    text = content.strip()
    if len(text) < 2 * len(_FENCE) or not text.startswith(_FENCE) or not text.endswith(_FENCE):
        return content
    inner = text[len(_FENCE):-len(_FENCE)]
    if inner.startswith("json"):
        inner = inner[4:]
    return inner.strip()


def nesting(text: str, limit: int) -> int:
    """How deep JSON ``text`` nests its arrays and objects, counted up to ``limit + 1``.

    One pass over the text, skipping strings; stops as soon as ``limit`` is passed."""
    if text.count("[") + text.count("{") <= limit:
        return min(limit, text.count("[") + text.count("{"))  # cannot nest deeper than it opens
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch == "[" or ch == "{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    break
        elif ch == "]" or ch == "}":
            depth -= 1
    return deepest


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number {text[:20]}... is out of range")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse(content: Any, model: type[BaseModel]) -> tuple[dict[str, Any] | None, str | None]:
    """(record, None) when ``content`` is a valid record, else (None, what is wrong).

    Never raises, and takes time linear in the answer's length (bounded by
    ``MAX_PARSE_CHARS``): a recorded answer always reaches a verdict. Lone surrogates in the
    record's strings are replaced by U+FFFD."""
    if not isinstance(content, str):
        return None, f"the answer is not text (a JSON {type(content).__name__})"
    if len(content) > MAX_PARSE_CHARS:
        return None, f"the answer is larger than {MAX_PARSE_CHARS:,} characters"
    text = unfence(content)
    if nesting(text, MAX_DEPTH) > MAX_DEPTH:
        return None, f"not a record: JSON nested deeper than {MAX_DEPTH} levels"
    try:
        raw = json.loads(text, parse_float=_finite, parse_constant=_no_constant)
    except ValueError as exc:  # JSONDecodeError, and numbers past int's digit limit or float's range
        return None, clean_text(f"not valid JSON: {exc}")
    except RecursionError:  # not reached under MAX_DEPTH; kept so that parse can never raise
        return None, "not a record: JSON nested too deep"
    try:
        record = model.model_validate(clean(raw))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in exc.errors()[:10])
        return None, clean_text(f"does not match the schema: {problems}"[:2000])
    except (ValueError, TypeError, RecursionError) as exc:
        return None, clean_text(f"does not match the schema: {exc}"[:2000])
    return record.model_dump(mode="json"), None
