"""A whole ``mythline run world-npcs`` cycle against an instantly answering local server.

    python benchmarks/bench_run.py [--runs 12] [--json results.json] [--compare DIR]

The headline is the config ``mythline init`` writes (``tokenizer = "auto"``, the default
model priced from the bundled table, the prompt copies beside it, the built-in fleet grounded
in two wiki pages per topic); the environment points it at the local LLM server
(``MYTHLINE_BASE_URL``) and holds the key (``OPENROUTER_API_KEY``). The one edit to the file:
its two wiki templates point at ``tests/source_server.py`` under two host names (127.0.0.1
and localhost, as the real wikis are two hosts, so the per-host delay does not apply between
them), and those names get the real wikis' tier. So every timed run fetches, extracts and
quotes two real HTML pages, as a new user's first run does. Second line: the same file with ``tokenizer = "chars"``. Each
timed run is a fresh state home (so every run does the same work: research call, audit
call, store, checkpoint, heartbeats, ledger journal) holding the ``cache/`` a previous run
leaves (settings, prices), and a real subprocess, as cron starts it. Baseline, same rounds: ``python -c "import openai"`` (a cycle has to import the SDK it
calls with). Target: the headline's median <= 1.3x the baseline.

For information, same rounds: the ``init`` config with tiktoken's o200k_base file in its
cache (``auto`` then counts with tiktoken; the file is rebuilt from bpe-openai's copy, as
the tests do), the first run in a home (no caches yet), the run with the interpreter's shutdown collection not skipped, the run's
imports alone (with the garbage collector off, as the run imports), and ``python -c pass``. Also printed once: ``-X importtime`` top 10 self
costs of ``run``, and which of ``tokencost`` / ``anthropic`` / ``tiktoken`` / ``requests``
/ ``openai`` the run left in ``sys.modules``, and of trafilatura's parts (its downloader and
the packages extraction defers to the pages that need them: htmldate, courlan, justext,
charset_normalizer, urllib3).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import urllib.parse
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
)

TARGET = 1.3
AGENT = "world-npcs"
HEADLINE = f"mythline run {AGENT} (init config)"
CHARS = f"mythline run {AGENT} (init config, tokenizer chars)"
BASE = "baseline: import openai"

PROBE = """\
import atexit, runpy, sys
sys.argv = ['mythline', 'run', {agent!r}]
WATCH = ('tokencost', 'anthropic', 'tiktoken', 'requests', 'openai', 'httpx', 'tenacity', 'pydantic', 'typer._adapters',
         'trafilatura.core', 'trafilatura.downloads', 'htmldate', 'courlan', 'justext', 'charset_normalizer', 'urllib3')
atexit.register(lambda: sys.stderr.write(
    'MODULES ' + ' '.join(m + ('=yes' if m in sys.modules else '=no') for m in WATCH)
    + ' COUNT %d\\n' % len(sys.modules)))
