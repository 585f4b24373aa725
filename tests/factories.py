"""Valid records for every agent, built from the record schemas themselves."""

from __future__ import annotations

import json
import types
import typing
from typing import Any, Literal

from pydantic import BaseModel

from mythline_cli.fleet.schemas import RECORD_MODELS


def _value(annotation: Any, field: str, topic: str) -> Any:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return typing.get_args(annotation)[0]
    if origin in (list, tuple):
        (inner,) = typing.get_args(annotation)[:1]
        return [_value(inner, field, topic)]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return build(annotation, topic)
    if origin in (typing.Union, types.UnionType):
        return _value(typing.get_args(annotation)[0], field, topic)
    if annotation is str:
        return f"{field} of {topic}"
    if annotation is int:
        return 1
    if annotation is float:
        return 0.9
    if annotation is bool:
        return True
    raise TypeError(f"no sample for {annotation!r}")


def build(model: type[BaseModel], topic: str) -> dict[str, Any]:
    out = {name: _value(info.annotation, name, topic) for name, info in model.model_fields.items()}
    return out


def record(agent: str, topic: str, **changes: Any) -> dict[str, Any]:
    """A record that passes the schema and the rules of an ungrounded agent (no sources)."""
    data = build(RECORD_MODELS[agent], topic)
    data.update(name=topic, aliases=[], confidence=0.9, conflicts=[], sources=[], quotes=[])
    data.update(changes)
    RECORD_MODELS[agent].model_validate(data)  # a factory that builds invalid records is a broken test
    return data


def record_json(agent: str, topic: str, **changes: Any) -> str:
    return json.dumps(record(agent, topic, **changes))
