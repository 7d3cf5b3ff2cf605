"""Statistics over seeds: intervals, thresholds, rank correlation, paired tests.

Intervals (the one home for them; :mod:`reuse.toolkit.verdicts` turns them into verdicts):

- :func:`mean_ci`: the mean of per-seed values with its Student-t interval (NaN bounds
  with fewer than two finite values: one seed says nothing about spread), optionally clipped
  to the range the statistic can take;
- :func:`correlation_ci`: the mean of per-seed correlations with a Student-t interval on
  Fisher's z scale (:func:`fisher_z`), back-transformed, so it never leaves [-1, 1] (a t
  interval on the correlations themselves did: LogME's rho 0.96 [0.89, 1.03]);
- :func:`seed_jackknife`: any statistic of a frame with a leave-one-seed-out (cluster)
  jackknife interval on Student-t quantiles with n_seeds - 1 degrees of freedom. A
  percentile bootstrap over whole seeds undercovers with 5 clusters (its intervals came out
  about 1.5x too narrow here); the jackknife-t is the standard small-cluster correction,
  and for a mean of per-seed values it is exactly :func:`mean_ci`'s interval. With
  ``fisher_z=True`` a correlation is jackknifed on the z scale and its bounds back-transformed.

Layer-level tools (E2-E5):

- :func:`fit_threshold`: the cut on a criterion (small = reusable) with the best balanced
  accuracy; :func:`threshold_accuracy` scores a given cut on other points;
- :func:`roc_auc`: how well the criterion ranks reusable layers first (threshold-free);
- :func:`spearman_ci`: Spearman's rho with a percentile-bootstrap CI over points
  (descriptive only: points sharing a seed are not independent, so no verdict uses it);
- :func:`near_duplicates`: columns that rank the same points as an earlier one does (two
  criteria that order every layer alike make one claim, not two);
- :func:`leave_one_group_out`: fit on all groups but one, score on the held-out group,
  the fit function never receiving a row of the held-out group;
- :func:`paired_test`: seed-matched comparison of two strategies (paired t and Wilcoxon
  signed-rank) with effect sizes.

Rank correlation (every Spearman rho of the package goes through these):

- :func:`spearman`: Spearman's rho of the finite pairs, NaN where there is no ranking to
  compare (fewer than three pairs, or a constant side);
- :func:`within_spearman`: the mean over groups of :func:`spearman` within each group (a
  statistic pooled over conditions can change sign: Simpson's paradox).

Tests and multiplicity (a claim's p, Holm's correction over a family):

- :func:`p_value`: the two-sided p of "true value = margin" from a recorded t interval;
- :func:`conjunction_p`: the p of a claim whose parts must all hold (intersection-union);
- :func:`holm`: Holm's step-down adjusted p-values.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

LEVEL = 0.95  # confidence level of every interval
CLIP = 0.9999  # |r| clipped to this before Fisher's z (atanh(+-1) is infinite)


def mean_ci(values, level: float = LEVEL, bounds: tuple[float, float] | None = None) -> dict:
    """Mean of the finite ``values`` and its two-sided Student-t interval.

    Keys: estimate, ci_low, ci_high, n (finite values), se (standard error). With fewer
    than two values the bounds and se are NaN. ``bounds`` (low, high): the range the
    statistic can take (e.g. (-2, 2) for a difference of two correlations); a symmetric t
    interval can spill past it, so its ends are clipped there, which changes no verdict
    against a margin inside the range. Callers that clip say so beside the interval.
    """
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    n = len(v)
    out = {"estimate": float(v.mean()) if n else np.nan, "ci_low": np.nan, "ci_high": np.nan,
           "n": n, "se": np.nan}
    if n >= 2:
        se = float(v.std(ddof=1) / np.sqrt(n))
        half = float(stats.t.ppf(0.5 + level / 2, n - 1) * se)
        out.update(ci_low=out["estimate"] - half, ci_high=out["estimate"] + half, se=se)
        if bounds is not None:
            low, high = np.clip([out["ci_low"], out["ci_high"]], *bounds)
            out.update(ci_low=float(low), ci_high=float(high))
    return out


def fisher_z(r) -> np.ndarray:
    """Fisher's z = atanh(r) of correlations ``r`` (any shape), with r clipped to
    +-:data:`CLIP` first: a correlation of exactly +-1 (common for a Spearman rho over four
    layers) has no finite z. Raises ``ValueError`` for a finite value outside [-1, 1]."""
    r = np.asarray(r, dtype=float)
    if (np.abs(r[np.isfinite(r)]) > 1 + 1e-12).any():
        raise ValueError(f"correlations must lie in [-1, 1]; got {r[np.isfinite(r)].min()} .. "
                         f"{r[np.isfinite(r)].max()}")
    return np.arctanh(np.clip(r, -CLIP, CLIP))


def correlation_ci(values, level: float = LEVEL) -> dict:
    """Mean of per-seed correlations ``values`` (each in [-1, 1]; NaN dropped) with a
    Student-t interval on Fisher's z scale, back-transformed with tanh.

    Each value becomes z = atanh(r) (:func:`fisher_z`: r clipped to +-:data:`CLIP`, so +-1
    reads as z = +-4.95); the t interval of the mean z over the n seeds (n - 1 degrees of
    freedom) is mapped back, so it never leaves [-1, 1] and is wider on the side away from
    +-1. The estimate is tanh(mean z), the centre the interval is built around, so it always
    lies inside it; the plain mean of the correlations need not (per-seed rho 1, 1, 1, 1,
    0.8: plain mean 0.96, interval [0.967, 1.0]). A clipped +-1 pulls the estimate towards
    +-1 (all seeds at 1 read 0.9999). Keys: estimate, ci_low, ci_high, n, z (mean z), se_z
    (its standard error on the z scale).
    """
    ci = mean_ci(fisher_z(values), level)
    return {"estimate": float(np.tanh(ci["estimate"])), "ci_low": float(np.tanh(ci["ci_low"])),
            "ci_high": float(np.tanh(ci["ci_high"])), "n": ci["n"], "z": ci["estimate"], "se_z": ci["se"]}


def seed_jackknife(frame: pd.DataFrame, statistic: Callable[[pd.DataFrame], float],
                   seed_column: str = "seed", level: float = LEVEL, correlation: bool = False) -> dict:
    """``statistic(frame)`` with a leave-one-seed-out jackknife Student-t interval.

    Each seed is dropped with all its rows, so points sharing a training run are never
    treated as independent: se = sqrt((n-1)/n * sum((theta_-i - mean theta_-i)^2)) over the
    n seeds, CI = estimate +- t_{n-1} * se. The bounds and se are NaN with fewer than two
    seeds, or when the full statistic or any leave-one-out value is not finite (a jackknife
    missing a replicate has no valid SE, and dropping it silently would narrow the CI).
    ``correlation=True``: the statistic is a correlation, jackknifed as z = atanh(theta)
    (:func:`fisher_z`) and the bounds mapped back with tanh, so they stay in [-1, 1]; the
    estimate is the statistic clipped to +-:data:`CLIP` as its z was (so it lies in its
    interval) and ``se`` is on the z scale.
    Keys: estimate, ci_low, ci_high, se, n_seeds.
    """
    seeds = frame[seed_column].unique()
    estimate = float(statistic(frame))
    n = len(seeds)
    out = {"estimate": estimate, "ci_low": np.nan, "ci_high": np.nan, "se": np.nan, "n_seeds": n}
    if n < 2 or not np.isfinite(estimate):
        return out
    left_out = np.array([statistic(frame[frame[seed_column] != s]) for s in seeds], dtype=float)
    if not np.isfinite(left_out).all():
        return out
    centre = float(fisher_z(estimate)) if correlation else estimate
    if correlation:
        out["estimate"] = float(np.tanh(centre))
        left_out = fisher_z(left_out)
    se = float(np.sqrt((n - 1) / n * np.sum((left_out - left_out.mean()) ** 2)))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * se)
    low, high = centre - half, centre + half
    if correlation:
        low, high = float(np.tanh(low)), float(np.tanh(high))
    out.update(ci_low=low, ci_high=high, se=se)
    return out


def _xy(x, labels) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=float)
    y = np.asarray(labels, dtype=bool)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and labels must be 1-D of one length; got {x.shape=} {y.shape=}")
    keep = np.isfinite(x)
    return x[keep], y[keep]


def fit_threshold(x, labels) -> tuple[float, float]:
    """(threshold, balanced accuracy) of the rule "reusable when x <= threshold".

    ``x``: criterion per point (e.g. RMSE, smaller = more alike); ``labels``: True where
    the point is reusable. Candidates are the midpoints between consecutive distinct
    values (and one below / above all of them); among equally good candidates the middle
    one is taken, so a clean gap gives its midpoint. Needs both classes. All candidates
    are scored at once from cumulative counts (O(n log n)): E3's seed jackknife refits
    once per held-out pair and left-out seed.
    """
    x, y = _xy(x, labels)
    if y.all() or not y.any():
        raise ValueError(f"fit_threshold needs reusable and non-reusable points; got "
                         f"{int(y.sum())} reusable of {len(y)}")
    values = np.unique(x)
    order = np.argsort(x, kind="stable")
    xs, ys = x[order], y[order]
    ends = np.searchsorted(xs, values, side="right")  # points <= each distinct value
    pos_le = np.concatenate([[0], np.cumsum(ys)[ends - 1]])
    neg_le = np.concatenate([[0], ends]) - pos_le
    n_pos, n_neg = int(ys.sum()), int((~ys).sum())
    scores = 0.5 * (pos_le / n_pos + (n_neg - neg_le) / n_neg)
    candidates = np.concatenate([[values[0] - 1.0], (values[:-1] + values[1:]) / 2, [values[-1] + 1.0]])
    best = np.flatnonzero(np.isclose(scores, scores.max()))
    choice = best[len(best) // 2]
    return float(candidates[choice]), float(scores[choice])


def threshold_accuracy(x, labels, threshold: float) -> float:
    """Balanced accuracy of "reusable when x <= threshold" on points (NaN if one class only)."""
    x, y = _xy(x, labels)
    if y.all() or not y.any():
        return float("nan")
    return float(balanced_accuracy_score(y, x <= threshold))


def roc_auc(x, labels) -> float:
    """ROC AUC of -x as a score for "reusable": 1 = every reusable point has a smaller x."""
    x, y = _xy(x, labels)
    if y.all() or not y.any():
        return float("nan")
    return float(roc_auc_score(y, -x))


def spearman_ci(x, y, n_boot: int = 1000, level: float = 0.95, seed: int = 0
                ) -> dict[str, float]:
    """Spearman's rho, its p-value, and a percentile-bootstrap CI (points resampled in pairs).

    NaN points are dropped. Returns keys rho, p, ci_low, ci_high, n.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"x and y must have one shape; got {x.shape=} {y.shape=}")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < 3:
        return {"rho": np.nan, "p": np.nan, "ci_low": np.nan, "ci_high": np.nan, "n": len(x)}
    res = stats.spearmanr(x, y)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        i = rng.integers(0, len(x), len(x))
        if np.ptp(x[i]) > 0 and np.ptp(y[i]) > 0:  # a constant resample has no rank correlation
            boots.append(stats.spearmanr(x[i], y[i]).statistic)
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2]) if boots else (np.nan, np.nan)
    return {"rho": float(res.statistic), "p": float(res.pvalue), "ci_low": float(lo),
            "ci_high": float(hi), "n": int(len(x))}


