"""Retrieval's cost on a cycle: fetch + extract for the first topic of every built-in agent,
with each agent's own URL templates pointed at tests/source_server.py on 127.0.0.1.

Three cases per round, in a shuffled order: uncached (empty state home), cached (within
sources.cache_max_age: no request at all) and revalidated (cache_max_age = 0: a conditional
GET answered 304, nothing downloaded or extracted). Also: the import time of trafilatura,
paid once by a run that extracts a page. Prints medians in milliseconds per agent.

    python benchmarks/bench_retrieval.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from mythline_cli import fetch, sources  # noqa: E402
from mythline_cli.fleet.topics import SOURCES, TOPICS  # noqa: E402
from mythline_cli.tiers import DEFAULT_DOMAINS  # noqa: E402

from source_server import SourceServer  # noqa: E402


def local(spec: str, base: str) -> str:
    """A built-in template on the local server: the wiki's path under its host."""
    path = spec.split("/", 3)[3]
    return f"{base}/{path.replace('index.php?search={query}&go=Go', 'wiki/{title}')}"


def gather_all(base: str, max_age: float) -> float:
    policy = fetch.Policy(host_delay=0.0, cache_max_age=max_age)
    t0 = time.perf_counter()
    with fetch.Fetcher(policy) as fetcher:
        for agent, specs in SOURCES.items():
            found, _ = sources.gather(tuple(local(s, base) for s in specs), TOPICS[agent][0], fetcher=fetcher,
                                      base_dir=None, domains=DEFAULT_DOMAINS, max_bytes=2_000_000)
            assert found, agent
    return (time.perf_counter() - t0) * 1000 / len(SOURCES)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    imports = [float(subprocess.run([sys.executable, "-c", "import time; t=time.perf_counter(); import trafilatura; "
                                     "print((time.perf_counter()-t)*1000)"], capture_output=True, text=True,
                                    check=True).stdout) for _ in range(3)]
    results: dict[str, list[float]] = {"uncached": [], "cached": [], "revalidated": []}
    with SourceServer() as server:
        gather_all_warm = tempfile.mkdtemp()
        os.environ["MYTHLINE_HOME"] = gather_all_warm
        gather_all(server.base_url, 0)  # warm-up: imports trafilatura in this process
        for _ in range(args.rounds):
            cases = list(results)
            random.shuffle(cases)
            for case in cases:
                home = tempfile.mkdtemp()
                os.environ["MYTHLINE_HOME"] = home
                if case != "uncached":
                    gather_all(server.base_url, 0)  # fill the cache
                results[case].append(gather_all(server.base_url, 3600.0 if case == "cached" else 0.0))
                shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(gather_all_warm, ignore_errors=True)
    print(f"trafilatura import: {statistics.median(imports):.0f} ms (once per run that extracts a page)")
    print(f"per agent (two sources each), median of {args.rounds} rounds:")
    for case, values in results.items():
        print(f"  {case:<12} {statistics.median(values):7.1f} ms   (min {min(values):.1f}, max {max(values):.1f})")


if __name__ == "__main__":
    main()
