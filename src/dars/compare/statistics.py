"""Means over the comparison's runs and their Student-t intervals, mean ± t_{(1+level)/2, n-1}
· s / √n with the runs as independent draws (runs sharing a teacher are correlated, so the
intervals are on the optimistic side)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

LEVEL = 0.95  # of every interval


def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t with ``df`` degrees of freedom."""
    return float(stats.t.ppf(p, df))


@dataclass(frozen=True)
class Interval:
    """Mean of n values and its Student-t interval (NaN bounds when n < 2)."""

    mean: float
    lo: float
    hi: float
    n: int

    @property
    def verdict(self) -> str:
        """For a difference: a sign is claimed only when the interval excludes 0."""
        if self.n < 2:
            return "n=1, no interval"
        if self.lo > 0:
            return "better"
        if self.hi < 0:
            return "worse"
        return "not distinguishable"


def t_interval(values: Sequence[float] | pd.Series, level: float = LEVEL) -> Interval:
    """The mean of ``values`` and its t interval at ``level``; a missing value (NaN: e.g. no
    precision without true masks) makes everything NaN."""
    x = np.asarray(values, float)
    if x.size == 0 or np.isnan(x).any():
        return Interval(math.nan, math.nan, math.nan, int(x.size))
    mean = float(x.mean())
    if x.size < 2:
        return Interval(mean, math.nan, math.nan, 1)
    half = t_quantile((1 + level) / 2, x.size - 1) * float(x.std(ddof=1)) / math.sqrt(x.size)
    return Interval(mean, mean - half, mean + half, int(x.size))
