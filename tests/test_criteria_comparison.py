"""E5's statistics on constructed points whose answer is known: a criterion that separates
reusable from non-reusable layers must beat one that does not, and the verdicts follow."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from reuse.study.experiments import criteria_comparison as e5


def _points(good: str, seeds=range(6), layers=8, pairs=("a", "b", "c")) -> pd.DataFrame:
    """Source points where ``good`` separates the classes perfectly and every other
    criterion is noise."""
    rng = np.random.default_rng(0)
    rows = []
    for pair in pairs:
        for seed in seeds:
            for i in range(layers):
                reusable = i < layers // 2
                row = {"architecture": "unet", "task": "segmentation", "pair": pair, "seed": seed,
                       "donor": "source", "layer": f"l{i}", "reusable": reusable,
                       "reuse_score": 0.9 if reusable else 0.1}
                row.update({c: rng.random() for c in (*e5.COMPARED_CRITERIA, *e5.e3.BASELINES)})
                row[good] = rng.random() * 0.4 + (0.0 if reusable else 0.6)
                rows.append(row)
    return pd.DataFrame(rows)


def test_the_rmse_beats_rivals_that_are_noise():
    duels = e5.head_to_head(_points("rmse"))
    assert set(duels.rival) == set(e5.RIVALS)
    assert (duels.outcome == "beats").all(), duels
    assert (duels.verdict == "holds").all()
    assert e5.overall(duels) == "holds"
    # AUC(rmse) = 1 against noise around 0.5
    assert duels.auc_difference.between(0.3, 0.7).all()


def test_a_better_rival_refutes_the_claim():
    duels = e5.head_to_head(_points("cka"))
    row = duels.set_index("rival").loc["cka"]
    assert row.outcome == "loses" and row.verdict == "refuted"
    assert row.auc_difference == pytest.approx(
        # AUC of noise minus 1: computed independently with a rank count
        _auc(_points("cka"), "rmse") - 1.0)
    assert e5.overall(duels) == "refuted"


def _auc(points: pd.DataFrame, column: str) -> float:
    src = points[points.donor == "source"]
    pos, neg = src[src.reusable][column].to_numpy(), src[~src.reusable][column].to_numpy()
    # P(a reusable point has the smaller distance), ties count one half
    return float(((pos[:, None] < neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum())
                 / (len(pos) * len(neg)))


def test_a_criterion_must_beat_the_best_weight_blind_baseline():
    """log size separates the classes, in the direction 'large = reusable' that AUC must find;
    the RMSE is noise and so loses to it; a criterion as perfect as the baseline is not better."""
    pts = _points("log_size").assign(log_size=lambda d: -d.log_size)
    blind = e5.beyond_baselines(pts, criteria=("rmse", "cka")).set_index("criterion")
    assert set(blind.best) == {"log_size"}
    assert blind.loc["rmse", "verdict"] == "refuted" and blind.loc["rmse", "ci_high"] < 0
    duels = e5.head_to_head(pts).set_index("rival")
    assert duels.loc["log_size", "outcome"] == "loses" and duels.loc["log_size", "family"] == e5.BLIND
    tied = e5.beyond_baselines(pts.assign(rmse=-pts.log_size), criteria=("rmse",)).iloc[0]
    assert tied.difference == 0 and tied.verdict != "holds"
    good = e5.beyond_baselines(_points("rmse"), criteria=("rmse",)).iloc[0]
    assert good.verdict == "holds"


def test_two_noise_criteria_are_not_called_different():
    duels = e5.head_to_head(_points("pwcca"))
    others = duels[duels.rival != "pwcca"]
    assert not (others.outcome.isin(["beats", "loses"])).all()
    assert e5.overall(duels) == "refuted"  # pwcca beats the noisy RMSE


@pytest.mark.parametrize("low, high, outcome", [(0.01, 0.2, "beats"), (-0.2, -0.01, "loses"),
                                                (-0.04, 0.04, "ties"), (-0.1, 0.2, "unclear")])
def test_outcome_of_an_interval(low, high, outcome):
    assert e5._outcome(low, high) == outcome


def test_overall_is_undecided_without_a_loss_or_a_clean_sweep():
    duels = pd.DataFrame({"outcome": ["beats", "ties"]})
    assert e5.overall(duels) == "undecided"


def test_cost_table_divides_time_by_evaluations():
    costs = pd.DataFrame([{"family": "weights", "seconds": 0.5, "evaluations": 100},
                          {"family": "weights", "seconds": 0.5, "evaluations": 100},
                          {"family": "reset", "seconds": 2.0, "evaluations": 10}])
    table = e5.cost_table(costs).set_index("criterion")
    assert table.loc["rmse", "ms_per_layer"] == pytest.approx(5.0)
    assert table.loc["reset_loss", "ms_per_layer"] == pytest.approx(200.0)
    assert np.isnan(table.loc["cka", "ms_per_layer"])  # not measured
    assert set(table.index) == set(e5.COMPARED_CRITERIA)


def test_points_refuse_missing_criteria():
    pts = _points("rmse")[["architecture", "task", "pair", "seed", "donor", "layer", "rmse"]]
    values = pts.drop(columns="rmse").iloc[:-1].assign(cka=0.5)
    with pytest.raises(ValueError, match="1 of E3's points have no E5 criteria"):
        e5.points(pts, values)


def test_network_table_without_segmentation_is_undecided():
    out = e5.network_table(pd.DataFrame(columns=["seed", "donor", "logme", "reuse_score"]), pd.DataFrame())
    assert out.verdict.tolist() == ["undecided"]


def _logme(twin=lambda s: 5.0 + s) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two targets whose LogME scales differ by 100, three sources each, LogME ranking them as
    their fine-tuning gains do; the twin's LogME per seed ``twin(seed)``, the different-init
    control's 1."""
    net, gains = [], []
    for arch, scale, offset in (("unet", 1.0, 0.0), ("pspnet", 100.0, 0.5)):
        for s in range(5):
            for rank, pair in enumerate(("near", "middle", "far")):
                cell = {"architecture": arch, "task": "segmentation", "pair": pair, "seed": s}
                donors = (("source", scale * (3 - rank)), ("twin", twin(s)), ("different_init", 1.0))
                net += [{**cell, "donor": donor, "logme": logme, "reuse_score": 0.5 + 0.1 * (3 - rank)}
                        for donor, logme in donors]
                gains.append({**cell, "n_T": 60, "strategy": "reuse_all", "difference": offset - 0.1 * rank})
    return pd.DataFrame(net), pd.DataFrame(gains)


