"""E5, which criterion predicts reuse (docs/protocol.md, section 5; issue 11).

The paper judges reusability from the RMSE between source- and target-trained kernels.
Here that RMSE competes, on E2's single-layer swaps with a known outcome, against:

- weight distances: relative RMSE, RMSE over the batch-order noise floor (E3), cosine
  distance of the flattened kernels, and the RMSE after aligning the source's channels to
  the target's by weight matching (Ainsworth et al. 2023, :mod:`reuse.toolkit.alignment`);
- representation distances on the target test images: 1 - linear CKA and 1 - debiased CKA
  (Kornblith et al. 2019), 1 - SVCCA (Raghu et al. 2017) and 1 - PWCCA (Morcos et al. 2018)
  between the donor's and theta_T's outputs of the layer (:mod:`reuse.toolkit.similarity`);
- re-initialisation loss (Zhang, Bengio & Singer 2019): 1 - the reuse score of theta_T with
  the layer reset to theta_0. It describes the target layer alone, so it gives every donor
  the same value: it cannot pass the controls, which is part of what E5 shows.

Every criterion is oriented as a distance (smaller = more alike), so E3's machinery
(:func:`reuse.study.experiments.rmse_threshold.criterion_table`) scores all of them the same way:
Spearman rho within condition and pooled, ROC AUC, a threshold fitted leave-one-pair-out with
its held-out balanced accuracy, CIs from resampling seeds, and the twin / different-init
controls. :func:`head_to_head` then compares the paper's RMSE with each rival, the
weight-blind baselines (depth, log size: E3's
:data:`~reuse.study.experiments.rmse_threshold.BASELINES`) included, by the difference in
ROC AUC on the same leave-one-seed-out replicates, and :func:`beyond_baselines` asks the same of every
criterion against the best weight-blind baseline. At network level, :func:`network_level`
asks whether LogME (You et al. 2021) of the donor's penultimate features predicts E1's
all-conv reuse score, and :func:`network_table` counts that only where LogME passes its own
control (the twin placed above the different-initialisation model).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from reuse.toolkit import alignment, similarity
from reuse.toolkit.criteria import kernel_keys, kernel_rmse
from reuse.toolkit.stats import near_duplicates, roc_auc, spearman
from reuse.toolkit.verdicts import REUSABLE, cluster_verdict, correlation_verdict, mean_verdict

from .. import claims
from ..config import Grid, Profile
from ..training.train import Runner
from . import rmse_threshold as e3
from .common import CONDITION, CONDITION_DONORS, FACTORS, Evaluator, conditions, trained, usable_only
from .layer_selection import PRIMARY_BN

PAPER = "rmse"  # the paper's criterion
TIE = 0.05  # |AUC difference| below which two criteria are called tied (fixed before the results)
MAX_POSITIONS = 4000  # spatial positions kept as samples for SVCCA / PWCCA / LogME
CONTROL = "LogME twin - LogME different-init"  # LogME's own control (network_table)


@dataclass(frozen=True)
class Criterion:
    """A per-layer criterion: how it is computed and what it needs."""

    family: str  # weights | alignment | activations | reset
    needs: str
    description: str


COMPARED_CRITERIA = {
    "rmse": Criterion("weights", "two checkpoints", "RMSE of the kernels (the paper's)"),
    "rel_rmse": Criterion("weights", "two checkpoints", "RMSE / RMS of the target kernel"),
    "floor_ratio": Criterion("weights", "two checkpoints + batch-order twins",
                             "RMSE / the batch-order twins' RMSE"),
    "cosine": Criterion("weights", "two checkpoints", "1 - cosine similarity of the kernels"),
    "aligned_rmse": Criterion("alignment", "two checkpoints + the architecture",
                              "RMSE after weight matching (permutations)"),
    "cka": Criterion("activations", "data + forward passes", "1 - linear CKA"),
    "cka_debiased": Criterion("activations", "data + forward passes", "1 - debiased linear CKA"),
    "svcca": Criterion("activations", "data + forward passes", "1 - SVCCA (mean canonical correlation)"),
    "pwcca": Criterion("activations", "data + forward passes", "1 - PWCCA"),
    "reset_loss": Criterion("reset", "data + a forward pass per layer + theta_0",
                            "1 - reuse score of theta_T with the layer reset to theta_0"),
}
BLIND = "weight-blind"  # the family of E3's baselines, which read no trained weight
RIVALS = (*(c for c in COMPARED_CRITERIA if c != PAPER), *e3.BASELINES)
RULE = (f"each criterion is oriented as a distance; the weight-blind baselines "
        f"({', '.join(e3.BASELINES)}: relative depth, log number of weights) are not, and are scored "
        f"in their better direction (ROC AUC max(AUC, 1 - AUC): it flatters them). On the source's "
        f"single-layer swaps (E2, BN re-estimated; reusable = reuse score >= {REUSABLE}) the paper's "
        f"raw RMSE is compared with each rival, baselines included, by the difference in ROC AUC, "
        f"95% CI from resampling seeds: it beats a rival when the CI lies above 0, loses when below, "
        f"ties when the CI lies within ±{TIE}. The claim 'the paper's RMSE is the best criterion' "
        f"holds when it beats every rival, is refuted when it loses to one, and is undecided "
        f"otherwise. Each criterion's own verdict is E3's J3 (held-out balanced accuracy above "
        f"the margin and above the best baseline's, gated by the twin and different-init controls); "
        f"beside it, 'beats the weight-blind baselines' holds when the CI of its AUC minus the best "
        f"baseline's (the higher AUC on all source points) lies above 0 and is refuted when below.")


def _family_values(ev: Evaluator, runs: dict, donors, layers: list[str]) -> tuple[list[dict], dict]:
    """Rows (donor, layer, criterion values) of one condition, and seconds per family."""
    target = runs["target"].state
    seconds = dict.fromkeys(("weights", "alignment", "activations", "reset"), 0.0)
    rows = {(d, layer): {"donor": d, "layer": layer} for d in donors for layer in layers}

    start = time.perf_counter()
    for d in donors:
        f = kernel_rmse(runs[d].state, target, layers)
        for r in f.itertuples():
            rows[d, r.layer]["cosine"] = r.cosine_distance
    seconds["weights"] += time.perf_counter() - start

    start = time.perf_counter()
    for d in donors:
        f = alignment.aligned_kernel_rmse(ev.model, runs[d].state, target, layers)
        for r in f.itertuples():
            rows[d, r.layer]["aligned_rmse"] = r.aligned_rmse
            rows[d, r.layer]["permuted"] = bool(r.permuted)
    seconds["alignment"] += time.perf_counter() - start

    start = time.perf_counter()
    acts_t = similarity.activations(ev.model, ev.x, layers)
    flat_t = [similarity.features(acts_t[n], "flatten") for n in layers]
    pos_t = [similarity.features(acts_t[n], "positions", MAX_POSITIONS, 0) for n in layers]
    for d in donors:
        model = ev.runner.model(runs[d])
        acts = similarity.activations(model, ev.x, layers)
        flat = [similarity.features(acts[n], "flatten") for n in layers]
        pos = [similarity.features(acts[n], "positions", MAX_POSITIONS, 0) for n in layers]
        cka = similarity.cka_layers(flat, flat_t)
        cka_d = similarity.cka_layers(flat, flat_t, debiased=True)
        for i, n in enumerate(layers):
            rows[d, n].update(cka=1 - cka[i], cka_debiased=1 - cka_d[i],
                              svcca=1 - similarity.svcca(pos[i], pos_t[i]),
                              pwcca=1 - similarity.pwcca(pos[i], pos_t[i]))
    seconds["activations"] += time.perf_counter() - start

    start = time.perf_counter()
    reset = ev.reset_rows([kernel_keys(target, [n]) for n in layers], PRIMARY_BN)
    for n, row in zip(layers, reset):
        for d in donors:
            rows[d, n]["reset_loss"] = 1 - row["reuse_score"]
    seconds["reset"] += time.perf_counter() - start
    return list(rows.values()), seconds


def layer_criteria(runner: Runner, profile: Profile, grid: Grid | None = None
                   ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(values, costs). Values: one row per condition x donor x swappable conv layer with
    architecture, task, pair, seed, donor, layer, cosine, aligned_rmse, permuted (whether
    weight matching could permute the layer's channels), cka, cka_debiased, svcca, pwcca,
    reset_loss. Costs: one row per condition x criterion family with seconds and the number
    of layer evaluations (``n_layers`` x donors; the reset runs once per layer)."""
    grid = profile.grid if grid is None else grid
    conds = conditions(grid, profile.seeds)
    rows, costs = [], []
    for c, runs in zip(conds, trained(runner, profile, conds, ("source", "target", *CONDITION_DONORS[1:]))):
        ev = Evaluator(runner, profile, c, runs["target"])
        values, seconds = _family_values(ev, runs, CONDITION_DONORS, ev.swap_layers)
        rows += [{**c.factors(), **v} for v in values]
        n = len(ev.swap_layers)
        costs += [{**c.factors(), "family": fam, "seconds": s,
                   "evaluations": n if fam == "reset" else n * len(CONDITION_DONORS)}
                  for fam, s in seconds.items()]
    return pd.DataFrame(rows), pd.DataFrame(costs)


