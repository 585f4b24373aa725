"""The budget ledger: holds, caps, windows, reclaims, concurrency and corrupt files."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from freezegun import freeze_time

from mythline_cli import paths
from mythline_cli.config import parse_config
from mythline_cli.errors import BudgetExceeded, LedgerCorrupt, UnknownPrice
from mythline_cli.files import iter_jsonl
from mythline_cli.ledger import Ledger
from mythline_cli.pricing import Estimate

MODEL = "test/model"
PRICES = {MODEL: {"input_per_million": 1.0, "output_per_million": 2.0}}
AGENT = "world-npcs"
OTHER = "world-zones"
T0 = datetime(2026, 5, 5, 10, 0, 0, tzinfo=timezone.utc)  # 12:00 in Berlin (CEST)
DAY0 = "day:2026-05-05"
MONTH0 = "month:2026-05"


def config_data(budget: dict[str, Any] | None = None, defaults: dict[str, Any] | None = None,
                agents: dict[str, Any] | None = None, model: str = MODEL) -> dict[str, Any]:
    data: dict[str, Any] = {
        "provider": {"model": model, "prices": PRICES},
        "budget": {"timezone": "Europe/Berlin", "daily_usd": 1.0, **(budget or {})},
        "defaults": {"daily_usd": 0.5, **(defaults or {})},
    }
    if agents:
        data["agents"] = agents
    return data


def make_settings(**kwargs: Any):
    return parse_config(config_data(**kwargs))


def est(usd: float | None = 0.1, prompt: int = 100, output: int = 100) -> Estimate:
    return Estimate(prompt_tokens=prompt, max_output_tokens=output, usd=usd, counted_by="chars", price=None)


class Clock:
    """An injectable clock that only moves when told to."""

    def __init__(self, start: datetime = T0) -> None:
        self.t = start

    def __call__(self) -> datetime:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += timedelta(seconds=seconds)


def ledger_file() -> dict[str, Any]:
    return json.loads(paths.ledger().read_text(encoding="utf-8"))


def history() -> list[dict[str, Any]]:
    return list(iter_jsonl(paths.ledger_history()))


def bucket(data: dict[str, Any], window: str, agent: str) -> dict[str, Any]:
    return data["windows"][window]["agents"][agent]


# -- reserve, settle, release ------------------------------------------------------

def test_settle_replaces_the_hold_with_the_actual_cost() -> None:
    settings = make_settings()
    ledger = Ledger(settings, now=Clock())
    agent = settings.agent(AGENT)
    res = ledger.reserve(agent, est(0.2, 120, 80), run_id="r1", step="research")
    assert (res.agent, res.usd, res.tokens) == (AGENT, 0.2, 200)
    before = ledger.report()["agents"][AGENT]
    assert before["usd"] == {"spent": 0.0, "reserved": 0.2, "cap": 0.5}
    assert before["tokens"]["reserved"] == 200
    stored = ledger_file()["reservations"][res.id]
    assert (stored["agent"], stored["run_id"], stored["step"], stored["pid"]) == (AGENT, "r1", "research", os.getpid())
    assert stored["windows"] == sorted([DAY0, MONTH0])

    assert ledger.settle(res, usd=0.05, tokens=150) is True

    report = ledger.report()
    assert report["agents"][AGENT]["usd"] == {"spent": pytest.approx(0.05), "reserved": 0.0, "cap": 0.5}
    assert report["agents"][AGENT]["tokens"]["spent"] == 150
    assert report["agents"][AGENT]["tokens"]["reserved"] == 0
    assert report["fleet"]["day"]["usd"]["spent"] == pytest.approx(0.05)
    assert report["fleet"]["month"]["usd"]["spent"] == pytest.approx(0.05)
    assert report["open_reservations"] == 0
    data = ledger_file()
    assert data["reservations"] == {}
    for window in (DAY0, MONTH0):
        assert bucket(data, window, AGENT) == {"usd": pytest.approx(0.05), "tokens": 150, "unsettled_usd": 0.0,
                                               "calls": 1}
    assert ledger.agent_today(AGENT) == (150, pytest.approx(0.05))


def test_settle_marked_unsettled_counts_as_unsettled_spend() -> None:
    settings = make_settings()
    ledger = Ledger(settings, now=Clock())
    res = ledger.reserve(settings.agent(AGENT), est(0.2), run_id="r1", step="research")
    ledger.settle(res, usd=0.2, tokens=200, unsettled=True)
    assert bucket(ledger_file(), DAY0, AGENT)["unsettled_usd"] == pytest.approx(0.2)
    assert bucket(ledger_file(), DAY0, AGENT)["usd"] == pytest.approx(0.2)


def test_release_drops_the_hold_without_charging() -> None:
    settings = make_settings()
    ledger = Ledger(settings, now=Clock())
    agent = settings.agent(AGENT)
    res = ledger.reserve(agent, est(0.4), run_id="r1", step="research")
    ledger.release(res)
    report = ledger.report()
    assert report["agents"][AGENT]["usd"]["spent"] == 0.0
    assert report["agents"][AGENT]["usd"]["reserved"] == 0.0
    assert report["open_reservations"] == 0
    assert ledger_file()["reservations"] == {}
    # The released room is usable again: 0.4 + 0.4 would not fit under 0.5.
    ledger.reserve(agent, est(0.4), run_id="r2", step="research")


def test_agent_cap_refuses_and_names_the_setting() -> None:
    settings = make_settings()
    ledger = Ledger(settings, now=Clock())
    agent = settings.agent(AGENT)
    held = ledger.reserve(agent, est(0.3), run_id="r1", step="research")
    before = paths.ledger().read_bytes()

    with pytest.raises(BudgetExceeded) as info:
        ledger.reserve(agent, est(0.3), run_id="r2", step="validate")

    exc = info.value
    assert exc.setting == f"agents.{AGENT}.daily_usd"
    assert exc.unit == "usd"
    assert exc.spent == 0.0 and exc.reserved == pytest.approx(0.3) and exc.request == pytest.approx(0.3)
    assert f"agents.{AGENT}.daily_usd" in str(exc)
    assert f"mythline budget reset --agent {AGENT}" in str(exc)
    assert exc.exit_code == 3
    assert list(ledger_file()["reservations"]) == [held.id]
    assert paths.ledger().read_bytes() == before
    # Another agent has its own cap.
    ledger.reserve(settings.agent(OTHER), est(0.3), run_id="r3", step="research")


def test_agent_cap_counts_spent_and_admits_a_call_that_fills_it_exactly() -> None:
    settings = make_settings()
    ledger = Ledger(settings, now=Clock())
    agent = settings.agent(AGENT)
    ledger.settle(ledger.reserve(agent, est(0.45), run_id="r", step="s"), usd=0.45, tokens=100)
    with pytest.raises(BudgetExceeded):
        ledger.reserve(agent, est(0.06), run_id="r", step="s")
    ledger.reserve(agent, est(0.05), run_id="r", step="s")  # 0.45 + 0.05 == 0.5: fits
    with pytest.raises(BudgetExceeded):
        ledger.reserve(agent, est(0.000001), run_id="r", step="s")


def test_fleet_cap_refuses_and_names_the_setting() -> None:
    settings = make_settings()  # agents 0.5 each, fleet 1.0
    ledger = Ledger(settings, now=Clock())
    ledger.reserve(settings.agent("world-zones"), est(0.4), run_id="r", step="s")
    ledger.settle(ledger.reserve(settings.agent("world-items"), est(0.4), run_id="r", step="s"),
                  usd=0.4, tokens=200)
    with pytest.raises(BudgetExceeded) as info:
        ledger.reserve(settings.agent(AGENT), est(0.4), run_id="r", step="s")
    exc = info.value
    assert exc.setting == "budget.daily_usd"
    assert exc.scope == "the fleet"
    assert exc.spent == pytest.approx(0.4) and exc.reserved == pytest.approx(0.4)
    message = str(exc)
    assert "budget.daily_usd" in message
    assert message.endswith("run: mythline budget reset")
    assert len(ledger_file()["reservations"]) == 1
    ledger.reserve(settings.agent(AGENT), est(0.2), run_id="r", step="s")  # 1.0 exactly


@pytest.mark.parametrize(("budget", "defaults", "setting"), [
    ({"daily_tokens": 1_000_000}, {"daily_tokens": 1000}, f"agents.{AGENT}.daily_tokens"),
    ({"daily_tokens": 1000}, {"daily_tokens": 1_000_000}, "budget.daily_tokens"),
    ({"monthly_tokens": 1000}, {"daily_tokens": 1_000_000}, "budget.monthly_tokens"),
])
def test_token_caps_refuse(budget: dict[str, Any], defaults: dict[str, Any], setting: str) -> None:
    settings = make_settings(budget=budget, defaults=defaults)
    ledger = Ledger(settings, now=Clock())
    agent = settings.agent(AGENT)
    ledger.settle(ledger.reserve(agent, est(0.01, 300, 300), run_id="r", step="s"), usd=0.01, tokens=500)
    ledger.reserve(agent, est(0.01, 200, 200), run_id="r", step="s")  # 500 + 400 fits under 1000
    before = paths.ledger().read_bytes()
    with pytest.raises(BudgetExceeded) as info:
        ledger.reserve(agent, est(0.01, 100, 101), run_id="r", step="s")
    assert info.value.setting == setting
    assert info.value.unit == "tokens"
    assert setting in str(info.value)
    assert "tokens" in str(info.value)
    assert paths.ledger().read_bytes() == before
    ledger.reserve(agent, est(0.01, 50, 50), run_id="r", step="s")  # exactly 1000


def test_monthly_usd_cap_spans_days_and_resets_with_the_month() -> None:
    clock = Clock(datetime(2026, 5, 30, 10, 0, tzinfo=timezone.utc))
    settings = make_settings(budget={"daily_usd": 10.0, "monthly_usd": 1.0}, defaults={"daily_usd": 10.0})
    ledger = Ledger(settings, now=clock)
    agent = settings.agent(AGENT)
    ledger.settle(ledger.reserve(agent, est(0.7), run_id="r", step="s"), usd=0.7, tokens=100)
    clock.advance(86400)  # May 31: a new day, the same month
    assert ledger.report()["fleet"]["day"]["usd"]["spent"] == 0.0
    with pytest.raises(BudgetExceeded) as info:
        ledger.reserve(settings.agent(OTHER), est(0.4), run_id="r", step="s")
    assert info.value.setting == "budget.monthly_usd"
    assert info.value.window == "monthly"
    assert "budget.monthly_usd" in str(info.value)
    ledger.reserve(settings.agent(OTHER), est(0.3), run_id="r", step="s")
    clock.advance(86400)  # June 1
    ledger.reserve(settings.agent(OTHER), est(0.9), run_id="r", step="s")
    report = ledger.report()
    assert report["fleet"]["month"]["window"] == "2026-06"
    assert report["fleet"]["month"]["usd"] == {"spent": 0.0, "reserved": pytest.approx(0.9), "cap": 1.0}


def test_check_decides_like_reserve_without_writing() -> None:
    settings = make_settings()
    ledger = Ledger(settings, now=Clock())
    agent = settings.agent(AGENT)
    assert ledger.check(agent, est(0.5)) is None
    assert not paths.ledger().exists()
    ledger.reserve(agent, est(0.3), run_id="r", step="s")
    before = paths.ledger().read_bytes()
    refusal = ledger.check(agent, est(0.3))
    assert isinstance(refusal, BudgetExceeded) and refusal.setting == f"agents.{AGENT}.daily_usd"
    assert isinstance(ledger.check(agent, est(None)), UnknownPrice)
    assert paths.ledger().read_bytes() == before


# -- unknown prices ----------------------------------------------------------------

@pytest.mark.parametrize(("budget", "defaults"), [
    pytest.param({}, {}, id="all-caps"),
    pytest.param({"daily_usd": "none"}, {"daily_usd": 0.5}, id="agent-cap-only"),
    pytest.param({"daily_usd": 2.0}, {"daily_usd": "none"}, id="fleet-cap-only"),
    pytest.param({"daily_usd": "none", "monthly_usd": 3.0}, {"daily_usd": "none"}, id="monthly-cap-only"),
])
def test_unknown_price_with_a_usd_cap_is_refused(budget: dict[str, Any], defaults: dict[str, Any]) -> None:
    settings = make_settings(budget=budget, defaults=defaults)
    ledger = Ledger(settings, now=Clock())
    with pytest.raises(UnknownPrice) as info:
        ledger.reserve(settings.agent(AGENT), est(None), run_id="r", step="s")
    message = str(info.value)
    assert f'[provider.prices."{MODEL}"]' in message
    assert info.value.exit_code == 3
    assert not paths.ledger().exists()


def test_unknown_price_names_the_agents_own_model() -> None:
    settings = make_settings(agents={AGENT: {"model": "vendor/unpriced:free"}})
    with pytest.raises(UnknownPrice) as info:
        Ledger(settings, now=Clock()).reserve(settings.agent(AGENT), est(None), run_id="r", step="s")
    assert '[provider.prices."vendor/unpriced:free"]' in str(info.value)


def test_unknown_price_is_allowed_when_every_usd_cap_is_none_and_tokens_still_count() -> None:
    settings = make_settings(budget={"daily_usd": "none", "monthly_usd": "none"},
                             defaults={"daily_usd": "none", "daily_tokens": 1000})
    agent = settings.agent(AGENT)
    assert agent.daily_usd is None and settings.budget.daily_usd is None
    ledger = Ledger(settings, now=Clock())
    res = ledger.reserve(agent, est(None, 300, 300), run_id="r", step="s")
    assert res.usd is None
    assert ledger.settle(res, usd=None, tokens=550)
    data = ledger_file()
    assert bucket(data, DAY0, AGENT)["tokens"] == 550
    assert bucket(data, DAY0, AGENT)["usd"] == 0.0
    ledger.reserve(agent, est(None, 200, 200), run_id="r", step="s")  # 950
    with pytest.raises(BudgetExceeded) as info:
        ledger.reserve(agent, est(None, 30, 30), run_id="r", step="s")
    assert info.value.setting == f"agents.{AGENT}.daily_tokens"
    report = ledger.report()
    assert report["agents"][AGENT]["tokens"] == {"spent": 550, "reserved": 400, "cap": 1000}
    assert report["agents"][AGENT]["usd"]["cap"] is None


# -- windows and midnight ------------------------------------------------------------

# (23:59 Berlin as UTC, 00:00:01 Berlin the next day as UTC, old day, new day)
MIDNIGHTS = [
    pytest.param("2026-03-10 22:59:00", "2026-03-10 23:00:01", "day:2026-03-10", "day:2026-03-11", id="winter"),
    pytest.param("2026-07-10 21:59:00", "2026-07-10 22:00:01", "day:2026-07-10", "day:2026-07-11", id="summer"),
]


@pytest.mark.parametrize(("before", "after", "old_day", "new_day"), MIDNIGHTS)
def test_day_rolls_over_at_midnight_in_the_configured_timezone(before: str, after: str, old_day: str,
                                                               new_day: str) -> None:
    settings = make_settings()
    agent = settings.agent(AGENT)
    with freeze_time(before) as frozen:
        ledger = Ledger(settings)  # the real clock, as freezegun has it
        ledger.settle(ledger.reserve(agent, est(0.45), run_id="r", step="s"), usd=0.3, tokens=250)
        report = ledger.report()
        assert report["windows"]["day"] == old_day
        assert report["agents"][AGENT]["usd"]["spent"] == pytest.approx(0.3)
        with pytest.raises(BudgetExceeded):
            ledger.reserve(agent, est(0.3), run_id="r", step="s")

        frozen.move_to(after)
        assert datetime.now(timezone.utc).date().isoformat() == old_day.split(":")[1]  # still the old UTC day
        report = ledger.report()
        assert report["windows"]["day"] == new_day
        assert report["agents"][AGENT]["usd"] == {"spent": 0.0, "reserved": 0.0, "cap": 0.5}
        assert report["fleet"]["day"]["usd"]["spent"] == 0.0
        assert report["fleet"]["month"]["usd"]["spent"] == pytest.approx(0.3)  # same month

        ledger.reserve(agent, est(0.5), run_id="r", step="s")  # the whole new day is free
        data = ledger_file()
        assert old_day not in data["windows"] and new_day in data["windows"]
        closed = [h for h in history() if h["event"] == "window-closed"]
        assert [h["window"] for h in closed] == [old_day]
        assert closed[0]["agents"][AGENT]["usd"] == pytest.approx(0.3)
        assert closed[0]["agents"][AGENT]["tokens"] == 250
        assert closed[0]["ts"].startswith(after.replace(" ", "T"))


@pytest.mark.parametrize(("before", "after", "old", "new"), [
    pytest.param("2026-03-10 22:59:30", "2026-03-10 23:00:01", ["day:2026-03-10"], ["day:2026-03-11", "month:2026-03"],
                 id="day"),
    pytest.param("2026-03-31 21:59:30", "2026-03-31 22:00:01", ["day:2026-03-31", "month:2026-03"],
                 ["day:2026-04-01", "month:2026-04"], id="month-end"),
])
def test_reservation_across_midnight_is_charged_to_its_own_window(before: str, after: str, old: list[str],
                                                                  new: list[str]) -> None:
    settings = make_settings()
    agent = settings.agent(AGENT)
    with freeze_time(before) as frozen:
        ledger = Ledger(settings)
        held = ledger.reserve(agent, est(0.4), run_id="r", step="s")
        frozen.move_to(after)
        # A new day: the old hold does not count against it.
        fresh = ledger.reserve(agent, est(0.4), run_id="r2", step="s")
        data = ledger_file()
        for key in old + new:
            assert key in data["windows"]  # the old window stays open while the hold is
        assert not [h for h in history() if h["event"] == "window-closed"]

        assert ledger.settle(held, usd=0.25, tokens=180)
        data = ledger_file()
        assert bucket(data, old[0], AGENT) == {"usd": pytest.approx(0.25), "tokens": 180, "unsettled_usd": 0.0,
                                               "calls": 1}
        assert AGENT not in data["windows"][new[0]]["agents"]
        assert ledger.report()["agents"][AGENT]["usd"] == {"spent": 0.0, "reserved": pytest.approx(0.4),
                                                          "cap": 0.5}

        ledger.settle(fresh, usd=0.1, tokens=50)  # any access closes the old windows now
        data = ledger_file()
        assert sorted(data["windows"]) == sorted(new)
        closed = {h["window"]: h for h in history() if h["event"] == "window-closed"}
        assert sorted(closed) == sorted(old)
        assert closed[old[0]]["agents"][AGENT]["usd"] == pytest.approx(0.25)
        assert bucket(data, new[0], AGENT)["usd"] == pytest.approx(0.1)


# -- reclaim ----------------------------------------------------------------------

HOLDER = textwrap.dedent("""
    import json, os, sys, time
    os.environ["MYTHLINE_HOME"] = sys.argv[2]
    from mythline_cli.config import parse_config
    from mythline_cli.ledger import Ledger
    from mythline_cli.pricing import Estimate
    settings = parse_config(json.loads(sys.argv[1]))
    res = Ledger(settings).reserve(settings.agent("world-npcs"), Estimate(100, 200, 0.25, "chars", None),
                                   run_id="doomed", step="research")
    print(res.id, flush=True)
    time.sleep(120)
