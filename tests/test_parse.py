"""Turning an answer into a record: bounded work on any text, and never an exception."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mythline_cli import research
from mythline_cli.fleet.schemas import RECORD_MODELS
from mythline_cli.validate import Audit

from factories import record_json

NPC = RECORD_MODELS["world-npcs"]

# The shapes that made the old fence pattern backtrack for hours: an opening fence, a long run
# of whitespace and no closing fence; and JSON nested past the recursion limit.
def adversarial(n: int) -> dict[str, str]:
    return {
        "fence-spaces": "```json" + " " * n,
        "fence-newlines": "```\n" + "\n" * n + "x",
        "fence-spaces-then-text": "```" + " " * n + "{" + " " * n,
        "fences-only": "```" * n,
        "nested-arrays": "[" * n + "]" * n,
        "nested-objects": '{"a":' * n + "1" + "}" * n,
        "nested-unclosed": "[" * n,
        "strings-with-brackets": '["' + "[" * n + '"]',
    }


def test_a_fenced_record_is_read():
    text = record_json("world-npcs", "Thrall")
    for wrapped in (text, f"```json\n{text}\n```", f"  ```\n{text}```  \n", f"```json{text}```"):
        record, error = research.parse(wrapped, NPC)
        assert error is None and record["name"] == "Thrall"


@pytest.mark.parametrize("content,problem", [
    ("```json" + " " * 20_000, "not valid JSON"),
    ("```" + "\n" * 20_000, "not valid JSON"),
    ("[" * 5000 + "]" * 5000, "nested deeper than"),
    ('{"a":' * 5000 + "1" + "}" * 5000, "nested deeper than"),
    ('{"score": 1' + "0" * 5000 + ', "issues": []}', "not valid JSON"),
    ('{"score": 1e999, "issues": []}', "out of range"),
    ('{"score": NaN, "issues": []}', "NaN is not a JSON number"),
    ('{"score": 0.5, "issues": [], "\ud800": 1}', "does not match the schema"),
    ("\x00", "not valid JSON"),
    ("\ud83d", "not valid JSON"),
    (42, "the answer is not text (a JSON int)"),
    (None, "the answer is not text"),
    ("x" * 1_000_001, "larger than 1,000,000 characters"),
], ids=["fence-spaces", "fence-newlines", "deep-arrays", "deep-objects", "huge-int", "huge-float", "nan",
        "surrogate-key", "nul", "lone-surrogate", "a-number", "none", "too-large"])
def test_hostile_text_is_a_problem_not_an_exception(content, problem):
    record, error = research.parse(content, Audit)
    assert record is None and problem in error
    error.encode("utf-8")  # the problem itself goes into events and feedback: always writable


def test_lone_surrogates_in_a_record_become_replacement_characters():
    record, error = research.parse('{"score": 0.5, "issues": ["split \\ud83d emoji", "whole \\ud83d\\ude00"]}', Audit)
    assert error is None
    assert record["issues"] == ["split \ufffd emoji", "whole \U0001f600"]
    json.dumps(record, ensure_ascii=False).encode("utf-8")


def test_nesting_is_counted_outside_strings_only():
    assert research.nesting('["[[[[[[", {"a": "{{{{{{{"}]', 3) == 2
    assert research.nesting('["\\"[[[[[["]', 3) == 1
    assert research.nesting("[" * 10, 3) == 4  # stops just past the limit


def test_parsing_adversarial_answers_stays_linear_under_a_hard_cpu_limit():
    # Each shape at 20,000 and at 200,000 characters: the old pattern needed about two hours
    # of CPU for the first. A kernel CPU limit (not a clock) ends a process that backtracks.
    script = textwrap.dedent("""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_CPU, (20, 20))
        sys.path.insert(0, sys.argv[1])
        from test_parse import adversarial
        from mythline_cli import research
        from mythline_cli.validate import Audit
        for n in (20_000, 200_000):
            for name, text in adversarial(n).items():
                record, error = research.parse(text, Audit)
                assert record is None and error, name
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", script, str(Path(__file__).parent)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