def unpermuted_text(values: pd.DataFrame) -> str:
    """Which swapped layers weight matching could not permute (their output channels are
    tied to the network output, a residual add it could not merge, or an op it does not
    model), per architecture."""
    fixed = values[~values.permuted.astype(bool)].groupby("architecture").layer.unique()
    if fixed.empty:
        return "weight matching permuted the output channels of every swapped layer."
    return "weight matching left unpermuted: " + "; ".join(
        f"{arch}: {', '.join(layers)}" for arch, layers in fixed.items()) + "."


def cost_table(costs: pd.DataFrame) -> pd.DataFrame:
    """Per criterion: its family, what it needs and the measured milliseconds per layer
    evaluation (the family's total time over its evaluations; the weight criteria share one
    pass, the activation criteria one set of forward passes)."""
    per = costs.groupby("family")[["seconds", "evaluations"]].sum()
    ms = 1000 * per.seconds / per.evaluations
    rows = [{"criterion": name, "family": c.family, "needs": c.needs, "description": c.description,
             "ms_per_layer": float(ms.get(c.family, np.nan))} for name, c in COMPARED_CRITERIA.items()]
    return pd.DataFrame(rows)


def points(e3_points: pd.DataFrame, values: pd.DataFrame) -> pd.DataFrame:
    """E3's points (rmse, rel_rmse, floor_ratio, reuse score, reusable) with every other
    criterion of ``values`` beside them, one row per usable cell x donor x layer."""
    keys = [*FACTORS, "donor", "layer"]
    p = e3_points.merge(values, on=keys, how="inner", validate="one_to_one")
    if len(p) != len(e3_points):
        raise ValueError(f"{len(e3_points) - len(p)} of E3's points have no E5 criteria: compute "
                         "layer_criteria on the same grid and seeds")
    return p


