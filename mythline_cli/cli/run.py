"""``mythline run``: one research -> validate -> store cycle for one agent."""

from __future__ import annotations

from typing import Any

import typer

from .. import money
from ..errors import ExitCode, UsageError
from ..launch import StartGuard
from ..runner import run_once
from ._util import boundary, fail_line, is_tty, out, print_json, settings

HELP = """Run one research -> validate -> store cycle for AGENT, then exit.

Meant to be started by cron or Task Scheduler. It takes the agent's run lock, resumes
the topic in progress (or takes the next one), reserves every LLM call in the budget
ledger before sending it, records each step's result the moment it exists, and stores
the record only if it passes validation. Quiet on success when not on a terminal; one
line on stderr on failure.

\b
Examples:
  mythline run world-npcs --dry-run     # prompts, estimate and budget decision; calls nothing
  mythline run world-npcs               # one real cycle (needs OPENROUTER_API_KEY)
"""


def run_cli(
    agent: str = typer.Argument(None, help="Agent to run (see: mythline agents). Omit with --due."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Render the prompts, print the estimate and the budget "
                                 "decision; call nothing, write nothing. Needs no API key or network."),
    model: str = typer.Option(None, "--model", help="Model for this run (overrides MYTHLINE_MODEL and the config)."),
    base_url: str = typer.Option(None, "--base-url", help="OpenAI-compatible API base URL for this run "
                                 "(overrides MYTHLINE_BASE_URL and the config)."),
    json_out: bool = typer.Option(False, "--json", help="Print the outcome (or the dry run) as JSON."),
    force: bool = typer.Option(False, "--force", help="Run even while the agent is backing off after failures."),
    due: bool = typer.Option(False, "--due", help="Run every agent whose next due time has passed, each as its "
                             "own process (one scheduler entry for the whole fleet)."),
    jobs: int = typer.Option(2, "--jobs", "-j", min=1, max=64, help="With --due: how many agents run at once."),
) -> None:
    if due:
        _run_due(agent, jobs=jobs, force=force, json_out=json_out, dry_run=dry_run)
        return
    if agent is None:
        with boundary(), StartGuard(None):
            raise UsageError("name an agent (see: mythline agents), or use --due for every agent that is due")
    if not dry_run:
        with boundary(), StartGuard(agent) as guard:
            cfg = settings(model=model, base_url=base_url)
            guard.known(cfg)
            code = run_once(cfg, agent, json_out=json_out, force=force)
        raise typer.Exit(code)
    with boundary():
        cfg = settings(model=model, base_url=base_url)
        if dry_run:
            from ..cycle import dry_run as plan

            report = plan(cfg, agent)
            report["config"] = {"path": str(cfg.source) if cfg.source else None, "found_by": cfg.found_by}
            if json_out:
                print_json(report)
            else:
                _print_plan(report, source=cfg.describe_source())
            # Only a call can be refused: storing, rejecting and an empty queue cost nothing.
            allowed = report.get("budget", {"allowed": True})["allowed"]
            fits = report.get("context", {"fits": True})["fits"]
            # The exit code the run would end with: a call that cannot fit fails before the budget.
            code = ExitCode.FAILED if not fits else ExitCode.OK if allowed else ExitCode.OVER_BUDGET
            raise typer.Exit(code)


def _run_due(agent: str | None, *, jobs: int, force: bool, json_out: bool, dry_run: bool) -> None:
    from ..due import due_agents, fleet_exit_code, run_due
    from ._util import STATE

    with boundary():
        with StartGuard(None) as guard:
            if agent is not None or dry_run:
                raise UsageError("--due runs every agent that is due: give no agent name and no --dry-run")
            cfg = settings()
            guard.known(cfg)
        names = due_agents(cfg)
        if json_out and not names:
            print_json({"due": [], "results": [], "exit_code": 0})
        if not names:
            if is_tty():
                out().print("Nothing is due.")
            raise typer.Exit(ExitCode.OK)
        results = run_due(cfg, jobs=jobs, config=STATE.config or cfg.source, force=force, agents=names)
    code = fleet_exit_code(results)
    if any(r.agent == "*" for r in results):
        code = next(r.exit_code for r in results if r.agent == "*")
    if json_out:
        print_json({"due": names, "exit_code": code,
                    "results": [{"agent": r.agent, "exit_code": r.exit_code, "stderr": r.stderr.strip()}
                                for r in results if r.agent != "*"]})
    else:
        for r in results:
            for line in r.stderr.splitlines():
                fail_line(line.removeprefix("mythline: "))
        if is_tty():
            out().print("  ".join(f"{r.agent}: {r.exit_code}" for r in results if r.agent != "*"))
    raise typer.Exit(code)


def _print_plan(report: dict[str, Any], *, source: str) -> None:
    con = out()
    if report.get("topic") is None:
        con.print(f"{report['agent']}: the queue is empty; a run would do nothing.")
        con.print(f"config {source}", markup=False)
        return
    con.rule(f"{report['agent']} · {report['topic']} · {report['step']} (attempt {report['attempt']})")
    if report["step"] == "store":
        con.print(f"The recorded answers pass every check (audit score {report['score']:.2f}): a real run would "
                  "store the record and call nothing.")
        con.print(f"config {source}", markup=False)
        return
    if report["step"] in ("reject", "quarantine"):
        end = "quarantine the topic" if report["step"] == "quarantine" else "reject the attempt"
        con.print(f"The recorded answers fail: a real run would {end} and call nothing. Feedback for the next "
                  "attempt:", markup=False)
        for issue in report["issues"]:
            con.print(f"  - {issue}", markup=False)
        con.print(f"config {source}", markup=False)
        return
    for message in report["messages"]:
        con.print(f"[bold]{message['role']}[/bold]", markup=True)
        con.print(message["content"], markup=False)
        con.print()
    est = report["estimate"]
    usd = money.usd(est["usd"]) if est["usd"] is not None else "unknown (no price for this model)"
    con.rule("estimate")
    con.print(f"model {report['model']} at {report['base_url']}", markup=False)
    con.print(f"config {source}", markup=False)
    con.print(f"prompt ≤ {est['prompt_tokens']:,} tokens (counted by {est['counted_by']}) + output ≤ "
              f"{est['max_output_tokens']:,} tokens = {est['tokens']:,} tokens, {usd}"
              + (f"  [price: {est['price']}]" if est["price"] else ""), markup=False)
    context = report.get("context") or {}
    if context.get("fits") is False:
        con.print(f"context: refused — {context['reason']}", markup=False)
    budget = report["budget"]
    if budget["allowed"]:
        con.print("budget: allowed — a real run would reserve this and send the call.")
    else:
        con.print(f"budget: refused — {budget['reason']}", markup=False)
