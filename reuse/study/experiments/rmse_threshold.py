"""E3, the RMSE criterion (the paper's third judgment; docs/protocol.md, sections 5-6).

- :func:`kernel_distances` (M3): per conv layer, RMSE and relative RMSE between theta_T
  and each other run of the condition: the source, the same-domain twin, the
  different-initialisation control, and the batch-order twins (the noise floor);
- :func:`noise_floor`: per condition and layer, the order twins' RMSE with its CI over seeds;
- :func:`points`: one point per (cell, layer, donor): raw RMSE, relative RMSE and RMSE
  divided by the floor, the weight-blind baselines (depth, log size), beside E2's
  single-layer reuse score and whether it is reusable;
- :func:`criterion_table`: for each criterion, on the source's points, Spearman's rho
  pooled and within condition, ROC AUC, and a threshold fitted leave-one-pair-out with its
  held-out balanced accuracy, all with CIs from resampling seeds (the correlations' on
  Fisher's z scale, so they stay in [-1, 1]); the same accuracy minus
  the best weight-blind baseline's; J3's verdict and the controls (the twin's layers must
  fall below the threshold, the different-init ones above);
- :func:`baseline_table`: the weight-blind baselines alone, each in the direction it picks
  on the training pairs;
- :func:`dose_response`: RMSE and reuse score against the shift strength along the
  source ladder's graded shifts (E1's runs);
- :func:`kernels` / :func:`per_kernel`: kernels and per-kernel RMSE for pictures.
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
from torch import nn

from reuse.toolkit.criteria import conv_layers, kernel_keys, kernel_rmse, per_kernel_rmse
from reuse.toolkit.stats import (
    conjunction_p,
    fit_threshold,
    p_value,
    roc_auc,
    spearman,
    threshold_accuracy,
    within_spearman,
)
from reuse.toolkit.verdicts import (
    REUSABLE,
    USEFUL_ACCURACY,
    cluster_verdict,
    conjunction,
    gated,
    mean_verdict,
)

from ..config import Grid, Profile
from ..training.data import GRADED_SHIFT, parse_pair
from ..training.train import Runner
from .common import (
    CONDITION,
    CONDITION_DONORS,
    FACTORS,
    RESET,
    Condition,
    Evaluator,
    conditions,
    swappable,
    trained,
    usable_only,
)
from .layer_selection import PRIMARY_BN

KERNEL_DISTANCES = ("rmse", "rel_rmse", "floor_ratio")  # E3's kernel criteria
# criteria that read no trained weight: what a kernel criterion must beat to show it reads the weights.
# depth: index / (n_layers - 1) over the swappable conv layers (0 = first, 1 = last); log_size: log of
# the layer's number of weights. Their direction is not declared: each fit picks it (_fit_oriented).
BASELINES = ("depth", "log_size")
COMPARISONS = (*CONDITION_DONORS, "order")
RULE = (f"a layer is labelled reusable when its single-layer reuse score (E2, BN re-estimated) is "
        f"at least {REUSABLE}. For each criterion, a threshold (reusable when the criterion is at "
        f"most the threshold, declared in advance) is fitted on the source's points of all pairs "
        f"but one and scored on the held-out pair; so are the weight-blind baselines "
        f"({', '.join(BASELINES)}: the layer's relative depth and log number of weights), each "
        f"taking, on the training pairs only, the direction (small or large = reusable) with the "
        f"better balanced accuracy there. J3 holds for the criterion when both (i) the 95% CI "
        f"(resampling seeds) of its mean held-out balanced accuracy lies above {USEFUL_ACCURACY} "
        f"and (ii) the 95% CI of that accuracy minus the best baseline's (the one with the higher "
        f"held-out accuracy on all the source's points: the harder comparison) lies above 0; it "
        f"is refuted when (i)'s CI lies below {USEFUL_ACCURACY} or (ii)'s below 0, else undecided. "
        f"Controls, with the threshold fitted on all source points: most of the twin's layers (CI "
        f"of the share above 0.5) must fall at or below it, and most of the "
        f"different-initialisation control's layers above it.")


def kernel_distances(runner: Runner, profile: Profile, grid: Grid | None = None) -> pd.DataFrame:
    """RMSE per conv layer between theta_T and each other run, one row per condition x
    comparison x layer: architecture, task, pair, seed, comparison (source, twin,
    different_init, order), layer, index, n_layers, depth, n_weights, rmse, rel_rmse."""
    grid = profile.grid if grid is None else grid
    conds = conditions(grid, profile.seeds)
    frames = []
    # only the runs compared: the strangers regime (E1) is not, and would cost a training each
    for c, runs in zip(conds, trained(runner, profile, conds, ("target", *COMPARISONS))):
        target = runs["target"].state
        layers = swappable(conv_layers(target))
        for comparison in COMPARISONS:
            if comparison in runs:
                f = kernel_rmse(runs[comparison].state, target, layers)
                f["depth"] = f["index"] / max(len(layers) - 1, 1)
                frames.append(f.assign(**c.factors(), comparison=comparison, n_layers=len(layers)))
    cols = [*FACTORS, "comparison", "layer", "index", "n_layers", "depth", "n_weights", "rmse", "rel_rmse"]
    return pd.concat(frames, ignore_index=True)[cols]


def noise_floor(distances: pd.DataFrame) -> pd.DataFrame:
    """Per condition x layer: the batch-order twins' RMSE and relative RMSE, mean over seeds
    with the Student-t CI (columns floor_rmse, floor_ci_low, floor_ci_high, floor_rel_rmse,
    n_twins)."""
    d = distances[distances.comparison == "order"]
    rows = []
    for key, g in d.groupby([*CONDITION, "layer"], sort=False):
        v = mean_verdict(g.rmse, 0.0)
        rows.append({**dict(zip([*CONDITION, "layer"], key)), "floor_rmse": v["estimate"],
                     "floor_ci_low": v["ci_low"], "floor_ci_high": v["ci_high"],
                     "floor_rel_rmse": float(g.rel_rmse.mean()), "n_twins": v["n"]})
    return pd.DataFrame(rows, columns=[*CONDITION, "layer", "floor_rmse", "floor_ci_low",
                                       "floor_ci_high", "floor_rel_rmse", "n_twins"])


def points(distances: pd.DataFrame, swaps: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """One point per usable (cell, layer, donor): rmse, rel_rmse, floor_ratio (rmse / the
    condition-layer's noise floor), the weight-blind baselines depth and log_size
    (:data:`BASELINES`), E2's single-layer reuse score (BN re-estimated) and ``reusable``
    (score >= REUSABLE). Layers without a floor get floor_ratio NaN."""
    d = distances[distances.comparison.isin(CONDITION_DONORS)].rename(columns={"comparison": "donor"})
    s = swaps[swaps.bn_reestimated == PRIMARY_BN][[*FACTORS, "donor", "layer", "reuse_score"]]
    p = d.merge(s, on=[*FACTORS, "donor", "layer"], how="inner", validate="one_to_one")
    if len(p) != len(d):
        raise ValueError(f"{len(d) - len(p)} RMSE rows have no swap score: run E2's swap_scores on "
                         "the same grid and seeds")
    p = p.merge(noise_floor(distances)[[*CONDITION, "layer", "floor_rmse"]],
                on=[*CONDITION, "layer"], how="left")
    p["floor_ratio"] = p.rmse / p.floor_rmse
    p["log_size"] = np.log(p.n_weights)
    p = usable_only(p, cells)
    p = p[np.isfinite(p.reuse_score)].copy()
    p["reusable"] = p.reuse_score >= REUSABLE
    return p.reset_index(drop=True)


def _fit_or_nan(x, labels) -> float:
    labels = np.asarray(labels, dtype=bool)
    if labels.all() or not labels.any():
        return float("nan")
    return fit_threshold(x, labels)[0]


def _fit_oriented(x, labels) -> tuple[float, float]:
    """(sign, threshold) of "reusable when sign * x <= threshold" for a column whose direction
    was not declared (a weight-blind baseline): both directions are fitted on these points and
    the one with the better balanced accuracy here is kept (small = reusable on a tie). Callers
    pass training points only, so the direction is never chosen on held-out data."""
    x, labels = np.asarray(x, dtype=float), np.asarray(labels, dtype=bool)
    if labels.all() or not labels.any():
        return 1.0, float("nan")
    fits = [(sign, *fit_threshold(sign * x, labels)) for sign in (1.0, -1.0)]
    sign, threshold, _ = max(fits, key=lambda f: f[2])  # the first, small = reusable, on a tie
    return sign, threshold


def _lopo(frame: pd.DataFrame, column: str, oriented: bool) -> list[tuple]:
    """Per held-out pair: (pair, sign, threshold, balanced accuracy on the pair) of the rule fitted
    on the other pairs; ``oriented``: the direction is fitted too (:func:`_fit_oriented`), else
    small = reusable. NaN threshold and accuracy where the training pairs have one class."""
    out = []
    for pair in frame.pair.unique():
        train, test = frame[frame.pair != pair], frame[frame.pair == pair]
        sign, t = (_fit_oriented(train[column], train.reusable) if oriented
                   else (1.0, _fit_or_nan(train[column], train.reusable)))
        acc = threshold_accuracy(sign * test[column], test.reusable, t) if np.isfinite(t) else np.nan
        out.append((pair, sign, t, acc))
    return out


def _held_out_accuracy(frame: pd.DataFrame, column: str, oriented: bool = False) -> float:
    """Mean over pairs of the balanced accuracy, on the pair, of the threshold fitted on
    the other pairs (NaN when no pair can be scored)."""
    accs = [acc for *_, acc in _lopo(frame, column, oriented) if np.isfinite(acc)]
    return float(np.mean(accs)) if accs else float("nan")


def _minus_baseline(frame: pd.DataFrame, criterion: str, baseline: str) -> float:
    """Held-out accuracy of ``criterion`` minus that of the weight-blind ``baseline``, on the same points."""
    return _held_out_accuracy(frame, criterion) - _held_out_accuracy(frame, baseline, oriented=True)


def oriented_auc(x, labels) -> float:
    """ROC AUC of a column whose direction was not declared, in its better direction on these
    points (max of AUC and 1 - AUC): it flatters a weight-blind baseline, so a criterion that
    beats it beats the baseline at its best."""
    auc = roc_auc(x, labels)
    return max(auc, 1 - auc) if np.isfinite(auc) else auc


def _share_below(frame: pd.DataFrame, criterion: str, threshold: float) -> pd.Series:
    """Per seed, the share of points at or below ``threshold``."""
    return frame.assign(below=frame[criterion] <= threshold).groupby("seed").below.mean()


def criterion_table(pts: pd.DataFrame, criteria=KERNEL_DISTANCES) -> pd.DataFrame:
    """One row per criterion (columns of ``pts``, smaller = more alike; see the module
    docstring): threshold, held-out balanced accuracy with CI (``acc_*``), detectable effect,
    the best weight-blind baseline's held-out accuracy and the criterion's minus the best
    baseline's with CI (``minus_baseline_*``), pooled and within-condition Spearman rho and ROC
    AUC with CIs, the two controls and J3's ``verdict`` (:data:`RULE`)."""
    rows = []
    for crit in criteria:
        src = pts[(pts.donor == "source") & np.isfinite(pts[crit])]
        row: dict = {"criterion": crit, "n_points": len(src), "n_reusable": int(src.reusable.sum())}
        if src.pair.nunique() < 2 or src.empty:
            rows.append({**row, "verdict": "undecided", "controls": "not run: fewer than two pairs"})
            continue
        held = cluster_verdict(src, lambda f, c=crit: _held_out_accuracy(f, c), USEFUL_ACCURACY,
                                 "above")
        pooled = cluster_verdict(src, lambda f, c=crit: spearman(f[c], f.reuse_score),
                                 0.0, "below", correlation=True)
        within = cluster_verdict(src, lambda f, c=crit: within_spearman(f, CONDITION, c, "reuse_score"), 0.0, "below",
                                 correlation=True)
        auc = cluster_verdict(src, lambda f, c=crit: roc_auc(f[c], f.reusable), 0.5, "above")
        baseline_accs = {b: _held_out_accuracy(src, b, oriented=True) for b in BASELINES}
        best = max(baseline_accs, key=lambda b: np.nan_to_num(baseline_accs[b], nan=-1.0))
        blind = cluster_verdict(src, lambda f, c=crit, b=best: _minus_baseline(f, c, b), 0.0, "above")
        threshold = _fit_or_nan(src[crit], src.reusable)
        controls = {}
        for donor in ("twin", "different_init"):  # "most of its layers fall below": twin holds, other refuted
            d = pts[(pts.donor == donor) & np.isfinite(pts[crit])]
            controls[donor] = mean_verdict(_share_below(d, crit, threshold), 0.5, "above")
        row.update({"threshold": threshold,
                    "held_out_accuracy": held["estimate"], "acc_ci_low": held["ci_low"],
                    "acc_ci_high": held["ci_high"], "acc_verdict": held["verdict"],
                    "detectable": held["detectable"],
                    "best_baseline": best, "baseline_accuracy": baseline_accs[best],
                    "minus_baseline": blind["estimate"], "minus_baseline_ci_low": blind["ci_low"],
                    "minus_baseline_ci_high": blind["ci_high"], "minus_baseline_verdict": blind["verdict"],
                    "minus_baseline_detectable": blind["detectable"],
                    "rho_pooled": pooled["estimate"], "rho_pooled_ci_low": pooled["ci_low"],
                    "rho_pooled_ci_high": pooled["ci_high"],
                    "rho_within": within["estimate"], "rho_within_ci_low": within["ci_low"],
                    "rho_within_ci_high": within["ci_high"],
                    "auc": auc["estimate"], "auc_ci_low": auc["ci_low"], "auc_ci_high": auc["ci_high"],
                    "twin_share_below": controls["twin"]["estimate"],
                    "twin_verdict": controls["twin"]["verdict"],
                    "different_init_share_below": controls["different_init"]["estimate"],
                    "different_init_verdict": controls["different_init"]["verdict"],
                    "n_seeds": held["n_seeds"]})
        row["verdict"], row["controls"] = gated(conjunction(held["verdict"], blind["verdict"]),
                                                controls["twin"]["verdict"],
                                                controls["different_init"]["verdict"])
        rows.append(row)
    return pd.DataFrame(rows)


def baseline_table(pts: pd.DataFrame) -> pd.DataFrame:
    """One row per weight-blind baseline (:data:`BASELINES`), on the source's points: the
    direction it takes on all of them (reusable_when small or large), its held-out balanced
    accuracy (direction and threshold fitted on the training pairs) and its ROC AUC in the better
    direction (:func:`oriented_auc`), with CIs from resampling seeds. No verdict: a baseline is
    what a criterion is measured against."""
    rows = []
    for b in BASELINES:
        src = pts[(pts.donor == "source") & np.isfinite(pts[b])]
        if src.pair.nunique() < 2:
            rows.append({"criterion": b, "n_points": len(src)})
            continue
        held = cluster_verdict(src, lambda f, c=b: _held_out_accuracy(f, c, oriented=True),
                                 USEFUL_ACCURACY, "above")
        auc = cluster_verdict(src, lambda f, c=b: oriented_auc(f[c], f.reusable), 0.5, "above")
        sign, _ = _fit_oriented(src[b], src.reusable)
        rows.append({"criterion": b, "n_points": len(src), "reusable_when": "small" if sign > 0 else "large",
                     "held_out_accuracy": held["estimate"], "acc_ci_low": held["ci_low"],
                     "acc_ci_high": held["ci_high"], "auc": auc["estimate"], "auc_ci_low": auc["ci_low"],
                     "auc_ci_high": auc["ci_high"], "n_seeds": held["n_seeds"]})
    return pd.DataFrame(rows, columns=["criterion", "n_points", "reusable_when", "held_out_accuracy",
                                       "acc_ci_low", "acc_ci_high", "auc", "auc_ci_low", "auc_ci_high",
                                       "n_seeds"])


def lopo_table(pts: pd.DataFrame, criteria=KERNEL_DISTANCES) -> pd.DataFrame:
    """Per criterion or weight-blind baseline x held-out pair: the threshold fitted on the other
    pairs' source points, the direction (reusable_when small, or large: baselines choose it on
    those pairs) and its balanced accuracy on the held-out pair (NaN where that pair has one class)."""
    rows = []
    for column in (*criteria, *BASELINES):
        src = pts[(pts.donor == "source") & np.isfinite(pts[column])]
        for pair, sign, t, acc in _lopo(src, column, oriented=column in BASELINES):
            rows.append({"criterion": column, "pair": pair, "reusable_when": "small" if sign > 0 else "large",
                         "threshold": t, "n_points": int((src.pair == pair).sum()), "balanced_accuracy": acc})
    return pd.DataFrame(rows, columns=["criterion", "pair", "reusable_when", "threshold", "n_points",
                                       "balanced_accuracy"])


def dose_response(runner: Runner, profile: Profile, grid: Grid | None = None) -> pd.DataFrame:
    """RMSE and reuse scores along the source ladder's graded shifts, the target fixed.

    ``grid.pairs`` are ``fashion-shifted@s`` rungs (by default the profile's ladder's, so every
    run is already E1's and only scoring is left; their single-layer swaps are E2's, their
    all-conv swaps E1's, so the scores come from the memo where those ran). Each rung's source
    learnt the target's classes with its images rotated, contrast-inverted and noised with
    strength s; the same-domain twin stands at s = 0, a positive control. One row per
    architecture x task x seed x s x layer (single-layer swap score, BN re-estimated; RMSE;
    relative RMSE) plus one row per s with ``layer='(all conv)'`` (all kernels swapped, BN
    re-estimated; RMSE NaN); ``pair`` names the rung, ``twin`` at s = 0. Empty where
    ``grid.pairs`` is (a ladder narrowed to rungs without a dose).
    """
    grid = profile.e3_dose if grid is None else grid
    bad = [p for p in grid.pairs if parse_pair(p)[0] != GRADED_SHIFT]
    if not grid.pairs:  # a ladder narrowed to rungs without a dose: no series
        return pd.DataFrame()
    if bad:
        raise ValueError(f"dose pairs {list(grid.pairs)!r}; allowed: graded shifts "
                         f"{GRADED_SHIFT}@<s> (s in (0, 1])")
    conds = conditions(grid, profile.seeds)
    twin_done, rows = set(), []
    for i, (c, runs) in enumerate(zip(conds, trained(runner, profile, conds, ("source", "target", "twin")))):
        ev = Evaluator(runner, profile, c, runs["target"])
        cell = (c.architecture, c.task, c.seed)  # every rung shares the target, so the twin once
        donors = [(c.pair, c.shift, runs["source"])] + ([] if cell in twin_done else [("twin", 0.0, runs["twin"])])
        twin_done.add(cell)
        kernels = kernel_keys(ev.target.state, ev.swap_layers)
        singles = [kernel_keys(ev.target.state, [layer]) for layer in ev.swap_layers]
        for pair, shift, donor in donors:
            dist = kernel_rmse(donor.state, ev.target.state, ev.swap_layers).set_index("layer")
            # the key sets of E2's and E1's calls, so that the memo serves them
            scored = ev.swap_rows(donor, singles, PRIMARY_BN) + ev.swap_rows(donor, [kernels], PRIMARY_BN)
            for index, (layer, row) in enumerate(zip(ev.swap_layers, scored)):
                rows.append({**row, "pair": pair, "shift": shift, "layer": layer, "index": index,
                             "rmse": dist.loc[layer, "rmse"], "rel_rmse": dist.loc[layer, "rel_rmse"]})
            rows.append({**scored[-1], "pair": pair, "shift": shift, "layer": "(all conv)", "index": -1,
                         "rmse": np.nan, "rel_rmse": np.nan})
        if runner.progress:
            print(f"  dose {i + 1}/{len(conds)}", file=sys.stderr, flush=True)
    return pd.DataFrame(rows)


def dose_table(dose: pd.DataFrame) -> pd.DataFrame:
    """Spearman rho of the shift strength with the relative RMSE (single layers) and with
    the all-conv reuse score, CIs from resampling seeds (on Fisher's z scale, so within
    [-1, 1]): a larger shift should raise the
    RMSE (rho above 0) and lower the score (rho below 0)."""
    if dose.empty:
        return pd.DataFrame()
    layers, whole = dose[dose.layer != "(all conv)"], dose[dose.layer == "(all conv)"]
    rows = []
    for what, frame, column, side in (("relative RMSE", layers, "rel_rmse", "above"),
                                      ("all-conv reuse score", whole, "reuse_score", "below")):
        v = cluster_verdict(frame, lambda f, c=column: spearman(f["shift"], f[c]),
                            0.0, side, correlation=True)
        rows.append({"measure": what, "expected": f"rho {side} 0", **v})
    return pd.DataFrame(rows)


def kernels(runner: Runner, profile: Profile, condition: Condition, layers: list[str] | None = None
            ) -> dict[str, dict[str, np.ndarray]]:
    """Source, target and difference kernels of ``layers`` (default: the first conv layer
    and the deepest 3x3 encoder layer) for one condition: layer -> {source, target,
    difference} arrays ``[out, in, kh, kw]`` (ConvTranspose2d weights moved to that order)."""
    runs = trained(runner, profile, [condition], ("source", "target"))[0]
    model = runner.model(runs["target"])
    transposed = {n for n, m in model.named_modules() if isinstance(m, nn.ConvTranspose2d)}
    all_layers = conv_layers(runs["target"].state)
    if layers is None:
        square = [n for n in all_layers if runs["target"].state[f"{n}.weight"].shape[-1] == 3
                  and n not in transposed]
        layers = [all_layers[0], square[len(square) // 2]]  # the middle 3x3: deep, pre-decoder
    out = {}
    for name in layers:
        s, t = (runs[k].state[f"{name}.weight"].double() for k in ("source", "target"))
        if name in transposed:
            s, t = s.transpose(0, 1), t.transpose(0, 1)
        out[name] = {"source": s.numpy(), "target": t.numpy(), "difference": (s - t).numpy()}
    return out


def per_kernel(runner: Runner, profile: Profile, conds: list[Condition]) -> pd.DataFrame:
    """Per-kernel (output channel) RMSE between theta_S and theta_T, one row per condition x
    layer x kernel; columns: architecture, task, pair, seed, layer, index, kernel, rmse."""
    frames = []
    for c, runs in zip(conds, trained(runner, profile, conds, ("source", "target"))):
        model = runner.model(runs["target"])
        transposed = [n for n, m in model.named_modules() if isinstance(m, nn.ConvTranspose2d)]
        layers = swappable(conv_layers(runs["target"].state))
        f = per_kernel_rmse(runs["source"].state, runs["target"].state, layers, transposed)
        f["index"] = f.layer.map({n: i for i, n in enumerate(layers)})
        frames.append(f.assign(**c.factors()))
    return pd.concat(frames, ignore_index=True)


def verdict_text(table: pd.DataFrame, dose: pd.DataFrame | None) -> str:
    """The notebook's computed findings, one Markdown line each."""
    lines = []
    for r in table.itertuples():
        if not hasattr(r, "held_out_accuracy"):
            lines.append(f"- J3 {r.criterion}: {r.verdict} ({r.controls}).")
            continue
        lines.append(
            f"- J3 {r.criterion}: **{r.verdict}** (held-out balanced accuracy {r.held_out_accuracy:.2f} "
            f"[{r.acc_ci_low:.2f}, {r.acc_ci_high:.2f}] vs {USEFUL_ACCURACY}, smallest detectable effect "
            f"{r.detectable:.2f}: {r.acc_verdict}; minus the best weight-blind baseline "
            f"({r.best_baseline}, {r.baseline_accuracy:.2f}) {r.minus_baseline:+.2f} "
            f"[{r.minus_baseline_ci_low:+.2f}, {r.minus_baseline_ci_high:+.2f}] vs 0: "
            f"{r.minus_baseline_verdict}; threshold {r.threshold:.4g}; "
            f"Spearman rho pooled {r.rho_pooled:.2f} "
            f"[{r.rho_pooled_ci_low:.2f}, {r.rho_pooled_ci_high:.2f}], within condition {r.rho_within:.2f} "
            f"[{r.rho_within_ci_low:.2f}, {r.rho_within_ci_high:.2f}]; AUC {r.auc:.2f} "
            f"[{r.auc_ci_low:.2f}, {r.auc_ci_high:.2f}]; twin layers below the threshold "
            f"{r.twin_share_below:.0%} ({r.twin_verdict}), different-init {r.different_init_share_below:.0%} "
            f"({r.different_init_verdict}): controls {r.controls}).")
    if dose is not None and len(dose):
        for r in dose.itertuples():
            lines.append(f"- dose-response: Spearman rho(shift, {r.measure}) = {r.estimate:.2f} "
                         f"[{r.ci_low:.2f}, {r.ci_high:.2f}], expected {r.expected}: {r.verdict}.")
    return "\n".join(lines)


def findings(table: pd.DataFrame, baselines: pd.DataFrame) -> str:
    """What the criterion verdicts mean, computed from them and the weight-blind baselines."""
    judged = table[table.columns.intersection(["held_out_accuracy"])].dropna()
    if judged.empty:
        return "- The criteria could not be fitted (fewer than two pairs, or one class only)."
    best = table.loc[table.held_out_accuracy.idxmax()]
    lines = [f"- The best criterion on held-out pairs is {best.criterion} (balanced accuracy "
             f"{best.held_out_accuracy:.2f}); J3 holds for "
             f"{', '.join(table[table.verdict == 'holds'].criterion) or 'none'}, is refuted for "
             f"{', '.join(table[table.verdict == 'refuted'].criterion) or 'none'} and undecided for "
             f"{', '.join(table[table.verdict == 'undecided'].criterion) or 'none'}."]
    judged_b = baselines.dropna(subset=["held_out_accuracy"])
    if len(judged_b):
        lines.append("- Weight-blind baselines, which read no trained weight: " + "; ".join(
            f"{r.criterion} (reusable when {r.reusable_when}) {r.held_out_accuracy:.2f} "
            f"[{r.acc_ci_low:.2f}, {r.acc_ci_high:.2f}]" for r in judged_b.itertuples())
            + f". Criteria whose accuracy is not above the best of them by a CI above 0: "
            f"{', '.join(table[table.minus_baseline_verdict != 'holds'].criterion) or 'none'}.")
    for r in table.itertuples():
        if np.isfinite(getattr(r, "rho_within", np.nan)) and np.isfinite(r.rho_pooled):
            lines.append(f"- {r.criterion}: within a condition rho = {r.rho_within:.2f}, pooled "
                         f"{r.rho_pooled:.2f}" + (" (pooling changes the sign)"
                                                  if np.sign(r.rho_within) != np.sign(r.rho_pooled) else "")
                         + ".")
    return "\n".join(lines)


def records(table: pd.DataFrame, dose: pd.DataFrame | None) -> pd.DataFrame:
    """Every verdict of the notebook (J3 per criterion, the dose response), one row each:
    ``J3 <criterion>`` is the claim (both parts, gated by the controls) with the held-out
    accuracy as its estimate and the p of both parts (:func:`reuse.study.conjunction_p`);
    part (ii), the comparison with the best weight-blind baseline, is in ``table``."""
    rows = []
    for r in table.itertuples():
        n, parts = getattr(r, "n_seeds", np.nan), []
        if hasattr(r, "minus_baseline"):
            parts = [(p_value(r.held_out_accuracy, r.acc_ci_low, r.acc_ci_high, n, USEFUL_ACCURACY),
                      r.acc_verdict),
                     (p_value(r.minus_baseline, r.minus_baseline_ci_low, r.minus_baseline_ci_high, n,
                                     0.0), r.minus_baseline_verdict)]
        rows.append({"judgment": f"J3 {r.criterion}", "verdict": r.verdict,
                     "estimate": getattr(r, "held_out_accuracy", np.nan),
                     "ci_low": getattr(r, "acc_ci_low", np.nan), "ci_high": getattr(r, "acc_ci_high", np.nan),
                     "detectable": getattr(r, "detectable", np.nan), "n": n, "controls": r.controls,
                     "margin": USEFUL_ACCURACY, "side": "above",
                     "p": conjunction_p(parts) if parts else np.nan})
    if dose is not None:
        rows += [{"judgment": f"dose: rho(shift, {r.measure})", "verdict": r.verdict, "estimate": r.estimate,
                  "ci_low": r.ci_low, "ci_high": r.ci_high, "detectable": r.detectable,
                  "n": r.n_seeds, "controls": "n/a"} for r in dose.itertuples()]
    return pd.DataFrame(rows)


def label_check(pts: pd.DataFrame, swaps: pd.DataFrame) -> dict:
    """How much of the source's labels the source explains: of the source points labelled
    reusable, how many would also be labelled so with the layer reset to theta_0 instead (the
    same cell, seed and layer, BN re-estimated). A label that the reset earns too says little
    about the source's kernels, so a threshold fitted on such labels learns mostly the layer."""
    reset = swaps[(swaps.donor == RESET) & (swaps.bn_reestimated == PRIMARY_BN)]
    reset = reset.set_index([*FACTORS, "layer"]).reuse_score.rename("reset_score")
    src = pts[pts.donor == "source"].join(reset, on=[*FACTORS, "layer"])
    reusable = src[src.reusable]
    return {"source_points": len(src), "reusable": len(reusable),
            "reusable_when_reset_too": int((reusable.reset_score >= REUSABLE).sum())}


def label_text(check: dict) -> str:
    """:func:`label_check` as one Markdown line."""
    share = check["reusable_when_reset_too"] / check["reusable"] if check["reusable"] else float("nan")
    return (f"- Labels: {check['reusable']} of {check['source_points']} source points are labelled reusable, "
            f"and {check['reusable_when_reset_too']} of those ({share:.0%}) would be with the layer reset to "
            "theta_0 instead" + (": most labels mark layers that survive an untrained kernel, not what the "
                                 "source's kernels add." if share > 0.5 else "."))