def criterion_table(pts: pd.DataFrame) -> pd.DataFrame:
    """E3's criterion table over every E5 criterion, with each one's family, its AUC minus
    the best weight-blind baseline's (:func:`beyond_baselines`, columns ``baseline_auc_*``)
    and ``alias_of`` / ``alias_rho``: the earlier criterion that ranks the source's points
    alike (|Spearman rho| above :data:`reuse.study.claims.NEAR`), whose claims it repeats."""
    table = e3.criterion_table(pts, criteria=tuple(COMPARED_CRITERIA))
    table.insert(1, "family", table.criterion.map(lambda c: COMPARED_CRITERIA[c].family))
    blind = beyond_baselines(pts).drop(columns="n")
    blind.columns = ["criterion", *(f"baseline_auc_{c}" for c in blind.columns[1:])]
    near = near_duplicates(pts[pts.donor == "source"], list(COMPARED_CRITERIA), claims.NEAR)
    table["alias_of"] = table.criterion.map(lambda c: near.get(c, (None, np.nan))[0])
    table["alias_rho"] = table.criterion.map(lambda c: near.get(c, (None, np.nan))[1])
    return table.merge(blind, on="criterion", how="left")


def baseline_table(pts: pd.DataFrame) -> pd.DataFrame:
    """E3's weight-blind baselines (:func:`reuse.study.experiments.rmse_threshold.baseline_table`)
    with their family, to be drawn beside the criteria."""
    table = e3.baseline_table(pts)
    table.insert(1, "family", BLIND)
    return table


