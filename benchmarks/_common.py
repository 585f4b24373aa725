"""Shared helpers for the benchmarks: timing, interleaving, import-time reports, state homes.

Every benchmark measures a command against a baseline in the same run, interleaved
round by round, and reports medians: the machine is small and shared, so absolute
numbers drift while ratios measured side by side stay meaningful.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
PY = sys.executable

if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def mythline_cmd() -> list[str]:
    """The installed console script (what cron calls), else ``python -m mythline_cli``."""
    script = Path(PY).with_name("mythline")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [PY, "-m", "mythline_cli"]


def base_env(**extra: str) -> dict[str, str]:
    """The environment for a subprocess: no user config, no stray provider settings."""
    # PYTHONDONTWRITEBYTECODE would make every run compile our modules from source, which an
    # installed copy never does: the warm-up round writes the bytecode, as a first real run would.
    env = {k: v for k, v in os.environ.items()
           if k not in ("MYTHLINE_CONFIG", "MYTHLINE_MODEL", "MYTHLINE_BASE_URL", "PYTHONPROFILEIMPORTTIME",
                        "PYTHONDONTWRITEBYTECODE")}
    env.setdefault("XDG_CONFIG_HOME", str(Path(tempfile.gettempdir()) / "mythline-bench-xdg"))
    env.update(extra)
    return env


def run_timed(cmd: Sequence[str], env: dict[str, str], *, expect: Sequence[int] = (0,),
              cwd: str | None = None, timeout: float = 120) -> float:
    """Wall-clock seconds of one subprocess (output discarded); fails loudly on a bad exit code."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=cwd,
                          timeout=timeout)
    elapsed = time.perf_counter() - t0
    if proc.returncode not in expect:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.decode(errors='replace')[-800:]}")
    return elapsed


def interleave(cases: dict[str, Callable[[], float]], runs: int, *, warmup: int = 1,
               seed: int = 0) -> dict[str, list[float]]:
    """Run every case once per round, in a shuffled order each round; seconds per case.

    Shuffling spreads background load evenly over the cases instead of always
    penalising whichever comes first (or last) in a round.
    """
    rng = random.Random(seed)
    names = list(cases)
    for _ in range(warmup):  # fill the page cache and the bytecode caches
        for name in names:
            cases[name]()
    out: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(runs):
        order = names[:]
        rng.shuffle(order)
        for name in order:
            out[name].append(cases[name]())
    return out


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.1f} ms"


def summarize(results: dict[str, list[float]], baseline: str) -> dict[str, dict[str, float]]:
    """Print median / min / max per case and the ratio of medians to the baseline."""
    base = statistics.median(results[baseline])
    width = max(len(n) for n in results)
    summary = {}
    print(f"{'case':<{width}}  {'median':>10}  {'min':>10}  {'max':>10}  {'ratio':>6}  runs")
    for name, times in results.items():
        med = statistics.median(times)
        summary[name] = {"median_s": med, "min_s": min(times), "max_s": max(times), "ratio": med / base,
                         "runs": len(times)}
        print(f"{name:<{width}}  {ms(med):>10}  {ms(min(times)):>10}  {ms(max(times)):>10}  "
              f"{med / base:6.2f}x  {len(times)}")
    return summary


def importtime_top(cmd: Sequence[str], env: dict[str, str], n: int = 10, *,
                   expect: Sequence[int] = (0, 1)) -> list[tuple[int, int, str]]:
    """(self us, cumulative us, module) of the ``n`` imports with the largest self time."""
    full = [PY, "-X", "importtime", *cmd]
    proc = subprocess.run(full, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          timeout=120)
    if proc.returncode not in expect:
        raise SystemExit(f"importtime run exited {proc.returncode}: {proc.stderr[-800:]}")
    rows = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        try:
            self_us, cum_us, name = line[len("import time:"):].split("|")
            rows.append((int(self_us), int(cum_us), name.rstrip()))
        except ValueError:
            continue
    total = sum(r[0] for r in rows)
    rows.sort(key=lambda r: r[0], reverse=True)
    print(f"  {len(rows)} modules imported, {total / 1000:.0f} ms self time in total (under -X importtime)")
    print(f"  {'self':>9}  {'cumulative':>10}  module (indent = import depth)")
    for self_us, cum_us, name in rows[:n]:
        print(f"  {self_us / 1000:7.1f}ms  {cum_us / 1000:8.1f}ms  {name}")
    return rows[:n]


