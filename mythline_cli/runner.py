"""One ``mythline run AGENT`` cycle as a command: the live view, the outcome's output and
exit code. Typer-free, so the start-up fast path in ``__main__`` and the Typer command
share it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import money
from .console import fail_line, is_tty, out, print_json

if TYPE_CHECKING:
    from .config import Settings


class LiveView:
    """A live table of the run's steps, tokens and cost (terminal only)."""

    def __init__(self, agent: str) -> None:
        from rich.live import Live

        self.agent = agent
        self.rows: dict[str, dict[str, Any]] = {}
        self.topic = ""
        self.note = "starting"
        self.live = Live(self._render(), console=out(), refresh_per_second=8, transient=False)

    def _render(self) -> Any:
        from rich.table import Table

        table = Table(title=f"{self.agent} · {self.topic}", title_justify="left", expand=False)
        for col in ("step", "status", "tokens", "cost (USD)", "latency"):
            table.add_column(col, justify="right" if col != "step" and col != "status" else "left")
        for step, row in self.rows.items():
            table.add_row(step, row.get("status", ""), row.get("tokens", ""), row.get("usd", ""), row.get("latency", ""))
        table.caption = self.note
        return table

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        if kind == "run-start":
            self.live.start()
        if event.get("topic") and not self.topic:
            self.topic = event["topic"]
        if kind == "llm-request":
            est = event["estimate"]
            usd = f"≤{money.usd(est['usd'], symbol=False)}" if est.get("usd") is not None else "?"
            self.rows[event["step"]] = {"status": "calling…", "tokens": f"≤{est['prompt_tokens'] + est['max_output_tokens']:,}", "usd": usd}
        elif kind == "llm-retry":
            self.rows.setdefault(event["step"], {})["status"] = f"retrying ({event.get('kind')})"
        elif kind == "llm-call":
            row = self.rows.setdefault(event["step"], {})
            if event.get("ok"):
                row.update(status="done", tokens=f"{event['prompt_tokens'] + event['completion_tokens']:,}",
                           usd=money.usd(event['usd'], symbol=False) if event.get("usd") is not None else "-",
                           latency=f"{event['latency_s']:.1f}s")
            else:
                row.update(status=f"failed: {event.get('kind')}")
        elif kind == "verdict":
            self.note = f"verdict: score {event.get('score')} · {'passed' if event.get('passed') else 'rejected'}"
        elif kind == "store":
            self.note = f"stored ({event.get('action')}): {event.get('path')}"
        elif kind == "quarantine":
            self.note = "topic quarantined"
        self.live.update(self._render())


def run_once(cfg: Settings, agent: str, *, json_out: bool = False, force: bool = False) -> int:
    """Run one cycle of ``agent`` and report it: nothing on success off a terminal, one line
    on stderr for a failure, the outcome as JSON with ``json_out``. Returns the exit code."""
    from .cycle import run_agent

    view = LiveView(agent) if is_tty() and not json_out else None
    try:
        outcome = run_agent(cfg, agent, listener=view, force=force)
    finally:
        if view is not None:
            view.live.stop()
    for warning in outcome.warnings:
        fail_line(warning)
    if json_out:
        print_json({"agent": outcome.agent, "exit_code": outcome.code, "state": outcome.state,
                    "result": outcome.result, "topic": outcome.topic, "message": outcome.message})
    elif outcome.message:
        fail_line(outcome.message)
    elif is_tty():
        out().print(f"{outcome.agent}: {outcome.result or outcome.state}"
                    + (f" · {outcome.topic}" if outcome.topic else ""))
    return outcome.code
