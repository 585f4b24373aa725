"""Money across hosts on PostgreSQL, with real processes: three "hosts" x 20 processes against
one fleet cap, and the file ledger's settle storm on the shared backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from test_ledger import config_data

from mythline_cli import state
from mythline_cli.config import parse_config
from mythline_cli.ledger import Ledger

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX processes")

HOSTS, PER_HOST, TRIES = 3, 20, 2
FITS, TOKENS, USD = 25, 500, 0.004  # the fleet's daily token cap holds exactly 25 reservations

WORKER = textwrap.dedent("""
    import json, os, random, sys, time
    from mythline_cli.config import parse_config
    from mythline_cli.errors import BudgetExceeded
    from mythline_cli.ledger import Ledger
    from mythline_cli.pricing import Estimate
    data, index, tries, go = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    settings = parse_config(data)
    ledger = Ledger(settings)
    ledger.housekeep()  # connected before the start: the race is over the reservations only
    agent = settings.agent(settings.agent_names[index % len(settings.agent_names)])
    while not os.path.exists(go):
        time.sleep(0.005)
    out = []
    for i in range(tries):
        estimate = Estimate(prompt_tokens=300, max_output_tokens=200, usd=0.004, counted_by="chars", price=None)
        try:
            res = ledger.reserve(agent, estimate, run_id=f"{os.environ['MYTHLINE_HOST']}-{index}", step=str(i))
        except BudgetExceeded as exc:
            out.append(["refused", exc.setting, exc.spent, exc.reserved, exc.request, exc.cap])
            continue
        time.sleep(random.random() * 0.05)
        ledger.settle(res, usd=0.004, tokens=500)
        out.append(["held", res.id])
    print(json.dumps(out), flush=True)
""")


def test_three_hosts_of_twenty_processes_share_one_fleet_cap(tmp_path: Path, pg_dsn: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    data = config_data(budget={"daily_usd": "none", "daily_tokens": FITS * TOKENS, "monthly_usd": "none"},
                       defaults={"daily_usd": "none", "daily_tokens": "none"})
    procs = []
    for h in range(HOSTS):
        root = tmp_path / f"host-{h}"
        (root / "work").mkdir(parents=True)
        env = {**os.environ, "MYTHLINE_STATE": pg_dsn, "MYTHLINE_HOST": f"host-{h}",
               "MYTHLINE_HOME": str(root / "home")}
        for i in range(PER_HOST):
            procs.append((root, subprocess.Popen(
                [sys.executable, "-c", WORKER, json.dumps(data), str(i), str(TRIES), str(root / "go")],
                cwd=root / "work", env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
    try:
        # Each host's own go file (no file is shared): all of them touched within a millisecond.
        time.sleep(3)
        for h in range(HOSTS):
            (tmp_path / f"host-{h}" / "go").touch()
        results = []
        for _, proc in procs:
            out, err = proc.communicate(timeout=180)
            assert proc.returncode == 0, err
            results += json.loads(out)
    finally:
        for _, proc in procs:
            if proc.poll() is None:
                proc.kill()
    held = [r for r in results if r[0] == "held"]
    refused = [r for r in results if r[0] == "refused"]
    assert len(results) == HOSTS * PER_HOST * TRIES
    # Exactly the cap's worth went through: one more would be overspend, one fewer a wrong refusal.
    assert len(held) == FITS
    for _, setting, spent, reserved, request, cap in refused:
        assert setting == "budget.daily_tokens" and spent + reserved + request > cap
    monkeypatch.setenv("MYTHLINE_STATE", pg_dsn)
    try:
        report = Ledger(parse_config(data)).report()
    finally:
        state.forget_sessions()
    assert report["fleet"]["day"]["tokens"] == {"spent": FITS * TOKENS, "reserved": 0.0, "cap": FITS * TOKENS}
    assert report["open_reservations"] == 0
    for root, _ in procs:  # nothing of the ledger was written on any host
        assert not (root / "home" / "ledger.json").exists() and not (root / "home" / "ledger-history.jsonl").exists()
