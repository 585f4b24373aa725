"""The budget ledger under contention: N processes x M reserve/settle pairs, one fleet cap.

    python benchmarks/bench_ledger.py [--procs 20] [--pairs 50] [--cap-share 0.4]

Every process is started first and released together by a barrier; each waits at a second
barrier when it is done, so that no process pickles its results or exits (interpreter
teardown: tens of ms of CPU each) while others still contend: on 2 cores that preempted
the lock holders of the last half second and alone put their held p99 at 20-30 ms. Each
tries ``--pairs`` reservations of randomly sized calls (priced like a real estimate) for one
of the ten agents and settles each accepted one with 50-100% of its estimate. The fleet's
daily USD cap is ``--cap-share`` of everything requested, so only some reservations fit.

Checked, from the journal (``ledger-history.jsonl``) replayed independently:
- total spend <= cap ("overspend: 0"), no reservation left open, ledger.json == the replay up
  to its own seq (it is written after the lock is released, so it may be a few lines behind);
- every accepted reservation fitted when it was made (spent + reserved + request <= cap);
- every refusal was right: the ``BudgetExceeded`` it raised says spent + reserved + request
  > cap, and those figures equal the replayed ledger at the refusal's journal position.
Reported: lock wait and lock held p50/p99 (``Ledger.last_lock_wait/last_lock_held`` after
every call; held counts from the kernel's grant to the unlock), CPU per call, how evenly
the waits were spread over the processes, and for both runs the time spent in each part of
an access.
Targets: 0 overspend, 0 wrong decisions, lock held p99 < 5 ms. ``TMPDIR=/dev/shm`` puts the
state home on tmpfs, which shows what the disk (fsync, rename) adds.

What-if switches change this benchmark's processes only, never the product:
``--lock filelock`` uses the polling ``filelock.FileLock`` (the Windows path) instead of
the queued POSIX ``flock``, with ``--poll-interval S`` (filelock's default is 0.05 s);
``--ledger-sync file`` fsyncs ledger.json's data before the rename, ``full`` its directory
too (the product fsyncs only the journal; ``none``, or the old ``--no-ledger-fsync``, is
the product's setting); ``--pretty`` writes ledger.json indented (the pure-Python JSON
encoder) instead of on one line.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import fresh_dir, remove

MODEL = "test/model"
IN_PRICE, OUT_PRICE = 1.0e-6, 2.0e-6  # USD per token (the tests' price: $1 / $2 per million)
MAX_OUTPUT = 500
HELD_TARGET_MS = 5.0


def config_dict(cap: float) -> dict[str, Any]:
    # Only the fleet's daily USD cap applies, so every decision is about that one figure.
    return {
        "provider": {"model": MODEL, "prices": {MODEL: {"input_per_million": IN_PRICE * 1e6,
                                                        "output_per_million": OUT_PRICE * 1e6}}},
        "budget": {"timezone": "UTC", "daily_usd": cap, "daily_tokens": "none", "monthly_usd": "none",
                   "monthly_tokens": "none"},
        "defaults": {"daily_usd": "none", "daily_tokens": "none"},
    }


def requests_for(worker: int, pairs: int) -> list[int]:
    """Prompt sizes (tokens) of one worker's calls: the same in the parent and the worker."""
    rng = random.Random(1000 + worker)
    return [rng.randint(300, 4000) for _ in range(pairs)]


def usd_of(prompt_tokens: int) -> float:
    return prompt_tokens * IN_PRICE + MAX_OUTPUT * OUT_PRICE


