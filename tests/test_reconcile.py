"""`mythline budget reconcile` against a local server with OpenRouter's billing endpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from factories import record_json
from helpers import MODEL, is_audit, mythline, topic_of
from llm_server import Reply, completion, error

AGENT = "world-npcs"


def answers(research_id: str = "gen-research", audit_id: str = "gen-audit"):
    def respond(request):
        if is_audit(request):
            # No provider cost: the ledger charges tokens x prices (300 x $1/M + 20 x $2/M).
            return completion(json.dumps({"score": 0.9, "issues": []}), prompt_tokens=300, completion_tokens=20,
                              model=MODEL, id=audit_id)
        return completion(record_json(AGENT, topic_of(request)), prompt_tokens=400, completion_tokens=200,
                          cost=0.001, model=MODEL, id=research_id)
    return respond


class Bill:
    """GET /generation?id= and GET /key, as OpenRouter answers them; a generation is 404
    for its first ``not_ready`` asks."""

    def __init__(self, costs: dict[str, float], *, not_ready: int = 1, remaining: float | None = 9.5,
                 limit: float | None = 10.0) -> None:
        self.costs = costs
        self.not_ready = not_ready
        self.asked: dict[str, int] = {}
        self.remaining, self.limit = remaining, limit

    def generation(self, request):
        gid = request["path"].split("id=", 1)[1]
        self.asked[gid] = self.asked.get(gid, 0) + 1
        if gid not in self.costs or self.asked[gid] <= self.not_ready:
            return error(404, f"Generation {gid} not found", code=404)
        return Reply(json={"data": {"id": gid, "total_cost": self.costs[gid], "model": MODEL,
                                    "tokens_prompt": 400, "tokens_completion": 200}})

    def key(self, request):
        return Reply(json={"data": {"label": "sk-or-v1-abc...", "limit": self.limit,
                                    "limit_remaining": self.remaining, "usage": 0.5, "usage_daily": 0.004,
                                    "usage_weekly": 0.2, "usage_monthly": 0.5, "is_free_tier": False}})

    def install(self, server) -> None:
        server.routes["/generation"] = self.generation
        server.routes["/key"] = self.key


def day_usd(home: Path, backend=None) -> tuple[float, float]:
    ledger = backend.state() if backend is not None else json.loads((home / "ledger.json").read_text())
    day = next(w for k, w in ledger["windows"].items() if k.startswith("day:"))
    bucket = day["agents"][AGENT]
    return bucket["usd"], bucket["unsettled_usd"]


def test_the_bill_replaces_the_ledgers_figures_higher_and_lower(home, config, llm_server, backend):
    llm_server.responder = answers()
    assert mythline("run", AGENT).returncode == 0
    journal = backend.journal()
    assert sorted(e["generation"] for e in journal if e["event"] == "settle") == ["gen-audit", "gen-research"]
    before, _ = day_usd(home, backend)
    assert before == pytest.approx(0.001 + 0.00034)

    bill = Bill({"gen-research": 0.003, "gen-audit": 0.0001})  # above, then below our figure
    bill.install(llm_server)
    done = mythline("budget", "reconcile", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["reconciled"] == 2 and result["pending"] == 0
    assert result["extra_usd"] == pytest.approx(0.003 + 0.0001 - before)
    (day,) = result["days"].values()
    assert day["drift_usd"] == pytest.approx(0.0031 - before)
    assert bill.asked == {"gen-research": 2, "gen-audit": 2}  # 404 first (not ready), asked again
    assert day_usd(home, backend)[0] == pytest.approx(0.0031)
    assert [e["generation"] for e in backend.journal() if e["event"] == "reconcile"] == ["gen-research", "gen-audit"]

    again = mythline("budget", "reconcile", "--json")  # nothing twice
    assert json.loads(again.stdout)["reconciled"] == 0
    assert day_usd(home, backend)[0] == pytest.approx(0.0031)
    assert llm_server.requests[-1]["headers"]["authorization"].startswith("Bearer ")


def test_an_unsettled_estimate_is_settled_by_the_bill_and_a_late_record_by_a_later_run(home, config, llm_server):
    def respond(request):
        reply = answers()(request)
        if is_audit(request):
            reply.json["usage"] = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        return reply
    llm_server.responder = respond
    assert mythline("run", AGENT).returncode == 0
    usd, unsettled = day_usd(home)
    assert unsettled > 0  # the audit's estimate: no usage came back

    bill = Bill({"gen-research": 0.001, "gen-audit": 0.0002}, not_ready=0)
    bill.costs.pop("gen-audit")  # its record is not there yet
    bill.install(llm_server)
    first = mythline("budget", "reconcile")
    assert first.returncode == 0, first.stderr
    assert "Reconciled 1 call(s) with the bill; 1 not billed yet" in first.stdout
    bill.costs["gen-audit"] = 0.0002
    second = mythline("budget", "reconcile", "--json")
    assert json.loads(second.stdout)["reconciled"] == 1
    usd, unsettled = day_usd(home)
    assert usd == pytest.approx(0.0012) and unsettled == pytest.approx(0)


def test_a_key_limit_below_our_cap_acts_as_a_cap(home, config, llm_server):
    llm_server.responder = answers()
    assert mythline("run", AGENT).returncode == 0
    Bill({"gen-research": 0.001, "gen-audit": 0.00034}, not_ready=0, remaining=0.0002).install(llm_server)
    assert mythline("budget", "reconcile").returncode == 0
    refused = mythline("run", "world-zones")
    assert refused.returncode == 3, refused.stderr
    assert "the provider key's limit (see: mythline budget reconcile)" in refused.stderr
    assert llm_server.count() == 2  # no request for the refused run


def test_a_provider_without_billing_endpoints_says_so_and_changes_nothing(home, config, llm_server):
    llm_server.responder = answers()
    assert mythline("run", AGENT).returncode == 0
    before = (home / "ledger-history.jsonl").read_text()
    result = mythline("budget", "reconcile")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1
    assert "has no billing endpoints (GET /key answered 404); nothing was changed" in result.stdout
    assert (home / "ledger-history.jsonl").read_text() == before
    assert not (home / "provider-key.json").exists()


def test_a_bad_since_is_one_line_and_exit_2(home, config):
    result = mythline("budget", "reconcile", "--since", "yesterday")
    assert result.returncode == 2
    assert result.stderr == ("mythline: --since 'yesterday' is not a date; write it as YYYY-MM-DD, "
                             "e.g. 2026-12-01\n")


def test_an_unreachable_provider_is_one_line_and_changes_nothing(home, config, llm_server):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config(provider={"base_url": f"http://127.0.0.1:{port}/v1"})
    result = mythline("budget", "reconcile")
    assert result.returncode == 1
    assert result.stderr == (f"mythline: could not reach http://127.0.0.1:{port}/v1 (ConnectionRefusedError); "
                             "nothing was changed, run mythline budget reconcile again later\n")
