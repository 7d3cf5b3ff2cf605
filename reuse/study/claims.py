"""Which recorded verdicts are claims, and which of them the study stakes itself on.

A summary that counts every verdict row overstates the evidence: some rows are controls
(they check the method, they claim nothing about the paper), some repeat another row, some
cannot be decided by construction, and testing dozens of claims at 95% each makes a few
false verdicts likely. So, declared here before the results:

- :data:`PRIMARY`: the claims the study stakes itself on, by judgment-name prefix. Their
  p-values are corrected with Holm's step-down method over the family (family-wise error
  at most 5%, whatever the dependence between claims); every other claim is *exploratory*
  and keeps its raw verdict;
- controls (a name containing "control"), :data:`DUPLICATES` and :data:`UNDECIDABLE` are
  listed apart and never counted as claims.

A claim's p-value comes from its recorded t interval (:func:`p_value`), so the records
need ``margin`` and ``side``, or from a recorded ``p`` where the claim has several parts
(:func:`conjunction_p`: J1 above the margin and above the theta_0 reset, J3 above its
accuracy margin and above the weight-blind baselines); a primary claim recorded without a margin keeps its raw
verdict, says so in the ``holm`` column, and still counts in the family's size (as p = 1),
so that a missing margin never loosens the correction of the others.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from reuse.toolkit.stats import LEVEL

ALPHA = 1 - LEVEL
# the primary family, by judgment-name prefix, fixed before the results
PRIMARY = {
    "J1 ": "J1, network reusability: one claim per rung (architecture/task/pair)",
    "J3": "J3, the RMSE criterion: one claim per criterion",
    "H1": "E4 headline claim H1",
    "H2": "E4 headline claim H2",
    "H3": "E4 headline claim H3",
}
# rows that repeat another claim, by judgment-name prefix, with the reason (none at present:
# E4's rule is now strict, so `rule` no longer equals condition (b) alone)
DUPLICATES: dict[str, str] = {}
# rows that cannot be decided by construction, by judgment-name prefix, with the reason (none
# at present: E4's strict rule is judged only on the cells where it reuses something)
UNDECIDABLE: dict[str, str] = {}
FAMILIES = ("primary", "exploratory", "control", "duplicate", "undecidable")


def family(judgment: str) -> str:
    """'control', 'duplicate', 'undecidable', 'primary' or 'exploratory' (first that applies)."""
    if "control" in judgment.lower():
        return "control"
    for name, prefixes in (("duplicate", DUPLICATES), ("undecidable", UNDECIDABLE), ("primary", PRIMARY)):
        if judgment.startswith(tuple(prefixes)):
            return name
    return "exploratory"


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


def adjust(records: pd.DataFrame, alpha: float = ALPHA) -> pd.DataFrame:
    """``records`` (one row per verdict, as :func:`reuse.study.report.record` stores them)
    with columns family, p, p_holm, verdict_holm and holm (what was done). Holm runs over
    the primary rows only; the others keep their raw verdict."""
    out = records.copy()
    for column in ("n", "margin"):
        if column not in out:
            out[column] = np.nan
    out["family"] = out.judgment.map(family)
    derived = [p_value(r.estimate, r.ci_low, r.ci_high, r.n, r.margin) for r in out.itertuples()]
    # a claim made of parts records its own p (conjunction_p); the others' comes from their CI
    out["p"] = out.p.fillna(pd.Series(derived, index=out.index)) if "p" in out else derived
    primary = out.family == "primary"
    out["p_holm"] = np.nan
    out.loc[primary, "p_holm"] = holm(out.p[primary])
    decided = out.p_holm < alpha
    out["verdict_holm"] = out.verdict.where(decided | ~primary | out.p_holm.isna(), "undecided")
    out["holm"] = np.where(~primary, "not in the primary family",
                           np.where(out.margin.isna(), "unadjusted: no margin recorded",
                                    np.where(out.p_holm.isna(), "unadjusted: no p-value (CI or n missing)",
                                             f"Holm over {int(primary.sum())} primary claims")))
    return out


def tally(adjusted: pd.DataFrame) -> dict:
    """Counts of distinct claims by verdict (primary after Holm, exploratory raw) and of the
    rows set apart: controls, duplicates, undecidable by design."""
    claims = adjusted[adjusted.family.isin(("primary", "exploratory"))]
    verdicts = claims.verdict_holm.value_counts()
    return {"claims": len(claims), "primary": int((claims.family == "primary").sum()),
            **{v: int(verdicts.get(v, 0)) for v in ("holds", "refuted", "undecided")},
            **{f: int((adjusted.family == f).sum()) for f in ("control", "duplicate", "undecidable")}}
