"""Sharing a scarce fleet cap: five agents, random call costs, a cap that covers half the demand.

Each simulated day, the agents take turns in a random order (as cron starts them), each
run asking for one call of a random cost; the ledger's own rules (``ledger.rules.refusal``,
the ones every backend applies) admit or refuse it, and an admitted call stores a record
with the agent's success rate. The same days are replayed without a policy and with
priorities and a reserve. Prints each agent's share of the spend and of the stored
records, as a table, and draws them as a PNG chart (needs matplotlib: pip install -e
'.[benchmark]').

    python benchmarks/sim_priority.py [--days 200] [--seed 7] [--png sim_priority.png] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mythline_cli.ledger import rules  # noqa: E402
from mythline_cli.ledger.journal import apply, empty  # noqa: E402

DAY = "day:sim"
CURRENT = {"day": DAY, "month": "month:sim"}
# name: (priority, reserve, mean cost per call in USD, share of calls that end in a stored record)
AGENTS = {
    "world-lore": (3, 0.10, 0.020, 0.9),
    "quest-chains": (2, 0.0, 0.030, 0.8),
    "world-npcs": (1, 0.0, 0.015, 0.85),
    "world-items": (0, 0.0, 0.010, 0.9),
    "lore-crosscheck": (0, 0.0, 0.025, 0.7),
}
RUNS_PER_DAY = 8  # each agent's runs per day


def day_demand() -> float:
    return sum(mean for _, _, mean, _ in AGENTS.values()) * RUNS_PER_DAY


def simulate(days: int, seed: int, policy: rules.Policy | None) -> dict[str, dict[str, float]]:
    rng = random.Random(seed)
    cap = rules.Cap("day", "*", "usd", day_demand() / 2, "budget.daily_usd")
    out = {name: {"spend": 0.0, "records": 0, "refused": 0} for name in AGENTS}
    for _ in range(days):
        data = empty()
        apply(data, {"event": "window-opened", "window": DAY, "kind": "day", "ts": "sim"})
        turns = [name for name in AGENTS for _ in range(RUNS_PER_DAY)]
        rng.shuffle(turns)
        for name in turns:
            _, _, mean, success = AGENTS[name]
            cost = rng.expovariate(1 / mean)
            stored = rng.random() < success
            estimate = SimpleNamespace(usd=cost, tokens=0)
            if rules.refusal(data, CURRENT, SimpleNamespace(name=name), estimate, [cap], policy) is not None:
                out[name]["refused"] += 1
                continue
            apply(data, {"event": "reserve", "reservation": "r", "agent": name, "usd": cost, "tokens": 0,
                         "windows": [DAY]})
            apply(data, {"event": "settle", "reservation": "r", "usd": cost, "tokens": 0})
            out[name]["spend"] += cost
            out[name]["records"] += int(stored)
        spent = rules.usage(data, DAY, "*", "usd")[0]
        assert spent <= cap.cap * (1 + 1e-9), "the simulated fleet overspent its cap"
    return out


def shares(result: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    spend = sum(r["spend"] for r in result.values()) or 1
    records = sum(r["records"] for r in result.values()) or 1
    return {n: {"spend": r["spend"] / spend, "records": r["records"] / records, "refused": r["refused"],
                "usd": r["spend"], "stored": r["records"]} for n, r in result.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=200)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--png", default="sim_priority.png")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    policy = rules.Policy(priorities={n: a[0] for n, a in AGENTS.items()},
                          reserves={n: a[1] for n, a in AGENTS.items() if a[1]}, headroom=0.4)
    plain = shares(simulate(args.days, args.seed, None))
    ranked = shares(simulate(args.days, args.seed, policy))
    print(f"{args.days} days, five agents, fleet cap ${day_demand() / 2:.3f}/day = half the demand "
          f"(${day_demand():.3f}); priority headroom 0.4; world-lore reserves 10%\n")
    head = f"{'agent':<16} {'prio':>4} {'reserve':>7} | {'spend':>6} {'records':>7} {'refused':>7} | " \
           f"{'spend':>6} {'records':>7} {'refused':>7}"
    print(f"{'':<30} | {'no policy':^23} | {'priority + reserve':^23}")
    print(head)
    print("-" * len(head))
    for name, (prio, reserve, _, _) in AGENTS.items():
        a, b = plain[name], ranked[name]
        print(f"{name:<16} {prio:>4} {reserve:>7.0%} | {a['spend']:>6.1%} {a['records']:>7.1%} {a['refused']:>7} | "
              f"{b['spend']:>6.1%} {b['records']:>7.1%} {b['refused']:>7}")
    total = {k: (sum(r["usd"] for r in v.values()), sum(r["stored"] for r in v.values()))
             for k, v in (("no policy", plain), ("priority + reserve", ranked))}
    for label, (usd, stored) in total.items():
        print(f"{label}: ${usd:.2f} spent, {stored} records, ${usd / max(stored, 1):.4f} per stored record")
    if args.json:
        Path(args.json).write_text(json.dumps({"no_policy": plain, "priority_reserve": ranked}, indent=2))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(no chart: pip install -e '.[benchmark]' for matplotlib)")
        return
    names = list(AGENTS)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, key, title in ((axes[0], "spend", "share of the spend"), (axes[1], "records", "share of stored records")):
        xs = range(len(names))
        ax.bar([x - 0.2 for x in xs], [plain[n][key] for n in names], 0.4, label="no policy")
        ax.bar([x + 0.2 for x in xs], [ranked[n][key] for n in names], 0.4, label="priority + reserve")
        ax.set_xticks(list(xs), [f"{n}\n(prio {AGENTS[n][0]})" for n in names], fontsize=8)
        ax.set_title(title)
        ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    axes[0].legend()
    fig.suptitle(f"Fleet cap = half the demand, {args.days} simulated days")
    fig.tight_layout()
    fig.savefig(args.png, dpi=100)
    print(f"chart: {args.png}")


if __name__ == "__main__":
    main()