def _auc(frame: pd.DataFrame, column: str) -> float:
    """ROC AUC of a criterion as a distance, of a weight-blind baseline in its better direction."""
    score = e3.oriented_auc if column in e3.BASELINES else roc_auc
    return score(frame[column], frame.reusable)


def _auc_difference(frame: pd.DataFrame, rival: str, criterion: str = PAPER) -> float:
    f = frame[np.isfinite(frame[criterion]) & np.isfinite(frame[rival])]
    return _auc(f, criterion) - _auc(f, rival)


def _family(name: str) -> str:
    return COMPARED_CRITERIA[name].family if name in COMPARED_CRITERIA else BLIND


def beyond_baselines(pts: pd.DataFrame, criteria=tuple(COMPARED_CRITERIA)) -> pd.DataFrame:
    """Per criterion: the best weight-blind baseline (higher AUC in its better direction on all
    the source's points: the harder rival) and AUC(criterion) - AUC(that baseline) with its CI
    over seeds; verdict 'holds' when the criterion beats it (see :data:`RULE`)."""
    src = pts[pts.donor == "source"]
    best = max(e3.BASELINES, key=lambda b: np.nan_to_num(_auc(src, b), nan=-1.0))
    rows = []
    for crit in criteria:
        v = cluster_verdict(src, lambda f, c=crit: _auc_difference(f, best, c), 0.0, "above")
        rows.append({"criterion": crit, "best": best, "difference": v["estimate"], "ci_low": v["ci_low"],
                     "ci_high": v["ci_high"], "verdict": v["verdict"], "detectable": v["detectable"],
                     "n": v["n_seeds"]})
    return pd.DataFrame(rows, columns=["criterion", "best", "difference", "ci_low", "ci_high", "verdict",
                                       "detectable", "n"])


def _outcome(ci_low: float, ci_high: float) -> str:
    if ci_low > 0:
        return "beats"
    if ci_high < 0:
        return "loses"
    if -TIE < ci_low and ci_high < TIE:
        return "ties"
    return "unclear"


def head_to_head(pts: pd.DataFrame) -> pd.DataFrame:
    """Per rival (weight-blind baselines included, in their better direction): AUC(paper's
    RMSE) - AUC(rival) on the source's points with its CI over seeds (the same draws for both),
    the verdict of 'the RMSE beats this rival' and the outcome (beats / loses / ties /
    unclear, see :data:`RULE`)."""
    src = pts[pts.donor == "source"]
    rows = []
    for rival in RIVALS:
        v = cluster_verdict(src, lambda f, r=rival: _auc_difference(f, r), 0.0, "above")
        rows.append({"rival": rival, "family": _family(rival), "auc_difference": v["estimate"],
                     "ci_low": v["ci_low"], "ci_high": v["ci_high"], "verdict": v["verdict"],
                     "outcome": _outcome(v["ci_low"], v["ci_high"]), "detectable": v["detectable"],
                     "n": v["n_seeds"]})
    return pd.DataFrame(rows)


