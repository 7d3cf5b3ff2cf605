"""Which recorded verdicts are claims, and which of them the study stakes itself on.

A summary that counts every verdict row overstates the evidence: some rows are controls
(they check the method, they claim nothing about the paper), some repeat another row, some
cannot be decided by construction, and testing dozens of claims at 95% each makes a few
false verdicts likely. So each claim is counted once (:func:`adjust`, :func:`tally`):

- :data:`PRIMARY_CLAIMS`: the claims the study stakes itself on, by judgment-name prefix, declared
  before the results. Their p-values are corrected with Holm's step-down method over the
  family (family-wise error at most 5%, whatever the dependence between claims); every other
  claim is *exploratory* and keeps its raw verdict. A primary row stays primary whatever its
  controls say: the family is fixed in advance;
- controls (a name containing "control") are listed apart and never counted as claims;
- *exact duplicates*, found from the numbers, not from a list: claim rows whose estimate,
  CI and n agree to :data:`DIGITS` significant digits are one claim (E4's ``rmse_only -
  random`` is H3b; E5's held-out accuracy of a criterion is its J3). The primary row is kept
  (else the first in record order); the others are family "duplicate" with ``alias_of``
  naming it and print its verdict after Holm, and never enlarge Holm's family;
- *near-duplicates*, declared by the notebook that can tell: a record with ``alias_of``
  (two criteria whose |Spearman rho| over the same points exceeds :data:`NEAR`, e.g.
  debiased CKA and CKA) is family "duplicate" of the named claim;
- *undecidable by design*: an exploratory row whose ``controls`` failed cannot be decided
  while they fail; family "undecidable", listed apart.

A claim's p-value comes from its recorded t interval (:func:`reuse.toolkit.stats.p_value`), so the records
need ``margin`` and ``side``, or from a recorded ``p`` where the claim has several parts
(:func:`reuse.toolkit.stats.conjunction_p`: J1 above the margin and above the theta_0 reset, J3 above its
accuracy margin and above the weight-blind baselines); a primary claim recorded without a margin keeps its raw
verdict, says so in the ``holm`` column, and still counts in the family's size (as p = 1),
so that a missing margin never loosens the correction of the others. Beside each primary
claim goes the smallest effect it can detect at Holm's level (:func:`detectable_at_holm`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy import stats

from reuse.toolkit.stats import LEVEL, holm, p_value
from reuse.toolkit.verdicts import detectable

ALPHA = 1 - LEVEL
# the primary family, by judgment-name prefix, fixed before the results
PRIMARY_CLAIMS = {
    "J1 ": "J1, network reusability: one claim per rung (architecture/task/pair)",
    "J3": "J3, the RMSE criterion: one claim per criterion",
    "H1": "E4 headline claim H1",
    "H2": "E4 headline claim H2",
    "H3": "E4 headline claim H3",
}
DIGITS = 12  # significant digits at which two rows' estimate, CI and n are the same numbers
NEAR = 0.99  # |Spearman rho| over the same points above which two criteria are near-duplicates
_CLAIMS = ("primary", "exploratory")  # the families that are claims; the others are set apart


def family(judgment: str) -> str:
    """The family a judgment's name declares in advance: 'control', 'primary' or
    'exploratory' (first that applies). Duplicates and rows undecidable by design are
    found from the records themselves (:func:`adjust`)."""
    if "control" in judgment.lower():
        return "control"
    return "primary" if judgment.startswith(tuple(PRIMARY_CLAIMS)) else "exploratory"


def detectable_at_holm(row: Mapping, m: int, alpha: float = ALPHA, level: float = LEVEL) -> float:
    """Smallest |true value - margin| that a primary claim decides with 80% power at Holm's
    strictest level, two-sided alpha / ``m`` (``m`` = the primary family's size; Holm's first
    step, which bounds every later one), so a claim is called powered only where the
    correction lets it be decided. From the row's recorded CI half-width and n (se =
    half-width / t_{n-1, (1+level)/2}), Student-t on n - 1 degrees of freedom
    (:func:`reuse.toolkit.verdicts.detectable`). NaN without a finite CI, n >= 2 and m >= 1."""
    low, high, n = _floats(row, ("ci_low", "ci_high", "n"))
    if not np.isfinite([low, high, n]).all() or n < 2 or m < 1:
        return float("nan")
    se = (high - low) / (2 * stats.t.ppf(0.5 + level / 2, n - 1))
    return detectable(se, n - 1, level=1 - alpha / m)


def _floats(row: Mapping, keys: tuple[str, ...]) -> list[float]:
    """The row's ``keys`` as floats, NaN where missing or not a number."""
    values = []
    for key in keys:
        try:
            values.append(float(row.get(key)))
        except (TypeError, ValueError):
            values.append(float("nan"))
    return values


def _numbers(row: Mapping) -> tuple | None:
    """A row's (estimate, ci_low, ci_high, n) to :data:`DIGITS` significant digits; None when
    one is not finite or the interval has zero width (every seed gave one value, e.g. a share
    of 0: unrelated measurements then coincide, as E4's controls at two fractions do)."""
    values = _floats(row, ("estimate", "ci_low", "ci_high", "n"))
    if not np.isfinite(values).all() or values[1] == values[2]:
        return None
    return tuple(float(f"{v:.{DIGITS}g}") for v in values)


