"""E2, layer selection (the paper's second judgment, PROTOCOL section 5).

Per architecture x task x pair x seed and conv layer l:

- :func:`swap_scores` (M1): the reuse score of swapping layer l's kernels from theta_S
  into theta_T, with and without re-estimating BN statistics on target training data;
- :func:`init_gains` (M2): train on n_T target samples from theta_0 with layer l alone,
  or layers 1..l, taken from theta_S, frozen or fine-tuned; gain g = m(reuse) - m(scratch),
  scratch = the same samples, seed and steps from theta_0.

:func:`select` turns M1 into the selected set of layers (the same CI rule as E1), and
:func:`yosinski_checks` confronts both measurements with Yosinski et al. 2014.
Runs come from :func:`common.specs`, so E1's trained models are loaded from the cache.
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd

from ..config import Profile, check_choices
from ..data import PAIRS, TASKS
from ..models import ARCHITECTURES
from ..selection import conv_layers, kernel_keys, small_spec
from ..stats import summarise
from ..stats_tests import paired_test, spearman_ci
from ..train import Runner
from .common import Condition, Evaluator, specs

# a priori order of domain distance (choice, not measured): fashion-split keeps the input
# statistics, fashion-to-digits changes the images themselves
DISTANCE_ORDER = ("fashion-split", "fashion-to-digits")
FACTORS = ["architecture", "task", "pair", "seed"]

# M2 trains a model per (condition, layer set, mode): per profile, how much of it to do.
# The notebook's None parameters take these; smoke only walks the code path.
M2_SCALE = {
    "smoke": {"architectures": ("unet",), "tasks": ("autoencoder",), "points": 1,
              "fraction": 0.1, "min_steps": 10},
    # ~130 small runs of ~1.5 s on 2 CPU cores: 3 layer positions, segmentation only
    "quick": {"architectures": ("unet", "pspnet"), "tasks": ("segmentation",), "points": 3,
              "fraction": 0.1, "min_steps": 40},
    "paper": {"architectures": ARCHITECTURES, "tasks": TASKS, "points": None,
              "fraction": 0.05, "min_steps": 100},
}


def settings(scale: dict[str, dict], profile: Profile, **overrides) -> dict:
    """The profile's entry of ``scale`` with every override that is not None applied."""
    if profile.name not in scale:
        raise ValueError(f"profile={profile.name!r} has no defaults here; known: {', '.join(scale)}")
    unknown = set(overrides) - set(scale[profile.name])
    if unknown:
        raise ValueError(f"unknown settings {sorted(unknown)}; allowed: {', '.join(scale[profile.name])}")
    return {**scale[profile.name], **{k: v for k, v in overrides.items() if v is not None}}


def conditions(profile: Profile, architectures, tasks, pairs, shift: float = 0.5) -> list[Condition]:
    """Every architecture x task x pair x seed cell (E1's cells: same shift convention)."""
    architectures = check_choices("architectures", architectures, ARCHITECTURES)
    tasks = check_choices("tasks", tasks, TASKS)
    pairs = check_choices("pairs", pairs, PAIRS)
    return [Condition(a, t, p, s, shift if p == "fashion-shift" else 0.0)
            for a in architectures for t in tasks for p in pairs for s in profile.seeds]


def trained(runner: Runner, profile: Profile, conds: list[Condition]) -> list[dict]:
    """The source, target and target_diff runs of each condition (one train_many call)."""
    sp = [specs(runner, profile, c) for c in conds]
    flat = [s for d in sp for s in d.values()]
    runs = dict(zip([s.key for s in flat], runner.train_many(flat)))
    return [{k: runs[s.key] for k, s in d.items()} for d in sp]


def swap_scores(runner: Runner, profile: Profile, architectures=ARCHITECTURES, tasks=TASKS,
                pairs=("fashion-split", "fashion-to-digits"), reestimate=(False, True),
                shift: float = 0.5, bn_samples: int | None = 256) -> pd.DataFrame:
    """M1 per conv layer: one row per condition x layer x BN re-estimation.

    BN statistics are re-estimated on the first ``bn_samples`` target training samples
    (None: all of them, as E1 does): one pass per swapped layer makes the full set the
    dominant cost of this notebook, and 256 samples pin the running means down well.

    Columns: architecture, task, pair, seed, layer, index, n_layers, depth (index /
    (n_layers - 1), 0 = first conv, 1 = last), bn_reestimated, metric, value,
    target_value, chance, reuse_score.
    """
    conds = conditions(profile, architectures, tasks, pairs, shift)
    rows = []
    for i, (c, runs) in enumerate(zip(conds, trained(runner, profile, conds))):
        ev = Evaluator(runner, profile, c, runs["target"], bn_samples)
        n = len(ev.layers)
        key_sets = [kernel_keys(runs["target"].state, [layer]) for layer in ev.layers]
        for reest in reestimate:
            scored = (ev.swap_rows(runs["source"].state, key_sets) if not reest else
                      [ev.swap_row(runs["source"].state, keys, True) for keys in key_sets])
            rows += [{**row, "layer": layer, "index": index, "n_layers": n,
                      "depth": index / max(n - 1, 1), "bn_reestimated": reest}
                     for index, (layer, row) in enumerate(zip(ev.layers, scored))]
        if runner.progress:
            print(f"  swapped {i + 1}/{len(conds)}", file=sys.stderr, flush=True)
    return pd.DataFrame(rows)


