"""``mythline status --all`` (one row per agent) for a 1,000-agent fleet.

    python benchmarks/bench_status_all.py [--agents 1000] [--runs 12] [--json results.json]

The state home is generated: 1,000 custom agents (``[agents.NAME]`` with a kind and eight
topics) plus the ten built in, a heartbeat for nine agents in ten in every state a fleet
shows, pause flags, events, spend for every 4th agent and one open reservation. The settings
cache is warm, as every run leaves it. Baseline, same rounds:
``python -c "import typer, rich.table"`` (the floor of any Typer + Rich command). Target:
median <= 1 s. Also timed, same home: the summary ``status`` and ``status --json``. Output
goes to a pipe, so the table is 160 columns wide (all nine columns), as in a log.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    PY,
    base_env,
    fresh_dir,
    interleave,
    mythline_cmd,
    populate_fleet,
    remove,
    run_timed,
    summarize,
    write_bench_config,
)
from bench_scale import write_fleet_config

TARGET_S = 1.0
BASE = "baseline: import typer, rich.table"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agents", type=int, default=1000, help="custom agents besides the ten built in")
    ap.add_argument("--runs", type=int, default=12, help="timed runs per case (>= 10)")
    ap.add_argument("--json", type=Path, help="also write the summary here")
    args = ap.parse_args()

    work = fresh_dir("status-all")
    try:
        home = work / "home"
        home.mkdir()
        config = write_fleet_config(work / "fleet.toml", write_bench_config(work / "base.toml"), args.agents)
        populate_fleet(home, config, spend_every=4)
        env = base_env(MYTHLINE_HOME=str(home), MYTHLINE_CONFIG=str(config))
        cli = mythline_cmd()
        run_timed([*cli, "status"], env, expect=(0, 1))  # leaves the settings cache, as any run does
        n = args.agents + 10
        beats = sum(1 for _ in (home / "agents").glob("*/heartbeat.json"))
        cases = {
            BASE: lambda: run_timed([PY, "-c", "import typer, rich.table"], env),
            f"status --all, {n:,} agents": lambda: run_timed([*cli, "status", "--all"], env, expect=(0, 1)),
            f"status (summary), {n:,} agents": lambda: run_timed([*cli, "status"], env, expect=(0, 1)),
            f"status --json, {n:,} agents": lambda: run_timed([*cli, "status", "--json"], env, expect=(0, 1)),
        }
        print(f"command: {' '.join(cli)}   agents: {n:,} ({beats:,} heartbeats)   runs: {args.runs} (interleaved)")
        results = interleave(cases, args.runs)
        summary = summarize(results, BASE)
        key = f"status --all, {n:,} agents"
        med = summary[key]["median_s"]
        print(f"\nstatus --all, {n:,} agents: median {med * 1000:.0f} ms = {summary[key]['ratio']:.2f}x the "
              f"baseline; target <= {TARGET_S:g} s: {'meets' if med <= TARGET_S else 'MISSES'} it")
        if args.json:
            args.json.write_text(json.dumps({"summary": summary, "agents": n, "target_s": TARGET_S}, indent=2))
        return 0
    finally:
        remove(work)


if __name__ == "__main__":
    raise SystemExit(main())