def _experiment(lock: str | None, poll_interval: float | None, ledger_sync: str | None, pretty: bool) -> None:
    """What-if switches for this process only (the product is not changed)."""
    from mythline_cli import files

    if lock is not None or poll_interval is not None:
        from mythline_cli import locking

        acquire = locking.acquire

        def acquire_as_asked(path: Any, timeout: float, **kw: Any) -> Any:
            if lock is not None:
                kw["kind"] = lock
            if poll_interval is not None:
                kw["poll_interval"] = poll_interval
            return acquire(path, timeout, **kw)

        locking.acquire = acquire_as_asked  # type: ignore[assignment]
    if ledger_sync is not None or pretty:
        write_json = files.write_json
        sync = {"full": {"durable": True, "sync_dir": True}, "file": {"durable": True, "sync_dir": False},
                "none": {"durable": False, "sync_dir": False}}

        def write_json_as_asked(path: Path, data: Any, **kw: Any) -> None:
            if ledger_sync is not None:
                kw.update(sync[ledger_sync])
            if pretty:
                kw["compact"] = False
            write_json(path, data, **kw)

        files.write_json = write_json_as_asked  # type: ignore[assignment]


def _instrument() -> dict[str, list[float]]:
    """Time the parts of a ledger access: load, journal tail, journal append, ledger.json write."""
    from mythline_cli import files
    from mythline_cli.ledger import Ledger
    from mythline_cli.ledger.storage import FileStore

    spent: dict[str, list[float]] = {}

    def timed(name: str, fn: Any) -> Any:
        def wrapper(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent.setdefault(name, []).append(time.perf_counter() - t0)
        return wrapper

    FileStore._load = timed("read + parse + check ledger.json", FileStore._load)  # type: ignore[method-assign]
    files.tail_jsonl = timed("read journal tail (roll-forward check)", files.tail_jsonl)
    Ledger._reclaim = timed("reclaim check (pid_alive per reservation)", Ledger._reclaim)  # type: ignore[method-assign]
    for name in ("append_jsonl_many", "append_jsonl"):  # the latter: code from before batching
        if hasattr(files, name):
            setattr(files, name, timed("append journal lines (one write, fsync)", getattr(files, name)))
            break
    files.write_json = timed("write ledger.json (encode, temp file, replace; fsyncs: see what-if)", files.write_json)
    FileStore._save = staticmethod(timed("after the release: save ledger.json (the above, and a look at "  # type: ignore[method-assign]
                                         "whether a later access overtook it)", FileStore._save))
    return spent


def worker(idx: int, home: str, cap: float, pairs: int, barrier: Any, out: Any, what_if: dict[str, Any],
           breakdown: bool = False, finish: Any = None) -> None:
    os.environ["MYTHLINE_HOME"] = home
    _experiment(**what_if)
    parts = _instrument() if breakdown else {}
    from mythline_cli.config import parse_config
    from mythline_cli.errors import BudgetExceeded
    from mythline_cli.ledger import Ledger
    from mythline_cli.pricing import Estimate, Price

    settings = parse_config(config_dict(cap))
    ledger = Ledger(settings)
    agent = settings.agent(settings.agent_names[idx % len(settings.agent_names)])
    price = Price(IN_PRICE, OUT_PRICE, "config")
    seen: dict[str, Any] = {}
    decide = ledger._refusal

    def refusal_with_position(data: dict[str, Any], ag: Any, est: Any) -> Any:
        # Where in the journal the decision was taken, so the parent can replay up to it.
        seen["seq"] = int(data.get("seq", 0))
        return decide(data, ag, est)

    ledger._refusal = refusal_with_position  # type: ignore[method-assign]
    settle_rng = random.Random(5000 + idx)
    samples: list[tuple[str, float, float]] = []
    refusals: list[dict[str, Any]] = []
    accepted = 0
    barrier.wait()
    t0, cpu0 = time.perf_counter(), time.process_time()
    for j, prompt in enumerate(requests_for(idx, pairs)):
        est = Estimate(prompt, MAX_OUTPUT, usd_of(prompt), "chars", price)
        try:
            res = ledger.reserve(agent, est, run_id=f"bench-{idx}", step=f"call-{j}")
        except BudgetExceeded as exc:
            samples.append(("reserve", ledger.last_lock_wait, ledger.last_lock_held))
            refusals.append({"worker": idx, "call": j, "seq": seen["seq"], "spent": exc.spent,
                             "reserved": exc.reserved, "request": exc.request, "cap": exc.cap, "unit": exc.unit,
                             "scope": exc.scope})
            continue
        samples.append(("reserve", ledger.last_lock_wait, ledger.last_lock_held))
        accepted += 1
        share = settle_rng.uniform(0.5, 1.0)
        ledger.settle(res, usd=est.usd * share, tokens=int(est.tokens * share))
        samples.append(("settle", ledger.last_lock_wait, ledger.last_lock_held))
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    if finish is not None:
        finish.wait()  # nobody pickles results or exits while others still hold the lock
    out.put({"worker": idx, "accepted": accepted, "refusals": refusals, "samples": samples,
             "elapsed": elapsed, "cpu": cpu,
             "parts": {k: [x * 1000 for x in v] for k, v in parts.items()}})


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))
    return values[k]