def layer_points(n_layers: int, points: int | None) -> list[int]:
    """Indices of the layers M2 is measured at: all, or ``points`` spread evenly from the
    first to the last conv layer (M2 trains a model per point, so quick runs use a few)."""
    if points is None or points >= n_layers:
        return list(range(n_layers))
    if points < 1:
        raise ValueError(f"points={points}; allowed: None or an integer >= 1")
    return sorted({int(round(v)) for v in np.linspace(0, n_layers - 1, points)})


def init_gains(runner: Runner, profile: Profile, architectures=("unet", "pspnet"),
               tasks=("segmentation",), pairs=("fashion-split", "fashion-to-digits"),
               fraction: float = 0.1, points: int | None = 3, modes=("frozen", "finetuned"),
               min_steps: int = 40, shift: float = 0.5) -> pd.DataFrame:
    """M2: gain of initialising from theta_S, one row per condition x layer x set x mode.

    ``fraction`` of the profile's target training set is used (n_T); ``points`` picks
    the layers l (see :func:`layer_points`); sets are 'single' (layer l) and 'prefix'
    (layers 1..l). Columns: architecture, task, pair, seed, n_T, layer, index, n_layers,
    depth, set, mode, metric, value, scratch_value, gain.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction={fraction}; allowed: 0 < fraction <= 1")
    modes = check_choices("modes", modes, ("frozen", "finetuned"))
    conds = conditions(profile, architectures, tasks, pairs, shift)
    plans = []  # (condition, runs, scratch spec, [(row factors, spec)])
    for c, runs in zip(conds, trained(runner, profile, conds)):
        source, target = runs["source"].spec, runs["target"].spec
        n_t = max(2, round(fraction * target.n_train))
        scratch = small_spec(target, n_t, min_steps)
        layers = conv_layers(runs["target"].state)
        todo = []
        for index in layer_points(len(layers), points):
            for kind, chosen in (("single", [layers[index]]), ("prefix", layers[:index + 1])):
                keys = tuple(kernel_keys(runs["target"].state, chosen))
                for mode in modes:
                    spec = scratch.replace(init_from=source, init_keys=keys,
                                           freeze=keys if mode == "frozen" else ())
                    todo.append(({"n_T": n_t, "layer": layers[index], "index": index,
                                  "n_layers": len(layers), "depth": index / max(len(layers) - 1, 1),
                                  "set": kind, "mode": mode}, spec))
        plans.append((c, runs, scratch, todo))
    flat = {s.key: s for _, _, scratch, todo in plans for s in [scratch, *(t[1] for t in todo)]}
    done = dict(zip(flat, runner.train_many(list(flat.values()))))
    rows = []
    for c, runs, scratch, todo in plans:
        ev = Evaluator(runner, profile, c, runs["target"])
        base = ev.score(done[scratch.key].state)
        scores = {}
        for factors, spec in todo:
            if spec.key not in scores:
                scores[spec.key] = ev.score(done[spec.key].state)
            rows.append({**c.factors(), **factors, "metric": ev.metric, "value": scores[spec.key],
                         "scratch_value": base, "gain": scores[spec.key] - base})
    return pd.DataFrame(rows)


def select(swaps: pd.DataFrame, threshold: float, bn_reestimated: bool = False) -> pd.DataFrame:
    """The selected layers: per architecture x task x pair x layer, mean single-layer reuse
    score over seeds with its 95% CI; ``reusable`` when the CI's lower end >= threshold
    (E1's rule, applied to one layer)."""
    d = swaps[swaps.bn_reestimated == bn_reestimated]
    s = summarise(d, ["architecture", "task", "pair", "index", "layer"])
    s["reusable"] = s.ci_low >= threshold
    return s


def selection_table(selected: pd.DataFrame) -> pd.DataFrame:
    """One row per architecture x task x pair: n_layers, n_reusable, the reusable layers,
    the first and last layer's mean score, and k (:func:`first_k`, over all pairs)."""
    rows = []
    for (arch, task, pair), g in selected.groupby(["architecture", "task", "pair"], sort=False):
        g = g.sort_values("index")
        rows.append({"architecture": arch, "task": task, "pair": pair, "n_layers": len(g),
                     "n_reusable": int(g.reusable.sum()),
                     "reusable_layers": ", ".join(g[g.reusable].layer) or "none",
                     "mean_r_first": g["mean"].iloc[0], "mean_r_last": g["mean"].iloc[-1]})
    return pd.DataFrame(rows).merge(first_k(selected), on=["architecture", "task"])


def first_k(selected: pd.DataFrame) -> pd.DataFrame:
    """k per architecture x task: the number of leading layers reusable in every pair of
    ``selected`` (the "reuse first k" strategy of E4)."""
    rows = []
    for (arch, task), g in selected.groupby(["architecture", "task"], sort=False):
        ok = g.groupby("index").reusable.all().sort_index()
        k = int(np.argmin(ok.to_numpy())) if not ok.all() else len(ok)
        rows.append({"architecture": arch, "task": task, "k": k})
    return pd.DataFrame(rows)


def yosinski_checks(swaps: pd.DataFrame, gains: pd.DataFrame | None, threshold: float,
                    alpha: float = 0.05) -> pd.DataFrame:
    """Yosinski et al. 2014's observations, each with a computed verdict.

    - Y1 first-layer kernels are general: the first conv layer's single-layer reuse
      score has a 95% CI lower end >= threshold (pooled over all cells and seeds).
    - Y2 transfer costs more with depth: Spearman rho of depth vs reuse score < 0
      with its bootstrap CI below 0.
    - Y3 costs grow with domain distance: the mean per-layer score is lower on
      fashion-to-digits than on fashion-split (paired by architecture, task, seed,
      layer; paired t p < alpha).
    - Y4 fine-tuning recovers the loss: M2 gain of fine-tuned > frozen (paired, p < alpha).
    """
    d = swaps[~swaps.bn_reestimated]
    first = summarise(d[d["index"] == 0].assign(g=0), ["g"]).iloc[0]
    rho = spearman_ci(d.depth, d.reuse_score)
    rows = [("Y1", "first-layer kernels are general (transfer with little loss)",
             f"CI lower end of r(first layer) >= {threshold}", first["mean"], first.ci_low,
             first.ci_high, np.nan, first.ci_low >= threshold),
            ("Y2", "transfer costs more the deeper the layer",
             "Spearman rho(depth, r) with bootstrap CI below 0", rho["rho"], rho["ci_low"],
             rho["ci_high"], rho["p"], rho["ci_high"] < 0)]
    if set(DISTANCE_ORDER) <= set(d.pair):
        wide = d.pivot_table(index=["architecture", "task", "seed", "layer"], columns="pair",
                             values="reuse_score").dropna(subset=list(DISTANCE_ORDER))
        t = paired_test(wide[DISTANCE_ORDER[1]], wide[DISTANCE_ORDER[0]])
        rows.append(("Y3", "transfer costs more for a more distant domain",
                     f"r({DISTANCE_ORDER[1]}) - r({DISTANCE_ORDER[0]}) < 0, paired t p < {alpha}",
                     t["mean_diff"], t["ci_low"], t["ci_high"], t["p_t"],
                     t["mean_diff"] < 0 and t["p_t"] < alpha))
    if gains is not None and len(gains) and {"frozen", "finetuned"} <= set(gains["mode"]):
        wide = gains.pivot_table(index=[*FACTORS, "layer", "set"], columns="mode", values="gain")
        t = paired_test(wide["finetuned"], wide["frozen"])
        rows.append(("Y4", "fine-tuning recovers what freezing loses",
                     f"gain(fine-tuned) - gain(frozen) > 0, paired t p < {alpha}",
                     t["mean_diff"], t["ci_low"], t["ci_high"], t["p_t"],
                     t["mean_diff"] > 0 and t["p_t"] < alpha))
    return pd.DataFrame([{"check": c, "statement": st, "rule": rule, "estimate": est,
                          "ci_low": lo, "ci_high": hi, "p": p,
                          "verdict": "holds" if ok else "does not hold"}
                         for c, st, rule, est, lo, hi, p, ok in rows])


def surprises(swaps: pd.DataFrame, selected: pd.DataFrame) -> list[str]:
    """Computed observations a reader would not expect from "early general, late specific":
    per architecture x task, the least reusable layer and any reusable layer deeper than
    a non-reusable one."""
    d = swaps[~swaps.bn_reestimated]
    lines = []
    means = d.groupby(["architecture", "task", "index", "layer"]).reuse_score.mean().dropna().reset_index()
    for (arch, task), g in means.groupby(["architecture", "task"], sort=False):
        worst = g.loc[g.reuse_score.idxmin()]
        n = int(g["index"].max()) + 1
        lines.append(f"{arch}/{task}: the least reusable single layer is {worst.layer} "
                     f"(layer {int(worst['index']) + 1} of {n}, mean r = {worst.reuse_score:.2f}).")
        sel = selected[(selected.architecture == arch) & (selected.task == task)]
        per = sel.groupby("index").reusable.all().sort_index()
        if (~per).any():
            deeper_ok = per[per.index > per[~per].index.min()]
            if deeper_ok.any():
                lines.append(f"{arch}/{task}: {int(deeper_ok.sum())} layer(s) deeper than the first "
                             "non-reusable one pass the rule again (not a monotone early/late split).")
    return lines


def checks_text(checks: pd.DataFrame) -> str:
    """The Yosinski comparison as sentences from the computed table."""
    return "\n".join(f"- {r.check} ({r.statement}): {r.verdict} (estimate {r.estimate:.3g}, "
                     f"95% CI [{r.ci_low:.3g}, {r.ci_high:.3g}]"
                     + (f", p = {r.p:.3g}" if np.isfinite(r.p) else "") + ")."
                     for r in checks.itertuples())
