"""``mythline store ls`` and ``store search`` over a generated store, against ``python -c "import typer, rich.table"``.

    python benchmarks/bench_store.py [--records 100000] [--runs 15] [--json results.json] [--pg [--dsn URL]]

Target: both medians <= 1.5x the baseline, with the index warm (what every command after the
first finds). Also timed, once each: building the index from nothing (the first command after
the index was deleted), and a refresh after one record was added (the first command after a run
stored something). The store is written as the fleet writes it: store/<domain>/<slug>.json,
spread over the ten built-in domains, every record valid for its agent's schema.

``--pg``: the same store also in PostgreSQL (moved there by ``mythline state import``, timed),
and ``store ls`` / ``store search`` timed on it too, interleaved with the file cases. The
server is ``--dsn`` (one where a database may be created), else a throwaway cluster started
as the tests start theirs (fsync on).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import PY, base_env, fresh_dir, interleave, mythline_cmd, remove, run_timed, summarize  # noqa: E402

TARGET = 1.5
BASE = "baseline: import typer, rich.table"
# Names are built from a few dozen words (so a name search hits thousands of records); the text
# from a vocabulary of a few thousand, as lore prose has.
WORDS = ["shadow", "light", "storm", "frost", "blood", "iron", "ember", "dawn", "dusk", "wolf", "raven", "moon", "sun", "stone", "thorn", "ash", "gold", "silver", "wind", "tide", "grave", "star", "void", "fel", "arcane", "spirit"]


def generate(home: Path, count: int, *, seed: int = 7) -> None:
    """``count`` stored records as the fleet writes them (plain JSON files: the index is not built)."""
    from mythline_cli.fleet.topics import DOMAINS
    from mythline_cli.slug import slug

    from factories import record

    rng = random.Random(seed)
    syllables = ["ka", "lo", "dar", "eth", "mor", "val", "zin", "tho", "rel", "gan", "ur", "shi", "nar", "bel",
                 "tor", "quel", "ash", "ven", "dra", "mir"]
    vocabulary = sorted({"".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))) for _ in range(6000)})
    agents = list(DOMAINS)
    now = datetime.now(timezone.utc)
    templates = {a: record(a, "X") for a in agents}
    for i in range(count):
        agent = agents[i % len(agents)]
        name = f"{rng.choice(WORDS).title()} {rng.choice(WORDS).title()} {i}"
        rec = json.loads(json.dumps(templates[agent]).replace("X", name))
        rec["summary"] = " ".join(rng.choice(vocabulary) for _ in range(40))
        rec["confidence"] = round(rng.uniform(0.5, 1.0), 2)
        stored = (now - timedelta(seconds=rng.uniform(0, 90 * 86400))).isoformat()
        doc = {"domain": DOMAINS[agent], "topic": name, "content_hash": f"sha256:{i:064x}",
               "provenance": {"agent": agent, "model": "bench/model", "run_id": f"run-{i}", "stored_at": stored,
                              "sources": rec["sources"]},
               "record": rec, "history": []}
        path = home / "store" / DOMAINS[agent] / f"{slug(name)}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc), encoding="utf-8")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=100_000, help="records in the generated store")
    ap.add_argument("--runs", type=int, default=15, help="timed runs per case")
    ap.add_argument("--json", type=Path, help="also write the summary here")
    ap.add_argument("--pg", action="store_true", help="also time the store in PostgreSQL")
    ap.add_argument("--dsn", default=None, help="with --pg: a server to create the database on")
    args = ap.parse_args()

    work = fresh_dir("store")
    server, gen, db = args.dsn, None, None
    try:
        home = work / "home"
        t0 = time.perf_counter()
        generate(home, args.records)
        print(f"generated {args.records:,} records in {time.perf_counter() - t0:.1f} s")
        env = base_env(MYTHLINE_HOME=str(home), PYDANTIC_DISABLE_PLUGINS="__all__")
        cli = mythline_cmd()
        build = run_timed([*cli, "store", "ls"], env, timeout=3600)
        print(f"first store ls (builds the index from {args.records:,} JSON files): {build:.2f} s")
        one = home / "store" / "npcs" / "added-by-a-run.json"
        sample = next((home / "store" / "npcs").glob("*.json"))
        one.write_bytes(sample.read_bytes())
        time.sleep(2.1)  # past the index's two-second doubt about a folder's time
        refresh = run_timed([*cli, "store", "ls"], env)
        print(f"store ls after a run stored one record (one folder rescanned): {refresh:.2f} s")
        run_timed([*cli, "store", "ls"], env)  # the folder's time is now trusted
        cases = {
            BASE: lambda: run_timed([PY, "-c", "import typer, rich.table"], env),
            "mythline store ls": lambda: run_timed([*cli, "store", "ls"], env),
            "mythline store ls --agent world-npcs --min-confidence 0.9": lambda: run_timed(
                [*cli, "store", "ls", "--agent", "world-npcs", "--min-confidence", "0.9"], env),
            "mythline store search frost": lambda: run_timed([*cli, "store", "search", "frost"], env),
            "mythline store search 'storm raven 4'": lambda: run_timed([*cli, "store", "search", "storm raven 4"],
                                                                       env),
            "mythline store ls --json": lambda: run_timed([*cli, "store", "ls", "--json"], env),
        }
        imported = None
        if args.pg:
            if server is None:
                from bench_backends import cluster

                server, gen = cluster()
            import psycopg

            db = f"bench_store_{os.getpid()}"
            with psycopg.connect(server, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{db}"')
            pg_env = {**env, "MYTHLINE_STATE": server.rsplit("/", 1)[0] + "/" + db}
            imported = run_timed([*cli, "state", "import"], pg_env, timeout=3600)
            print(f"state import of {args.records:,} records into PostgreSQL: {imported:.1f} s")
            run_timed([*cli, "store", "ls"], pg_env)
            cases.update({
                "PostgreSQL: mythline store ls": lambda: run_timed([*cli, "store", "ls"], pg_env),
                "PostgreSQL: mythline store ls --agent world-npcs --min-confidence 0.9": lambda: run_timed(
                    [*cli, "store", "ls", "--agent", "world-npcs", "--min-confidence", "0.9"], pg_env),
                "PostgreSQL: mythline store search frost": lambda: run_timed(
                    [*cli, "store", "search", "frost"], pg_env),
                "PostgreSQL: mythline store search 'storm raven 4'": lambda: run_timed(
                    [*cli, "store", "search", "storm raven 4"], pg_env),
                "PostgreSQL: mythline store ls --json": lambda: run_timed([*cli, "store", "ls", "--json"], pg_env),
            })
        print(f"command: {' '.join(cli)}   python: {PY}   cpus: {os.cpu_count()}   runs: {args.runs} (interleaved)")
        results = interleave(cases, args.runs)
        summary = summarize(results, BASE)
        worst = 0.0
        headline = ["mythline store ls", "mythline store search frost"]
        headline += [f"PostgreSQL: {n}" for n in headline] if args.pg else []
        for name in headline:
            ratio = summary[name]["ratio"]
            worst = max(worst, ratio)
            print(f"{name} / baseline = {ratio:.2f}x (target <= {TARGET}x): "
                  f"{'meets' if ratio <= TARGET else 'MISSES'} the target")
        if args.json:
            args.json.write_text(json.dumps({"summary": summary, "target": TARGET, "records": args.records,
                                             "index_build_s": build, "one_folder_refresh_s": refresh,
                                             "pg_import_s": imported}, indent=2))
        return 0
    finally:
        remove(work)
        if db is not None and server is not None:
            import psycopg

            with psycopg.connect(server, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        if gen is not None:
            gen.close()  # stops the throwaway cluster


if __name__ == "__main__":
    raise SystemExit(main())
