"""The status table: a big fleet's table is laid out as Rich lays it out, and the status row is one typed shape."""

from __future__ import annotations

import io
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from rich.cells import cell_len
from rich.console import Console
from rich.text import Text

from mythline_cli import killswitch, paths, statusview
from mythline_cli.config import load_settings
from mythline_cli.fleet.topics import TOPICS
from mythline_cli.status import StatusReport, StatusRow, TopicCounts, collect

from helpers import mythline

NOW = datetime.now(timezone.utc).replace(microsecond=0)


def fleet(n: int) -> Path:
    kinds = list(TOPICS)
    path = Path.cwd() / "mythline.toml"
    path.write_text("".join(f'[agents.agent-{i:03d}]\nkind = "{kinds[i % 10]}"\ntopics = ["Topic {i}", "Other {i}"]\n'
                            for i in range(n)), encoding="utf-8")
    return path


def beat(agent: str, state: str, *, minutes_ago: int, failures: int = 0, error: str | None = None) -> None:
    end = NOW - timedelta(minutes=minutes_ago)
    path = paths.heartbeat(agent)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"agent": agent, "state": state, "started": end.isoformat(),
                                "finished": end.isoformat(), "last_success": end.isoformat(),
                                "last_error": error, "consecutive_failures": failures,
                                "topics": {"done": minutes_ago % 2, "pending": 1, "quarantined": 0}}),
                    encoding="utf-8")


def lived_in(n: int) -> StatusReport:
    fleet(n)
    states = ["ok", "failed", "over-budget", "queue-empty", "ok", None]
    for i in range(n):
        state = states[i % len(states)]
        if state is not None:
            beat(f"agent-{i:03d}", state, minutes_ago=3 + 7 * i % 50, failures=2 if state == "failed" else 0,
                 error=f"agent-{i:03d}: provider said no" if state == "failed" else None)
    # A note in another script and an emoji (two cells wide): widths are cells, not characters.
    killswitch.pause("agent-004", "Prüfung 🐉")
    return collect(load_settings(), now=NOW)


def as_text(renderable: object, *, width: int) -> str:
    buffer = io.StringIO()
    Console(file=buffer, width=width, soft_wrap=True, highlight=False).print(renderable)
    return buffer.getvalue()


def styled(renderable: object, *, width: int) -> list[tuple[int, int, str, str]]:
    """(line, column, character, style) of every visible character on a colour terminal: how
    Rich splits runs of a style, and the style of blanks, are not seen there."""
    buffer = io.StringIO()
    Console(file=buffer, width=width, soft_wrap=True, highlight=False, force_terminal=True,
            color_system="truecolor").print(renderable)
    marks = []
    for line, text in enumerate(Text.from_ansi(buffer.getvalue()).split("\n")):
        column = 0
        for seg in text.render(Console(width=10_000)):
            for char in seg.text:
                if not char.isspace():
                    marks.append((line, column, char, str(seg.style or "")))
                column += cell_len(char)
    return marks


@pytest.mark.parametrize("width", [160, 100])
def test_a_big_table_is_drawn_as_rich_draws_it(width: int) -> None:
    data = lived_in(statusview.SUMMARY_ABOVE + 10)
    wide = width >= 110
    columns, body, caption = statusview.table_parts(data, data["agents"], wide=wide, now=NOW)
    padding = 1 if wide else 0
    plain = statusview._plain_table("Mythline fleet", columns, body, caption, padding=padding, width=width)
    assert plain is not None
    rich = statusview._rich_table("Mythline fleet", columns, body, caption, padding=padding)
    assert as_text(plain, width=width) == as_text(rich, width=width)
    assert styled(plain, width=width) == styled(rich, width=width)


def test_a_table_too_wide_for_the_terminal_is_left_to_rich() -> None:
    data = lived_in(statusview.SUMMARY_ABOVE + 10)
    columns, body, caption = statusview.table_parts(data, data["agents"], wide=False, now=NOW)
    assert statusview._plain_table("Mythline fleet", columns, body, caption, padding=0, width=50) is None


def test_status_all_lists_every_agent_with_its_error() -> None:
    data = lived_in(statusview.SUMMARY_ABOVE + 10)
    result = mythline("status", "--all")
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    names = [row["agent"] for row in data["agents"]]
    assert [ln.split()[0] for ln in lines if ln.startswith(" ") and ln.split() and ln.split()[0] in names] == names
    errors = [ln for ln in lines if ln.startswith("agent-")]
    assert errors == [f"{row['agent']}: provider said no" for row in data["agents"] if row["last_error"]]
    assert len(errors) == 10
    assert any(ln.startswith(" agent-004") and "paused (Prüfung 🐉, since " in ln for ln in lines)


def test_every_row_has_exactly_the_typed_fields() -> None:
    data = lived_in(12)
    fields = StatusRow.__required_keys__
    assert all(set(row) == fields for row in data["agents"])
    assert set(data["agents"][0]["topics"]) == TopicCounts.__required_keys__
    assert set(data) == StatusReport.__required_keys__
    printed = json.loads(mythline("status", "--json").stdout)
    assert set(printed) == StatusReport.__required_keys__
    assert all(set(row) == fields for row in printed["agents"])
