"""Small statistics helpers: means with t-based confidence intervals over seeds."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats


def mean_ci(values, level: float = 0.95) -> tuple[float, float, float]:
    """Mean and two-sided Student-t confidence interval; NaNs dropped.

    One finite value gives an interval of (-inf, inf): a single seed says nothing
    about spread.
    """
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return (np.nan, np.nan, np.nan)
    m = float(v.mean())
    if len(v) == 1:
        return (m, -np.inf, np.inf)
    half = float(stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
    return (m, m - half, m + half)


def summarise(frame: pd.DataFrame, by: list[str], value: str = "reuse_score",
              level: float = 0.95) -> pd.DataFrame:
    """Per group of ``by``: ``mean``, ``ci_low``, ``ci_high`` and ``n`` of ``value``."""
    rows = []
    for keys, group in frame.groupby(by, sort=False, dropna=False):
        m, lo, hi = mean_ci(group[value], level)
        keys = keys if isinstance(keys, tuple) else (keys,)
        rows.append({**dict(zip(by, keys)), "mean": m, "ci_low": lo, "ci_high": hi,
                     "n": int(group[value].notna().sum())})
    return pd.DataFrame(rows)