def overall(duels: pd.DataFrame) -> str:
    """The verdict of 'the paper's RMSE is the best criterion' (see :data:`RULE`)."""
    if (duels.outcome == "loses").any():
        return "refuted"
    return "holds" if (duels.outcome == "beats").all() else "undecided"


def gain_table(pts: pd.DataFrame, gains: pd.DataFrame) -> pd.DataFrame:
    """Per criterion: Spearman rho between the source's criterion value of a layer (``pts``:
    :func:`points`) and M2's
    gain of initialising that layer alone from theta_S and fine-tuning (E2), pooled over the
    measured layers with a CI over seeds (jackknifed on Fisher's z scale, so it stays in
    [-1, 1]); a useful distance predicts a smaller gain (rho below 0: holds). Only layers M2
    measured, so few points at small scales."""
    keys = [*FACTORS, "layer"]
    g = gains[(gains.set == "single") & (gains["mode"] == "finetuned")][[*keys, "gain"]]
    p = pts[pts.donor == "source"].merge(g, on=keys, how="inner")
    rows = []
    for crit in COMPARED_CRITERIA:
        f = p[np.isfinite(p[crit])]
        v = cluster_verdict(f, lambda d, c=crit: spearman(d[c], d.gain), 0.0, "below", correlation=True) \
            if f.seed.nunique() >= 2 else {"estimate": np.nan, "ci_low": np.nan, "ci_high": np.nan,
                                           "verdict": "undecided", "detectable": np.nan, "n_seeds": 0}
        rows.append({"criterion": crit, "n_points": len(f), "rho": v["estimate"], "ci_low": v["ci_low"],
                     "ci_high": v["ci_high"], "verdict": v["verdict"], "detectable": v["detectable"],
                     "n": v["n_seeds"]})
    return pd.DataFrame(rows)


def _head_input(ev: Evaluator, model: torch.nn.Module, head: str) -> torch.Tensor:
    """Inputs to the module ``head`` over the target test images ``[N, C, H, W]``."""
    module = dict(model.named_modules())[head]
    seen = []
    handle = module.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().float().cpu()))
    try:
        with torch.inference_mode():
            model.eval()
            for i in range(0, len(ev.x), 256):
                model(ev.x[i:i + 256])
    finally:
        handle.remove()
    return torch.cat(seen)


def network_level(runner: Runner, profile: Profile, e1_frame: pd.DataFrame, cells: pd.DataFrame,
                  grid: Grid | None = None) -> pd.DataFrame:
    """One row per usable condition x donor: LogME (You et al. 2021) of the donor's features
    at the head's input (upsampled bilinearly to the label map), one sample per pixel
    (:data:`MAX_POSITIONS` drawn), on the target test images and their per-pixel classes,
    beside E1's all-conv reuse score of that donor (BN re-estimated). Over E4's grid (the
    source ladder: one target per architecture x task) by default; segmentation only (LogME
    needs class labels)."""
    grid = profile.e4_grid if grid is None else grid
    conds = [c for c in conditions(grid, profile.seeds) if c.task == "segmentation"]
    e1 = e1_frame[(e1_frame.measure == "all_conv") & (e1_frame.bn_reestimated == PRIMARY_BN)]
    rows = []
    for c, runs in zip(conds, trained(runner, profile, conds, ("source", "target", *CONDITION_DONORS[1:]))):
        ev = Evaluator(runner, profile, c, runs["target"])
        head = ev.layers[-1]
        for d in CONDITION_DONORS:
            feats = _head_input(ev, runner.model(runs[d]), head)
            # PSPNet's head reads a coarser map than the labels: one feature per label pixel
            feats = torch.nn.functional.interpolate(feats, size=ev.y.shape[-2:], mode="bilinear")
            x = similarity.features(feats, "positions", None, 0)
            y = ev.y.reshape(-1).cpu()
            keep = torch.from_numpy(np.random.default_rng(c.seed).permutation(len(y))[:MAX_POSITIONS])
            rows.append({**c.factors(), "donor": d, "logme": similarity.logme(x[keep], y[keep])})
    out = pd.DataFrame(rows, columns=[*FACTORS, "donor", "logme"])
    score = e1[[*FACTORS, "donor", "reuse_score"]]
    return usable_only(out.merge(score, on=[*FACTORS, "donor"], how="inner"), cells)


