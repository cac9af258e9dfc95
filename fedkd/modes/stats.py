"""Spread over seeds: mean, sample standard deviation and a Student-t confidence interval.

Every table of the single-node modes reports a :class:`Spread` per cell::

    spread([0.91, 0.93, 0.92])  # 0.9200 ± 0.0100 (95% CI 0.8952..0.9448, n=3)

The standard deviation is the sample one (``ddof=1``); the interval is
``mean ± t_{0.975, n-1} * std / sqrt(n)``. With one value both are undefined (``nan``, written
as ``null`` in ``results.json``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Spread:
    """Mean, sample std (ddof=1) and ``CONFIDENCE`` t-interval of per-seed values."""

    mean: float
    std: float
    ci_low: float
    ci_high: float
    n: int
    values: tuple[float, ...]

    def __str__(self) -> str:
        if self.n < 2:
            return f"{self.mean:.4f} (n=1)"
        return f"{self.mean:.4f} ± {self.std:.4f} [{self.ci_low:.4f}, {self.ci_high:.4f}]"

    def excludes(self, value: float) -> bool:
        """True when ``value`` lies outside the confidence interval (``False`` for n < 2)."""
        return self.n >= 2 and not self.ci_low <= value <= self.ci_high


def spread(values: Sequence[float]) -> Spread:
    """The :class:`Spread` of ``values`` (one per seed).

    Parameters
    ----------
    values : sequence of float
        At least one finite value.

    Returns
    -------
    Spread
    """
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(
            f"spread needs a non-empty 1-D sequence of values, got shape {array.shape}"
        )
    if not np.all(np.isfinite(array)):
        raise ValueError(f"spread needs finite values, got {array.tolist()}")
    mean = float(array.mean())
    if array.size < 2:
        return Spread(mean, math.nan, math.nan, math.nan, 1, (mean,))
    std = float(array.std(ddof=1))
    half = (
        float(scipy_stats.t.ppf(0.5 + CONFIDENCE / 2, array.size - 1)) * std / math.sqrt(array.size)
    )
    return Spread(mean, std, mean - half, mean + half, int(array.size), tuple(array.tolist()))


def paired_difference(a: Sequence[float], b: Sequence[float]) -> Spread:
    """Spread of the per-seed differences ``a - b`` (seeds paired by position)."""
    if len(a) != len(b):
        raise ValueError(f"paired values need equal lengths, got {len(a)} and {len(b)}")
    return spread([x - y for x, y in zip(a, b, strict=True)])


def cell(value: Spread | None) -> str:
    """A table cell: ``mean ± std`` (``-`` for None)."""
    if value is None:
        return "-"
    if value.n < 2:
        return f"{value.mean:.4f}"
    return f"{value.mean:.4f} ± {value.std:.4f}"


def interval(value: Spread | None) -> str:
    """A table cell holding the confidence interval ``[low, high]`` (``-`` when undefined)."""
    if value is None or value.n < 2:
        return "-"
    return f"[{value.ci_low:.4f}, {value.ci_high:.4f}]"
