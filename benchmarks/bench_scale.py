"""Does start-up stay flat as the state home grows?

    python benchmarks/bench_scale.py [--runs 12] [--records 100000] [--events 100000] [--history 1000000]
                                     [--agents 1000] [--spend-every 4] [--part a|b|c|all]

(a) ``mythline run world-npcs`` with ``--records`` stored records (small JSON files across
    the ten domain folders of ``store/``) vs the same run with an empty store.
    Target: the median with the big store within 10% of the empty one.
(b) The fleet with big logs: ``--events`` lines in every agent's ``events.jsonl`` and a
    ``--history``-line ``ledger-history.jsonl`` (whose replay is ``ledger.json``), vs the
    same fleet with small logs: ``mythline status`` and ``mythline run`` timed side by side,
    plus, from an audit hook and ``/proc/self/io``, which state files each command opens
    and how many bytes it read in all. Target: within 10%, and no whole-log reads.
(c) A fleet of ``--agents`` (1,000) custom agents plus the ten built-in ones, each with its
    own ``[agents.NAME]`` table (``kind`` cycling through the ten kinds, eight topics each),
    in a lived-in state home (heartbeats in every state, checkpoints, events, records, spend
    in the ledger for every ``--spend-every``-th agent, one open reservation), vs the
    ten-agent fleet in the same rounds: ``mythline status`` and ``status --json`` with the
    settings cache warm (as every status after the first), the first ``status`` after a
    config change (the whole file validated with pydantic, the cache rewritten) and, for information, ``status --all`` (every row in the table).
    Target: the 1,010-agent ``status``, ``status --json`` and after-a-change medians under 1 s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    PY,
    base_env,
    fresh_dir,
    interleave,
    lore_server,
    mythline_cmd,
    populate_fleet,
    remove,
    run_timed,
    summarize,
    write_bench_config,
)

AGENT = "world-npcs"
TARGET = 1.10

PROBE = """\
import atexit, json, os, runpy, sys
home = os.path.realpath(os.environ['MYTHLINE_HOME'])
opened = {}
def hook(event, args):
    if event != 'open' or not isinstance(args[0], (str, bytes, os.PathLike)):
        return
    path = os.path.realpath(os.fsdecode(args[0]))
    if path.startswith(home + os.sep):
        rel = os.path.relpath(path, home)
        rel = rel if not rel.startswith('store' + os.sep) else 'store/...'
        head, base = os.path.split(rel)
        if base.startswith('.') and base.endswith('.tmp'):  # .ledger.json.x1y2.tmp -> ledger.json (temp)
            rel = os.path.join(head, base[1:].rsplit('.', 2)[0] + ' (temp)')
        opened[rel] = opened.get(rel, 0) + 1
sys.addaudithook(hook)
def report():
    with open('/proc/self/io') as fh:
        io = dict(line.split(': ') for line in fh.read().splitlines())
    sys.stderr.write('PROBE ' + json.dumps({'opened': opened, 'rchar': int(io['rchar'])}) + '\\n')