runpy.run_module('mythline_cli', run_name='__main__')
"""

# The run as __main__ starts it, but with its last gc.freeze() (collector.final) made a no-op:
# what the run costs when the interpreter's shutdown collections walk everything it allocated.
UNFROZEN = """\
import runpy, sys
import mythline_cli.collector
mythline_cli.collector.final = lambda: None
sys.argv = ['mythline', 'run', {agent!r}]
runpy.run_module('mythline_cli', run_name='__main__')
"""


def init_configs(work: Path, pages: str) -> tuple[Path, Path]:
    """What ``mythline init`` writes (and the same with the chars tokenizer), written by it."""
    folder = work / "init"
    proc = subprocess.run([*mythline_cmd(), "init", "--path", str(folder / "mythline.toml")],
                          env=base_env(MYTHLINE_HOME=str(work / "init-home")), capture_output=True, text=True,
                          timeout=120)
    if proc.returncode != 0:
        raise SystemExit(f"mythline init failed: {proc.stderr}")
    config = folder / "mythline.toml"
    text = config.read_text(encoding="utf-8")
    if '# tokenizer = "auto"' not in text:
        raise SystemExit("the init config no longer says tokenizer = \"auto\": update this benchmark")
    if "\n[defaults]\n" not in text or "\n[sources.tiers]\n" not in text:
        raise SystemExit("the init config has no [defaults] or [sources.tiers] table: update this benchmark")
    host = urllib.parse.urlsplit(pages).port
    text = text.replace("\n[defaults]\n", "\n[defaults]\nsources = "
                        f'["http://127.0.0.1:{host}/wiki/{{title}}", "http://localhost:{host}/chronicle/{{title}}"]\n', 1)
    text = text.replace("\n[sources.tiers]\n", '\n[sources.tiers]\n"127.0.0.1" = "primary"\n"localhost" = "primary"\n', 1)
    config.write_text(text, encoding="utf-8")
    chars = folder / "chars.toml"  # beside it, so prompts_dir = "prompts" finds the same copies
    chars.write_text(text.replace('# tokenizer = "auto"', 'tokenizer = "chars"  '), encoding="utf-8")
    return config, chars


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=12, help="timed runs per case (>= 10)")
    ap.add_argument("--json", type=Path, help="also write the summary here")
    ap.add_argument("--compare", type=Path, metavar="DIR",
                    help="also time the headline with the mythline_cli of another checkout (e.g. `git archive main "
                         "| tar -x -C DIR`), imported through PYTHONPATH=DIR, in the same rounds")
    args = ap.parse_args()

    work = fresh_dir("run")
    server = lore_server(grounded=True)
    from source_server import SourceServer

    pages = SourceServer().start()
    try:
        from helpers import TEST_KEY, write_tiktoken_cache

        config, chars = init_configs(work, pages.base_url)
        empty_cache = work / "tiktoken-empty"  # where tiktoken finds nothing: the usual machine
        empty_cache.mkdir()
        full_cache = write_tiktoken_cache(work / "tiktoken")
        cli = mythline_cmd()
        counter = iter(range(10**9))

        def env_for_fresh_home(cfg: Path = config, tiktoken: Path = empty_cache) -> tuple[dict[str, str], Path]:
            home = work / f"home{next(counter)}"
            return base_env(MYTHLINE_HOME=str(home), MYTHLINE_CONFIG=str(cfg), MYTHLINE_BASE_URL=server.base_url,
                            OPENROUTER_API_KEY=TEST_KEY, TIKTOKEN_CACHE_DIR=str(tiktoken)), home

        # A scheduled run finds the caches the previous run left (settings, prices): every
        # fresh home gets a copy of those a first run of each config left.
        seed = work / "seed"
        for cfg in (config, chars):
            env, home = env_for_fresh_home(cfg)
            run_timed([*cli, "run", AGENT], {**env, "MYTHLINE_HOME": str(seed)})

        def one_run(cfg: Path = config, tiktoken: Path = empty_cache, cmd: list[str] | None = None,
                    cached: bool = True, pythonpath: Path | None = None) -> float:
            env, home = env_for_fresh_home(cfg, tiktoken)
            if pythonpath is not None:
                env["PYTHONPATH"] = str(pythonpath)
            if cached:
                shutil.copytree(seed / "cache", home / "cache")
            elapsed = run_timed(cmd or [*cli, "run", AGENT], env)
            stored = list((home / "store").rglob("*.json"))
            if len(stored) != 1:
                raise SystemExit(f"run stored {len(stored)} records, expected 1")
            remove(home)
            return elapsed

        base = base_env()
        env, _ = env_for_fresh_home()
        imports = import_only_case(["run", AGENT], env, work / "run-modules.txt", paused=True)
        unfrozen = [PY, "-c", UNFROZEN.format(agent=AGENT)]
        cases = {
            BASE: lambda: run_timed([PY, "-c", "import openai"], base),
            HEADLINE: one_run,
            CHARS: lambda: one_run(chars),
            "init config, tiktoken's file cached": lambda: one_run(tiktoken=full_cache),
            "init config, a new home (no settings or price cache)": lambda: one_run(cached=False),
            "init config, shutdown collection not skipped": lambda: one_run(cmd=unfrozen),
            "run's imports only (no work)": lambda: run_timed(imports, base),
            "python -c pass (interpreter floor)": lambda: run_timed([PY, "-c", "pass"], base),
        }
        if args.compare is not None:
            other = args.compare.resolve()
            if not (other / "mythline_cli" / "__init__.py").is_file():
                raise SystemExit(f"--compare {other}: no mythline_cli package there")
            cases[f"{HEADLINE}, the checkout in {other}"] = lambda: one_run(pythonpath=other)
        print(f"command: {' '.join(cli)}   server: {server.base_url} (answers at once)   runs: {args.runs}")
        before = server.count()
        results = interleave(cases, args.runs)
        calls = server.count() - before
        summary = summarize(results, BASE)
        ratio = summary[HEADLINE]["ratio"]
        verdict = "meets" if ratio <= TARGET else "MISSES"
        print(f"\nrun, the config init writes / baseline = {ratio:.2f}x (target <= {TARGET}x): {verdict} the target")
        print(f"run, the same with tokenizer = \"chars\" / baseline = {summary[CHARS]['ratio']:.2f}x")
        imp = summary["run's imports only (no work)"]["median_s"]
        whole = summary[HEADLINE]["median_s"]
        print(f"run = its imports ({imp * 1000:.0f} ms, {imp / summary[BASE]['median_s']:.2f}x "
              f"the baseline) + parsing, config, two calls, writes ({(whole - imp) * 1000:.0f} ms)")
        print(f"LLM requests served: {calls} (research + audit per run)")

        env, home = env_for_fresh_home()
        print("\n-X importtime, mythline run: top 10 self costs")
        importtime_top(["-m", "mythline_cli", "run", AGENT], env, expect=(0,))
        env, home = env_for_fresh_home()
        print("\n-X importtime, mythline run: biggest top-level import subtrees (cumulative)")
        top_level_cumulative(["-m", "mythline_cli", "run", AGENT], env)

        lines = {}
        for label, tiktoken in (("no tiktoken file", empty_cache), ("tiktoken's file cached", full_cache)):
            env, home = env_for_fresh_home(tiktoken=tiktoken)
            proc = subprocess.run([PY, "-c", PROBE.format(agent=AGENT)], env=env, capture_output=True, text=True,
                                  timeout=120)
            line = next((ln for ln in proc.stderr.splitlines() if ln.startswith("MODULES")), "MODULES ?")
            lines[label] = line
            print(f"\nsys.modules at exit of a run, {label} (exit {proc.returncode}): {line[len('MODULES '):]}")
        bad = [m for m in ("tokencost", "anthropic", "requests") if any(f"{m}=yes" in ln for ln in lines.values())]
        print("tokencost/anthropic/requests imported: " + (", ".join(bad) if bad else "none (as designed)"))
        deferred = [m for m in ("trafilatura.downloads", "htmldate", "courlan", "justext", "charset_normalizer", "urllib3")
                    if any(f"{m}=yes" in ln for ln in lines.values())]
        print("trafilatura's downloader / deferred packages imported: "
              + (", ".join(deferred) if deferred else "none (as designed for the test wiki's pages)"))
        if args.json:
            args.json.write_text(json.dumps({"summary": summary, "target": TARGET, "modules": lines}, indent=2))
        return 0
    finally:
        server.stop()
        pages.stop()
        remove(work)


if __name__ == "__main__":
    raise SystemExit(main())