""")


def test_reservation_of_a_killed_process_is_reclaimed_at_its_estimate(home: Path, backend: Any) -> None:
    data = config_data()
    ledger_file, history = backend.state, backend.journal
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, json.dumps(data), str(home)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        rid = proc.stdout.readline().strip()
        assert rid, proc.stderr.read() if proc.poll() is not None else "no reservation id"
        settings = parse_config(data)
        ledger = Ledger(settings)
        # Alive: a ledger access leaves its hold alone and counts it.
        with pytest.raises(BudgetExceeded):
            ledger.reserve(settings.agent(AGENT), est(0.3), run_id="r", step="s")
        assert rid in ledger_file()["reservations"]
        windows = ledger_file()["reservations"][rid]["windows"]
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
        proc.stderr.close()
    backend.gone()

    ledger.release(ledger.reserve(settings.agent(OTHER), est(0.01), run_id="r", step="s"))

    data_after = ledger_file()
    assert data_after["reservations"] == {}
    for key in windows:
        assert bucket(data_after, key, AGENT) == {"usd": pytest.approx(0.25), "tokens": 300,
                                                  "unsettled_usd": pytest.approx(0.25), "calls": 1}
    reclaims = [h for h in history() if h["event"] == "reclaim"]
    assert len(reclaims) == 1
    line = reclaims[0]
    assert (line["reservation"], line["agent"], line["pid"], line["run_id"]) == (rid, AGENT, proc.pid, "doomed")
    assert line["reason"] == "process gone"
    assert line["usd"] == pytest.approx(0.25) and line["tokens"] == 300
    # Charged at the estimate: the agent has 0.25 of 0.5 left.
    ledger.reserve(settings.agent(AGENT), est(0.25), run_id="r", step="s")


def test_reservation_older_than_run_timeout_is_reclaimed_even_if_alive(backend: Any) -> None:
    ledger_file, history = backend.state, backend.journal
    clock = Clock()
    settings = make_settings(budget={"run_timeout": "30m"})
    ledger = Ledger(settings, now=clock)
    agent = settings.agent(AGENT)
    res = ledger.reserve(agent, est(0.2, 50, 50), run_id="slow", step="research")
    clock.advance(1800)
    ledger.release(ledger.reserve(settings.agent(OTHER), est(0.01), run_id="r", step="s"))
    assert res.id in ledger_file()["reservations"]  # exactly at the timeout: still open
    clock.advance(1)
    ledger.release(ledger.reserve(settings.agent(OTHER), est(0.01), run_id="r", step="s"))
    data = ledger_file()
    assert data["reservations"] == {}
    assert bucket(data, DAY0, AGENT) == {"usd": pytest.approx(0.2), "tokens": 100,
                                         "unsettled_usd": pytest.approx(0.2), "calls": 1}
    (line,) = [h for h in history() if h["event"] == "reclaim"]
    assert line["reason"] == "older than run_timeout"
    assert line["pid"] == os.getpid()

    # The slow call finishing later does not charge it twice.
    assert ledger.settle(res, usd=0.05, tokens=80) is False
    assert bucket(ledger_file(), DAY0, AGENT)["usd"] == pytest.approx(0.2)
    assert [h["event"] for h in history()][-1] == "late-settle"


# -- concurrency with real processes -------------------------------------------------

CTX = multiprocessing.get_context("spawn")


def _race_worker(home: str, data: dict[str, Any], agent: str, done: Any, barrier: Any, results: Any) -> None:
    os.environ["MYTHLINE_HOME"] = home
    try:
        settings = parse_config(data)
        ledger = Ledger(settings)
        barrier.wait(60)
        try:
            res = ledger.reserve(settings.agent(agent), est(0.22), run_id=agent, step="s")
        except BudgetExceeded as exc:
            results.put(("refused", agent, exc.setting))
        else:
            results.put(("ok", agent, res.id))
        # Stay alive until the test has looked: a later access would reclaim a dead holder's hold.
        done.wait(60)
    except Exception as exc:  # noqa: BLE001 - reported to the test
        results.put(("error", agent, repr(exc)))


def _storm_worker(home: str, data: dict[str, Any], index: int, rounds: int, lock_kind: str | None,
                  barrier: Any, results: Any) -> None:
    os.environ["MYTHLINE_HOME"] = home
    if lock_kind is not None:  # "filelock" is the Windows path; both take the same flock on POSIX
        from mythline_cli import locking

        locking.DEFAULT = lock_kind
    try:
        settings = parse_config(data)
        ledger = Ledger(settings)
        agent = settings.agent(settings.agent_names[index])
        settled_usd, settled_tokens, ok, refused = 0.0, 0, 0, 0
        barrier.wait(60)
        for i in range(rounds):
            try:
                res = ledger.reserve(agent, est(0.01, 40, 60), run_id=f"w{index}", step=str(i))
            except BudgetExceeded:
                refused += 1
                continue
            actual = 0.006 + 0.001 * ((index + i) % 4)  # 0.006 .. 0.009, below the estimate
            tokens = 70 + (i % 30)
            assert ledger.settle(res, usd=actual, tokens=tokens)
            settled_usd += actual
            settled_tokens += tokens
            ok += 1
        results.put(("done", index, settled_usd, settled_tokens, ok, refused))
    except Exception as exc:  # noqa: BLE001 - reported to the test
        results.put(("error", index, repr(exc)))


def _run_workers(target: Any, args_list: list[tuple[Any, ...]], barrier: Any, results: Any,
                 done: Any = None, while_alive: Any = None) -> list[tuple]:
    procs = [CTX.Process(target=target, args=(*args, barrier, results)) for args in args_list]
    for p in procs:
        p.start()
    try:
        got = [results.get(timeout=120) for _ in procs]
        if while_alive is not None:
            while_alive(got)
    finally:
        if done is not None:
            done.set()
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
                p.join()
    errors = [g for g in got if g[0] == "error"]
    assert not errors, errors
    return got


def test_ten_processes_racing_for_a_fleet_cap_that_fits_four(home: Path, backend: Any) -> None:
    ledger_file = backend.state
    # 4 x 0.22 = 0.88 fits under 1.0; a fifth would not. Agent caps are per agent and roomy.
    data = config_data(budget={"daily_usd": 1.0}, defaults={"daily_usd": 0.5})
    settings = parse_config(data)
    barrier, results, done = CTX.Barrier(10), CTX.Queue(), CTX.Event()
    seen: dict[str, Any] = {}
    got = _run_workers(_race_worker, [(str(home), data, name, done) for name in settings.agent_names],
                       barrier, results, done=done, while_alive=lambda got: seen.update(ledger_file()))

    ok = [g for g in got if g[0] == "ok"]
    refused = [g for g in got if g[0] == "refused"]
    assert len(ok) == 4
    assert len(refused) == 6
    assert {g[2] for g in refused} == {"budget.daily_usd"}
    # While the holders live, exactly their four holds are open.
    assert sorted(seen["reservations"]) == sorted(g[2] for g in ok)
    total = sum(r["usd"] for r in seen["reservations"].values())
    assert total == pytest.approx(0.88)
    assert total <= 1.0
    # Once they have exited, the next access charges the holds at their estimate.
    backend.gone()
    ledger = Ledger(settings)
    ledger.release(ledger.reserve(settings.agent(AGENT), est(0.01), run_id="r", step="s"))
    report = ledger.report()
    assert report["open_reservations"] == 0
    assert report["fleet"]["day"]["usd"]["spent"] == pytest.approx(0.88)


@pytest.mark.parametrize(("locks", "backend"), [
    pytest.param("flock", "file", id="flock"),
    pytest.param("filelock", "file", id="filelock",
                 marks=pytest.mark.skipif(sys.platform == "win32", reason="default")),
    pytest.param("mixed", "file", id="mixed", marks=pytest.mark.skipif(sys.platform == "win32", reason="POSIX only")),
    # The file lock's kinds mean nothing there: the ledger row's lock is PostgreSQL's.
    pytest.param(None, "postgresql", id="postgresql"),
], indirect=["backend"])
def test_settle_storm_never_exceeds_the_cap_and_loses_nothing(home: Path, locks: str | None, backend: Any) -> None:
    """Ten processes; with "mixed", half wait in the kernel's queue and half poll (filelock)."""
    ledger_file, history = backend.state, backend.journal
    cap = 1.0
    data = config_data(budget={"daily_usd": cap, "daily_tokens": "none"},
                       defaults={"daily_usd": "none", "daily_tokens": "none"})
    barrier, results = CTX.Barrier(10), CTX.Queue()
    kinds = {"flock": [None] * 10, "filelock": ["filelock"] * 10, "mixed": ["flock", "filelock"] * 5,
             None: [None] * 10}[locks]
    if sys.platform == "win32":
        kinds = [None] * 10
    got = _run_workers(_storm_worker, [(str(home), data, i, 20, kinds[i]) for i in range(10)], barrier, results)

    settled_usd = sum(g[2] for g in got)
    settled_tokens = sum(g[3] for g in got)
    ok = sum(g[4] for g in got)
    refused = sum(g[5] for g in got)
    assert ok + refused == 200
    assert refused > 0  # the cap bit
    assert ok >= 100  # at least a full cap's worth of estimates went through

    report = Ledger(parse_config(data)).report()
    spent = report["fleet"]["day"]["usd"]["spent"]
    assert spent <= cap * (1 + 1e-9)
    assert spent == pytest.approx(settled_usd, abs=1e-9)
    assert report["fleet"]["day"]["tokens"]["spent"] == settled_tokens
    assert report["fleet"]["day"]["usd"]["reserved"] == 0.0
    assert report["open_reservations"] == 0
    ledger_data = ledger_file()
    assert ledger_data["reservations"] == {}
    day = report["windows"]["day"]
    assert sum(b["calls"] for b in ledger_data["windows"][day]["agents"].values()) == ok
    assert not [h for h in history() if h["event"] in ("reclaim", "late-settle")]


