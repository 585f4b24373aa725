"""``budget reconcile``: the ledger against the provider's bill (OpenRouter's billing endpoints).

Every settle journals the provider's generation id. ``GET {base_url}/generation?id=`` gives
each call's billed ``total_cost``; a call whose bill is known replaces the ledger's figure
with it (a ``reconcile`` entry: more when the bill is higher, less when it is lower). A
generation the provider does not know yet (404, for a few seconds after the call) is asked
again a few times, then left for the next run. ``GET {base_url}/key`` gives the key's own
usage and limit: its ``limit_remaining`` is kept in ``provider-key.json`` and acts as one
more fleet cap (``key_cap``) until the next reconcile.
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from .. import files, paths
from ..errors import MythlineError, NoBilling
from ..redact import safe_url

if TYPE_CHECKING:
    from .backend import Store
    from .core import Ledger

TRIES = 3  # per generation not ready yet, in one run
PAUSE = 1.0  # seconds between them: the record usually appears within a few seconds


class Billing:
    """The provider's billing endpoints, with the API key as a Bearer token (never echoed)."""

    def __init__(self, base_url: str, key: str | None, *, timeout: float = 15.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.key = key
        self.timeout = timeout

    def _get(self, path: str) -> tuple[int, Any]:
        req = urllib.request.Request(self.base_url + path, headers={"Accept": "application/json"})
        if self.key:
            req.add_header("Authorization", f"Bearer {self.key}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 - the configured URL
                status, raw = resp.status, resp.read(1_000_000)
        except urllib.error.HTTPError as exc:
            return exc.code, None
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise MythlineError(f"could not reach {safe_url(self.base_url)} ({type(reason).__name__}); nothing "
                                "was changed, run mythline budget reconcile again later") from None
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, None

    def key_info(self) -> dict[str, Any]:
        """The key's ``data`` (limit, limit_remaining, usage, usage_daily, ...), or NoBilling."""
        status, body = self._get("/key")
        data = body.get("data") if isinstance(body, dict) else None
        if status != 200 or not isinstance(data, dict):
            raise NoBilling(f"{safe_url(self.base_url)} has no billing endpoints (GET /key answered "
                            f"{status if status != 200 else 'without a key record'}); nothing was changed")
        return data

    def generation(self, gid: str) -> float | None:
        """The billed USD of one generation, or None while the provider does not have it."""
        status, body = self._get("/generation?" + urllib.parse.urlencode({"id": gid}))
        data = body.get("data") if isinstance(body, dict) else None
        cost = data.get("total_cost") if isinstance(data, dict) else None
        if status != 200 or isinstance(cost, bool) or not isinstance(cost, (int, float)):
            return None
        cost = float(cost)
        return cost if math.isfinite(cost) and cost >= 0 else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) and value >= 0 else None


def calls(store: Store, since: date | None) -> tuple[list[dict[str, Any]], set[str]]:
    """The journal's settled calls with a generation id (from ``since``), and the ids already
    reconciled; read from the ledger's backend, the files or the shared state."""
    out, done = [], set()
    for entry in store.journal():
        op: dict[str, Any] = dict(entry)
        if op.get("event") == "reconcile" and op.get("generation"):
            done.add(op["generation"])
        elif op.get("event") == "settle" and op.get("generation"):
            if since is not None and str(op.get("ts", ""))[:10] < since.isoformat():
                continue
            out.append(op)
    return out, done


def reconcile(ledger: Ledger, billing: Billing, *, since: date | None = None,
              sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Replace each unreconciled call's figure with its bill; keep the key's limit as a cap.
    Returns what was done (``reconciled``, ``pending``, ``extra_usd``, ``days``, ``key``)."""
    key = billing.key_info()  # first: a provider without the endpoints changes nothing
    todo, done = calls(ledger.store, since)
    todo = [op for op in todo if op["generation"] not in done]
    billed: dict[str, float] = {}
    pending = list(todo)
    for attempt in range(TRIES):
        left = []
        for op in pending:
            cost = billing.generation(op["generation"])
            if cost is None:
                left.append(op)
            else:
                billed[op["generation"]] = cost
        pending = left
        if not pending or attempt == TRIES - 1:
            break
        sleep(PAUSE * (attempt + 1))
    days: dict[str, dict[str, float]] = {}
    extra = 0.0
    with ledger._access() as acc:
        for op in todo:
            gid = op["generation"]
            if gid not in billed:
                continue
            charged = _number(op.get("usd")) or 0.0
            bill = billed[gid]
            acc.log({"event": "reconcile", "generation": gid, "agent": op["agent"],
                     "reservation": op.get("reservation", ""), "billed_usd": bill, "charged": charged,
                     "was_unsettled": bool(op.get("unsettled")), "windows": list(op.get("windows") or [])})
            extra += bill - charged
            day = days.setdefault(str(op.get("ts", ""))[:10], {"ledger_usd": 0.0, "billed_usd": 0.0, "calls": 0})
            day["ledger_usd"] += charged
            day["billed_usd"] += bill
            day["calls"] += 1
        state = acc.state
        current = ledger.current(state)
        fleet_day, _ = ledger.usage(state, current["day"], "*", "usd")
    remaining = _number(key.get("limit_remaining"))
    kept = {"limit": _number(key.get("limit")), "limit_remaining": remaining,
            "usage": _number(key.get("usage")), "usage_daily": _number(key.get("usage_daily")),
            "read_at": datetime.now().astimezone().isoformat(), "window": current["day"],
            "fleet_spent_at_read": fleet_day, "provider": safe_url(billing.base_url)}
    files.write_json(paths.provider_key(), kept)
    for day in days.values():
        day["drift_usd"] = day["billed_usd"] - day["ledger_usd"]
    return {"reconciled": sum(d["calls"] for d in days.values()), "pending": len(pending),
            "extra_usd": extra, "days": dict(sorted(days.items())), "key": kept}


def key_cap(window: str) -> float | None:
    """The fleet's cap for ``window`` that the provider key's remaining limit sets, or None:
    what the fleet had spent when it was read plus what the key had left (the whole of what
    it had left, in a later window: run reconcile daily to keep it close)."""
    try:
        data = files.read_json(paths.provider_key())
    except (files.CorruptFile, OSError):
        return None
    if not isinstance(data, dict):
        return None
    remaining = _number(data.get("limit_remaining"))
    if remaining is None:
        return None
    spent = _number(data.get("fleet_spent_at_read")) or 0.0
    return spent + remaining if data.get("window") == window else remaining
