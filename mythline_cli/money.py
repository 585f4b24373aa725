"""USD figures for people: one spelling for every table, message and alert (no imports)."""

from __future__ import annotations

import math

SIGNIFICANT = 4
# Beyond these a figure is written in exponent form: a table cell stays narrow, and a
# provider's absurd bill is still shown as what it is.
LARGE = 1e9
SMALL = 1e-6


def usd(value: float, *, symbol: bool = True) -> str:
    """``$0.025``, ``$4.999``, ``$1,234.50``, ``$1.00e+300``: at least the cents, and enough
    digits that a sub-cent cap or a spend just under a cap is not rounded to something else."""
    sign = "-" if value < 0 else ""
    prefix = sign + ("$" if symbol else "")
    v = abs(float(value))
    if not math.isfinite(v):
        return prefix + ("nan" if math.isnan(v) else "inf")
    if v == 0:
        return prefix + "0.00"
    if v >= LARGE or v < SMALL:
        return prefix + f"{v:.2e}"
    decimals = max(2, SIGNIFICANT - 1 - math.floor(math.log10(v)))
    text = f"{v:,.{decimals}f}"
    whole, _, frac = text.partition(".")
    frac = frac.rstrip("0").ljust(2, "0")
    return prefix + f"{whole}.{frac}"


def usd_pair(spent: float, cap: float | None) -> str:
    """``$0.0123/0.025``: a spend and its cap (the cap without a second dollar sign)."""
    return usd(spent) + (f"/{usd(cap, symbol=False)}" if cap is not None else "")