GAIN_RHO = "rho(LogME of the source, E4 fine-tuning gain at n_T 60), within one target"


def test_logme_is_compared_within_one_target_against_fine_tuning_gains():
    """Pooled, the targets' LogME scale would decide the correlation; within each target LogME
    ranks the sources as their fine-tuning gains do."""
    out = e5.network_table(*_logme()).set_index("measure")
    row = out.loc[GAIN_RHO]
    # rho = 1 in every seed: on Fisher's z scale (|rho| clipped to 0.9999) the estimate reads 0.9999
    assert row.estimate == pytest.approx(1.0, abs=1e-4) and row.verdict == "holds" and row.controls == "passed"
    assert -1 <= row.ci_low <= row.ci_high <= 1
    assert out.loc["LogME twin - LogME different-init (control)", "verdict"] == "holds"


def test_logme_counts_only_where_its_own_control_holds():
    """The same perfect ranking of sources, but LogME no longer places the twin above the
    different-init model (its control is undecided): the rho rows are undecided and say why."""
    out = e5.network_table(*_logme(twin=lambda s: 1.0 + (-1) ** s)).set_index("measure")
    assert out.loc["LogME twin - LogME different-init (control)", "verdict"] == "undecided"
    rhos = out[out.index.str.startswith("rho(LogME of the source")]
    assert len(rhos) == 2 and (rhos.ungated_verdict == "holds").all()
    assert (rhos.verdict == "undecided").all()
    assert rhos.controls.str.startswith("failed: control LogME twin - LogME different-init").all()
    text = e5.verdict_text(pd.DataFrame(), pd.DataFrame(columns=["outcome"]), pd.DataFrame(columns=["rho"]),
                           out.reset_index())
    assert f"{GAIN_RHO}: 1 [1, 1]: undecided (controls failed: control" in text


