"""``mythline logs`` (tail, JSON, follow) and ``mythline agents``; neither loads the LLM stack."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from probe import run_app
from typer.testing import CliRunner

from mythline_cli import paths
from mythline_cli.cli import app
from mythline_cli.cli.logs import follow, snapshot
from mythline_cli.config import load_settings
from mythline_cli.files import append_jsonl
from mythline_cli.status import collect

runner = CliRunner()
AGENT = "world-npcs"
T0 = datetime(2026, 11, 25, 10, 0, tzinfo=timezone.utc)


def local(ts: datetime) -> str:
    return ts.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def event(i: int, name: str = "run-start", **data: Any) -> dict[str, Any]:
    return {"ts": (T0 + timedelta(seconds=i)).isoformat(), "agent": AGENT, "run_id": "r1", "event": name,
            "seq": i, **data}


def write_events(count: int) -> list[dict[str, Any]]:
    written = [event(i) for i in range(count)]
    for e in written:
        append_jsonl(paths.events(AGENT), e, fsync=False)
    return written


# -- logs ------------------------------------------------------------------------------------

def test_logs_shows_the_last_20_by_default_and_n_on_request() -> None:
    write_events(30)
    result = runner.invoke(app, ["logs", AGENT])
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 20
    assert lines[0] == f"{local(T0 + timedelta(seconds=10))}  run-start      seq=10"
    assert lines[-1] == f"{local(T0 + timedelta(seconds=29))}  run-start      seq=29"
    assert runner.invoke(app, ["logs", AGENT, "-n", "3"]).stdout.splitlines() == lines[-3:]
    assert runner.invoke(app, ["logs", AGENT, "-n", "0"]).stdout == ""


def test_each_event_shows_its_key_facts() -> None:
    samples = [
        event(0, "llm-call", step="research", attempt=1, ok=True, prompt_tokens=400, completion_tokens=200,
              usd=0.0012, latency_s=2.13, estimate={"prompt_tokens": 500, "max_output_tokens": 500, "usd": 0.002}),
        event(1, "llm-request", step="audit", attempt=1, estimate={"prompt_tokens": 300, "max_output_tokens": 500,
                                                                     "usd": 0.0015}),
        event(2, "verdict", topic="Jaina Proudmoore", attempt=2, score=0.62, min_score=0.7, passed=False,
              issues=["a", "b"]),
        event(3, "error", step="research", error="provider said 401: check OPENROUTER_API_KEY", status=401),
        event(4, "run-end", outcome="stored", exit_code=0, duration_s=12.5),
        event(5, "alert", kind="budget-warn", message="world-npcs is at 80% of its daily cap", data={}),
    ]
    for e in samples:
        del e["seq"]
        append_jsonl(paths.events(AGENT), e)
    lines = runner.invoke(app, ["logs", AGENT]).stdout.splitlines()
    facts = [ln.split("  ", 1)[1] for ln in lines]
    assert facts == [
        "llm-call       step=research attempt=1 tokens=600 cost=$0.0012 latency=2.1s",
        "llm-request    step=audit attempt=1 tokens<=800 cost<=$0.0015",
        'verdict        topic="Jaina Proudmoore" attempt=2 score=0.62 (fail) issues=2',
        'error          step=research status=401 error="provider said 401: check OPENROUTER_API_KEY"',
        "run-end        outcome=stored exit_code=0 duration=12.5s",
        'alert          kind=budget-warn message="world-npcs is at 80% of its daily cap"',
    ]
    assert lines[0].startswith(local(T0) + "  ")


def test_json_prints_the_raw_lines_and_skips_a_torn_tail() -> None:
    written = write_events(5)
    with paths.events(AGENT).open("ab") as fh:
        fh.write(b'{"ts": "2026-11-25T10:00:09+00:00", "event": "ll')  # a write that never finished
    result = runner.invoke(app, ["logs", AGENT, "--json", "-n", "2"])
    assert result.exit_code == 0
    assert [json.loads(x) for x in result.stdout.splitlines()] == written[-2:]


def test_an_agent_without_events_prints_nothing() -> None:
    result = runner.invoke(app, ["logs", AGENT])
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "")


def test_an_unknown_agent_is_exit_2() -> None:
    result = runner.invoke(app, ["logs", "world-npc"])
    assert result.exit_code == 2
    assert result.stderr.startswith("mythline: unknown agent 'world-npc' (did you mean world-npcs?); the fleet is: world-zones, world-npcs")


def test_follow_reads_appends_truncation_and_rotation_from_a_writer_thread() -> None:
    path = paths.events(AGENT)
    write_events(3)
    shown, offset = snapshot(path, 2)
    assert [e["seq"] for e in shown] == [1, 2]

    got: list[int] = []
    seen = threading.Condition()
    deadline = time.monotonic() + 60  # a guard against hanging, not a timing assertion

    def until(count: int) -> None:
        with seen:
            seen.wait_for(lambda: len(got) >= count, timeout=60)

    def writer() -> None:
        append_jsonl(path, event(3))
        with path.open("ab") as fh:  # a torn line is completed later: shown once, whole
            fh.write(json.dumps(event(4)).encode()[:20])
        until(1)
        with path.open("ab") as fh:
            fh.write(json.dumps(event(4)).encode()[20:] + b"\n")
        until(2)
        path.write_bytes((json.dumps(event(5)) + "\n").encode())  # truncated and rewritten shorter
        until(3)
        rotated = path.with_name("events.jsonl.new")
        rotated.write_bytes((json.dumps(event(6)) + "\n" + json.dumps(event(7)) + "\n").encode())
        os.replace(rotated, path)  # a new file under the name

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    for e in follow(path, offset=offset, poll=0.01,
                    stop=lambda: len(got) >= 5 or time.monotonic() > deadline):
        with seen:
            got.append(e["seq"])
            seen.notify_all()
    thread.join(timeout=60)
    assert got == [3, 4, 5, 6, 7]


def test_follow_stops_when_told_and_waits_for_a_missing_file() -> None:
    looks: list[float] = []
    stop_after = iter(range(4))
    out = list(follow(paths.events(AGENT), offset=0, poll=0.25, stop=lambda: next(stop_after, 99) >= 3,
                      sleep=looks.append))
    assert out == [] and looks == [0.25, 0.25, 0.25]


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child is POSIX")
def test_follow_in_the_real_command_prints_new_events_and_ctrl_c_exits_130() -> None:
    write_events(3)
    proc = subprocess.Popen([sys.executable, "-m", "mythline_cli", "logs", AGENT, "--follow", "-n", "1",
                             "--poll", "0.05"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
    try:
        assert lines.get(timeout=60).rstrip("\n").endswith("seq=2")
        append_jsonl(paths.events(AGENT), event(3, "store", topic="Thrall", action="created"))
        assert lines.get(timeout=60).rstrip("\n").endswith("store          topic=Thrall action=created seq=3")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.stderr.read() == ""


# -- agents ----------------------------------------------------------------------------------

def configure() -> None:
    Path("mythline.toml").write_text(
        '[provider]\nmodel = "base/model"\n'
        '[agents.world-npcs]\ninterval = "2h"\ndaily_usd = 1.25\ndaily_tokens = "none"\nmodel = "npc/model"\n'
        'extra_topics = ["Rexxar", "Thrall"]\n'
        "[agents.world-lore]\nenabled = false\n", encoding="utf-8")


def test_agents_json_has_settings_queue_and_next_due_like_status() -> None:
    configure()
    finished = datetime.now(timezone.utc) - timedelta(minutes=10)
    hb = paths.heartbeat(AGENT)
    hb.parent.mkdir(parents=True)
    hb.write_text(json.dumps({"state": "ok", "finished": finished.isoformat(),
                              "topics": {"done": 4, "pending": 0, "quarantined": 1}}), encoding="utf-8")
    result = runner.invoke(app, ["agents", "--json"])
    assert result.exit_code == 0, result.stderr
    rows = {r["agent"]: r for r in json.loads(result.stdout)}
    assert list(rows) == load_settings().agent_names
    npcs = rows[AGENT]
    assert npcs["enabled"] is True and npcs["interval"] == "2h" and npcs["interval_s"] == 7200
    assert npcs["daily_usd"] == 1.25 and npcs["daily_tokens"] is None and npcs["model"] == "npc/model"
    assert npcs["topics"] == {"total": 16, "done": 4, "pending": 11, "quarantined": 1}  # 15 built in + Rexxar
    assert npcs["next_due"] == (finished + timedelta(hours=2)).isoformat()
    status_row = {r["agent"]: r for r in collect(load_settings())["agents"]}[AGENT]
    assert npcs["next_due"] == status_row["next_due"] and npcs["topics"]["pending"] == status_row["topics"]["pending"]
    assert rows["world-lore"]["enabled"] is False
    assert rows["world-zones"]["model"] == "base/model" and rows["world-zones"]["daily_usd"] == 0.5
    assert rows["world-zones"]["next_due"] is None
    assert npcs["description"].startswith("Named characters of Warcraft")


def test_agents_table() -> None:
    configure()
    result = runner.invoke(app, ["agents"])
    assert result.exit_code == 0, result.stderr
    text = result.stdout
    row = next(ln for ln in text.splitlines() if " world-npcs " in ln)
    cells = re.split(r"\s{2,}", row.strip())  # columns are at least two spaces apart
    assert cells[:8] == ["world-npcs", "yes", "2h", "-", "$1.25", "none", "0/16/0", "npc/model"]
    lore = next(ln for ln in text.splitlines() if " world-lore " in ln)
    assert re.split(r"\s{2,}", lore.strip())[:3] == ["world-lore", "no", "30m"]


def test_agents_with_a_bad_config_is_exit_2() -> None:
    Path("mythline.toml").write_text('[agents.world-npc]\ninterval = "1h"\n', encoding="utf-8")
    result = runner.invoke(app, ["agents"])
    assert result.exit_code == 2 and "unknown agent 'world-npc'" in result.stderr


# -- cheap imports ----------------------------------------------------------------------------

@pytest.mark.parametrize("args,code", [
    (["watchdog"], 1), (["watchdog", "--json"], 1), (["logs", AGENT], 0), (["logs", AGENT, "--json"], 0),
    (["agents"], 0), (["agents", "--json"], 0),
], ids=lambda a: " ".join(a) if isinstance(a, list) else str(a))
def test_these_commands_do_not_import_the_llm_stack(args: list[str], code: int) -> None:
    write_events(3)
    stale = (datetime.now(timezone.utc) - timedelta(days=1)).isoformat()
    paths.heartbeat(AGENT).write_text(json.dumps({"state": "ok", "finished": stale}), encoding="utf-8")
    report = run_app(args)
    assert report.returncode == code, report.stderr
    assert report.llm_stack == set()


# -- logs --output: what the scheduler captured ----------------------------------------------

def test_output_shows_the_scheduled_log_even_with_a_broken_config() -> None:
    paths.log_dir().mkdir(parents=True)
    paths.agent_log(AGENT).write_text("".join(f"line {i}\n" for i in range(30))
                                      + "mythline: MYTHLINE_TEST_KEY is not set\n", encoding="utf-8")
    Path("mythline.toml").write_text("[provider\n", encoding="utf-8")  # unreadable
    result = runner.invoke(app, ["logs", AGENT, "--output", "-n", "2"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "line 29\nmythline: MYTHLINE_TEST_KEY is not set\n"
    assert runner.invoke(app, ["logs", "fleet", "--output"]).stdout == ""  # no such log yet: nothing


def test_output_refuses_follow_and_odd_names() -> None:
    follow_ = runner.invoke(app, ["logs", AGENT, "--output", "--follow"])
    assert follow_.exit_code == 2 and "tail -f" in follow_.stderr
    odd = runner.invoke(app, ["logs", "../etc", "--output"])
    assert odd.exit_code == 2 and "is not an agent name" in odd.stderr