def near_duplicates(frame: pd.DataFrame, columns, threshold: float) -> dict[str, tuple[str, float]]:
    """{column: (earlier column, Spearman rho)} for each of ``columns`` whose |Spearman rho|
    with an earlier one, over the rows where both are finite (at least 3), exceeds
    ``threshold``. Columns are taken in order and compared with the earlier ones that are
    not near-duplicates themselves, so every group maps to its first member."""
    kept: list[str] = []
    out: dict[str, tuple[str, float]] = {}
    for column in columns:
        for first in kept:
            rho = spearman(frame[first], frame[column])
            if abs(rho) > threshold:  # False for NaN: no ranking to compare
                out[column] = (first, rho)
                break
        else:
            kept.append(column)
    return out


def leave_one_group_out(frame: pd.DataFrame, group: str,
                        fit: Callable[[pd.DataFrame], Any],
                        score: Callable[[Any, pd.DataFrame], dict]) -> pd.DataFrame:
    """One row per held-out value of ``group``: ``score(fit(others), held_out)``.

    ``fit`` only ever receives rows whose ``group`` differs from the held-out value, so
    what is scored on a group was learnt without it.
    """
    if group not in frame.columns:
        raise ValueError(f"group={group!r} is not a column; columns: {list(frame.columns)}")
    groups = list(dict.fromkeys(frame[group]))
    if len(groups) < 2:
        raise ValueError(f"leave-one-{group}-out needs >= 2 values of {group}; got {groups}")
    rows = []
    for g in groups:
        model = fit(frame[frame[group] != g].copy())
        rows.append({group: g, **score(model, frame[frame[group] == g].copy())})
    return pd.DataFrame(rows)


