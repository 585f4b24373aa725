"""Research: the messages that ask for a record, and turning an answer into one."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from . import prompts
from .config import Agent

MAX_ECHO = 6000


def response_format(model: type[BaseModel], mode: str, name: str | None = None) -> dict[str, Any]:
    """``json_schema`` structured output for the model, or plain ``json_object``."""
    if mode == "json_object":
        return {"type": "json_object"}
    return {"type": "json_schema",
            "json_schema": {"name": name or model.__name__, "strict": True, "schema": model.model_json_schema()}}


def messages(agent: Agent, topic: str, feedback: list[dict[str, Any]], prompts_dir: Path | None,
             schema: type[BaseModel], mode: str) -> list[dict[str, str]]:
    text = "None — this is the first attempt."
    if feedback:
        text = "\n".join(f"- attempt {f['attempt']}: {issue}" for f in feedback for issue in f["issues"])
    user = prompts.render("research", prompts_dir, agent_description=agent.description, topic=topic, feedback=text)
    if mode == "json_object":
        # Without structured outputs the schema has to travel in the prompt.
        user += "\n\n## JSON Schema\n\n" + json.dumps(schema.model_json_schema(), indent=1)
    return [{"role": "system", "content": prompts.render("system", prompts_dir)}, {"role": "user", "content": user}]


def repair_messages(original: list[dict[str, str]], output: str, error: str,
                    prompts_dir: Path | None) -> list[dict[str, str]]:
    user = prompts.render("repair", prompts_dir, error=error, output=output[:MAX_ECHO])
    return [*original, {"role": "assistant", "content": output[:MAX_ECHO]}, {"role": "user", "content": user}]


_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)


def parse(content: str, model: type[BaseModel]) -> tuple[dict[str, Any] | None, str | None]:
    """(record, None) when ``content`` is a valid record, else (None, what is wrong)."""
    match = _FENCE.match(content)
    text = match.group(1) if match else content
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, f"not valid JSON: {exc}"
    try:
        record = model.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in exc.errors()[:10])
        return None, f"does not match the schema: {problems}"
    return record.model_dump(mode="json"), None
