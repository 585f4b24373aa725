"""A whole ``mythline run world-npcs`` cycle against an instantly answering local server.

    python benchmarks/bench_run.py [--runs 12] [--json results.json]

Each timed run is a fresh state home (so every run does the same work: research call,
audit call, store, checkpoint, heartbeats, ledger journal) and a real subprocess, as cron
starts it. Baseline, same rounds: ``python -c "import openai"`` (a cycle has to import the
SDK it calls with). Target: median run <= 1.3x the baseline.

A second case runs the same cycle with ``tokenizer = "auto"`` (the ``init`` default): the
prompt is then counted by tiktoken when its files are on disk, else by the byte bound.

Also printed once: ``-X importtime`` top 10 self costs of ``run``, and which of
``tokencost`` / ``anthropic`` / ``tiktoken`` / ``openai`` the run left in ``sys.modules``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
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
    lore_server,
    mythline_cmd,
    remove,
    run_timed,
    summarize,
    top_level_cumulative,
    write_bench_config,
)

TARGET = 1.3
AGENT = "world-npcs"

PROBE = """\
import atexit, runpy, sys
sys.argv = ['mythline', 'run', {agent!r}]
WATCH = ('tokencost', 'anthropic', 'tiktoken', 'openai', 'httpx', 'tenacity', 'pydantic', 'typer._adapters')
atexit.register(lambda: sys.stderr.write(
    'MODULES ' + ' '.join(m + ('=yes' if m in sys.modules else '=no') for m in WATCH)
    + ' COUNT %d\\n' % len(sys.modules)))
runpy.run_module('mythline_cli', run_name='__main__')
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=12, help="timed runs per case (>= 10)")
    ap.add_argument("--json", type=Path, help="also write the summary here")
    args = ap.parse_args()

    work = fresh_dir("run")
    server = lore_server()
    try:
        config = write_bench_config(work / "mythline.toml", base_url=server.base_url)
        auto = work / "auto.toml"
        auto.write_text(config.read_text().replace('tokenizer = "chars"', 'tokenizer = "auto"'))
        from helpers import KEY_ENV, TEST_KEY

        cli = mythline_cmd()
        counter = iter(range(10**9))

        def env_for_fresh_home() -> tuple[dict[str, str], Path]:
            home = work / f"home{next(counter)}"
            return base_env(MYTHLINE_HOME=str(home), MYTHLINE_CONFIG=str(config), **{KEY_ENV: TEST_KEY}), home

        def one_run(cfg: Path = config) -> float:
            env, home = env_for_fresh_home()
            env["MYTHLINE_CONFIG"] = str(cfg)
            elapsed = run_timed([*cli, "run", AGENT], env)
            stored = list((home / "store").rglob("*.json"))
            if len(stored) != 1:
                raise SystemExit(f"run stored {len(stored)} records, expected 1")
            remove(home)
            return elapsed

        base = base_env()
        env, _ = env_for_fresh_home()
        imports = import_only_case(["run", AGENT], env, work / "run-modules.txt")
        cases = {
            "baseline: import openai": lambda: run_timed([PY, "-c", "import openai"], base),
            f"mythline run {AGENT}": one_run,
            f"mythline run {AGENT} (tokenizer auto)": lambda: one_run(auto),
            "run's imports only (no work)": lambda: run_timed(imports, base),
            "python -c pass (interpreter floor)": lambda: run_timed([PY, "-c", "pass"], base),
        }
        print(f"command: {' '.join(cli)}   server: {server.base_url} (answers at once)   runs: {args.runs}")
        before = server.count()
        results = interleave(cases, args.runs)
        calls = server.count() - before
        summary = summarize(results, "baseline: import openai")
        ratio = summary[f"mythline run {AGENT}"]["ratio"]
        verdict = "meets" if ratio <= TARGET else "MISSES"
        print(f"\nrun / baseline = {ratio:.2f}x (target <= {TARGET}x): {verdict} the target")
        auto_ratio = summary[f"mythline run {AGENT} (tokenizer auto)"]["ratio"]
        print(f"run with tokenizer = \"auto\" / baseline = {auto_ratio:.2f}x")
        imp = summary["run's imports only (no work)"]["median_s"]
        whole = summary[f"mythline run {AGENT}"]["median_s"]
        print(f"run = its imports ({imp * 1000:.0f} ms, {imp / summary['baseline: import openai']['median_s']:.2f}x "
              f"the baseline) + parsing, config, two calls, writes ({(whole - imp) * 1000:.0f} ms)")
        print(f"LLM requests served: {calls} for {args.runs + 1} runs (research + audit each)")

        env, home = env_for_fresh_home()
        print("\n-X importtime, mythline run: top 10 self costs")
        importtime_top(["-m", "mythline_cli", "run", AGENT], env, expect=(0,))
        env, home = env_for_fresh_home()
        print("\n-X importtime, mythline run: biggest top-level import subtrees (cumulative)")
        top_level_cumulative(["-m", "mythline_cli", "run", AGENT], env)

        env, home = env_for_fresh_home()
        proc = subprocess.run([PY, "-c", PROBE.format(agent=AGENT)], env=env, capture_output=True, text=True,
                              timeout=120)
        line = next((ln for ln in proc.stderr.splitlines() if ln.startswith("MODULES")), "MODULES ?")
        print(f"\nsys.modules at exit of a run (exit {proc.returncode}): {line[len('MODULES '):]}")
        bad = [m for m in ("tokencost", "anthropic") if f"{m}=yes" in line]
        print("tokencost/anthropic imported: " + (", ".join(bad) if bad else "neither (as designed)"))
        if args.json:
            args.json.write_text(json.dumps({"summary": summary, "target": TARGET, "modules": line}, indent=2))
        return 0
    finally:
        server.stop()
        remove(work)


if __name__ == "__main__":
    raise SystemExit(main())