def paired_test(a, b, level: float = 0.95) -> dict[str, float]:
    """Seed-matched comparison of ``a`` and ``b`` (equal-length, element i paired with i).

    Returns n, mean_diff (a - b) with its Student-t CI, the paired t-test p-value
    (``p_t``), the Wilcoxon signed-rank p-value (``p_wilcoxon``, exact for small n),
    Cohen's d_z (mean / sd of the differences) and the matched-pairs rank-biserial
    correlation (in [-1, 1], positive when a > b). Pairs with a NaN are dropped.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"a and b must be 1-D of one length; got {a.shape=} {b.shape=}")
    keep = np.isfinite(a) & np.isfinite(b)
    d = a[keep] - b[keep]
    n = len(d)
    out = {"n": n, "mean_diff": np.nan, "ci_low": np.nan, "ci_high": np.nan, "p_t": np.nan,
           "p_wilcoxon": np.nan, "cohen_dz": np.nan, "rank_biserial": np.nan}
    if n == 0:
        return out
    out["mean_diff"] = float(d.mean())
    if n < 2:
        return out
    sd = d.std(ddof=1)
    half = stats.t.ppf(0.5 + level / 2, n - 1) * sd / np.sqrt(n)
    out.update(ci_low=float(d.mean() - half), ci_high=float(d.mean() + half))
    if sd > 0:
        out["p_t"] = float(stats.ttest_rel(a[keep], b[keep]).pvalue)
        out["cohen_dz"] = float(d.mean() / sd)
    nonzero = d[d != 0]
    if len(nonzero):
        out["p_wilcoxon"] = float(stats.wilcoxon(a[keep], b[keep]).pvalue)
        ranks = stats.rankdata(np.abs(nonzero))
        out["rank_biserial"] = float((ranks[nonzero > 0].sum() - ranks[nonzero < 0].sum()) / ranks.sum())
    return out


def spearman(x, y) -> float:
    """Spearman's rho over the pairs where both are finite; NaN with fewer than three such
    pairs or a constant side (no ranking to compare, where scipy would warn)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(stats.spearmanr(x, y).statistic)


