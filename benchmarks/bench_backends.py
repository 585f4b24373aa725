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

Then (``--cycle-runs N``, default 10; 0 skips it) whole commands as cron starts them, each a
real subprocess, interleaved round by round: ``mythline run world-npcs`` with the config
``mythline init`` writes (grounded in two local wiki pages, as ``bench_run.py`` does), in a
fresh state home each time, and ``mythline status`` of a home one run has used; on files,
and with the same config plus ``state = "postgresql://..."`` on its own database of the same
server. Reported: medians, and each PostgreSQL case's ratio to its file case of the same run.
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
sys.path.insert(0, str(Path(__file__).resolve().parent))

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
    import pytest  # the tests' fixture starts and stops it

    import pg

    os.environ.setdefault("MYTHLINE_TEST_PG_FSYNC", "on")  # commits reach the disk, as the journal's lines do
    gen = pg.pg_server.__wrapped__()  # type: ignore[attr-defined]
    try:
        return next(gen), gen
    except pytest.skip.Exception as exc:
        raise SystemExit(str(exc)) from None


def cycle(server: str | None, runs: int) -> None:
    """``run`` and ``status`` on files and on PostgreSQL, interleaved; ratios PG / files."""
    import psycopg
    from _common import base_env, fresh_dir, interleave, lore_server, mythline_cmd, remove, run_timed, summarize
    from bench_run import AGENT, init_configs

    from helpers import TEST_KEY
    from source_server import SourceServer

    work = fresh_dir("backends-cycle")
    llm = lore_server(grounded=True)
    pages = SourceServer().start()
    db = f"bench_cycle_{os.getpid()}"
    try:
        config, _ = init_configs(work, pages.base_url)
        cfgs = {"files": config}
        if server is not None:
            with psycopg.connect(server, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{db}"')
            dsn = server.rsplit("/", 1)[0] + "/" + db
            pg_config = config.with_name("postgresql.toml")  # beside it: the same prompts_dir
            pg_config.write_text(f'state = "{dsn}"\n' + config.read_text(encoding="utf-8"), encoding="utf-8")
            cfgs["PostgreSQL"] = pg_config
        cli = mythline_cmd()
        counter = iter(range(10**9))

        def env(cfg: Path, home: Path, **extra: str) -> dict[str, str]:
            return base_env(MYTHLINE_HOME=str(home), MYTHLINE_CONFIG=str(cfg), MYTHLINE_BASE_URL=llm.base_url,
                            OPENROUTER_API_KEY=TEST_KEY, TIKTOKEN_CACHE_DIR=str(work / "no-tiktoken"), **extra)

        (work / "no-tiktoken").mkdir()
        seed, lived = {}, {}
        for name, cfg in cfgs.items():  # the caches a previous run leaves, and a home for status
            seed[name] = work / f"seed-{name}"
            run_timed([*cli, "run", AGENT], env(cfg, seed[name]))
            lived[name] = seed[name]

        def one_run(name: str) -> float:
            import shutil

            home = work / f"home{next(counter)}"
            shutil.copytree(seed[name] / "cache", home / "cache")
            elapsed = run_timed([*cli, "run", AGENT], env(cfgs[name], home))
            remove(home)
            return elapsed

        cases: dict[str, Any] = {}
        for name, cfg in cfgs.items():
            cases[f"run {AGENT}, {name}"] = lambda name=name: one_run(name)
            cases[f"status, {name}"] = lambda name=name, cfg=cfg: run_timed([*cli, "status"], env(cfg, lived[name]),
                                                                            expect=(0, 1))
        if server is not None:
            # The DSN in the environment instead: the settings cache is then kept (it has no
            # room for a config's state), so status need not validate the config each time.
            cases["status, PostgreSQL (MYTHLINE_STATE)"] = lambda: run_timed(
                [*cli, "status"], env(config, lived["PostgreSQL"], MYTHLINE_STATE=dsn), expect=(0, 1))
        print(f"\nwhole commands, {runs} interleaved runs each (LLM server answers at once)")
        summary = summarize(interleave(cases, runs), f"run {AGENT}, files")
        if server is not None:
            for what, pg_case in ((f"run {AGENT}", "PostgreSQL"), ("status", "PostgreSQL"),
                                  ("status", "PostgreSQL (MYTHLINE_STATE)")):
                ratio = summary[f"{what}, {pg_case}"]["median_s"] / summary[f"{what}, files"]["median_s"]
                print(f"{what}: {pg_case} / files = {ratio:.2f}x")
            with psycopg.connect(dsn) as conn:
                (runs_seen,) = conn.execute("SELECT count(*) FROM mythline_journal WHERE entry->>'event' = 'settle'"
                                            ).fetchone()  # type: ignore[misc]
            print(f"settles journaled in PostgreSQL: {runs_seen} (two per run: research, audit)")
    finally:
        llm.stop()
        pages.stop()
        remove(work)
        if server is not None:
            with psycopg.connect(server, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--procs", default="1,20,60")
    ap.add_argument("--pairs", type=int, default=30)
    ap.add_argument("--dsn", default=None)
    ap.add_argument("--backends", default="file,postgresql")
    ap.add_argument("--cycle-runs", type=int, default=10, help="runs of each whole command (0: none)")
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
        if args.cycle_runs:
            cycle(server if "postgresql" in args.backends else None, args.cycle_runs)
    finally:
        if gen is not None:
            gen.close()


if __name__ == "__main__":
    main()