def test_a_criterion_that_ranks_the_points_like_an_earlier_one_is_recorded_as_its_alias():
    """Debiased CKA ordering every point as CKA does (and the aligned RMSE as the RMSE): their
    claims carry alias_of, the same judgment of the earlier criterion; the RMSE's duel with its
    own near-copy has no such judgment and stays a claim."""
    pts = _points("rmse", seeds=range(3), layers=6, pairs=("a", "b"))
    pts["cka_debiased"] = pts.cka * 1.001 + 0.01
    pts["aligned_rmse"] = pts.rmse
    table = e5.criterion_table(pts)
    alias = table.set_index("criterion").alias_of
    assert alias["cka_debiased"] == "cka" and alias["aligned_rmse"] == "rmse"
    assert alias.drop(["cka_debiased", "aligned_rmse"]).isna().all()
    assert table.set_index("criterion").alias_rho["cka_debiased"] == pytest.approx(1.0)
    duels, gains = e5.head_to_head(pts), pd.DataFrame(columns=["criterion", "rho", "ci_low", "ci_high", "verdict",
                                                               "detectable", "n"])
    out = e5.records(table, duels, gains, e5.network_table(pts.iloc[:0], pd.DataFrame())).set_index("judgment")
    assert out.alias_of["E5 cka_debiased predicts reuse (held-out accuracy)"] == "E5 cka predicts reuse (held-out accuracy)"
    assert out.alias_of["E5 RMSE beats cka_debiased (AUC difference)"] == "E5 RMSE beats cka (AUC difference)"
    assert out.alias_of["E5 aligned_rmse beats the weight-blind baselines (AUC difference)"] == \
        "E5 rmse beats the weight-blind baselines (AUC difference)"
    assert out.alias_of.drop(["E5 cka_debiased predicts reuse (held-out accuracy)",
                              "E5 RMSE beats cka_debiased (AUC difference)",
                              "E5 cka_debiased beats the weight-blind baselines (AUC difference)",
                              "E5 aligned_rmse predicts reuse (held-out accuracy)",
                              "E5 aligned_rmse beats the weight-blind baselines (AUC difference)"]).isna().all()


def test_ranking_figure_draws_every_criterion():
    from reuse.study import plots

    pts = _points("rmse")
    table = pd.DataFrame({"criterion": list(e5.COMPARED_CRITERIA),
                          "family": [c.family for c in e5.COMPARED_CRITERIA.values()],
                          "auc": np.linspace(0.5, 0.9, len(e5.COMPARED_CRITERIA))})
    table["auc_ci_low"], table["auc_ci_high"] = table.auc - 0.05, table.auc + 0.05
    fig = plots.criteria_comparison.ranking(table, e5.head_to_head(pts), e5.TIE)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == list(e5.COMPARED_CRITERIA)  # sorted by AUC, worst first


def test_unpermuted_text_names_the_fixed_layers():
    values = pd.DataFrame({"architecture": ["unet", "unet", "pspnet"], "layer": ["a", "head", "b"],
                           "permuted": [True, False, True]})
    assert e5.unpermuted_text(values) == "weight matching left unpermuted: unet: head."
    assert "every swapped layer" in e5.unpermuted_text(values.assign(permuted=True))
