"""Reserve + settle on both ledger backends: calls/s and latency, 1 / 20 / 60 processes.

    python benchmarks/bench_backends.py [--procs 1,20,60] [--pairs 30] [--dsn postgresql://...]

Without ``--dsn`` a throwaway PostgreSQL cluster is started in a temp dir (Debian's
binaries, as the user ``postgres`` when run as root, as the tests do, but with fsync on)
and removed at the end. For each backend and each process count, N processes are started, connected (on
PostgreSQL) and released together; each makes ``--pairs`` reserve + settle pairs for one of
the ten agents under a fleet USD cap that everything fits (so every pair is the full path,
no refusal). Reported: pairs/s over the whole fleet (first release to last finish), and the
p50 / p99 of one pair's latency. Checked: the fleet's spend equals the sum settled, and no
reservation is left open. The file backend's state home is in a temp dir (``TMPDIR``).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

MODEL = "test/model"


def config_dict() -> dict[str, Any]:
    return {"provider": {"model": MODEL, "prices": {MODEL: {"input_per_million": 1.0, "output_per_million": 2.0}}},
            "budget": {"timezone": "UTC", "daily_usd": 1e6, "daily_tokens": "none", "monthly_usd": "none",
                       "monthly_tokens": "none"},
            "defaults": {"daily_usd": "none", "daily_tokens": "none"}}


def worker(env: dict[str, str], index: int, pairs: int, ready: Any, go: Any, out: Any) -> None:
    os.environ.update(env)
    from mythline_cli.config import parse_config
    from mythline_cli.ledger import Ledger
    from mythline_cli.pricing import Estimate

    settings = parse_config(config_dict())
    ledger = Ledger(settings)
    ledger.housekeep()  # connected and warm before the clock starts
    agent = settings.agent(settings.agent_names[index % len(settings.agent_names)])
    estimate = Estimate(prompt_tokens=1000, max_output_tokens=500, usd=0.002, counted_by="chars", price=None)
    ready.wait()
    go.wait()
    times = []
    for i in range(pairs):
        t0 = time.perf_counter()
        res = ledger.reserve(agent, estimate, run_id=f"b{index}", step=str(i))
        ledger.settle(res, usd=0.0015, tokens=1200)
        times.append(time.perf_counter() - t0)
    out.put((index, time.perf_counter(), times))


def measure(env: dict[str, str], procs: int, pairs: int) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    ready, go, out = ctx.Barrier(procs + 1), ctx.Barrier(procs + 1), ctx.Queue()
    ps = [ctx.Process(target=worker, args=(env, i, pairs, ready, go, out)) for i in range(procs)]
    for p in ps:
        p.start()
    ready.wait(300)
    start = time.perf_counter()
    go.wait(60)
    got = [out.get(timeout=600) for _ in ps]
    for p in ps:
        p.join(60)
    end = max(g[1] for g in got)
    lat = sorted(t for g in got for t in g[2])
    return {"pairs_per_s": len(lat) / (end - start), "p50_ms": statistics.median(lat) * 1e3,
            "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e3}


def check(env: dict[str, str], expected_pairs: int) -> None:
    os.environ.update(env)
    from mythline_cli import state
    from mythline_cli.config import parse_config
    from mythline_cli.ledger import Ledger

    report = Ledger(parse_config(config_dict())).report()
    state.forget_sessions()
    spent = report["fleet"]["day"]["usd"]["spent"]
    assert abs(spent - 0.0015 * expected_pairs) < 1e-6, (spent, expected_pairs)
    assert report["open_reservations"] == 0
    for key in env:
        os.environ.pop(key, None)


def cluster() -> tuple[str, Any]:
    import pg
    import pytest  # the tests' fixture starts and stops it

    os.environ.setdefault("MYTHLINE_TEST_PG_FSYNC", "on")  # commits reach the disk, as the journal's lines do
    gen = pg.pg_server.__wrapped__()  # type: ignore[attr-defined]
    try:
        return next(gen), gen
    except pytest.skip.Exception as exc:
        raise SystemExit(str(exc)) from None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--procs", default="1,20,60")
    ap.add_argument("--pairs", type=int, default=30)
    ap.add_argument("--dsn", default=None)
    ap.add_argument("--backends", default="file,postgresql")
    args = ap.parse_args()
    counts = [int(n) for n in args.procs.split(",")]
    gen = None
    server = args.dsn
    if "postgresql" in args.backends and server is None:
        server, gen = cluster()
    import psycopg

    try:
        print(f"{'backend':<11} {'procs':>5} {'pairs/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
        for backend in args.backends.split(","):
            for n in counts:
                with tempfile.TemporaryDirectory() as tmp:
                    env = {"MYTHLINE_HOME": os.path.join(tmp, "home")}
                    db = None
                    if backend == "postgresql":
                        db = f"bench_{os.getpid()}_{n}"
                        with psycopg.connect(server, autocommit=True) as conn:
                            conn.execute(f'CREATE DATABASE "{db}"')
                        env["MYTHLINE_STATE"] = server.rsplit("/", 1)[0] + "/" + db
                    result = measure(env, n, args.pairs)
                    check(env, n * args.pairs)
                    if db:
                        with psycopg.connect(server, autocommit=True) as conn:
                            conn.execute(f'DROP DATABASE "{db}" WITH (FORCE)')
                print(f"{backend:<11} {n:>5} {result['pairs_per_s']:>9.0f} {result['p50_ms']:>8.1f} "
                      f"{result['p99_ms']:>8.1f}", flush=True)
    finally:
        if gen is not None:
            gen.close()


if __name__ == "__main__":
    main()