def _within_target_rho(frame: pd.DataFrame, x: str, y: str) -> pd.Series:
    """Per seed: Spearman rho of ``x`` and ``y`` across the sources of one architecture x
    task (one target, so LogME values are comparable), averaged over targets."""
    rhos = [{"seed": key[-1], "rho": spearman(g[x], g[y])} for key, g in frame.groupby(["architecture", "task", "seed"])]
    return pd.DataFrame(rhos, columns=["seed", "rho"]).groupby("seed").rho.mean().dropna()


def network_table(net: pd.DataFrame, gains: pd.DataFrame) -> pd.DataFrame:
    """LogME within one target (across the ladder's sources, per seed; t CI over seeds; holds
    when above 0): against E1's all-conv reuse score, and against what LogME was made to
    predict, the fine-tuning gain (E4's reuse_all minus scratch, per n_T; ``gains``:
    :func:`reuse.study.experiments.small_data.differences`); and the control: the twin's
    LogME minus the different-init control's, per seed (holds when the twin is placed above).

    The rho rows are gated by that control: their ``verdict`` is the rho's own
    (``ungated_verdict``) where the control holds, else 'undecided' with ``controls`` saying
    "failed: control ...": a LogME that cannot place a same-domain twin above a model of
    another initialisation has not shown that it measures what reuse needs."""
    if net.empty:
        return pd.DataFrame([{"measure": "LogME (needs a segmentation condition)", "estimate": np.nan,
                              "ci_low": np.nan, "ci_high": np.nan, "verdict": "undecided",
                              "detectable": np.nan, "n": 0, "ungated_verdict": "undecided",
                              "controls": "n/a"}])
    src = net[net.donor == "source"]
    keep = ("estimate", "ci_low", "ci_high", "verdict", "detectable", "n")
    rows = [{"measure": "rho(LogME of the source, E1 all-conv reuse score), within one target",
             **{k: v for k, v in correlation_verdict(_within_target_rho(src, "logme", "reuse_score"), 0.0).items()
                if k in keep}}]
    reuse_all = gains[gains.strategy == "reuse_all"]
    for n_t, g in reuse_all.groupby("n_T"):
        both = src.merge(g[[*FACTORS, "difference"]], on=FACTORS, how="inner")
        v = correlation_verdict(_within_target_rho(both, "logme", "difference"), 0.0)
        rows.append({"measure": f"rho(LogME of the source, E4 fine-tuning gain at n_T {n_t}), within one target",
                     **{k: v[k] for k in keep}})
    wide = net.pivot_table(index=[*CONDITION, "seed"], columns="donor", values="logme").reset_index()
    ctl = mean_verdict((wide.twin - wide.different_init).groupby(wide.seed).mean(), 0.0, "above")
    # a rho of LogME counts only where LogME itself places the twin above the different-init model
    passed = ctl["verdict"] == "holds"
    controls = "passed" if passed else f"failed: control {CONTROL} {ctl['verdict']}"
    rows = [{**r, "ungated_verdict": r["verdict"], "verdict": r["verdict"] if passed else "undecided",
             "controls": controls} for r in rows]
    rows.append({"measure": f"{CONTROL} (control)", **{k: ctl[k] for k in keep},
                 "ungated_verdict": ctl["verdict"], "controls": "n/a"})
    return pd.DataFrame(rows)


