"""The sharing policy's invariants (pacing, priority, reserve), checked on many random ledgers
through the rules every backend uses."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest

from mythline_cli.ledger import rules
from mythline_cli.ledger.rules import Cap, Policy

DAY = "day:2026-12-02"
CURRENT = {"day": DAY, "month": "month:2026-12"}
NAMES = ["a", "b", "c", "d", "e"]
FLEET = Cap("day", "*", "usd", 1.0, "budget.daily_usd")


def state(spend: dict[str, float]) -> dict:
    return {"windows": {DAY: {"agents": {n: {"usd": v, "tokens": 0, "unsettled_usd": 0.0, "calls": 1}
                                         for n, v in spend.items()}}},
            "reservations": {}}


def admitted(data: dict, agent: str, usd: float, policy: Policy | None, caps=(FLEET,)) -> bool:
    estimate = SimpleNamespace(usd=usd, tokens=0)
    return rules.refusal(data, CURRENT, SimpleNamespace(name=agent), estimate, list(caps), policy) is None


def fleet_spent(data: dict) -> float:
    return rules.usage(data, DAY, "*", "usd")[0]


def random_case(rng: random.Random) -> tuple[dict, Policy]:
    spend = {n: rng.uniform(0, 0.3) for n in NAMES if rng.random() < 0.8}
    reserves = {n: rng.choice([0.0, 0.05, 0.1, 0.15]) for n in NAMES}
    policy = Policy(elapsed=rng.choice([None, rng.random()]), burst=rng.choice([0.0, 0.1]),
                    priorities={n: rng.randint(0, 3) for n in NAMES},
                    reserves={n: r for n, r in reserves.items() if r}, headroom=rng.choice([0.0, 0.2, 0.5]))
    return state(spend), policy


def test_no_policy_admits_past_the_cap():
    rng = random.Random(1)
    for _ in range(3000):
        data, policy = random_case(rng)
        agent, usd = rng.choice(NAMES), rng.uniform(0, 0.4)
        if admitted(data, agent, usd, policy):
            assert fleet_spent(data) + usd <= FLEET.cap * (1 + 1e-9)


def test_even_pacing_admits_no_more_than_the_day_so_far_plus_the_burst():
    rng = random.Random(2)
    for _ in range(3000):
        data, policy = random_case(rng)
        policy = policy._replace(elapsed=rng.random(), reserves={}, headroom=0.0)
        usd = rng.uniform(0, 0.4)
        if admitted(data, "a", usd, policy):
            assert fleet_spent(data) + usd <= FLEET.cap * (policy.elapsed + policy.burst) * (1 + 1e-9)
    # The first call of the day fits in the burst; at midnight with no burst nothing may be spent.
    assert admitted(state({}), "a", 0.1, Policy(elapsed=0.0, burst=0.1))
    assert not admitted(state({}), "a", 0.01, Policy(elapsed=0.0, burst=0.0))
    assert admitted(state({"a": 0.5}), "a", 0.09, Policy(elapsed=0.5, burst=0.1))
    assert not admitted(state({"a": 0.5}), "a", 0.11, Policy(elapsed=0.5, burst=0.1))


def test_no_agent_spends_into_another_agents_unused_reserve():
    rng = random.Random(3)
    for _ in range(3000):
        data, policy = random_case(rng)
        agent, usd = rng.choice(NAMES), rng.uniform(0, 0.4)
        if not admitted(data, agent, usd, policy._replace(elapsed=None)):
            continue
        spend = {n: rules.usage(data, DAY, n, "usd")[0] for n in NAMES}
        spend[agent] += usd
        unused = sum(max(0.0, share - spend[n]) for n, share in policy.reserves.items() if n != agent)
        assert sum(spend.values()) <= FLEET.cap - unused + 1e-9


def test_an_agent_may_always_spend_its_own_reserve_while_the_cap_has_room():
    policy = Policy(priorities={"a": 0, "b": 5}, reserves={"a": 0.2}, headroom=0.5)
    # The fleet has spent 0.7: low-priority "a" is past its priority line, but 0.15 of its
    # reserve is still its own.
    data = state({"b": 0.65, "a": 0.05})
    assert admitted(data, "a", 0.15, policy)
    assert not admitted(data, "a", 0.2, policy)  # beyond its reserve the priority line holds
    assert not admitted(data, "b", 0.2, policy)  # b may not take what a holds in reserve


@pytest.mark.parametrize("seed", range(5))
def test_a_higher_priority_is_refused_no_sooner_than_a_lower_one(seed):
    rng = random.Random(seed)
    for _ in range(1000):
        data, policy = random_case(rng)
        policy = policy._replace(reserves={}, elapsed=None)
        low, high = "a", "b"
        if policy.priorities[low] > policy.priorities[high]:
            low, high = high, low
        usd = rng.uniform(0, 0.4)
        if admitted(data, low, usd, policy):
            assert admitted(data, high, usd, policy)


def test_the_lowest_priority_stops_headroom_short_of_the_cap_and_the_highest_at_it():
    policy = Policy(priorities={"a": 0, "b": 1, "c": 2}, headroom=0.3)
    data = state({"c": 0.6})
    assert admitted(data, "a", 0.1, policy) and not admitted(data, "a", 0.11, policy)  # line at 0.7
    assert admitted(data, "b", 0.25, policy) and not admitted(data, "b", 0.26, policy)  # line at 0.85
    assert admitted(data, "c", 0.4, policy) and not admitted(data, "c", 0.41, policy)  # the cap itself


def test_a_refusal_under_a_policy_names_the_setting_that_narrowed_the_cap():
    estimate = SimpleNamespace(usd=0.2, tokens=0)
    exc = rules.refusal(state({"a": 0.5}), CURRENT, SimpleNamespace(name="a"), estimate, [FLEET],
                        Policy(elapsed=0.5, burst=0.1))
    assert exc is not None
    assert "budget.daily_usd (narrowed to 0.6 for now by budget.pace)" in str(exc)


def test_the_default_policy_changes_no_decision():
    rng = random.Random(9)
    for _ in range(2000):
        data, _ = random_case(rng)
        usd = rng.uniform(0, 0.6)
        assert admitted(data, "a", usd, None) == admitted(data, "a", usd, Policy())


def test_warn_at_lists_give_one_crossing_per_threshold():
    data = state({"a": 0.85})
    hits = rules.crossings(data, CURRENT, [FLEET], [0.5, 0.8, 0.95])
    assert [h["threshold"] for h in hits] == [0.5, 0.8]
    assert [h["threshold"] for h in rules.crossings(data, CURRENT, [FLEET], 0.8)] == [0.8]


def test_the_ledger_paces_a_day_cap_by_its_clock_and_config(home, config):
    from datetime import datetime, timezone

    from mythline_cli.config import load_settings
    from mythline_cli.errors import BudgetExceeded
    from mythline_cli.ledger import Ledger

    config(sections={"budget": {"daily_usd": 1.0, "pace": "even", "burst": 0.0, "timezone": "UTC"},
                     "defaults": {"daily_usd": 10.0}})
    settings = load_settings()
    six = datetime(2026, 12, 2, 6, 0, tzinfo=timezone.utc)  # a quarter of the day gone
    ledger = Ledger(settings, now=lambda: six)
    assert ledger.policy().elapsed == pytest.approx(0.25)
    agent = settings.agent("world-npcs")
    ledger.reserve(agent, SimpleNamespace(usd=0.2, tokens=10), run_id="r", step="research")
    with pytest.raises(BudgetExceeded) as caught:
        ledger.reserve(agent, SimpleNamespace(usd=0.1, tokens=10), run_id="r", step="audit")
    assert "narrowed to 0.25 for now by budget.pace" in str(caught.value)


def test_reserves_above_the_whole_cap_are_a_config_error(home, config):
    from helpers import mythline

    config(sections={"agents.world-npcs": {"reserve": 0.6}, "agents.world-lore": {"reserve": 0.5}})
    result = mythline("budget", "show")
    assert result.returncode == 2
    assert "the agents' reserves add up to 110% of the fleet cap; keep their sum at most 1 (100%)" in result.stderr
    assert result.stderr.count("\n") == 1


def test_warn_at_takes_a_list(home, config):
    from mythline_cli.config import load_settings

    config(sections={"alerts": {"warn_at": [0.5, 0.8, 0.95]}})
    assert load_settings().config.alerts.warn_at == [0.5, 0.8, 0.95]