def verify(home: Path, cap: float, refusals: list[dict[str, Any]]) -> dict[str, Any]:
    """Replay the journal op by op and judge every decision against the state it was made in."""
    from mythline_cli import files
    from mythline_cli.ledger import Ledger, apply, replay
    from mythline_cli.ledger.journal import empty as _empty

    journal = home / "ledger-history.jsonl"
    ops = [op for op in files.iter_jsonl(journal) if isinstance(op.get("seq"), int)]
    seqs = [op["seq"] for op in ops]
    problems: list[str] = []
    if seqs != list(range(1, len(seqs) + 1)):
        problems.append("journal sequence numbers are not 1..n without gaps")
    by_seq: dict[int, list[dict[str, Any]]] = {}
    for r in refusals:
        by_seq.setdefault(r["seq"], []).append(r)
    tol = cap * 1e-9
    data = _empty()
    wrong_refusals = bad_accepts = mismatched = 0

    def day_key(d: dict[str, Any]) -> str | None:
        days = [k for k in d["windows"] if k.startswith("day:")]
        return days[-1] if days else None

    def check_refusals(seq: int) -> None:
        nonlocal wrong_refusals, mismatched
        for r in by_seq.pop(seq, []):
            key = day_key(data)
            spent, reserved = Ledger.usage(data, key, "*", "usd") if key else (0.0, 0.0)
            if not (r["spent"] + r["reserved"] + r["request"] > r["cap"] * (1 + 1e-9)):
                wrong_refusals += 1
            if abs(spent - r["spent"]) > 1e-9 or abs(reserved - r["reserved"]) > 1e-9 or r["cap"] != cap:
                mismatched += 1

    check_refusals(0)
    for op in ops:
        if op["event"] == "reserve":
            key = day_key(data)
            spent, reserved = Ledger.usage(data, key, "*", "usd") if key else (0.0, 0.0)
            if spent + reserved + (op.get("usd") or 0.0) > cap + tol:
                bad_accepts += 1
        apply(data, op)
        check_refusals(op["seq"])
    if by_seq:
        problems.append(f"{sum(len(v) for v in by_seq.values())} refusals point past the end of the journal")
    on_disk = json.loads((home / "ledger.json").read_text())
    # ledger.json is written after the lock is released, and two writers may finish in the other
    # order: it may be behind the journal, never different from the journal up to its own seq.
    upto = _empty()
    for op in ops:
        if op["seq"] > on_disk.get("seq", 0):
            break
        apply(upto, op)
    if upto != on_disk:
        problems.append("ledger.json differs from the replayed journal up to its seq")
    ledger = replay(journal)
    behind = len(ops) - int(on_disk.get("seq", 0))
    if ledger["reservations"]:
        problems.append(f"{len(ledger['reservations'])} reservations left open")
    key = day_key(ledger)
    spent, _ = Ledger.usage(ledger, key, "*", "usd")
    return {"spent": spent, "wrong_refusals": wrong_refusals, "bad_accepts": bad_accepts,
            "mismatched_refusal_figures": mismatched, "problems": problems, "journal_lines": len(ops),
            "ledger_json_behind": behind}


def fsync_ms(directory: Path, n: int = 30) -> float:
    """Median cost of one fsync of a small file on the state home's file system."""
    path = directory / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    times = []
    try:
        for _ in range(n):
            os.write(fd, b"x")
            t0 = time.perf_counter()
            os.fsync(fd)
            times.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
        path.unlink()
    return statistics.median(times) * 1000