def top_level_cumulative(cmd: Sequence[str], env: dict[str, str], n: int = 10) -> None:
    """The biggest import subtrees started directly by the program (depth 0), cumulative."""
    proc = subprocess.run([PY, "-X", "importtime", *cmd], env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, timeout=120)
    rows = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        try:
            _, cum_us, name = line[len("import time:"):].split("|")
        except ValueError:
            continue
        if name.startswith(" ") and not name.startswith("  "):  # depth 0: exactly one leading space
            rows.append((int(cum_us), name.strip()))
    rows.sort(reverse=True)
    for cum_us, name in rows[:n]:
        print(f"  {cum_us / 1000:8.1f}ms  {name}")


# -- configs and state homes ----------------------------------------------------------

def write_bench_config(path: Path, *, base_url: str = "http://127.0.0.1:9/v1",
                       sections: dict[str, dict[str, Any]] | None = None) -> Path:
    """The tests' config: a priced model, the chars tokenizer, fast retries."""
    from helpers import write_config

    return write_config(path, base_url=base_url, sections=sections)


def fresh_dir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"mythline-bench-{prefix}-"))


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _iso(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).isoformat()


def populate_fleet(home: Path, config: Path, *, events_per_agent: int = 40, seed: int = 1,
                   spend_every: int = 1) -> None:
    """A lived-in state home for the configured fleet: ledger, heartbeats, checkpoints, events, store.

    Written the way the product writes it: the ledger through ``Ledger.reserve/settle``
    (so ``ledger.json`` and its journal agree), heartbeats in ``Heartbeat``'s shape, and a
    mix of states a real fleet shows (ok, running, failed, over-budget, queue-empty,
    paused, never-run). ``spend_every``: only every n-th agent has spent today (each spend
    is three fsynced ledger writes; a 1,000-agent fleet does not need 3,000 of them).
    """
    os.environ["MYTHLINE_HOME"] = str(home)
    from mythline_cli import files, paths
    from mythline_cli.config import load_settings
    from mythline_cli.ledger import Ledger
    from mythline_cli.pricing import estimate
    from mythline_cli.slug import slug
    from mythline_cli.store import content_hash

    settings = load_settings(config)
    ledger = Ledger(settings)
    rng = random.Random(seed)
    now = datetime.now(timezone.utc)
    states = ["ok", "ok", "running", "failed", "over-budget", "queue-empty", "ok", "paused", None, "ok"]
    for i, agent in enumerate(settings.agents()):
        adir = paths.agent_dir(agent.name)
        adir.mkdir(parents=True, exist_ok=True)
        state = states[i % len(states)]
        if state is None:
            continue  # never run: no files at all
        # A few settled calls today, as a morning of runs leaves them.
        msgs = [{"role": "user", "content": "x" * 2000}]
        for _ in range(3 if i % spend_every == 0 else 0):
            est = estimate(msgs, model=agent.model, max_output_tokens=500, provider=settings.provider)
            res = ledger.reserve(agent, est, run_id=f"run-{i}", step="research")
            ledger.settle(res, usd=(est.usd or 0) * 0.6, tokens=int(est.tokens * 0.6))
        done = rng.randint(1, min(8, len(agent.topics)))
        topics = {t: {"status": "done", "attempts": 1, "feedback": [], "updated": _iso(now)}
                  for t in agent.topics[:done]}
        files.write_json(paths.checkpoint(agent.name), {"version": 1, "agent": agent.name, "topics": topics,
                                                        "current": None})
        for t in agent.topics[:done]:
            record = {"name": t, "summary": f"about {t}", "sources": []}
            files.write_json(paths.record(agent.domain, slug(t)), {
                "domain": agent.domain, "topic": t, "content_hash": content_hash(record),
                "provenance": {"agent": agent.name, "run_id": f"run-{i}"}, "record": record, "history": []})
        with paths.events(agent.name).open("w", encoding="utf-8") as fh:
            for k in range(events_per_agent):
                fh.write(json.dumps({"ts": _iso(now - timedelta(minutes=events_per_agent - k)), "agent": agent.name,
                                     "run_id": f"run-{k // 8}", "event": "llm-call", "step": "research", "ok": True,
                                     "prompt_tokens": 812, "completion_tokens": 344, "usd": 0.0012},
                                    separators=(",", ":")) + "\n")
        started = now - timedelta(minutes=rng.randint(2, 25))
        hb: dict[str, Any] = {
            "agent": agent.name, "run_id": f"run-{i}", "pid": os.getpid(), "state": state, "step": None,
            "topic": agent.topics[min(done, len(agent.topics) - 1)], "started": _iso(started),
            "updated": _iso(started + timedelta(seconds=40)), "finished": _iso(started + timedelta(seconds=40)),
            "last_success": _iso(started + timedelta(seconds=40)), "last_error": None, "last_outcome": "stored",
            "consecutive_failures": 0, "duration_s": 40.0, "tokens_today": 4000, "usd_today": 0.004,
            "topics": {"done": done, "pending": len(agent.topics) - done, "quarantined": 0},
        }
        if state == "running":
            hb.update(step="audit", finished=None)  # pid is this (live) process
        elif state == "failed":
            hb.update(last_error=f"{agent.name}: provider answered 503 after 5 attempts", consecutive_failures=2,
                      last_outcome="failed")
        elif state == "over-budget":
            hb.update(last_error=f"agent {agent.name} is over its daily cap: $0.50 spent or reserved + $0.01 "
                      f"for this call > $0.50; raise agents.{agent.name}.daily_usd", last_outcome="over-budget")
        elif state == "paused":
            hb["state"] = "ok"
            paths.paused_flag(agent.name).write_text("paused for a prompt review\n", encoding="utf-8")
        files.write_json(paths.heartbeat(agent.name), hb)
    # One reservation still open (a run in flight).
    agent = settings.agent(settings.agent_names[2])
    est = estimate([{"role": "user", "content": "y" * 1500}], model=agent.model, max_output_tokens=500,
                   provider=settings.provider)
    ledger.reserve(agent, est, run_id="run-inflight", step="audit")


