"""Claims in the summary: classes, Holm within the primary family, the tally of distinct claims."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from reuse.study import claims
from reuse.toolkit.verdicts import verdict

T = stats.t.ppf(0.975, 4)  # 5 seeds


def _row(judgment: str, p: float, margin: float = 0.5, estimate: float = 0.6, **extra) -> dict:
    """A verdict row whose t interval on 5 seeds gives two-sided p = ``p`` against ``margin``."""
    se = abs(estimate - margin) / stats.t.isf(p / 2, 4)
    lo, hi = estimate - T * se, estimate + T * se
    return {"judgment": judgment, "verdict": verdict(lo, hi, margin), "estimate": estimate, "ci_low": lo,
            "ci_high": hi, "detectable": np.nan, "n": 5, "controls": "n/a", "margin": margin,
            "side": "above", **extra}


def test_holm_textbook_example():
    assert claims.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # a claim without a p-value still counts in the family size, and stays NaN
    adjusted = claims.holm([0.01, np.nan])
    assert adjusted[0] == pytest.approx(0.02) and np.isnan(adjusted[1])


def test_p_value_inverts_the_t_interval():
    r = _row("J1 a", 0.03)
    assert claims.p_value(r["estimate"], r["ci_low"], r["ci_high"], 5, 0.5) == pytest.approx(0.03)
    assert np.isnan(claims.p_value(0.6, 0.5, 0.7, 1, 0.5))  # one seed: no interval, no p


DECLARED = {"DUPLICATES": {"rmse_only - scratch": "a repeat"}, "UNDECIDABLE": {"rule_strict - ": "0 by design"}}


@pytest.fixture()
def declared(monkeypatch):
    """A duplicate and an undecidable-by-design row declared, as a study may have them."""
    for name, value in DECLARED.items():
        monkeypatch.setattr(claims, name, value)


def test_classes_of_the_recorded_judgments(declared):
    assert claims.family("J1 unet/segmentation/fashion-split") == "primary"
    assert claims.family("J3 rel_rmse") == "primary"
    assert claims.family("H2 the rule avoids harm") == "primary"
    assert claims.family("J2 unet/segmentation/fashion-split layer 1 down.0.0.0") == "exploratory"
    assert claims.family("control: (b) picks most layers of the twin (segmentation, fraction 0.1)") == "control"
    assert claims.family("E5 LogME twin - LogME different-init (control)") == "control"
    assert claims.family("single swaps, positive control") == "control"
    assert claims.family("rmse_only - scratch (segmentation, n_T 12, all pairs)") == "duplicate"
    assert claims.family("rmse_only - random (segmentation, n_T 12, all pairs)") == "exploratory"
    assert claims.family("rule_strict - scratch (segmentation, n_T 60, all pairs)") == "undecidable"


def test_holm_turns_a_marginal_primary_claim_undecided_and_the_tally_counts_claims_only(declared):
    records = pd.DataFrame([
        _row("J1 a", 0.03), _row("J1 b", 0.001), _row("J1 c", 0.5),
        _row("Y1", 0.03),  # exploratory: raw verdict kept
        _row("control: twin", 0.001), _row("rmse_only - scratch (x)", 0.03),
        _row("rule_strict - scratch (x)", 0.5),
        {**_row("J3 rmse", 0.001), "margin": np.nan},  # no margin recorded
    ])
    out = claims.adjust(records).set_index("judgment")
    assert out.verdict["J1 a"] == "holds" and out.p_holm["J1 a"] == pytest.approx(0.09)
    assert out.verdict_holm["J1 a"] == "undecided"
    assert out.verdict_holm["J1 b"] == "holds" and out.p_holm["J1 b"] == pytest.approx(0.004)
    assert out.verdict_holm["Y1"] == "holds" and np.isnan(out.p_holm["Y1"])
    assert out.verdict_holm["J3 rmse"] == "holds" and out.holm["J3 rmse"] == "unadjusted: no margin recorded"
    assert out.holm["J1 a"] == "Holm over 4 primary claims"
    assert claims.tally(out) == {"claims": 5, "primary": 4, "holds": 3, "refuted": 0, "undecided": 2,
                                 "control": 1, "duplicate": 1, "undecidable": 1}
