"""The structured-output shapes a request carries (negotiate.response_format)."""

from __future__ import annotations

import pytest

from mythline_cli import negotiate
from mythline_cli.fleet.schemas import RECORD_MODELS
from mythline_cli.research import Summary
from mythline_cli.validate import Audit

MODELS = [*RECORD_MODELS.values(), Audit, Summary]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_the_schema_is_the_models_own_every_time_it_is_asked_for(model) -> None:
    assert negotiate.json_schema(model) == model.model_json_schema()
    assert negotiate.json_schema(model) == model.model_json_schema()  # the kept copy, unchanged


def test_each_caller_gets_its_own_copy_of_the_schema() -> None:
    first = negotiate.json_schema(Audit)
    first["properties"].clear()
    first["added"] = True
    assert negotiate.json_schema(Audit) == Audit.model_json_schema()


@pytest.mark.parametrize("mode, expected", [
    ("json_schema", {"type": "json_schema",
                     "json_schema": {"name": "audit", "strict": True, "schema": Audit.model_json_schema()}}),
    ("json_object_schema", {"type": "json_object", "schema": Audit.model_json_schema()}),
    ("json_object", {"type": "json_object"}),
])
def test_each_step_of_the_ladder_has_its_shape(mode, expected) -> None:
    assert negotiate.response_format(Audit, mode, name="audit") == expected
    assert negotiate.response_format(Audit, mode, name="audit") == expected