atexit.register(report)
sys.argv = ['mythline'] + sys.argv[1:]
runpy.run_module('mythline_cli', run_name='__main__')
"""


# -- building homes --------------------------------------------------------------------

def fill_store(home: Path, n: int) -> float:
    """``n`` small record files spread over the ten domain folders; seconds taken."""
    from mythline_cli.fleet.topics import DOMAINS

    t0 = time.perf_counter()
    domains = list(DOMAINS.values())
    for d in domains:
        (home / "store" / d).mkdir(parents=True, exist_ok=True)
    template = ('{{"domain": "{d}", "topic": "Topic {i}", "content_hash": "sha256:{i:064x}", '
                '"provenance": {{"agent": "bench", "run_id": "bench-{i}", "score": 0.9}}, '
                '"record": {{"name": "Topic {i}", "summary": "A stored record for the scale benchmark.", '
                '"sources": [{{"url": "https://warcraft.wiki.gg/wiki/Topic_{i}", "title": "Topic {i}"}}]}}, '
                '"history": []}}\n')
    for i in range(n):
        d = domains[i % len(domains)]
        (home / "store" / d / f"bench-topic-{i:07d}-{i:08x}.json").write_text(template.format(d=d, i=i))
    return time.perf_counter() - t0


def write_history(home: Path, lines: int) -> tuple[float, float]:
    """A journal of ``lines`` past-window ops ending where ``ledger.json`` (its replay) begins.

    Returns (seconds to write, seconds to replay) -- the replay is what
    ``mythline budget repair`` does.
    """
    from mythline_cli import files
    from mythline_cli.ledger import replay, window_keys, zone

    t0 = time.perf_counter()
    now = datetime.now(timezone.utc)
    tz = zone("local")
    current = window_keys(now, tz)
    agents = ["world-zones", "world-npcs", "world-factions", "world-lore", "world-items", "quest-chains",
              "character-archetypes", "faction-dynamics", "narrative-history", "lore-crosscheck"]
    days = max(1, lines // 10_000)
    pairs_per_day = max(1, -(-(lines - 2 * days) // (2 * days)))  # at least ``lines`` in all
    seq = 0
    open_month = None
    out = []

    def emit(op: dict[str, Any]) -> None:
        nonlocal seq
        seq += 1
        out.append(json.dumps({"seq": seq, **op}, separators=(",", ":")))

    with (home / "ledger-history.jsonl").open("w", encoding="utf-8") as fh:
        for k in range(days, 0, -1):
            day = now - timedelta(days=k)
            keys = window_keys(day, tz)
            ts = day.isoformat()
            if keys["month"] != open_month:
                if open_month and open_month != current["month"]:
                    emit({"ts": ts, "event": "window-closed", "window": open_month, "agents": {}})
                emit({"ts": ts, "event": "window-opened", "window": keys["month"], "kind": "month"})
                open_month = keys["month"]
            emit({"ts": ts, "event": "window-opened", "window": keys["day"], "kind": "day"})
            wins = sorted([keys["day"], keys["month"]])
            for j in range(pairs_per_day):
                rid = f"{k:04x}{j:012x}"
                agent = agents[j % len(agents)]
                emit({"ts": ts, "event": "reserve", "reservation": rid, "agent": agent, "run_id": f"r{k}-{j}",
                      "step": "research", "pid": 1, "host": "bench", "created": ts,
                      "created_ts": day.timestamp(), "usd": 0.0000015, "tokens": 1500, "windows": wins})
                emit({"ts": ts, "event": "settle", "reservation": rid, "agent": agent, "usd": 0.000001,
                      "tokens": 1000, "unsettled": False})
            emit({"ts": ts, "event": "window-closed", "window": keys["day"], "agents": {}})
            fh.write("\n".join(out) + "\n")
            out.clear()
    written = time.perf_counter() - t0
    t1 = time.perf_counter()
    files.write_json(home / "ledger.json", replay(home / "ledger-history.jsonl"))
    return written, time.perf_counter() - t1


def grow_events(home: Path, n: int) -> None:
    """Prepend history so every agent's events.jsonl has ``n`` lines (older ones first)."""
    line = ('{{"ts":"2026-01-01T00:00:{s:02d}+00:00","agent":"{a}","run_id":"old-{r}","event":"llm-call",'
            '"step":"research","attempt":1,"ok":true,"prompt_tokens":812,"completion_tokens":344,'
            '"usd":0.0012,"cost_source":"tokens x prices","latency_s":3.1}}\n')
    for events in (home / "agents").glob("*/events.jsonl"):
        agent = events.parent.name
        recent = events.read_text(encoding="utf-8")
        have = recent.count("\n")
        with events.open("w", encoding="utf-8") as fh:
            fh.write("".join(line.format(s=i % 60, a=agent, r=i // 8) for i in range(max(0, n - have))))
            fh.write(recent)


def reset_run_state(home: Path, keep: set[str]) -> None:
    """Forget every run (agents, ledger, breaker, alerts), keep what is in ``keep``."""
    for entry in home.iterdir():
        if entry.name in keep:
            continue
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def snapshot_agent(home: Path, agent: str) -> dict[str, bytes]:
    adir = home / "agents" / agent
    return {name: (adir / name).read_bytes() for name in ("checkpoint.json", "heartbeat.json")
            if (adir / name).exists()}


def restore_agent(home: Path, agent: str, saved: dict[str, bytes], record: Path | None) -> None:
    adir = home / "agents" / agent
    for name, data in saved.items():
        (adir / name).write_bytes(data)
    if record is not None and record.exists():
        record.unlink()


def next_record(home: Path, agent: str) -> Path:
    """Where the next run of ``agent`` will store its record (so it can be removed again)."""
    from mythline_cli.config import load_settings
    from mythline_cli.slug import slug

    ck = json.loads((home / "agents" / agent / "checkpoint.json").read_text())
    a = load_settings(None).agent(agent)
    topic = next(t for t in a.topics if (ck["topics"].get(t) or {}).get("status") not in ("done", "quarantined"))
    return home / "store" / a.domain / f"{slug(topic)}.json"


def probe(args: list[str], env: dict[str, str], expect: tuple[int, ...] = (0, 1)) -> dict[str, Any]:
    proc = subprocess.run([PY, "-c", PROBE, *args], env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode not in expect:
        raise SystemExit(f"{args} exited {proc.returncode}: {proc.stderr[-600:]}")
    line = next(ln for ln in proc.stderr.splitlines() if ln.startswith("PROBE "))
    return json.loads(line[len("PROBE "):])


def size_mb(path: Path) -> float:
    return path.stat().st_size / 1e6 if path.exists() else 0.0


def write_fleet_config(path: Path, base: Path, agents: int) -> Path:
    """``base`` plus ``agents`` custom agents: kinds in turn, eight topics of their own each."""
    from mythline_cli.fleet.topics import TOPICS

    kinds = list(TOPICS)
    parts = [base.read_text(encoding="utf-8")]
    for i in range(agents):
        kind = kinds[i % len(kinds)]
        topics = ", ".join(f'"Topic {j + 1} of agent-{i:04d}"' for j in range(8))
        parts.append(f'[agents.agent-{i:04d}]\nkind = "{kind}"\ntopics = [{topics}]\n')
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


MODULES = """\
import atexit, runpy, sys
def report():
    sys.stderr.write('MODULES ' + ' '.join(m for m in ('pydantic', 'typer') if m in sys.modules) + '\\n')
atexit.register(report)
sys.argv = ['mythline'] + sys.argv[1:]
runpy.run_module('mythline_cli', run_name='__main__')
"""


def heavy_modules(args: list[str], env: dict[str, str]) -> tuple[str, str]:
    """(which of pydantic/typer a command imported, its stdout)."""
    proc = subprocess.run([PY, "-c", MODULES, *args], env=env, capture_output=True, text=True, timeout=120)
    line = [ln for ln in proc.stderr.splitlines() if ln.startswith("MODULES")][-1]
    return line.removeprefix("MODULES").strip() or "neither", proc.stdout


# -- the benchmark -------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=12)
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--history", type=int, default=1_000_000)
    ap.add_argument("--json", type=Path, help="also write the summary here")
    ap.add_argument("--agents", type=int, default=1000, help="custom agents in part (c)")
    ap.add_argument("--spend-every", type=int, default=4, help="in (c), every n-th agent has spent today")
    ap.add_argument("--part", choices=("a", "b", "c", "all"), default="all")
    args = ap.parse_args()

    work = fresh_dir("scale")
    server = lore_server()
    report: dict[str, Any] = {}
    try:
        from helpers import KEY_ENV, TEST_KEY

        config = write_bench_config(work / "mythline.toml", base_url=server.base_url)
        os.environ["MYTHLINE_CONFIG"] = str(config)
        cli = mythline_cmd()

        def env_of(home: Path) -> dict[str, str]:
            return base_env(MYTHLINE_HOME=str(home), MYTHLINE_CONFIG=str(config), **{KEY_ENV: TEST_KEY})

        if args.part in ("a", "all"):
            print(f"(a) run with {args.records:,} stored records vs an empty store")
            empty, big = work / "empty", work / "big"
            empty.mkdir()
            big.mkdir()
            took = fill_store(big, args.records)
            print(f"    wrote {args.records:,} records in {took:.1f} s")
            from mythline_cli.fleet.topics import DOMAINS, TOPICS
            from mythline_cli.slug import slug
            first = TOPICS[AGENT][0]
            record_of = {h: h / "store" / DOMAINS[AGENT] / f"{slug(first)}.json" for h in (empty, big)}

            def run_in(home: Path) -> float:
                reset_run_state(home, {"store"})
                record_of[home].unlink(missing_ok=True)
                return run_timed([*cli, "run", AGENT], env_of(home))

            results = interleave({"run, empty store": lambda: run_in(empty),
                                  f"run, {args.records:,} records": lambda: run_in(big)}, args.runs)
            s = summarize(results, "run, empty store")
            ratio = s[f"run, {args.records:,} records"]["ratio"]
            print(f"    big / empty = {ratio:.3f}x (target <= {TARGET:.2f}x): "
                  f"{'meets' if ratio <= TARGET else 'MISSES'} the target")
            reset_run_state(big, {"store"})
            record_of[big].unlink(missing_ok=True)
            p = probe(["run", AGENT], env_of(big), expect=(0,))
            print("    files a run opened in the big home: "
                  + ", ".join(f"{k} x{v}" for k, v in sorted(p["opened"].items())))
            report["a"] = {"summary": s, "ratio": ratio}
            remove(big)
            remove(empty)

        if args.part in ("b", "all"):
            print(f"\n(b) the ten-agent fleet with {args.events:,}-line events.jsonl files and a "
                  f"{args.history:,}-line ledger-history.jsonl, vs the same fleet with small logs")
            small, large = work / "small", work / "large"
            small.mkdir()
            large.mkdir()
            written, replayed = write_history(large, args.history)
            print(f"    wrote the journal in {written:.1f} s; replaying it (= `mythline budget repair`) "
                  f"took {replayed:.1f} s in-process")
            populate_fleet(small, config)
            populate_fleet(large, config)
            t0 = time.perf_counter()
            grow_events(large, args.events)
            print(f"    grew events.jsonl files in {time.perf_counter() - t0:.1f} s")
            total_events = sum(size_mb(p) for p in (large / "agents").glob("*/events.jsonl"))
            print(f"    sizes: ledger-history.jsonl {size_mb(large / 'ledger-history.jsonl'):.0f} MB "
                  f"({sum(1 for _ in (large / 'ledger-history.jsonl').open('rb')):,} lines), events.jsonl "
                  f"{total_events:.0f} MB over {len(list((large / 'agents').glob('*/events.jsonl')))} agents (the never-run "
                  f"agent has none); "
                  f"small home: {size_mb(small / 'ledger-history.jsonl') * 1000:.0f} kB journal")
            saved = {h: snapshot_agent(h, AGENT) for h in (small, large)}
            records = {h: next_record(h, AGENT) for h in (small, large)}

            def status_in(home: Path) -> float:
                return run_timed([*cli, "status"], env_of(home), expect=(0, 1))

            def run_in(home: Path) -> float:
                restore_agent(home, AGENT, saved[home], records[home])
                return run_timed([*cli, "run", AGENT], env_of(home))

            results = interleave({"status, small logs": lambda: status_in(small),
                                  "status, big logs": lambda: status_in(large),
                                  "run, small logs": lambda: run_in(small),
                                  "run, big logs": lambda: run_in(large)}, args.runs)
            s = summarize(results, "status, small logs")
            st = s["status, big logs"]["median_s"] / s["status, small logs"]["median_s"]
            rn = s["run, big logs"]["median_s"] / s["run, small logs"]["median_s"]
            print(f"    status big / small = {st:.3f}x   run big / small = {rn:.3f}x   (target <= {TARGET:.2f}x): "
                  f"{'meets' if max(st, rn) <= TARGET else 'MISSES'} the target")
            rows = {}
            for label, home, cmd, expect in (("status", small, ["status"], (0, 1)),
                                             ("status", large, ["status"], (0, 1)),
                                             ("run", small, ["run", AGENT], (0,)),
                                             ("run", large, ["run", AGENT], (0,))):
                if label == "run":
                    restore_agent(home, AGENT, saved[home], records[home])
                rows[(label, home.name)] = probe(cmd, env_of(home), expect)
            for label in ("status", "run"):
                a, b = rows[(label, "small")], rows[(label, "large")]
                extra = (b["rchar"] - a["rchar"]) / 1e6
                print(f"    {label}: bytes read in all, small {a['rchar'] / 1e6:.2f} MB, big {b['rchar'] / 1e6:.2f} MB "
                      f"(+{extra:.2f} MB with {size_mb(large / 'ledger-history.jsonl') + total_events:.0f} MB of logs)")
                print(f"    {label} opened (big home): " + ", ".join(f"{k} x{v}" for k, v in sorted(b["opened"].items())))
            report["b"] = {"summary": s, "status_ratio": st, "run_ratio": rn,
                           "bytes": {f"{k[0]}-{k[1]}": v["rchar"] for k, v in rows.items()}}

            t0 = time.perf_counter()
            rc = subprocess.run([*cli, "budget", "repair"], env=env_of(large), capture_output=True).returncode
            print(f"    `mythline budget repair` over the {args.history:,}-line journal: {time.perf_counter() - t0:.1f} s "
                  f"(exit {rc})")

        if args.part in ("c", "all"):
            n = args.agents + 10
            print(f"\n(c) `mythline status` with {n:,} agents ({args.agents:,} custom + the ten built in) "
                  "vs the ten-agent fleet")
            ten, big = work / "fleet10", work / "fleet1000"
            ten.mkdir()
            big.mkdir()
            big_config = write_fleet_config(work / "fleet1000.toml", config, args.agents)
            # The first status after a config change: its own copies of the two configs, edited
            # before every call, so the fingerprint never matches (the warm cases keep theirs).
            changing = {ten: work / "changing10.toml", big: work / "changing1000.toml"}
            changing[ten].write_text(config.read_text(encoding="utf-8"), encoding="utf-8")
            changing[big].write_text(big_config.read_text(encoding="utf-8"), encoding="utf-8")
            t0 = time.perf_counter()
            populate_fleet(ten, config)
            populate_fleet(big, big_config, spend_every=args.spend_every)
            print(f"    populated both homes in {time.perf_counter() - t0:.1f} s; fleet1000.toml is "
                  f"{big_config.stat().st_size / 1000:.0f} kB, "
                  f"{sum(1 for _ in (big / 'agents').glob('*/heartbeat.json')):,} heartbeats, "
                  f"ledger.json {size_mb(big / 'ledger.json') * 1000:.0f} kB")

            def env_for(home: Path, cfg: Path) -> dict[str, str]:
                return base_env(MYTHLINE_HOME=str(home), MYTHLINE_CONFIG=str(cfg), **{KEY_ENV: TEST_KEY})

            conf = {ten: config, big: big_config}
            edits = {ten: 0, big: 0}

            def warm(home: Path, *extra: str) -> float:
                return run_timed([*cli, "status", *extra], env_for(home, conf[home]), expect=(0, 1))

            def after_change(home: Path) -> float:
                edits[home] += 1
                with changing[home].open("a", encoding="utf-8") as fh:
                    fh.write(f"# edit {edits[home]}\n")
                return run_timed([*cli, "status"], env_for(home, changing[home]), expect=(0, 1))

            for home in (ten, big):  # leave the settings cache a real run or status leaves
                warm(home)
            for home in (ten, big):
                loaded, _ = heavy_modules(["status"], env_for(home, conf[home]))
                print(f"    warm status of {home.name} imports {loaded} of pydantic/typer (fast path: neither)")
            _, shown = heavy_modules(["status"], env_for(big, conf[big]))
            _, json_text = heavy_modules(["status", "--json"], env_for(big, conf[big]))
            rows = len(json.loads(json_text)["agents"])
            print(f"    {n:,}-agent status prints {len(shown.splitlines())} lines (the summary); "
                  f"--json has {rows:,} agents")
            cases = {
                "status, 10 agents": lambda: warm(ten),
                f"status, {n:,} agents": lambda: warm(big),
                "status --json, 10 agents": lambda: warm(ten, "--json"),
                f"status --json, {n:,} agents": lambda: warm(big, "--json"),
                "status after a config change, 10 agents": lambda: after_change(ten),
                f"status after a config change, {n:,} agents": lambda: after_change(big),
                f"status --all, {n:,} agents": lambda: warm(big, "--all"),
            }
            results = interleave(cases, args.runs)
            s = summarize(results, "status, 10 agents")
            judged = [f"status, {n:,} agents", f"status --json, {n:,} agents",
                      f"status after a config change, {n:,} agents"]
            for name, base_name in zip(judged, ("status, 10 agents", "status --json, 10 agents",
                                                "status after a config change, 10 agents"), strict=True):
                med = s[name]["median_s"]
                print(f"    {name}: median {med * 1000:.0f} ms = {med / s[base_name]['median_s']:.2f}x the "
                      f"ten-agent fleet; target < 1 s: {'meets' if med < 1.0 else 'MISSES'} it")
            print(f"    (for information) status --all, one row per agent: median "
                  f"{s[f'status --all, {n:,} agents']['median_s'] * 1000:.0f} ms")
            report["c"] = {"summary": s, "agents": n,
                           "meets": all(s[name]["median_s"] < 1.0 for name in judged)}

        if args.json:
            args.json.write_text(json.dumps(report, indent=2, default=str))
        return 0
    finally:
        server.stop()
        remove(work)


if __name__ == "__main__":
    raise SystemExit(main())