# -- a corrupt ledger ----------------------------------------------------------------

CORRUPT = [
    pytest.param(b"", id="empty"),
    pytest.param(b"  \n\n", id="blank"),
    pytest.param(b"{\"version\": 1, \"windows\": {", id="truncated"),
    pytest.param(b"\x00\xff\xfegarbage\x01", id="binary"),
    pytest.param(b"null\n", id="null"),
    pytest.param(b"[]\n", id="list"),
    pytest.param(b"\"ledger\"\n", id="string"),
    pytest.param(b"{}\n", id="empty-object"),
    pytest.param(b"{\"version\": 1, \"windows\": [], \"reservations\": {}}", id="windows-list"),
    pytest.param(b"{\"version\": 1, \"windows\": {}, \"reservations\": []}", id="reservations-list"),
    pytest.param(b"{\"version\": 1, \"windows\": {\"day:2026-05-05\": 7}, \"reservations\": {}}", id="window-int"),
    pytest.param(b"{\"version\": 1, \"windows\": {\"day:2026-05-05\": {\"kind\": \"day\", \"agents\": []}},"
                 b" \"reservations\": {}}", id="agents-list"),
    pytest.param(b"{\"version\": 1, \"windows\": {\"day:2026-05-05\": {\"kind\": \"day\", \"agents\": "
                 b"{\"world-npcs\": {\"usd\": \"lots\", \"tokens\": 1}}}}, \"reservations\": {}}", id="usd-string"),
    pytest.param(b"{\"version\": 1, \"windows\": {}, \"reservations\": {\"abc\": \"held\"}}", id="reservation-str"),
    pytest.param(b"{\"version\": 1, \"windows\": {}, \"reservations\": {\"abc\": {\"agent\": \"world-npcs\","
                 b" \"usd\": 0.1, \"tokens\": 10, \"windows\": \"day:2026-05-05\"}}}", id="reservation-windows"),
    # Well-formed, but spend no journal can add up to: a negative figure switches every cap off.
    pytest.param(b"{\"version\": 1, \"windows\": {\"day:2026-05-05\": {\"kind\": \"day\", \"agents\": "
                 b"{\"world-npcs\": {\"usd\": -1e300, \"tokens\": 1}}}}, \"reservations\": {}}", id="usd-negative"),
    pytest.param(b"{\"version\": 1, \"windows\": {\"day:2026-05-05\": {\"kind\": \"day\", \"agents\": "
                 b"{\"world-npcs\": {\"usd\": NaN, \"tokens\": 1}}}}, \"reservations\": {}}", id="usd-nan"),
    pytest.param(b"{\"version\": 1, \"windows\": {\"day:2026-05-05\": {\"kind\": \"day\", \"agents\": "
                 b"{\"world-npcs\": {\"usd\": 0.1, \"tokens\": -5}}}}, \"reservations\": {}}", id="tokens-negative"),
    pytest.param(b"{\"version\": 1, \"windows\": {\"day:2026-05-05\": {\"kind\": \"day\", \"agents\": "
                 b"{\"world-npcs\": {\"usd\": 1e999, \"tokens\": 1}}}}, \"reservations\": {}}", id="usd-infinite"),
    pytest.param(b"{\"version\": 1, \"windows\": {}, \"reservations\": {\"abc\": {\"agent\": \"world-npcs\","
                 b" \"usd\": -0.1, \"tokens\": 10, \"windows\": []}}}", id="reservation-usd-negative"),
    pytest.param(b"{\"version\": 1, \"windows\": {}, \"reservations\": {\"abc\": {\"agent\": \"world-npcs\","
                 b" \"usd\": true, \"tokens\": 10, \"windows\": []}}}", id="reservation-usd-bool"),
]