def verdict_text(table: pd.DataFrame, duels: pd.DataFrame, gains: pd.DataFrame, net: pd.DataFrame) -> str:
    """The notebook's computed findings, one Markdown line each."""
    lines = [f"- The paper's RMSE is the best criterion: **{overall(duels)}** "
             f"({', '.join(f'{o} {(duels.outcome == o).sum()}' for o in ('beats', 'ties', 'loses', 'unclear'))}"
             f" of {len(duels)} rivals)."]
    for r in duels.itertuples():
        lines.append(f"- RMSE vs {r.rival}: AUC difference {r.auc_difference:+.3f} [{r.ci_low:+.3f}, "
                     f"{r.ci_high:+.3f}]: {r.outcome} (verdict {r.verdict}; detectable {r.detectable:.2f}).")
    for r in table.itertuples():
        if hasattr(r, "auc") and np.isfinite(getattr(r, "auc", np.nan)):
            lines.append(f"- {r.criterion} ({r.family}): AUC {r.auc:.2f} [{r.auc_ci_low:.2f}, {r.auc_ci_high:.2f}], "
                         f"held-out balanced accuracy {r.held_out_accuracy:.2f} [{r.acc_ci_low:.2f}, "
                         f"{r.acc_ci_high:.2f}], within-condition rho {r.rho_within:.2f}; twin below the "
                         f"threshold {r.twin_share_below:.0%}, different-init {r.different_init_share_below:.0%}: "
                         f"**{r.verdict}** (controls {r.controls}); AUC minus the best weight-blind baseline "
                         f"({r.baseline_auc_best}) {r.baseline_auc_difference:+.3f} "
                         f"[{r.baseline_auc_ci_low:+.3f}, {r.baseline_auc_ci_high:+.3f}]: "
                         f"{r.baseline_auc_verdict}.")
        else:
            lines.append(f"- {r.criterion}: {r.verdict} ({r.controls}).")
    for r in gains.itertuples():
        if np.isfinite(r.rho):
            lines.append(f"- gain from theta_S vs {r.criterion}: rho {r.rho:.2f} [{r.ci_low:.2f}, "
                         f"{r.ci_high:.2f}] over {r.n_points} layers, expected below 0: {r.verdict}.")
    for r in net.itertuples():
        gate = (f" (controls {r.controls}; without the gate {r.ungated_verdict})"
                if r.controls.startswith("failed") else "")
        lines.append(f"- {r.measure}: {r.estimate:.3g} [{r.ci_low:.3g}, {r.ci_high:.3g}]: {r.verdict}{gate}.")
    return "\n".join(lines)


def findings(table: pd.DataFrame, duels: pd.DataFrame) -> str:
    """What the comparison means, computed from it."""
    judged = table.dropna(subset=[c for c in ("auc",) if c in table])
    if judged.empty or "auc" not in table:
        return "- The criteria could not be compared (fewer than two pairs or one class only)."
    ranked = judged.sort_values("auc", ascending=False)
    paper_rank = list(ranked.criterion).index(PAPER) + 1
    passing = table[table.controls == "passed"].criterion.tolist()
    lines = [f"- Ranked by ROC AUC: {', '.join(f'{r.criterion} {r.auc:.2f}' for r in ranked.itertuples())}; "
             f"the paper's RMSE is number {paper_rank} of {len(ranked)}.",
             f"- Criteria whose controls pass (twin below the threshold, different-init above): "
             f"{', '.join(passing) or 'none'}."]
    if "baseline_auc_verdict" in table:
        beyond = table[table.baseline_auc_verdict == "holds"].criterion.tolist()
        lines.append(f"- Criteria whose AUC beats the best weight-blind baseline "
                     f"({table.baseline_auc_best.iloc[0]}, which reads no trained weight) by a CI above 0: "
                     f"{', '.join(beyond) or 'none'}.")
    beaten_by = duels[duels.outcome == "loses"].rival.tolist()
    if beaten_by:
        lines.append(f"- Rivals that predict reuse better than the raw RMSE: {', '.join(beaten_by)}.")
    return "\n".join(lines)


