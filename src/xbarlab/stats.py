"""Summary statistics for Monte-Carlo results: mean, sample std and Student-t 95 % confidence intervals.

Bounded metrics (accuracy in [0, 100] %, mAP / mIoU in [0, 1]): the Student-t interval of the mean can reach
past the bound (3 chips at 99.9, 100, 100 % give [99.8, 100.1] %). The mean of a bounded metric lies inside the
bounds, so the interval is intersected with them: ``[max(lo, m - h), min(hi, m + h)]``. Intersecting a
confidence interval with the parameter space keeps its coverage (the true mean is never outside it), so this is
the same 95 % interval, not a clamp of a value; :attr:`Summary.bounded` records that it happened and every
table marks such an interval (``†``, see docs/experiments.md, "Confidence intervals of bounded metrics").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

# two-sided 95 % Student-t quantiles t_{0.975, df} for df = 1 … 30
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t_quantile_975(df: int) -> float:
    """t_{0.975} for ``df`` degrees of freedom (table up to 30, then a Cornish-Fisher expansion)."""
    if df < 1:
        raise ValueError(f"df: invalid value {df}; allowed: >= 1")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation and 95 % CI of the mean over ``n`` values."""

    n: int
    mean: float
    std: float
    ci95_low: float
    ci95_high: float
    bounded: bool = False
    """The Student-t interval reached past the metric's range and was intersected with it (see module doc)."""

    @property
    def ci95_half_width(self) -> float:
        """Half width ``t·s/√n`` of the Student-t interval (0 for one value), also when the CI is ``bounded``:
        ``mean ± ci95_half_width`` is the unbounded interval, ``[ci95_low, ci95_high]`` the reported one."""
        if self.n < 2:
            return 0.0
        return t_quantile_975(self.n - 1) * self.std / math.sqrt(self.n)


BOUNDED_MARK = "†"
"""Marks a confidence interval limited to the metric's range in tables (``[99.80, 100.00]†``)."""

BOUNDED_NOTE = "† 95 % CI limited to the metric's range (the Student-t interval reached past it; coverage kept)"


def metric_bounds(metric: str) -> tuple[float, float] | None:
    """Range of a recorded metric: accuracies and other percentages (names ending in ``accuracy`` or ``_pct``,
    e.g. ``map50_pct``) → ``(0, 100)``; None for unbounded ones (times, PC2, SNR)."""
    return (0.0, 100.0) if metric.endswith(("accuracy", "_pct")) else None


def summarize(values: Sequence[float], *, bounds: tuple[float, float] | None = None) -> Summary:
    """Summary of a non-empty sequence; with one value the std is 0 and the CI collapses to the value.

    ``bounds``: the range ``(lo, hi)`` of the metric (accuracy in %: ``(0, 100)``). Values outside it are refused
    (``ValueError``); a CI reaching past it is intersected with it and flagged ``bounded`` (see module doc).
    """
    n = len(values)
    if n == 0:
        raise ValueError("values: empty; allowed: at least one value")
    if bounds is not None:
        lo, hi = bounds
        bad = [v for v in values if not lo <= v <= hi]
        if bad:
            raise ValueError(f"values: invalid value {bad[0]!r}; allowed: [{lo:g}, {hi:g}]")
    mean = math.fsum(values) / n
    if n == 1:
        return Summary(1, mean, 0.0, mean, mean)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile_975(n - 1) * std / math.sqrt(n)
    low, high = mean - half, mean + half
    if bounds is None:
        return Summary(n, mean, std, low, high)
    b_low, b_high = max(bounds[0], low), min(bounds[1], high)
    return Summary(n, mean, std, b_low, b_high, bounded=(b_low, b_high) != (low, high))


def format_ci(s: Summary, digits: int = 2) -> str:
    """``[low, high]`` with ``digits`` decimals, marked ``†`` when limited to the metric's range."""
    return f"[{s.ci95_low:.{digits}f}, {s.ci95_high:.{digits}f}]" + (BOUNDED_MARK if s.bounded else "")