@pytest.mark.parametrize("content", CORRUPT)
def test_corrupt_ledger_is_refused_and_left_as_it_was(home: Path, content: bytes) -> None:
    home.mkdir(parents=True, exist_ok=True)
    paths.ledger().write_bytes(content)
    settings = make_settings()
    ledger = Ledger(settings, now=Clock())
    agent = settings.agent(AGENT)
    with pytest.raises(LedgerCorrupt) as info:
        ledger.reserve(agent, est(0.1), run_id="r", step="s")
    assert str(paths.ledger()) in str(info.value)
    assert "mythline budget repair" in str(info.value)
    for call in (lambda: ledger.report(), lambda: ledger.reset(agent=AGENT),
                 lambda: ledger.check(agent, est(0.1)), lambda: ledger.agent_today(AGENT)):
        with pytest.raises(LedgerCorrupt):
            call()
    assert paths.ledger().read_bytes() == content
    assert not paths.ledger_history().exists()
    assert sorted(p.name for p in home.iterdir() if not p.name.endswith(".lock")) == ["ledger.json"]


def test_missing_ledger_starts_empty() -> None:
    settings = make_settings()
    ledger = Ledger(settings, now=Clock())
    assert ledger.report()["fleet"]["day"]["usd"]["spent"] == 0.0
    assert not paths.ledger().exists()
    ledger.reserve(settings.agent(AGENT), est(0.1), run_id="r", step="s")
    assert ledger_file()["version"] == 1