_DUEL = "E5 RMSE beats {} (AUC difference)"  # a duel's judgment, by rival


def records(table: pd.DataFrame, duels: pd.DataFrame, gains: pd.DataFrame, net: pd.DataFrame) -> pd.DataFrame:
    """Every verdict of the notebook, one row each. A criterion that ranks the points like an
    earlier one (``table.alias_of``) carries ``alias_of``: the same judgment of that criterion,
    which :mod:`reuse.study.claims` counts once (the RMSE's duel with its own near-copy has no
    such judgment and stays a claim)."""
    alias = dict(zip(table.criterion, table.alias_of)) if "alias_of" in table else {}

    def named(template: str, criterion: str) -> dict:
        first = alias.get(criterion)
        same = isinstance(first, str) and not (template == _DUEL and first == PAPER)
        return {"judgment": template.format(criterion), "alias_of": template.format(first) if same else None}
    best = {"judgment": "E5 the paper's RMSE is the best criterion (AUC)", "verdict": overall(duels),
            "estimate": float(duels.auc_difference.min()), "ci_low": np.nan, "ci_high": np.nan,
            "detectable": float(duels.detectable.max()), "n": float(duels.n.max()),
            "controls": "n/a"}
    rows = [best]
    rows += [{**named(_DUEL, r.rival), "verdict": r.verdict,
              "estimate": r.auc_difference, "ci_low": r.ci_low, "ci_high": r.ci_high,
              "detectable": r.detectable, "n": r.n, "controls": "n/a"} for r in duels.itertuples()]
    rows += [{**named("E5 {} predicts reuse (held-out accuracy)", r.criterion), "verdict": r.verdict,
              "estimate": getattr(r, "held_out_accuracy", np.nan), "ci_low": getattr(r, "acc_ci_low", np.nan),
              "ci_high": getattr(r, "acc_ci_high", np.nan), "detectable": getattr(r, "detectable", np.nan),
              "n": getattr(r, "n_seeds", np.nan), "controls": r.controls} for r in table.itertuples()]
    rows += [{**named("E5 {} beats the weight-blind baselines (AUC difference)", r.criterion),
              "verdict": r.baseline_auc_verdict, "estimate": r.baseline_auc_difference,
              "ci_low": r.baseline_auc_ci_low, "ci_high": r.baseline_auc_ci_high,
              "detectable": r.baseline_auc_detectable, "n": getattr(r, "n_seeds", np.nan), "controls": "n/a"}
             for r in table.itertuples() if hasattr(r, "baseline_auc_verdict")]
    rows += [{**named("E5 {} predicts the init gain (rho < 0)", r.criterion), "verdict": r.verdict,
              "estimate": r.rho, "ci_low": r.ci_low, "ci_high": r.ci_high, "detectable": r.detectable,
              "n": r.n, "controls": "n/a"} for r in gains.itertuples()]
    rows += [{"judgment": f"E5 {r.measure}", "verdict": r.verdict, "estimate": r.estimate,
              "ci_low": r.ci_low, "ci_high": r.ci_high, "detectable": r.detectable, "n": r.n,
              "controls": r.controls} for r in net.itertuples()]
    return pd.DataFrame(rows)


def control_table(table: pd.DataFrame) -> pd.DataFrame:
    """Per criterion: the controls' shares below its threshold and their verdicts (NaN where
    no threshold could be fitted)."""
    return table.reindex(columns=["criterion", "family", "twin_share_below", "twin_verdict",
                                  "different_init_share_below", "different_init_verdict", "controls"])