def contend(work: Path, name: str, procs: int, pairs: int, cap: float, *, what_if: dict[str, Any],
            breakdown: bool = False) -> tuple[list[dict[str, Any]], Path]:
    home = work / name
    home.mkdir()
    ctx = mp.get_context("spawn")  # separate interpreters, like separate `mythline run` processes
    barrier, finish = ctx.Barrier(procs), ctx.Barrier(procs)
    out = ctx.Queue()
    workers = [ctx.Process(target=worker, args=(i, str(home), cap, pairs, barrier, out, what_if, breakdown, finish))
               for i in range(procs)]
    try:
        for p in workers:
            p.start()
        results = [out.get(timeout=900) for _ in workers]
        for p in workers:
            p.join(timeout=60)
        if any(p.exitcode != 0 for p in workers):
            raise SystemExit(f"worker exit codes: {[p.exitcode for p in workers]}")
    finally:
        for p in workers:
            if p.is_alive():
                p.kill()
    return results, home


def print_parts(parts: dict[str, list[float]]) -> None:
    for part, values in parts.items():
        print(f"    p50 {pct(values, 50):6.2f}  p99 {pct(values, 99):6.2f} ms  {part}")


def lock_line(label: str, values: list[float]) -> str:
    return (f"{label}  p50 {pct(values, 50):8.2f} ms   p99 {pct(values, 99):8.2f} ms   "
            f"max {max(values):8.2f} ms   mean {statistics.mean(values):7.2f} ms")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--procs", type=int, default=20)
    ap.add_argument("--pairs", type=int, default=50)
    ap.add_argument("--cap-share", type=float, default=0.4, help="fleet cap as a share of all requests")
    ap.add_argument("--lock", choices=["flock", "filelock"], default=None,
                    help="what-if: the lock implementation (product: flock on POSIX, filelock on Windows)")
    ap.add_argument("--poll-interval", type=float, default=None,
                    help="what-if: filelock's poll interval in seconds (with --lock filelock; its default: 0.05)")
    ap.add_argument("--ledger-sync", choices=["full", "file", "none"], default=None,
                    help="what-if: ledger.json fsyncs: full = data and directory, file = data only, "
                         "none = neither (the product; the journal stays fsynced)")
    ap.add_argument("--no-ledger-fsync", action="store_true", help="what-if: the same as --ledger-sync none")
    ap.add_argument("--pretty", action="store_true", help="what-if: write ledger.json indented (as before)")
    ap.add_argument("--json", type=Path, help="also write the summary here")
    args = ap.parse_args()
    if args.no_ledger_fsync:
        args.ledger_sync = "none"
    experiment = {"lock": args.lock, "poll_interval": args.poll_interval, "ledger_sync": args.ledger_sync,
                  "pretty": args.pretty}

    requested = sum(usd_of(p) for w in range(args.procs) for p in requests_for(w, args.pairs))
    cap = round(requested * args.cap_share, 6)
    work = fresh_dir("ledger")
    try:
        what_if = []
        if args.lock is not None:
            what_if.append(f"lock {args.lock}")
        if args.poll_interval is not None:
            what_if.append(f"lock poll interval {args.poll_interval * 1000:g} ms")
        if args.ledger_sync is not None:
            what_if.append({"full": "ledger.json fsynced with its directory",
                            "file": "ledger.json fsynced, not its directory",
                            "none": "ledger.json written without fsync"}[args.ledger_sync])
        if args.pretty:
            what_if.append("ledger.json indented")
        print(f"cpus: {os.cpu_count()}   load average: {os.getloadavg()[0]:.2f}   one fsync on the state home's "
              f"file system: {fsync_ms(work):.2f} ms   what-if: {', '.join(what_if) or 'none (the product as it is)'}")
        solo, _ = contend(work, "solo", 1, 2 * args.pairs, 1e9, what_if=experiment, breakdown=True)
        solo_held = [s[2] * 1000 for s in solo[0]["samples"]]
        print(f"uncontended (1 process x {2 * args.pairs} pairs, no cap pressure):")
        print("  " + lock_line("lock held", solo_held))
        print_parts(solo[0]["parts"])

        results, home = contend(work, "home", args.procs, args.pairs, cap, what_if=experiment, breakdown=True)
        samples = [s for r in results for s in r["samples"]]
        refusals = [x for r in results for x in r["refusals"]]
        accepted = sum(r["accepted"] for r in results)
        attempted = args.procs * args.pairs
        wall = max(r["elapsed"] for r in results)
        check = verify(home, cap, refusals)
        wait_ms = [s[1] * 1000 for s in samples]
        held_ms = [s[2] * 1000 for s in samples]
        overspend = max(0.0, check["spent"] - cap)
        print(f"contended: {args.procs} processes x {args.pairs} reservations, released together by a barrier")
        print(f"  requested (estimates): ${requested:.6f}   fleet cap: ${cap:.6f} ({args.cap_share:.0%})")
        print(f"  accepted: {accepted}   refused: {len(refusals)}   of {attempted}")
        print(f"  total spend: ${check['spent']:.6f} = {check['spent'] / cap:.2%} of the cap")
        print(f"  overspend: {overspend:.6f}" if overspend else "  overspend: 0")
        print(f"  accepted reservations that did not fit when made: {check['bad_accepts']}")
        print(f"  refusals that would have fitted: {check['wrong_refusals']}   refusals whose figures differ from "
              f"the replayed ledger at their position: {check['mismatched_refusal_figures']}")
        print(f"  journal: {check['journal_lines']} lines; " + ("; ".join(check["problems"]) or
                                                               "gap-free, nothing left open, ledger.json agrees")
              + f" (it is {check['ledger_json_behind']} lines behind; readers roll it forward)")
        cpu_per_call = sum(r["cpu"] for r in results) / len(samples) * 1000
        print(f"  ledger calls: {len(samples)} in {wall:.2f} s ({len(samples) / wall:.0f} calls/s, all processes); "
              f"CPU per call {cpu_per_call:.2f} ms (user + system, all threads, in and out of the lock)")
        print("  " + lock_line("lock wait", wait_ms))
        print("  " + lock_line("lock held", held_ms))
        parts: dict[str, list[float]] = {}
        for r in results:
            for k, v in r["parts"].items():
                parts.setdefault(k, []).extend(v)
        print_parts(parts)
        ends = sorted(r["elapsed"] for r in results)
        per_proc = sorted(statistics.mean(s[1] for s in r["samples"]) * 1000 for r in results)
        print(f"  fairness: processes finished between {ends[0]:.2f} and {ends[-1]:.2f} s; mean wait per process "
              f"{per_proc[0]:.1f} .. {per_proc[-1]:.1f} ms; waits over 1 s: {sum(w > 1000 for w in wait_ms)}")
        ok = (not overspend and not check["bad_accepts"] and not check["wrong_refusals"]
              and not check["mismatched_refusal_figures"] and not check["problems"])
        held_ok = pct(held_ms, 99) < HELD_TARGET_MS
        print(f"correctness: {'OK' if ok else 'VIOLATED'}   lock held p99 < {HELD_TARGET_MS:g} ms: "
              f"{'meets' if held_ok else 'MISSES'} the target")
        if args.json:
            args.json.write_text(json.dumps({
                "procs": args.procs, "pairs": args.pairs, "cap": cap, "requested": requested, "what_if": what_if,
                "accepted": accepted, "refused": len(refusals), "spent": check["spent"], "overspend": overspend,
                "check": check, "lock_wait_ms": {"p50": pct(wait_ms, 50), "p99": pct(wait_ms, 99)},
                "lock_held_ms": {"p50": pct(held_ms, 50), "p99": pct(held_ms, 99)},
                "lock_wait_max_ms": max(wait_ms), "lock_held_max_ms": max(held_ms), "calls_per_s": len(samples) / wall,
                "cpu_per_call_ms": cpu_per_call,
                "solo_lock_held_ms": {"p50": pct(solo_held, 50), "p99": pct(solo_held, 99)}}, indent=2))
        return 0 if ok else 1
    finally:
        remove(work)


if __name__ == "__main__":
    raise SystemExit(main())