# -- reset --------------------------------------------------------------------------

def test_reset_of_one_agent_zeroes_only_its_day() -> None:
    settings = make_settings()
    ledger = Ledger(settings, now=Clock())
    for name, usd in ((AGENT, 0.4), (OTHER, 0.3)):
        ledger.settle(ledger.reserve(settings.agent(name), est(usd), run_id="r", step="s"), usd=usd, tokens=100)
    held = ledger.reserve(settings.agent(AGENT), est(0.05), run_id="r", step="s")
    entry = ledger.reset(agent=AGENT)
    assert entry["agent"] == AGENT and entry["windows"] == [DAY0]
    assert entry["cleared"][DAY0][AGENT]["usd"] == pytest.approx(0.4)
    data = ledger_file()
    assert AGENT not in data["windows"][DAY0]["agents"]
    assert bucket(data, DAY0, OTHER)["usd"] == pytest.approx(0.3)
    assert bucket(data, MONTH0, AGENT)["usd"] == pytest.approx(0.4)
    assert list(data["reservations"]) == [held.id]
    (line,) = [h for h in history() if h["event"] == "reset"]
    assert line["agent"] == AGENT and line["windows"] == [DAY0] and line["ts"] == T0.isoformat()
    ledger.reset(month=True)
    data = ledger_file()
    assert data["windows"][DAY0]["agents"] == {} and data["windows"][MONTH0]["agents"] == {}


# -- the journal ---------------------------------------------------------------------------

def _journal_settings():
    from mythline_cli.config import parse_config

    return parse_config({"provider": {"model": "test/model", "prices": {"test/model": {
        "input_per_million": 1.0, "output_per_million": 2.0}}}, "budget": {"daily_usd": 10.0}})


def _est(usd: float, tokens: int = 100):
    from mythline_cli.pricing import Estimate

    return Estimate(prompt_tokens=tokens // 2, max_output_tokens=tokens - tokens // 2, usd=usd,
                    counted_by="chars", price=None)


def test_replaying_the_journal_gives_the_same_ledger(home):
    import json as _json

    from mythline_cli.ledger import Ledger, replay

    settings = _journal_settings()
    ledger = Ledger(settings)
    agent = settings.agent("world-npcs")
    held = []
    for i in range(12):
        res = ledger.reserve(agent, _est(0.01 * (i + 1)), run_id=f"r{i}", step="research")
        if i % 3 == 0:
            ledger.settle(res, usd=0.005, tokens=60)
        elif i % 3 == 1:
            ledger.release(res)
        else:
            held.append(res)
    ledger.reset(agent="world-npcs")
    ledger.settle(held[0], usd=0.002, tokens=10, unsettled=True)
    on_disk = _json.loads((home / "ledger.json").read_text())
    assert replay(home / "ledger-history.jsonl") == on_disk


def test_a_crash_between_journal_and_ledger_is_rolled_forward(home):
    import json as _json

    from mythline_cli.files import append_jsonl
    from mythline_cli.ledger import Ledger

    settings = _journal_settings()
    ledger = Ledger(settings)
    agent = settings.agent("world-npcs")
    res = ledger.reserve(agent, _est(0.5), run_id="r", step="research")
    before = _json.loads((home / "ledger.json").read_text())
    # The settle reached the journal, then the process died before ledger.json was replaced.
    append_jsonl(home / "ledger-history.jsonl", {"seq": before["seq"] + 1, "ts": "x", "event": "settle",
                                                 "reservation": res.id, "agent": agent.name, "usd": 0.25,
                                                 "tokens": 80, "unsettled": False})
    report = ledger.report(ledger.snapshot())
    # A plain read sees what the journal says, and writes nothing.
    assert report["open_reservations"] == 0
    assert _json.loads((home / "ledger.json").read_text()) == before
    other = ledger.reserve(settings.agent("world-zones"), _est(0.1), run_id="s", step="research")
    after = _json.loads((home / "ledger.json").read_text())
    assert res.id not in after["reservations"] and other.id in after["reservations"]
    (day,) = [w for k, w in after["windows"].items() if k.startswith("day:")]
    assert day["agents"]["world-npcs"]["usd"] == 0.25 and day["agents"]["world-npcs"]["tokens"] == 80
    assert after["seq"] == before["seq"] + 2


