"""Claims in the summary: classes, Holm within the primary family, the tally of distinct claims."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from reuse.study import claims
from reuse.toolkit.stats import holm, p_value
from reuse.toolkit.verdicts import detectable, verdict

T = stats.t.ppf(0.975, 4)  # 5 seeds


def _row(judgment: str, p: float, margin: float = 0.5, estimate: float = 0.6, **extra) -> dict:
    """A verdict row whose t interval on 5 seeds gives two-sided p = ``p`` against ``margin``."""
    se = abs(estimate - margin) / stats.t.isf(p / 2, 4)
    lo, hi = estimate - T * se, estimate + T * se
    return {"judgment": judgment, "verdict": verdict(lo, hi, margin), "estimate": estimate, "ci_low": lo,
            "ci_high": hi, "detectable": np.nan, "n": 5, "controls": "n/a", "margin": margin,
            "side": "above", **extra}


def test_holm_textbook_example():
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # a claim without a p-value still counts in the family size, and stays NaN
    adjusted = holm([0.01, np.nan])
    assert adjusted[0] == pytest.approx(0.02) and np.isnan(adjusted[1])


def test_p_value_inverts_the_t_interval():
    r = _row("J1 a", 0.03)
    assert p_value(r["estimate"], r["ci_low"], r["ci_high"], 5, 0.5) == pytest.approx(0.03)
    assert np.isnan(p_value(0.6, 0.5, 0.7, 1, 0.5))  # one seed: no interval, no p


def test_classes_of_the_recorded_judgments():
    assert claims.family("J1 unet/segmentation/fashion-split") == "primary"
    assert claims.family("J3 rel_rmse") == "primary"
    assert claims.family("H2 the rule avoids harm") == "primary"
    assert claims.family("J2 unet/segmentation/fashion-split layer 1 down.0.0.0") == "exploratory"
    assert claims.family("control: (b) picks most layers of the twin (segmentation, fraction 0.1)") == "control"
    assert claims.family("E5 LogME twin - LogME different-init (control)") == "control"
    assert claims.family("single swaps, positive control") == "control"
    assert claims.family("rmse_only - random (segmentation, n_T 12, all pairs)") == "exploratory"


def test_holm_turns_a_marginal_primary_claim_undecided_and_the_tally_counts_claims_only():
    records = pd.DataFrame([
        _row("J1 a", 0.03), _row("J1 b", 0.001), _row("J1 c", 0.5),
        _row("Y1", 0.03, estimate=0.7),  # exploratory: raw verdict kept
        _row("control: twin", 0.001, estimate=0.8),
        _row("J2 x", 0.5, estimate=0.65, controls="failed: negative control holds"),  # undecidable by design
        {**_row("J3 rmse", 0.001, estimate=0.9), "margin": np.nan},  # no margin recorded
    ])
    out = claims.adjust(records).set_index("judgment")
    assert out.verdict["J1 a"] == "holds" and out.p_holm["J1 a"] == pytest.approx(0.09)
    assert out.verdict_holm["J1 a"] == "undecided"
    assert out.verdict_holm["J1 b"] == "holds" and out.p_holm["J1 b"] == pytest.approx(0.004)
    assert out.verdict_holm["Y1"] == "holds" and np.isnan(out.p_holm["Y1"])
    assert out.verdict_holm["J3 rmse"] == "holds" and out.holm["J3 rmse"] == "unadjusted: no margin recorded"
    assert out.holm["J1 a"] == "Holm over 4 primary claims"
    assert out.family["J2 x"] == "undecidable" and out.reason["J2 x"].startswith("undecidable by design")
    assert claims.tally(out) == {"claims": 5, "primary": 4, "holds": 3, "refuted": 0, "undecided": 2,
                                 "control": 1, "duplicate": 0, "undecidable": 1, "exact": 0, "near": 0}


def test_a_repeated_claim_is_counted_once():
    """Two records with the same numbers are one claim: the tally must not count it twice."""
    one = _row("E5 rmse predicts reuse", 0.01, estimate=0.7)
    records = pd.DataFrame([one, {**one, "judgment": "E5 the same claim, named again"}])
    out = claims.adjust(records)
    assert claims.tally(out)["claims"] == 1 and claims.tally(out)["exact"] == 1
    assert out.family.tolist() == ["exploratory", "duplicate"]
    assert out.alias_of.isna()[0] and out.alias_of[1] == "E5 rmse predicts reuse"
    assert out.aliases.tolist() == ["E5 the same claim, named again", ""]


def test_an_exact_duplicate_of_a_primary_claim_shows_its_verdict_after_holm_and_leaves_the_family_alone():
    """E4's `rmse_only - random` is H3b: recorded first, it is still the primary row that is
    kept; it prints H3b's verdict after Holm (undecided), not its own raw 'refuted', and Holm
    runs over the two primary claims only."""
    h3b = _row("H3b the rule beats random sets", 0.03, margin=0.0, estimate=-0.05)
    records = pd.DataFrame([{**h3b, "judgment": "rmse_only - random (all rungs)"}, h3b,
                            _row("H1 reuse beats scratch", 0.04, margin=0.0, estimate=0.05)])
    assert records.verdict.tolist() == ["refuted", "refuted", "holds"]
    out = claims.adjust(records).set_index("judgment")
    assert out.family["H3b the rule beats random sets"] == "primary"
    assert out.family["rmse_only - random (all rungs)"] == "duplicate"
    assert out.alias_of["rmse_only - random (all rungs)"] == "H3b the rule beats random sets"
    assert out.reason["rmse_only - random (all rungs)"] == "exact duplicate of H3b the rule beats random sets"
    assert out.holm["H1 reuse beats scratch"] == "Holm over 2 primary claims"
    assert out.p_holm["H3b the rule beats random sets"] == pytest.approx(0.06)
    assert out.verdict_holm.tolist() == ["undecided", "undecided", "undecided"]
    assert claims.tally(out.reset_index())["claims"] == 2


def test_numbers_that_coincide_without_being_one_claim_are_kept_apart():
    """Zero-width intervals (every seed one value) and missing intervals say nothing about
    identity; controls are apart anyway; 12 significant digits must agree."""
    flat = {**_row("E4 share a", 0.5), "estimate": 0.0, "ci_low": 0.0, "ci_high": 0.0}
    gap = {**_row("E5 best a", 0.5), "ci_low": np.nan, "ci_high": np.nan}
    control = _row("control: x", 0.01, estimate=0.9)
    near = _row("Y2", 0.01, estimate=0.3)
    records = pd.DataFrame([flat, {**flat, "judgment": "E4 share b"}, gap, {**gap, "judgment": "E5 best b"},
                            control, {**control, "judgment": "control: y"},
                            near, {**near, "judgment": "Y2 again", "estimate": 0.3 + 1e-9}])
    out = claims.adjust(records)
    assert (out.family != "duplicate").all()
    assert claims.tally(out)["claims"] == 6


def test_declared_near_duplicates_are_grouped_with_the_claim_they_repeat():
    cka = _row("E5 cka predicts reuse", 0.01, estimate=0.7)
    debiased = {**_row("E5 cka_debiased predicts reuse", 0.011, estimate=0.7001), "alias_of": cka["judgment"]}
    exact = {**debiased, "judgment": "E5 cka_debiased again"}  # an exact copy of the near-duplicate
    orphan = {**_row("E5 x", 0.2, estimate=0.8), "alias_of": "E5 not recorded"}
    out = claims.adjust(pd.DataFrame([cka, debiased, exact, orphan])).set_index("judgment")
    assert out.family["E5 cka_debiased predicts reuse"] == "duplicate"
    assert out.reason["E5 cka_debiased predicts reuse"] == "near-duplicate of E5 cka predicts reuse"
    assert out.alias_of["E5 cka_debiased again"] == "E5 cka predicts reuse"  # resolved to the kept claim
    assert out.aliases["E5 cka predicts reuse"] == "E5 cka_debiased predicts reuse; E5 cka_debiased again"
    assert out.family["E5 x"] == "exploratory"  # its alias names nothing recorded: it stays a claim
    t = claims.tally(out.reset_index())
    assert (t["claims"], t["duplicate"], t["exact"], t["near"]) == (2, 2, 1, 1)


def test_failed_controls_set_exploratory_rows_apart_but_never_primary_ones():
    failed = "failed: negative control holds"
    records = pd.DataFrame([_row("J1 a", 0.5, controls=failed), _row("J2 a", 0.5, estimate=0.7, controls=failed),
                            _row("J2 b", 0.5, estimate=0.8, controls="passed")])
    out = claims.adjust(records)
    assert out.family.tolist() == ["primary", "undecidable", "exploratory"]
    assert out.reason[1] == f"undecidable by design (controls {failed})"


def test_detectable_at_holm_is_the_power_formula_at_alpha_over_m():
    """(t_{n-1, 1 - alpha/(2m)} + t_{n-1, 0.8}) * se, with se read back from the interval."""
    se, n, m = 0.02, 5, 7
    row = {"ci_low": 0.1 - T * se, "ci_high": 0.1 + T * se, "n": n}
    direct = (stats.t.ppf(1 - 0.05 / (2 * m), n - 1) + stats.t.ppf(0.8, n - 1)) * se
    assert claims.detectable_at_holm(row, m) == pytest.approx(direct)
    assert claims.detectable_at_holm(row, 1) == pytest.approx(detectable(se, n - 1))
    assert claims.detectable_at_holm(row, m) > claims.detectable_at_holm(row, 1)
    assert np.isnan(claims.detectable_at_holm({**row, "n": 1}, m))
    assert np.isnan(claims.detectable_at_holm({**row, "ci_low": None}, m))


def test_adjust_prints_the_detectable_effect_at_holm_level_for_primary_rows_only():
    records = pd.DataFrame([_row("J1 a", 0.03), _row("J1 b", 0.001, estimate=0.7), _row("Y1", 0.03, estimate=0.8),
                            {**_row("J1 a", 0.03), "judgment": "J1 a, again"}])
    out = claims.adjust(records)
    expected = claims.detectable_at_holm(records.iloc[0].to_dict(), 2)  # the copy leaves m at 2
    assert out.detectable_holm[0] == pytest.approx(expected)
    assert np.isnan(out.detectable_holm[2]) and np.isnan(out.detectable_holm[3])


def test_adjust_of_no_records():
    empty = pd.DataFrame(columns=["judgment", "verdict", "estimate", "ci_low", "ci_high", "detectable"])
    assert claims.tally(claims.adjust(empty))["claims"] == 0
