"""The budget ledger under contention: N processes x M reserve/settle pairs, one fleet cap.

    python benchmarks/bench_ledger.py [--procs 20] [--pairs 50] [--cap-share 0.4]

Every process is started first and released together by a barrier. Each tries ``--pairs``
reservations of randomly sized calls (priced like a real estimate) for one of the ten
agents and settles each accepted one with 50-100% of its estimate. The fleet's daily USD
cap is ``--cap-share`` of everything requested, so only some reservations fit.

Checked, from the journal (``ledger-history.jsonl``) replayed independently:
- total spend <= cap ("overspend: 0"), no reservation left open, ledger.json == replay;
- every accepted reservation fitted when it was made (spent + reserved + request <= cap);
- every refusal was right: the ``BudgetExceeded`` it raised says spent + reserved + request
  > cap, and those figures equal the replayed ledger at the refusal's journal position.
Reported: lock wait and lock held p50/p99 (``Ledger.last_lock_wait/last_lock_held`` after
every call), and for one uncontended process the time spent in each part of an access.
Targets: 0 overspend, 0 wrong decisions, lock held p99 < 5 ms.

What-if switches change this benchmark's processes only, never the product:
``--poll-interval S`` gives the ledger's ``FileLock`` another poll interval (filelock's
default is 0.05 s), ``--no-ledger-fsync`` writes ledger.json without fsync (the journal
is still fsynced before it, so a lost ledger.json write is rolled forward from it).
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


def _experiment(poll_interval: float | None, ledger_fsync: bool) -> None:
    """What-if switches for this process only (the product is not changed)."""
    if poll_interval is not None:
        import functools

        import mythline_cli.ledger as ledger_mod

        ledger_mod.FileLock = functools.partial(ledger_mod.FileLock, poll_interval=poll_interval)  # type: ignore
    if not ledger_fsync:
        import tempfile

        from mythline_cli import files

        def write_json_no_fsync(path: Path, data: Any) -> None:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            with os.fdopen(fd, "wb") as fh:
                fh.write(files.dumps(data).encode("utf-8"))
            os.replace(tmp, path)

        files.write_json = write_json_no_fsync  # type: ignore[assignment]


def _instrument() -> dict[str, list[float]]:
    """Time the parts of a ledger access: load, journal tail, journal append, ledger.json write."""
    import mythline_cli.ledger as ledger_mod
    from mythline_cli import files

    spent: dict[str, list[float]] = {}

    def timed(name: str, fn: Any) -> Any:
        def wrapper(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent.setdefault(name, []).append(time.perf_counter() - t0)
        return wrapper

    files.write_json = timed("write ledger.json (temp file, replace; fsyncs unless --no-ledger-fsync)", files.write_json)
    files.append_jsonl = timed("append journal line (fsync)", files.append_jsonl)
    files.tail_jsonl = timed("read journal tail (roll-forward check)", files.tail_jsonl)
    files.read_json = timed("read + parse ledger.json", files.read_json)
    ledger_mod.Ledger._reclaim = timed("reclaim check (pid_alive per reservation)", ledger_mod.Ledger._reclaim)
    return spent


def worker(idx: int, home: str, cap: float, pairs: int, barrier: Any, out: Any,
           poll_interval: float | None = None, ledger_fsync: bool = True, breakdown: bool = False) -> None:
    os.environ["MYTHLINE_HOME"] = home
    _experiment(poll_interval, ledger_fsync)
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
    t0 = time.perf_counter()
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
    out.put({"worker": idx, "accepted": accepted, "refusals": refusals, "samples": samples,
             "elapsed": time.perf_counter() - t0,
             "parts": {k: statistics.median(v) * 1000 for k, v in parts.items()}})


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))
    return values[k]


def verify(home: Path, cap: float, refusals: list[dict[str, Any]]) -> dict[str, Any]:
    """Replay the journal op by op and judge every decision against the state it was made in."""
    from mythline_cli import files
    from mythline_cli.ledger import Ledger, _empty, apply, replay

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
    ledger = json.loads((home / "ledger.json").read_text())
    if replay(journal) != ledger:
        problems.append("ledger.json differs from the replayed journal")
    if ledger["reservations"]:
        problems.append(f"{len(ledger['reservations'])} reservations left open")
    key = day_key(ledger)
    spent, _ = Ledger.usage(ledger, key, "*", "usd")
    return {"spent": spent, "wrong_refusals": wrong_refusals, "bad_accepts": bad_accepts,
            "mismatched_refusal_figures": mismatched, "problems": problems, "journal_lines": len(ops)}


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


def contend(work: Path, name: str, procs: int, pairs: int, cap: float, *, poll_interval: float | None = None,
            ledger_fsync: bool = True, breakdown: bool = False) -> tuple[list[dict[str, Any]], Path]:
    home = work / name
    home.mkdir()
    ctx = mp.get_context("spawn")  # separate interpreters, like separate `mythline run` processes
    barrier = ctx.Barrier(procs)
    out = ctx.Queue()
    workers = [ctx.Process(target=worker, args=(i, str(home), cap, pairs, barrier, out, poll_interval, ledger_fsync,
                                                          breakdown))
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


def lock_line(label: str, values: list[float]) -> str:
    return (f"{label}  p50 {pct(values, 50):8.2f} ms   p99 {pct(values, 99):8.2f} ms   "
            f"max {max(values):8.2f} ms   mean {statistics.mean(values):7.2f} ms")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--procs", type=int, default=20)
    ap.add_argument("--pairs", type=int, default=50)
    ap.add_argument("--cap-share", type=float, default=0.4, help="fleet cap as a share of all requests")
    ap.add_argument("--poll-interval", type=float, default=None,
                    help="what-if: FileLock poll interval in seconds for the ledger lock (product default: 0.05)")
    ap.add_argument("--no-ledger-fsync", action="store_true",
                    help="what-if: write ledger.json without fsync (the journal stays fsynced)")
    ap.add_argument("--json", type=Path, help="also write the summary here")
    args = ap.parse_args()

    requested = sum(usd_of(p) for w in range(args.procs) for p in requests_for(w, args.pairs))
    cap = round(requested * args.cap_share, 6)
    work = fresh_dir("ledger")
    try:
        what_if = []
        if args.poll_interval is not None:
            what_if.append(f"lock poll interval {args.poll_interval * 1000:g} ms")
        if args.no_ledger_fsync:
            what_if.append("ledger.json written without fsync")
        print(f"cpus: {os.cpu_count()}   one fsync on the state home's file system: {fsync_ms(work):.2f} ms   "
              f"what-if: {', '.join(what_if) or 'none (the product as it is)'}")
        solo, _ = contend(work, "solo", 1, 2 * args.pairs, 1e9, poll_interval=args.poll_interval,
                          ledger_fsync=not args.no_ledger_fsync, breakdown=True)
        solo_held = [s[2] * 1000 for s in solo[0]["samples"]]
        print(f"uncontended (1 process x {2 * args.pairs} pairs, no cap pressure):")
        print("  " + lock_line("lock held", solo_held))
        for part, median in solo[0]["parts"].items():
            print(f"    median {median:6.2f} ms  {part}")

        results, home = contend(work, "home", args.procs, args.pairs, cap, poll_interval=args.poll_interval,
                                ledger_fsync=not args.no_ledger_fsync)
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
                                                               "gap-free, replays to ledger.json, nothing left open"))
        print(f"  ledger calls: {len(samples)} in {wall:.2f} s ({len(samples) / wall:.0f} calls/s, all processes)")
        print("  " + lock_line("lock wait", wait_ms))
        print("  " + lock_line("lock held", held_ms))
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
                "solo_lock_held_ms": {"p50": pct(solo_held, 50), "p99": pct(solo_held, 99)}}, indent=2))
        return 0 if ok else 1
    finally:
        remove(work)


if __name__ == "__main__":
    raise SystemExit(main())