@pytest.mark.parametrize("damage", [b"", b"{garbage", b"null"])
def test_budget_repair_rebuilds_a_corrupt_ledger_without_losing_spend(home, damage):
    import json as _json

    from typer.testing import CliRunner

    from mythline_cli.cli import app
    from mythline_cli.ledger import Ledger

    settings = _journal_settings()
    ledger = Ledger(settings)
    agent = settings.agent("world-npcs")
    ledger.settle(ledger.reserve(agent, _est(0.4), run_id="r", step="research"), usd=0.3, tokens=90)
    open_res = ledger.reserve(agent, _est(0.2), run_id="r2", step="audit")
    good = (home / "ledger.json").read_bytes()
    (home / "ledger.json").write_bytes(damage)
    runner = CliRunner()
    result = runner.invoke(app, ["budget", "repair"])
    assert result.exit_code == 0, result.output
    assert "Moved the unreadable ledger to" in result.stdout and "1 open reservation(s)" in result.stdout
    assert _json.loads((home / "ledger.json").read_bytes()) == _json.loads(good)
    assert list(home.glob("ledger.json.corrupt-*"))[0].read_bytes() == damage
    assert open_res.id in _json.loads((home / "ledger.json").read_text())["reservations"]


# -- the lock and the write path -------------------------------------------------------------

@pytest.mark.parametrize("kind", ["flock", "filelock"])
def test_a_stuck_lock_holder_times_out_and_nothing_is_called(home: Path, monkeypatch: pytest.MonkeyPatch,
                                                             kind: str) -> None:
    from mythline_cli import locking
    from mythline_cli.errors import MythlineError

    if kind == "flock" and sys.platform == "win32":
        pytest.skip("no flock on Windows")
    monkeypatch.setattr(locking, "DEFAULT", kind)
    settings = make_settings()
    home.mkdir(parents=True, exist_ok=True)
    stuck = locking.acquire(paths.ledger_lock(), 1.0, kind=kind)  # another process, stuck
    try:
        ledger = Ledger(settings, now=Clock(), lock_timeout=1)
        for call in (lambda: ledger.reserve(settings.agent(AGENT), est(0.1), run_id="r", step="s"),
                     ledger.housekeep, ledger.repair):
            with pytest.raises(MythlineError) as info:
                call()
            assert str(info.value).startswith("the budget ledger stayed locked for 1s")
            assert str(paths.ledger_lock()) in str(info.value) and "nothing was called" in str(info.value)
            assert ledger.last_lock_wait >= 0.9 or call is not ledger.housekeep
    finally:
        stuck.release()
    assert not paths.ledger().exists() and not paths.ledger_history().exists()
    ledger.reserve(settings.agent(AGENT), est(0.1), run_id="r", step="s")
    assert ledger.last_lock_wait < 1.0 and 0 < ledger.last_lock_held < 1.0


def test_lost_ledger_json_renames_are_rolled_forward_from_the_journal(home: Path) -> None:
    """A power cut may undo renames of ledger.json that were not followed by a directory fsync:
    the file is then an older complete version (or missing), and the journal has the rest."""
    from mythline_cli.ledger import replay

    clock = Clock()
    settings = make_settings()
    ledger = Ledger(settings, now=clock)
    a = ledger.reserve(settings.agent(AGENT), est(0.2), run_id="r", step="s")
    old = paths.ledger().read_bytes()  # what survives of ledger.json
    ledger.settle(a, usd=0.15, tokens=120)
    b = ledger.reserve(settings.agent(OTHER), est(0.1), run_id="r", step="s")
    clock.advance(86400)  # a new day: windows opened, the old day kept by b's hold
    c = ledger.reserve(settings.agent(AGENT), est(0.05), run_id="r", step="s")
    ledger.settle(b, usd=0.1, tokens=50)
    ledger.housekeep()
    full = ledger_file()
    for survivor in (old, None):
        if survivor is None:
            paths.ledger().unlink()  # not even the first rename survived
        else:
            paths.ledger().write_bytes(survivor)
        assert ledger.snapshot() == full  # a plain read rolls forward in memory ...
        assert (paths.ledger().read_bytes() if survivor else None) == survivor  # ... and writes nothing
        ledger.housekeep()  # the next access writes the file again
        assert ledger_file() == full == replay(paths.ledger_history())
    # Spend and holds carry on from there.
    assert sorted(full["windows"]) == ["day:2026-05-06", MONTH0]  # the old day closed once b was settled
    assert bucket(full, MONTH0, AGENT)["usd"] == pytest.approx(0.15)
    assert bucket(full, MONTH0, OTHER)["usd"] == pytest.approx(0.1)
    assert list(full["reservations"]) == [c.id]
    with pytest.raises(BudgetExceeded):
        ledger.reserve(settings.agent(AGENT), est(0.46), run_id="r", step="s")


