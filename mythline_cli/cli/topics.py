"""``mythline topics ls|add|rm|requeue``: an agent's queue, read and changed through its checkpoint."""

from __future__ import annotations

from typing import Any

import typer

from ._util import boundary, out, print_json, settings

app = typer.Typer(no_args_is_help=True, help="Look at and change an agent's queue of topics.\n\n"
                  "A change is applied to the agent's checkpoint under its run lock; while the agent is "
                  "running it waits in the agent's inbox and applies when the next run starts.\n\n"
                  "\b\nExample:\n  mythline topics add world-npcs \"Cairne Bloodhoof\"\n\n"
                  "Exit codes: 0 done (or queued for the next run) · 2 bad input (unknown agent, a topic "
                  "that is not in the queue, a topic name that is a path) · 1 anything else.")


def _agent(name: str) -> Any:
    return settings().agent(name)


LS_HELP = """An agent's queue in order, each topic with its state: pending, in progress, done, stale
(done, older than refresh_after: researched again once the queue is empty), quarantined (with the
last reason), and who proposed it when another agent did. Changes waiting for the agent's next
run are listed after the queue.

\b
Example:
  mythline topics ls world-npcs
"""


@app.command("ls", help=LS_HELP)
def ls_cli(agent: str = typer.Argument(..., help="The agent whose queue to show."),
           json_out: bool = typer.Option(False, "--json", help="Print the queue as JSON.")) -> None:
    with boundary():
        from rich import box
        from rich.table import Table
        from rich.text import Text

        from ..fleet.topics import rows

        data = rows(_agent(agent))
        if json_out:
            print_json(data)
            return
        con = out()
        counts = ", ".join(f"{n} {state}" for state, n in data["counts"].items()) or "empty"
        table = Table(title=f"{agent}: {len(data['topics'])} topics ({counts})", title_justify="left",
                      box=box.SIMPLE_HEAD, pad_edge=False, title_style="bold")
        for col in ("topic", "state", "attempts", "proposed by", "reason"):
            table.add_column(col, justify="right" if col == "attempts" else "left", no_wrap=col == "state")
        for row in data["topics"]:
            by = f"{row['proposed_by']} ({row['proposed_from']})" if row["proposed_by"] else ""
            table.add_row(Text(row["topic"]), row["state"], str(row["attempts"]), Text(by), Text(row["reason"] or ""))
        con.print(table)
        for w in data["waiting"]:
            who = f" (proposed by {w['agent']})" if w["op"] == "propose" else ""
            con.print(f"waiting for the next run: {w['op']} {w['topic']!r}{who}", markup=False)
        if data["checkpoint_problem"]:
            con.print(f"the checkpoint is unreadable ({data['checkpoint_problem']}); the next run rebuilds it",
                      markup=False)


def _report(results: list[dict[str, Any]], json_out: bool) -> None:
    if json_out:
        print_json(results)
        return
    words = {"applied": "done", "next-run": "the agent is running: applies when its next run starts",
             "already-queued": "already in the queue: nothing to do"}
    con = out()
    for r in results:
        con.print(f"{r['op']} {r['topic']!r} ({r['agent']}): {words[r['result']]}", markup=False)


@app.command("add", help="Add topics to the end of an agent's queue.\n\n"
                         "\b\nExample:\n  mythline topics add world-npcs \"Cairne Bloodhoof\" \"Rexxar\"")
def add_cli(agent: str = typer.Argument(..., help="The agent."),
            topics: list[str] = typer.Argument(..., help="One or more topics (subjects' names)."),
            json_out: bool = typer.Option(False, "--json", help="Print what happened as JSON.")) -> None:
    with boundary():
        from ..checkpoint import topic_problem
        from ..errors import UsageError
        from ..fleet.topics import change

        target = _agent(agent)
        for topic in topics:  # all checked before any is added
            problem = topic_problem(topic)
            if problem is not None:
                raise UsageError(problem if problem.startswith(repr(topic)) else f"topic {topic[:80]!r}: {problem}")
        _report([change(target, "add", t) for t in topics], json_out)


@app.command("rm", help="Take a topic out of an agent's queue (its stored record stays in the store; an "
                        "attempt in progress on it is dropped).\n\n\b\nExample:\n  mythline topics rm world-npcs Khadgar")
def rm_cli(agent: str = typer.Argument(..., help="The agent."),
           topic: str = typer.Argument(..., help="The topic."),
           json_out: bool = typer.Option(False, "--json", help="Print what happened as JSON.")) -> None:
    with boundary():
        from ..fleet.topics import change

        _report([change(_agent(agent), "rm", topic)], json_out)


@app.command("requeue", help="Give a quarantined topic another chance: pending again, its attempts from zero "
                             "(its past feedback is kept for the next prompt), recorded as an event.\n\n"
                             "\b\nExample:\n  mythline topics requeue world-npcs \"Vol'jin\"")
def requeue_cli(agent: str = typer.Argument(..., help="The agent."),
                topic: str = typer.Argument(..., help="The quarantined topic."),
                json_out: bool = typer.Option(False, "--json", help="Print what happened as JSON.")) -> None:
    with boundary():
        from ..fleet.topics import change

        _report([change(_agent(agent), "requeue", topic)], json_out)