def lore_server(delay: Callable[[], float] | None = None, *, grounded: bool = False):  # noqa: ANN201
    """A started scripted server that answers every agent's research and audit prompts
    (``grounded``: quoting the sources each prompt gives, for agents that retrieve)."""
    from mythline_cli.fleet.topics import TOPICS

    from helpers import grounded_responder, lore_responder
    from llm_server import ScriptedLLMServer

    server = ScriptedLLMServer().start()
    responder = grounded_responder if grounded else lore_responder
    responders = {name: responder(name) for name in TOPICS}
    # Which agent asked is not in the request; the topic is, and topics are unique per agent.
    owner = {topic: name for name, topics in TOPICS.items() for topic in topics}

    def respond(request: dict[str, Any]):  # noqa: ANN202
        from helpers import is_audit, topic_of

        topic = topic_of(request)
        name = "world-npcs" if is_audit(request) else owner.get(topic, "world-npcs")
        reply = responders[name](request)
        if delay is not None:
            reply.delay = delay()
        return reply

    server.responder = respond
    return server


# Ends as mythline's __main__ does, with gc.freeze(): the shutdown then skips the collections
# the command skips, and "imports" + "work" add up to the command.
IMPORT_ONLY = """\
import gc, importlib, sys
if sys.argv[2:] == ['paused']:
    gc.disable()
for name in open(sys.argv[1]).read().split():
    try:
        importlib.import_module(name)
    except Exception:
        pass
gc.freeze()
"""

MODULES_PROBE = """\
import atexit, runpy, sys
out = sys.argv[1]
sys.argv = ['mythline'] + sys.argv[2:]
def dump():
    with open(out, 'w') as fh:
        fh.write(' '.join(m for m in sys.modules if not m.startswith('__main__')))
atexit.register(dump)
runpy.run_module('mythline_cli', run_name='__main__')
"""


def import_only_case(args: Sequence[str], env: dict[str, str], listing: Path, *, paused: bool = False) -> list[str]:
    """The command line that imports exactly what ``mythline ARGS`` ends up importing, and nothing else
    (``paused``: with the garbage collector off, as a run imports; see mythline_cli/collector.py).

    Timing it next to the real command splits the command's time into imports and work.
    """
    subprocess.run([PY, "-c", MODULES_PROBE, str(listing), *args], env=env, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=120)
    return [PY, "-c", IMPORT_ONLY, str(listing), *(["paused"] if paused else [])]