def test_one_fsync_per_access_the_journal_before_ledger_json(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mythline_cli import files

    calls: list[str] = []
    real_fsync, real_write, real_append = files.os.fsync, files.write_json, files.append_jsonl_many
    monkeypatch.setattr(files.os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(files, "write_json", lambda path, data, **kw: (
        calls.append(f"write {path.name} {sorted(kw.items())}"), real_write(path, data, **kw))[1])
    monkeypatch.setattr(files, "append_jsonl_many", lambda path, records, **kw: (
        calls.append(f"append {path.name} {len(records)}"), real_append(path, records, **kw))[1])
    settings = make_settings()
    ledger = Ledger(settings, now=Clock())
    ledger.reserve(settings.agent(AGENT), est(0.1), run_id="r", step="s")  # opens two windows too
    calls.clear()
    ledger.reserve(settings.agent(AGENT), est(0.1), run_id="r", step="s")
    assert calls == ["append ledger-history.jsonl 1", "fsync",
                     "write ledger.json [('compact', True), ('durable', False)]"]


@pytest.mark.parametrize("in_lock", [False, True], ids=["posix", "windows"])
def test_ledger_json_is_written_after_the_lock_is_released(home: Path, monkeypatch: pytest.MonkeyPatch,
                                                           in_lock: bool) -> None:
    """The next holder does not wait for ledger.json's rename: the journal (fsynced in the lock)
    already holds the change, and every reader rolls the file forward from it. Except on
    Windows, where it would meet the next holder's read in sharing violations."""
    from mythline_cli import files, locking
    from mythline_cli.ledger import storage as ledger_mod

    monkeypatch.setattr(ledger_mod, "SAVE_IN_LOCK", in_lock)

    free_when_written: list[bool] = []
    real_write = files.write_json

    def write_json(path: Path, data: Any, **kw: Any) -> None:
        if path == paths.ledger():
            try:
                other = locking.acquire(paths.ledger_lock(), 0)  # another descriptor: excluded if held
            except locking.LockTimeout:
                free_when_written.append(False)
            else:
                other.release()
                free_when_written.append(True)
        real_write(path, data, **kw)

    monkeypatch.setattr(files, "write_json", write_json)
    settings = make_settings()
    ledger = Ledger(settings, now=Clock())
    res = ledger.reserve(settings.agent(AGENT), est(0.1), run_id="r", step="s")
    ledger.settle(res, usd=0.05, tokens=10)
    assert free_when_written == [not in_lock, not in_lock]
    assert ledger_file()["seq"] == ledger.snapshot()["seq"] == 4  # two windows, reserve, settle


def test_a_writer_overtaken_by_a_later_access_leaves_ledger_json_to_it(home: Path) -> None:
    """Two writers finishing in the other order: the one whose access the journal has moved past
    does not write (the later one writes a newer copy); should it land last all the same, the
    file is only behind, and readers and the next access roll it forward."""
    from mythline_cli.ledger import replay
    from mythline_cli.ledger.storage import FileStore

    settings = make_settings()
    ledger = Ledger(settings, now=Clock())
    ledger.reserve(settings.agent(AGENT), est(0.1), run_id="r", step="s")
    older, older_end = ledger_file(), paths.ledger_history().stat().st_size
    ledger.reserve(settings.agent(AGENT), est(0.2), run_id="r", step="s")
    newer = ledger_file()
    assert newer["seq"] == older["seq"] + 1
    FileStore._save(older, older_end)  # the slower writer of the earlier access
    assert ledger_file() == newer == replay(paths.ledger_history())
    FileStore._save(newer, paths.ledger_history().stat().st_size)  # the last access of a burst writes
    assert ledger_file() == newer
    paths.ledger().write_text(json.dumps(older))  # the check and the rename are not one step
    assert ledger.snapshot() == newer  # readers still see all the journal says
    ledger.housekeep()  # and the next access puts the file right (it was behind)
    assert ledger_file() == newer


@pytest.mark.parametrize("in_lock", [False, True], ids=["posix", "windows"])
def test_a_failed_ledger_json_write_does_not_hide_a_journaled_change(home: Path, monkeypatch: pytest.MonkeyPatch,
                                                                      in_lock: bool) -> None:
    """The change is in the journal when ledger.json's write fails (a full disk): the caller
    gets its reservation, readers see it, and the next access writes the file."""
    import errno

    from mythline_cli import files
    from mythline_cli.ledger import replay
    from mythline_cli.ledger import storage as ledger_mod

    monkeypatch.setattr(ledger_mod, "SAVE_IN_LOCK", in_lock)

    settings = make_settings()
    ledger = Ledger(settings, now=Clock())
    first = ledger.reserve(settings.agent(AGENT), est(0.1), run_id="r", step="s")
    real_write = files.write_json

    def full_disk(path: Path, data: Any, **kw: Any) -> None:
        if path == paths.ledger():
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_write(path, data, **kw)

    monkeypatch.setattr(files, "write_json", full_disk)
    second = ledger.reserve(settings.agent(AGENT), est(0.2), run_id="r", step="s")
    assert second.id not in ledger_file()["reservations"]  # the file stayed behind ...
    assert set(ledger.snapshot()["reservations"]) == {first.id, second.id}  # ... readers did not
    assert not list(home.glob("*.tmp"))
    monkeypatch.setattr(files, "write_json", real_write)
    ledger.release(second)
    assert ledger_file() == replay(paths.ledger_history())
    assert set(ledger_file()["reservations"]) == {first.id}


def test_a_journal_line_that_is_no_ledger_change_stops_readers_and_writers(home: Path) -> None:
    from mythline_cli.files import append_jsonl

    settings = make_settings()
    ledger = Ledger(settings, now=Clock())
    ledger.reserve(settings.agent(AGENT), est(0.1), run_id="r", step="s")
    seq = ledger_file()["seq"]
    append_jsonl(paths.ledger_history(), {"seq": seq + 1, "event": "settle"})  # numbered, but no reservation
    with pytest.raises(LedgerCorrupt, match=f"entry {seq + 1} is not a ledger change"):
        ledger.snapshot()
    with pytest.raises(LedgerCorrupt):
        ledger.reserve(settings.agent(AGENT), est(0.1), run_id="r", step="s")


@pytest.mark.parametrize("damage", [
    pytest.param(b"", id="empty"),
    pytest.param(b"\x00" * 4096, id="zeros"),
    pytest.param(b'{"version": 1, "windows": {"day:2026-05-05": {"kind": "d', id="torn"),
    pytest.param(b"null", id="null"),
])
def test_a_torn_ledger_json_is_rebuilt_from_a_complete_journal(home: Path, damage: bytes) -> None:
    """What a power cut can leave of a ledger.json written without fsync: its rename reached the
    disk, its data did not. The journal (fsynced first) has every change: nothing is lost."""
    from mythline_cli.ledger import replay

    settings = make_settings()
    ledger = Ledger(settings, now=Clock())
    ledger.settle(ledger.reserve(settings.agent(AGENT), est(0.3), run_id="r", step="s"), usd=0.25, tokens=90)
    held = ledger.reserve(settings.agent(OTHER), est(0.2), run_id="r", step="s")
    good = ledger_file()
    paths.ledger().write_bytes(damage)
    with pytest.raises(LedgerCorrupt):  # the read-only commands still say so ...
        ledger.report()
    rebuilt = ledger.housekeep()  # ... the next access that writes (every run's first) rebuilds it
    assert ledger_file() == good == replay(paths.ledger_history())
    assert rebuilt is not None and rebuilt["seq"] == good["seq"]
    (moved,) = home.glob("ledger.json.corrupt-*")
    assert moved.read_bytes() == damage and rebuilt["moved_aside"] == str(moved)
    assert ledger.housekeep() is None
    # Spend and holds carry on: 0.25 + 0.2 held + 0.55 would pass the fleet's 1.0.
    with pytest.raises(BudgetExceeded):
        ledger.reserve(settings.agent(OTHER), est(0.55), run_id="r", step="s")
    assert list(ledger_file()["reservations"]) == [held.id]


@pytest.mark.parametrize("journal", ["missing", "empty", "gap", "not-from-1", "garbled-only"])
def test_a_torn_ledger_json_is_refused_when_the_journal_cannot_rebuild_it(home: Path, journal: str) -> None:
    settings = make_settings()
    ledger = Ledger(settings, now=Clock())
    for _ in range(3):
        ledger.settle(ledger.reserve(settings.agent(AGENT), est(0.1), run_id="r", step="s"), usd=0.1, tokens=9)
    lines = paths.ledger_history().read_bytes().splitlines(keepends=True)
    kept = {"missing": None, "empty": [], "gap": lines[:3] + lines[4:], "not-from-1": lines[2:],
            "garbled-only": [b"{not json\n"]}[journal]
    if kept is None:
        paths.ledger_history().unlink()
    else:
        paths.ledger_history().write_bytes(b"".join(kept))
    journal_before = paths.ledger_history().read_bytes() if kept is not None else None
    paths.ledger().write_bytes(b"")
    with pytest.raises(LedgerCorrupt) as info:
        ledger.housekeep()
    assert "mythline budget repair" in str(info.value)
    assert paths.ledger().read_bytes() == b"" and not list(home.glob("ledger.json.corrupt-*"))
    assert (paths.ledger_history().read_bytes() if kept is not None else None) == journal_before


def test_an_access_journals_its_changes_with_one_append(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mythline_cli import files

    clock = Clock()
    settings = make_settings()
    ledger = Ledger(settings, now=clock)
    ledger.reserve(settings.agent(AGENT), est(0.1), run_id="r", step="s")  # held past run_timeout below
    appends: list[list[str]] = []
    real = files.append_jsonl_many
    monkeypatch.setattr(files, "append_jsonl_many", lambda path, records, **kw: (
        appends.append([r["event"] for r in records]), real(path, records, **kw)))
    clock.advance(40 * 86400)  # another month: reclaim, open two windows, close two, reserve
    ledger.reserve(settings.agent(AGENT), est(0.1), run_id="r", step="s")
    assert appends == [["reclaim", "window-opened", "window-opened", "window-closed", "window-closed", "reserve"]]
    seqs = [h["seq"] for h in history()]
    assert seqs == list(range(1, len(seqs) + 1))


def test_an_access_that_changes_nothing_writes_nothing(home: Path) -> None:
    settings = make_settings()
    ledger = Ledger(settings, now=Clock())
    ledger.reserve(settings.agent(AGENT), est(0.5), run_id="r", step="s")
    before = (paths.ledger().stat(), paths.ledger_history().read_bytes())
    with pytest.raises(BudgetExceeded):
        ledger.reserve(settings.agent(AGENT), est(0.1), run_id="r", step="s")
    ledger.housekeep()
    after = (paths.ledger().stat(), paths.ledger_history().read_bytes())
    assert (after[0].st_ino, after[0].st_mtime_ns, after[1]) == (before[0].st_ino, before[0].st_mtime_ns, before[1])


def test_a_failing_access_journals_what_it_applied_and_the_next_rolls_it_forward(
        home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mythline_cli.ledger import replay

    clock = Clock()
    settings = make_settings()
    ledger = Ledger(settings, now=clock)
    ledger.reserve(settings.agent(AGENT), est(0.1), run_id="r", step="s")
    seq = ledger_file()["seq"]
    clock.advance(3600 * 2)  # older than run_timeout: the next access reclaims it

    def broken(*args: Any) -> None:
        raise RuntimeError("bug")

    refusal = Ledger._refusal
    monkeypatch.setattr(Ledger, "_refusal", broken)
    with pytest.raises(RuntimeError):
        ledger.reserve(settings.agent(AGENT), est(0.1), run_id="r", step="s")
    assert ledger_file()["seq"] == seq  # ledger.json untouched ...
    assert [h["event"] for h in history()][-1] == "reclaim"  # ... the reclaim journaled
    monkeypatch.setattr(Ledger, "_refusal", refusal)  # not undo(): that would undo the state home too
    ledger.housekeep()
    assert ledger_file() == replay(paths.ledger_history())
    assert ledger_file()["reservations"] == {}


def test_roll_forward_reads_past_a_torn_line_inside_the_tail(home: Path) -> None:
    """A power cut can leave ledger.json behind its journal and a torn line inside the part it
    is behind by (the next append starts on a fresh line after it). Nothing is skipped."""
    from mythline_cli.ledger import replay

    settings = make_settings()
    ledger = Ledger(settings, now=Clock())
    ledger.housekeep()
    old = paths.ledger().read_bytes()  # the ledger.json a power cut brought back
    for _ in range(20):
        ledger.settle(ledger.reserve(settings.agent(AGENT), est(0.01), run_id="r", step="s"), usd=0.01, tokens=5)
    lines = paths.ledger_history().read_bytes().splitlines(keepends=True)
    torn = lines[:-10] + [b'{"seq": 99, "event": "res'] + [b"\n"] + lines[-10:]
    paths.ledger_history().write_bytes(b"".join(torn))
    expected = replay(paths.ledger_history())
    paths.ledger().write_bytes(old)
    ledger.housekeep()
    after = ledger_file()
    assert after == expected and after["seq"] == expected["seq"] == len(lines)
    day = next(k for k in after["windows"] if k.startswith("day:"))
    assert after["windows"][day]["agents"][AGENT]["usd"] == pytest.approx(0.2)


def test_roll_forward_refuses_a_journal_with_entries_missing(home: Path) -> None:
    settings = make_settings()
    ledger = Ledger(settings, now=Clock())
    ledger.housekeep()
    old = paths.ledger().read_bytes()
    for _ in range(5):
        ledger.settle(ledger.reserve(settings.agent(AGENT), est(0.01), run_id="r", step="s"), usd=0.01, tokens=5)
    lines = paths.ledger_history().read_bytes().splitlines(keepends=True)
    seq = json.loads(old)["seq"]
    paths.ledger_history().write_bytes(b"".join(lines[:seq + 2] + lines[seq + 4:]))  # two entries lost
    paths.ledger().write_bytes(old)
    with pytest.raises(LedgerCorrupt) as info:
        ledger.housekeep()
    assert f"entries are missing after entry {seq}" in str(info.value) and "mythline budget repair" in str(info.value)
    assert paths.ledger().read_bytes() == old  # nothing written from a journal with a hole


@pytest.mark.parametrize("edit", [
    pytest.param({"usd": -1e300}, id="usd-negative"),
    pytest.param({"usd": 0.0, "tokens": -10**12}, id="tokens-negative"),
    pytest.param({"calls": -1}, id="calls-negative"),
])
def test_a_hand_edited_impossible_spend_is_rebuilt_from_the_journal(home: Path, edit: dict[str, Any]) -> None:
    settings = make_settings()
    ledger = Ledger(settings, now=Clock())
    ledger.settle(ledger.reserve(settings.agent(AGENT), est(0.3), run_id="r", step="s"), usd=0.45, tokens=90)
    good = ledger_file()
    edited = json.loads(json.dumps(good))
    edited["windows"][DAY0]["agents"][AGENT].update(edit)
    paths.ledger().write_text(json.dumps(edited))
    with pytest.raises(LedgerCorrupt, match="impossible"):  # status and budget show refuse it ...
        ledger.report()
    rebuilt = ledger.housekeep()  # ... and the next run puts the journal's figures back
    assert rebuilt is not None and "impossible" in rebuilt["problem"]
    assert ledger_file() == good
    # The caps hold again: 0.45 spent + 0.1 would pass the agent's 0.5.
    with pytest.raises(BudgetExceeded):
        ledger.reserve(settings.agent(AGENT), est(0.1), run_id="r", step="s")


@pytest.mark.parametrize("entry", [
    pytest.param({"usd": -1e300}, id="usd-negative"),
    pytest.param({"usd": float("nan")}, id="usd-nan"),
    pytest.param({"tokens": -5}, id="tokens-negative"),
    pytest.param({"usd": True}, id="usd-bool"),
])
def test_a_journal_entry_with_an_impossible_charge_is_refused(home: Path, entry: dict[str, Any]) -> None:
    from mythline_cli.files import append_jsonl

    settings = make_settings()
    ledger = Ledger(settings, now=Clock())
    held = ledger.reserve(settings.agent(AGENT), est(0.1), run_id="r", step="s")
    seq = ledger_file()["seq"]
    append_jsonl(paths.ledger_history(), {"seq": seq + 1, "event": "settle", "reservation": held.id,
                                          "agent": AGENT, "usd": 0.1, "tokens": 10, **entry})
    with pytest.raises(LedgerCorrupt, match=f"entry {seq + 1} is not a ledger change"):
        ledger.snapshot()
    with pytest.raises(LedgerCorrupt):
        ledger.reserve(settings.agent(AGENT), est(0.1), run_id="r", step="s")
    with pytest.raises(LedgerCorrupt, match=f"entry {seq + 1}"):  # repair names the line, it does not crash
        ledger.repair()


def test_an_impossible_charge_never_reaches_the_journal(home: Path) -> None:
    settings = make_settings()
    ledger = Ledger(settings, now=Clock())
    held = ledger.reserve(settings.agent(AGENT), est(0.1), run_id="r", step="s")
    before = paths.ledger_history().read_bytes()
    with pytest.raises(ValueError, match="impossible figure"):
        ledger.settle(held, usd=-5.0, tokens=10)
    assert paths.ledger_history().read_bytes() == before
    assert ledger.settle(held, usd=0.05, tokens=10)  # the books still work
    assert ledger.report()["agents"][AGENT]["usd"]["spent"] == 0.05