def within_spearman(frame: pd.DataFrame, by, x: str, y: str) -> float:
    """Mean over the groups of ``by`` of :func:`spearman` (``x``, ``y``) within each group,
    groups without a ranking left out; NaN when no group has one."""
    rhos = [spearman(g[x], g[y]) for _, g in frame.groupby(by, sort=False)]
    rhos = [r for r in rhos if np.isfinite(r)]
    return float(np.mean(rhos)) if rhos else float("nan")


def p_value(estimate: float, ci_low: float, ci_high: float, n: float, margin: float,
            level: float = LEVEL) -> float:
    """Two-sided p of 'true value = margin' from a symmetric Student-t interval on n - 1
    degrees of freedom (se = half-width / t quantile); NaN when it cannot be computed."""
    values = np.array([estimate, ci_low, ci_high, n, margin], dtype=float)
    if not np.isfinite(values).all() or n < 2:
        return float("nan")
    se = (ci_high - ci_low) / (2 * stats.t.ppf(0.5 + level / 2, n - 1))
    if se == 0:
        return float(estimate == margin)
    return float(2 * stats.t.sf(abs(estimate - margin) / se, n - 1))


def conjunction_p(parts) -> float:
    """p of a claim made of parts that must all hold, from (p, verdict) per part (an
    intersection-union test, :func:`reuse.toolkit.verdicts.conjunction`): a claim that holds
    is as strong as its weakest part (the largest p); a refuted one as its strongest refuting
    part (the smallest p among them); an undecided one gets the largest p."""
    parts = [(float(p), v) for p, v in parts]
    refuting = [p for p, v in parts if v == "refuted"]
    return float(min(refuting)) if refuting else float(max(p for p, _ in parts))


def holm(p) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaN counts as 1: a claim without a p-value still
    belongs to the family); NaN stays NaN in the output."""
    p = np.asarray(p, dtype=float)
    filled = np.where(np.isfinite(p), p, 1.0)
    order = np.argsort(filled, kind="stable")
    stepped = np.maximum.accumulate((len(p) - np.arange(len(p))) * filled[order])
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(stepped, 1.0)
    return np.where(np.isfinite(p), adjusted, np.nan)
