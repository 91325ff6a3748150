"""Intervals and verdicts: how a chapter decides whether a paper's claim reproduces.

A verdict carries an estimate, an interval, ``n``, the metric and the judge, and its words follow
from the interval (:func:`verdict`): "reproduces" when the interval lies on the claim's side of
the null, "does not reproduce" when it lies on the other side, "inconclusive" when it contains
the null. For now this holds what chapter 6 needs: Wilson's interval for a share and Newcombe's
interval for the difference of two shares (independent samples).
"""

from __future__ import annotations

import dataclasses
import math
from statistics import NormalDist

__all__ = ["Interval", "wilson_interval", "difference_of_shares", "verdict"]


@dataclasses.dataclass(frozen=True)
class Interval:
    """``estimate`` with a ``level`` confidence interval ``[low, high]`` from ``n`` items."""

    estimate: float
    low: float
    high: float
    n: int
    level: float = 0.95

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    def __str__(self) -> str:
        from .reporting import fmt  # two significant digits of the interval's half-width
        u = max((self.high - self.low) / 20, 1e-12)
        return f"{fmt(self.estimate, u)} [{fmt(self.low, u)}, {fmt(self.high, u)}]"


def _z(level: float) -> float:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    return NormalDist().inv_cdf(0.5 + level / 2)


def _check_count(k, n, name):
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"{name}: n must be a positive integer, got {n!r}")
    if not isinstance(k, int) or not 0 <= k <= n:
        raise ValueError(f"{name}: k must be an integer in [0, n] = [0, {n}], got {k!r}")


def wilson_interval(k: int, n: int, *, level: float = 0.95) -> Interval:
    """Wilson's score interval for a share ``k / n`` (good coverage at small ``n`` and near 0 or 1)."""
    _check_count(k, n, "wilson_interval")
    z, p = _z(level), k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    low = 0.0 if k == 0 else max(0.0, centre - half)
    high = 1.0 if k == n else min(1.0, centre + half)
    return Interval(p, low, high, n, level)


def difference_of_shares(k1: int, n1: int, k2: int, n2: int, *, level: float = 0.95) -> Interval:
    """``k1/n1 - k2/n2`` with Newcombe's hybrid score interval (two independent samples).

    ``L = d - sqrt((p1 - l1)^2 + (u2 - p2)^2)``, ``U = d + sqrt((u1 - p1)^2 + (p2 - l2)^2)``
    with ``[l_i, u_i]`` the Wilson intervals (Newcombe 1998, method 10). ``n`` is ``min(n1, n2)``."""
    a, b = wilson_interval(k1, n1, level=level), wilson_interval(k2, n2, level=level)
    d = a.estimate - b.estimate
    low = d - math.sqrt((a.estimate - a.low) ** 2 + (b.high - b.estimate) ** 2)
    high = d + math.sqrt((a.high - a.estimate) ** 2 + (b.estimate - b.low) ** 2)
    return Interval(d, low, high, min(n1, n2), level)


def verdict(interval: Interval, *, null: float = 0.0, claim: str = "greater") -> str:
    """The words that follow from ``interval`` for a claim that the quantity is ``"greater"`` (or
    ``"less"``) than ``null``: "reproduces", "does not reproduce" or "inconclusive"."""
    if claim not in ("greater", "less"):
        raise ValueError(f"claim must be 'greater' or 'less', got {claim!r}")
    above, below = interval.low > null, interval.high < null
    if claim == "less":
        above, below = below, above
    return "reproduces" if above else "does not reproduce" if below else "inconclusive"
