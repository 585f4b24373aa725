"""Start-up cost of the read-only commands against ``python -c "import typer, rich.table"``.

    python benchmarks/bench_status.py [--runs 20] [--json results.json]

Target: ``mythline status`` median <= 1.5x the baseline (the CLI framework plus the
table renderer is the floor any Typer + Rich command pays). Also timed, same rounds:
``status --json``, ``status`` with no settings cache (the first call after the config
changed: the config validated with pydantic, the cache rewritten), ``--help``, ``budget show``. The state home holds a lived-in
10-agent fleet (heartbeats in every state, a ledger with today's spend and an open
reservation, checkpoints, events, stored records).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    PY,
    base_env,
    fresh_dir,
    import_only_case,
    importtime_top,
    interleave,
    mythline_cmd,
    populate_fleet,
    remove,
    run_timed,
    summarize,
    top_level_cumulative,
    write_bench_config,
)

TARGET = 1.5
BASE = "baseline: import typer, rich.table"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=20, help="timed runs per case (>= 15)")
    ap.add_argument("--json", type=Path, help="also write the summary here")
    args = ap.parse_args()

    work = fresh_dir("status")
    try:
        home = work / "home"
        config = write_bench_config(work / "mythline.toml")
        populate_fleet(home, config)
        env = base_env(MYTHLINE_HOME=str(home), MYTHLINE_CONFIG=str(config))
        cli = mythline_cmd()
        # A lived-in home has the settings cache (every run writes it); the first status fills it.
        run_timed([*cli, "status"], env, expect=(0, 1))
        imports = import_only_case(["status"], env, work / "status-modules.txt")
        cache = home / "cache"

        def cold_status() -> float:
            # The first status after the config changed: no usable cache, so the config is
            # validated (pydantic) and the cache rewritten.
            shutil.rmtree(cache, ignore_errors=True)
            return run_timed([*cli, "status"], env, expect=(0, 1))

        # status exits 1 when an agent is down or failed (the populated fleet has one failed agent).
        cases = {
            "baseline: import typer, rich.table": lambda: run_timed([PY, "-c", "import typer, rich.table"], env),
            "mythline status": lambda: run_timed([*cli, "status"], env, expect=(0, 1)),
            "mythline status --json": lambda: run_timed([*cli, "status", "--json"], env, expect=(0, 1)),
            "status, no settings cache": cold_status,
            "mythline --help": lambda: run_timed([*cli, "--help"], env),
            "mythline budget show": lambda: run_timed([*cli, "budget", "show"], env),
            "status's imports only (no work)": lambda: run_timed(imports, env),
            "python -c pass (interpreter floor)": lambda: run_timed([PY, "-c", "pass"], env),
        }
        print(f"command: {' '.join(cli)}   python: {PY}   cpus: {os.cpu_count()}   runs: {args.runs} (interleaved)")
        results = interleave(cases, args.runs)
        summary = summarize(results, "baseline: import typer, rich.table")
        ratio = summary["mythline status"]["ratio"]
        verdict = "meets" if ratio <= TARGET else "MISSES"
        print(f"\nstatus / baseline = {ratio:.2f}x (target <= {TARGET}x): {verdict} the target")
        imports_s = summary["status's imports only (no work)"]["median_s"]
        work_ms = (summary["mythline status"]["median_s"] - imports_s) * 1000
        print(f"status = its imports ({imports_s * 1000:.0f} ms, {imports_s / summary[BASE]['median_s']:.2f}x the "
              f"baseline) + argument parsing, config, files and rendering ({work_ms:.0f} ms)")

        print("\n-X importtime, mythline status: top 10 self costs")
        importtime_top(["-m", "mythline_cli", "status"], env)
        print("\n-X importtime, mythline status: biggest top-level import subtrees (cumulative)")
        top_level_cumulative(["-m", "mythline_cli", "status"], env)
        probe = ("import runpy, sys, atexit\n"
                 "sys.argv = ['mythline', 'status']\n"
                 "atexit.register(lambda: sys.stderr.write('MODULES ' + ' '.join(sorted("
                 "m for m in ('openai', 'tokencost', 'anthropic', 'tiktoken', 'httpx', 'pydantic', 'tenacity', "
                 "'typer._adapters') if m in sys.modules)) + ' COUNT %d\\n' % len(sys.modules)))\n"
                 "runpy.run_module('mythline_cli', run_name='__main__')\n")
        import subprocess

        proc = subprocess.run([PY, "-c", probe], env=env, capture_output=True, text=True, timeout=60)
        line = next((ln for ln in proc.stderr.splitlines() if ln.startswith("MODULES")), "MODULES ?")
        print(f"\nloaded by status: {line[len('MODULES '):]}")
        if args.json:
            args.json.write_text(json.dumps({"summary": summary, "target": TARGET}, indent=2))
        return 0
    finally:
        remove(work)


if __name__ == "__main__":
    raise SystemExit(main())
