"""Summary statistics for Monte-Carlo results: mean, sample std and Student-t 95 % confidence intervals."""

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

    @property
    def ci95_half_width(self) -> float:
        return (self.ci95_high - self.ci95_low) / 2


def summarize(values: Sequence[float]) -> Summary:
    """Summary of a non-empty sequence; with one value the std is 0 and the CI collapses to the value."""
    n = len(values)
    if n == 0:
        raise ValueError("values: empty; allowed: at least one value")
    mean = math.fsum(values) / n
    if n == 1:
        return Summary(1, mean, 0.0, mean, mean)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile_975(n - 1) * std / math.sqrt(n)
    return Summary(n, mean, std, mean - half, mean + half)