def _classify(rows: list[dict]) -> tuple[list[str], list[int | None], list[str]]:
    """(family, index of the kept claim for a duplicate, reason) per row: the declared
    family, then exact duplicates by number, declared near-duplicates (``alias_of``), and
    exploratory rows whose controls failed (undecidable by design)."""
    fam = [family(r["judgment"]) for r in rows]
    kept: list[int | None] = [None] * len(rows)
    reason = [""] * len(rows)
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(rows):
        key = _numbers(r) if fam[i] in _CLAIMS else None
        if key is not None:
            groups.setdefault(key, []).append(i)
    for members in groups.values():
        keep = next((i for i in members if fam[i] == "primary"), members[0])
        for i in members:
            if i != keep:
                fam[i], kept[i], reason[i] = "duplicate", keep, "exact duplicate"
    first = {}
    for i, r in enumerate(rows):
        if fam[i] != "control":
            first.setdefault(r["judgment"], i)

    def resolve(i: int) -> int:
        while kept[i] is not None:
            i = kept[i]
        return i
    for i, r in enumerate(rows):
        declared = r.get("alias_of")
        if fam[i] in _CLAIMS and isinstance(declared, str) and declared in first:
            target = resolve(first[declared])
            if target != i:
                fam[i], kept[i], reason[i] = "duplicate", target, "near-duplicate"
    kept = [None if k is None else resolve(k) for k in kept]  # a kept row may have become a duplicate
    for i, r in enumerate(rows):
        if fam[i] == "exploratory" and str(r.get("controls") or "").startswith("failed"):
            fam[i], reason[i] = "undecidable", f"undecidable by design (controls {r['controls']})"
    return fam, kept, reason


def adjust(records: pd.DataFrame, alpha: float = ALPHA) -> pd.DataFrame:
    """``records`` (one row per verdict, as :func:`reuse.study.publishing.report.record` stores them)
    with columns family, alias_of (the kept claim a duplicate repeats), aliases (the
    judgments that repeat a kept claim, "; "-joined), reason (why a row is set apart), p,
    p_holm, verdict_holm, holm (what was done) and, for primary rows, detectable_holm
    (:func:`detectable_at_holm`). Holm runs over the primary rows that are not duplicates;
    the others keep their raw verdict, and a duplicate shows its kept claim's verdict_holm."""
    out = records.copy()
    for column in ("n", "margin"):
        if column not in out:
            out[column] = np.nan
    rows = out.to_dict("records")
    fam, kept, reason = _classify(rows)
    names = [r["judgment"] for r in rows]
    out["family"] = fam
    out["alias_of"] = [None if k is None else names[k] for k in kept]
    out["aliases"] = ["; ".join(names[j] for j, k in enumerate(kept) if k == i) for i in range(len(rows))]
    out["reason"] = [f"{why} of {names[k]}" if k is not None else why for why, k in zip(reason, kept)]
    derived = [p_value(r.estimate, r.ci_low, r.ci_high, r.n, r.margin) for r in out.itertuples()]
    # a claim made of parts records its own p (conjunction_p); the others' comes from their CI
    out["p"] = out.p.fillna(pd.Series(derived, index=out.index)) if "p" in out else derived
    primary = out.family == "primary"
    m = int(primary.sum())
    out["p_holm"] = np.nan
    out.loc[primary, "p_holm"] = holm(out.p[primary])
    decided = out.p_holm < alpha
    out["verdict_holm"] = out.verdict.where(decided | ~primary | out.p_holm.isna(), "undecided")
    position = {label: i for i, label in enumerate(out.index)}
    for label in out.index[out.family == "duplicate"]:
        out.loc[label, "verdict_holm"] = out.verdict_holm.iloc[kept[position[label]]]
    out["holm"] = np.where(~primary, "not in the primary family",
                           np.where(out.margin.isna(), "unadjusted: no margin recorded",
                                    np.where(out.p_holm.isna(), "unadjusted: no p-value (CI or n missing)",
                                             f"Holm over {m} primary claims")))
    out["detectable_holm"] = [detectable_at_holm(r, m, alpha) if f == "primary" else np.nan
                              for r, f in zip(rows, fam)]
    return out


def tally(adjusted: pd.DataFrame) -> dict:
    """Counts of distinct claims by verdict (primary after Holm, exploratory raw) and of the
    rows set apart: controls, duplicates (exact and near) and rows undecidable by design.
    Only primary and exploratory rows are claims, so a repeated claim is counted once."""
    claims = adjusted[adjusted.family.isin(_CLAIMS)]
    verdicts = claims.verdict_holm.value_counts()
    duplicate = adjusted.reason[adjusted.family == "duplicate"].astype(str)
    return {"claims": len(claims), "primary": int((claims.family == "primary").sum()),
            **{v: int(verdicts.get(v, 0)) for v in ("holds", "refuted", "undecided")},
            **{f: int((adjusted.family == f).sum()) for f in ("control", "duplicate", "undecidable")},
            "exact": int(duplicate.str.startswith("exact").sum()),
            "near": int(duplicate.str.startswith("near").sum())}
