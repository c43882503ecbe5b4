"""Means with 95 % confidence intervals (Student t), for per-video scores and paired differences."""

from __future__ import annotations

import math
from collections.abc import Sequence

from qvgen.core import Frozen

# Two-sided 95 % Student t quantiles t_{0.975, df} for df = 1..30; beyond 30 the normal 1.96 is within 2 %.
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


class MeanCI(Frozen):
    """A sample mean, its 95 % confidence half-width (None for fewer than 2 values) and the count."""

    mean: float
    ci95: float | None
    n: int

    def __str__(self) -> str:
        return f"{self.mean:.3f}" if self.ci95 is None else f"{self.mean:.3f} ± {self.ci95:.3f}"


def t975(df: int) -> float:
    """The 0.975 quantile of Student's t with `df` degrees of freedom (df ≥ 1)."""
    if df < 1:
        raise ValueError(f"t975 needs df >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964  # Cornish–Fisher expansion around the normal quantile; within 1e-3 of t for df > 30
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def mean_ci(values: Sequence[float]) -> MeanCI:
    """Mean of `values` with the half-width of its 95 % t interval (independent values)."""
    n = len(values)
    if n == 0:
        raise ValueError("mean_ci got no values")
    mean = math.fsum(values) / n
    if n < 2:
        return MeanCI(mean=mean, ci95=None, n=n)
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    return MeanCI(mean=mean, ci95=t975(n - 1) * math.sqrt(var / n), n=n)


def paired_diff_ci(a: Sequence[float], b: Sequence[float]) -> MeanCI:
    """Mean of a − b over paired values (same prompt and seed) with its 95 % t interval."""
    if len(a) != len(b):
        raise ValueError(f"paired_diff_ci needs equal lengths, got {len(a)} and {len(b)}")
    return mean_ci([x - y for x, y in zip(a, b, strict=True)])
