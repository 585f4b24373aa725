"""``mythline logs AGENT``: an agent's events.jsonl, readable, with ``--follow``."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import typer

from ..errors import ExitCode
from ._util import boundary, is_tty, out, settings

HELP = """Show AGENT's recent events: one line each with the local time, the event and its key facts.

Reads agents/AGENT/events.jsonl under the state home (run start and end, every LLM call
with tokens and cost, verdicts and scores, stored records, quarantines, alerts, errors).

With --output, the last lines the scheduler captured from AGENT's runs instead
(logs/AGENT.log: what a run printed, such as the one line of a run that could not start;
`fleet` names the log of `run --due`). It needs no readable config.

\b
Examples:
  mythline logs world-npcs              # the last 20 events
  mythline logs world-npcs -n 100       # the last 100
  mythline logs world-npcs --follow     # keep printing new events; Ctrl-C to stop
  mythline logs world-npcs --json       # the raw JSON lines, for jq
  mythline logs world-npcs --output     # what cron or Task Scheduler captured
"""

STYLES = {"error": "red", "alert-failed": "red", "invalid-output": "red", "alert": "bold yellow", "store": "green",
          "quarantine": "magenta", "run-start": "cyan", "run-end": "cyan", "llm-retry": "yellow",
          "corrupt-state": "red", "budget-reset": "blue"}
# Shown first, in this order, when an event has them; anything else scalar follows.
ORDER = ("step", "topic", "attempt", "outcome", "exit_code", "action", "kind", "channel", "message", "status",
         "error")
HIDDEN = {"ts", "agent", "run_id", "event", "estimate", "prompt_tokens", "completion_tokens", "usd", "score",
          "min_score", "passed", "issues", "latency_s", "duration_s", "ok", "data", "once_key", "channels",
          "pid", "base_url", "response_id", "cost_source"}
MAX_VALUE = 200


def local_time(ts: Any) -> str:
    try:
        return datetime.fromisoformat(str(ts)).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return "????-??-?? ??:??:??"


def _value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = " ".join(text.split())
    if len(text) > MAX_VALUE:
        text = text[: MAX_VALUE - 1] + "…"
    return json.dumps(text, ensure_ascii=False) if (" " in text or not text) else text


def facts(event: dict[str, Any]) -> list[str]:
    """The key facts of one event as ``key=value`` strings."""
    from ..money import usd

    parts: list[str] = []
    for key in ORDER:
        if event.get(key) is not None:
            parts.append(f"{key}={_value(event[key])}")
    if isinstance(event.get("prompt_tokens"), int) and isinstance(event.get("completion_tokens"), int):
        parts.append(f"tokens={event['prompt_tokens'] + event['completion_tokens']}")
    elif isinstance(event.get("estimate"), dict):
        est = event["estimate"]
        try:
            parts.append(f"tokens<={int(est['prompt_tokens']) + int(est['max_output_tokens'])}")
        except (KeyError, TypeError, ValueError):
            pass
        if isinstance(est.get("usd"), (int, float)):
            parts.append(f"cost<={usd(est['usd'])}")
    if isinstance(event.get("usd"), (int, float)):
        parts.append(f"cost={usd(event['usd'])}")
    if isinstance(event.get("score"), (int, float)):
        passed = event.get("passed")
        verdict = {True: " (pass)", False: " (fail)"}.get(passed, "") if isinstance(passed, bool) else ""
        parts.append(f"score={event['score']:.2f}{verdict}")
    if isinstance(event.get("issues"), list) and event["issues"]:
        parts.append(f"issues={len(event['issues'])}")
    for key in ("latency_s", "duration_s"):
        if isinstance(event.get(key), (int, float)):
            parts.append(f"{key[:-2]}={event[key]:.1f}s")
    if event.get("ok") is False and "error" not in event:
        parts.append("ok=false")
    for key, value in event.items():
        if key not in HIDDEN and key not in ORDER and isinstance(value, (str, int, float, bool)):
            # An amount of money reads as one (reserved_usd=$0.0078), not as a float's digits.
            money = key.endswith("_usd") and type(value) in (int, float)
            parts.append(f"{key}={usd(float(value)) if money else _value(value)}")
    return parts


def style_of(event: dict[str, Any]) -> str:
    name = str(event.get("event"))
    if name == "llm-call" and event.get("ok") is False:
        return "red"
    if name == "verdict":
        return "green" if event.get("passed") else "red"
    return STYLES.get(name, "")


def line(event: dict[str, Any]) -> str:
    return f"{local_time(event.get('ts'))}  {event.get('event', '?')!s:<14} {' '.join(facts(event))}".rstrip()


class Printer:
    """Prints events as plain lines, coloured lines (terminal) or raw JSON lines."""

    def __init__(self, *, as_json: bool, colour: bool) -> None:
        self.as_json = as_json
        self.console = out() if colour and not as_json else None

    def __call__(self, event: dict[str, Any]) -> None:
        if self.as_json:
            text = json.dumps(event, ensure_ascii=False, separators=(",", ":"))
        elif self.console is not None:
            from rich.text import Text

            head = Text()
            head.append(f"{local_time(event.get('ts'))}  ", style="dim")
            head.append(f"{event.get('event', '?')!s:<14} ", style=style_of(event) or "bold")
            head.append(" ".join(facts(event)))
            self.console.print(head)
            return
        else:
            text = line(event)
        sys.stdout.write(text + "\n")
        sys.stdout.flush()  # --follow into a pipe: show each event as it comes


def _line_start(path: Path, size: int) -> int:
    """The offset just after the last newline before ``size`` (a torn tail is read again later)."""
    with path.open("rb") as fh:
        pos = size
        while pos > 0:
            start = max(0, pos - 65536)
            fh.seek(start)
            chunk = fh.read(pos - start)
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                return start + cut + 1
            pos = start
    return 0


def snapshot(path: Path, n: int) -> tuple[list[dict[str, Any]], int]:
    """The last ``n`` events and the offset where following should start, consistent with each other."""
    from ..files import tail_jsonl

    for _ in range(20):
        try:
            before = path.stat().st_size
        except FileNotFoundError:
            return [], 0
        events = tail_jsonl(path, n)
        try:
            after = path.stat().st_size
        except FileNotFoundError:
            return events, 0
        # The file only grows between rotations: equal sizes mean the tail saw exactly `before` bytes.
        if after == before:
            return events, _line_start(path, before)
    return events, _line_start(path, after)


def follow(path: Path, *, offset: int, poll: float = 0.5, stop: Callable[[], bool] | None = None,
           sleep: Callable[[float], None] = time.sleep) -> Iterator[dict[str, Any]]:
    """Yield events appended to ``path`` from ``offset`` on, until ``stop()`` is true (or forever).

    Truncation (the file got shorter) and rotation (a new file under the name) restart at
    the new file's beginning; a line is yielded only once its newline is written.
    """
    pos, buf = offset, b""
    ident = _identity(path)
    while stop is None or not stop():
        try:
            st = path.stat()
        except FileNotFoundError:
            pos, buf, ident = 0, b"", None
            sleep(poll)
            continue
        if (ident is not None and (st.st_dev, st.st_ino) != ident) or st.st_size < pos:
            pos, buf = 0, b""
        ident = (st.st_dev, st.st_ino)
        if st.st_size == pos:
            sleep(poll)
            continue
        with path.open("rb") as fh:
            fh.seek(pos)
            chunk = fh.read(st.st_size - pos)
        pos += len(chunk)
        buf += chunk
        *complete, buf = buf.split(b"\n")
        for raw in complete:
            try:
                obj = json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError):
                continue  # a torn line, or the fresh-line fix-up of one
            if isinstance(obj, dict):
                yield obj


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def show_logs(agent: str, *, n: int, follow_: bool, as_json: bool, poll: float,
              stop: Callable[[], bool] | None = None) -> int:
    """Print the events; returns how many were printed."""
    from .. import paths, statedocs

    docs = statedocs.backend()
    printer = Printer(as_json=as_json, colour=is_tty())
    if docs.shared:
        return _show_shared(docs, agent, n=n, follow_=follow_, as_json=as_json, poll=poll, stop=stop,
                            printer=printer)
    path = paths.events(agent)
    events, offset = snapshot(path, n)
    for event in events:
        printer(event)
    count = len(events)
    if not events and not follow_ and is_tty() and not as_json:
        out().print(f"no events yet for {agent} ({path})", markup=False)
    if follow_:
        for event in follow(path, offset=offset, poll=poll, stop=stop):
            printer(event)
            count += 1
    return count


def _show_shared(docs: Any, agent: str, *, n: int, follow_: bool, as_json: bool, poll: float,
                 stop: Callable[[], bool] | None, printer: Printer, sleep: Callable[[float], None] = time.sleep) -> int:
    """``show_logs`` for a shared state: the events are rows, followed by their ids."""
    events, position = docs.tail("events", agent, n)
    for event in events:
        printer(event)
    count = len(events)
    if not events and not follow_ and is_tty() and not as_json:
        out().print(f"no events yet for {agent} ({docs.where('events', agent)})", markup=False)
    while follow_ and (stop is None or not stop()):
        more, position = docs.follow("events", agent, position)
        for event in more:
            printer(event)
            count += 1
        if not more:
            sleep(poll)
    return count


def logs_cli(
    agent: str = typer.Argument(..., metavar="AGENT", help="The agent whose events to show (see: mythline agents)."),
    n: int = typer.Option(20, "-n", "--lines", min=0, help="How many of the last events to show."),
    follow_: bool = typer.Option(False, "--follow", "-f", help="Keep printing new events as they are written; "
                                 "Ctrl-C to stop."),
    json_out: bool = typer.Option(False, "--json", help="Print the raw JSON lines instead."),
    poll: float = typer.Option(0.5, "--poll", min=0.05, max=60, help="With --follow: seconds between looks "
                               "at the file."),
    output: bool = typer.Option(False, "--output", help="Show the last lines of logs/AGENT.log, the output the "
                                "scheduler captured from AGENT's runs, instead of its events."),
) -> None:
    if output:
        with boundary():
            show_output(agent, n=n, follow_=follow_)
        return
    with boundary():
        settings().agent(agent)  # unknown agent -> exit 2
        try:
            show_logs(agent, n=n, follow_=follow_, as_json=json_out, poll=poll)
        except KeyboardInterrupt:
            # Ctrl-C is how --follow ends: no message, the conventional code.
            raise typer.Exit(ExitCode.INTERRUPTED) from None
        except BrokenPipeError:
            # `mythline logs x | head`: the reader left; that is not an error.
            _quiet_stdout()


def _quiet_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def tail_lines(path: Path, n: int) -> list[str]:
    """The last ``n`` lines of a text file, read from its end."""
    if n <= 0:
        return []
    with path.open("rb") as fh:
        fh.seek(0, os.SEEK_END)
        end = pos = fh.tell()
        data = b""
        while pos > 0 and data.count(b"\n") <= n:
            pos = max(0, pos - 65536)
            fh.seek(pos)
            data = fh.read(end - pos)
    return data.decode("utf-8", errors="replace").splitlines()[-n:]


def show_output(agent: str, *, n: int, follow_: bool) -> None:
    """Print the end of the agent's scheduled-output log (no config needed: a broken one is
    often what that log is about)."""
    from .. import paths
    from ..agent import valid_name
    from ..errors import UsageError

    if not valid_name(agent):
        raise UsageError(f"{agent!r} is not an agent name (see: mythline agents)")
    path = paths.agent_log(agent)
    if follow_:
        raise UsageError(f"--output shows the last lines only; to follow them, run: tail -f {path}")
    try:
        lines = tail_lines(path, n)
    except FileNotFoundError:
        if is_tty():
            out().print(f"no scheduled output yet for {agent} ({path})", markup=False)
        return
    try:
        for text in lines:
            sys.stdout.write(text + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        _quiet_stdout()
