"""E4, small-data transfer: does the two-condition rule pay off? (PROTOCOL section 5)

Target training on n_T samples (fractions of the profile's target training set), with
four strategies, each fine-tuning all parameters after its initialisation:

- ``scratch``: theta_0;
- ``reuse_all``: every conv kernel from theta_S;
- ``first_k``: the first k conv layers from theta_S, k from E2's rule on the *other* pairs;
- ``rule``: the paper's two conditions, decided without the held-out pair's full data:
  (a) the network is reusable by E1's rule on the other pairs, and (b) per layer, the
  RMSE between theta_S and the scratch model trained on the same n_T samples is below a
  threshold fit (E3's method) on the other pairs' layers at the same fraction of their
  target training set. The RMSE scale depends on how far a target model trained, so the
  threshold is fit on points of the same data size rather than on E3's full-data points.

:func:`run` returns one row per condition x n_T x strategy (scored on the target test
split) and the decisions behind each rule; :func:`paired_tests` compares strategies
seed by seed; :func:`verdict_text` states whether the success condition holds.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..config import Profile
from ..criteria import kernel_rmse
from ..selection import CRITERIA, conv_layers, kernel_keys, select_for_target, small_spec
from ..stats_tests import fit_threshold, paired_test
from ..train import Runner, RunSpec
from . import layer_selection as e2
from .common import Evaluator
from .network_reusability import verdicts

STRATEGIES = ("scratch", "reuse_all", "first_k", "rule")
# conditions and sizes per profile (the notebook's None parameters take these)
E4_SCALE = {
    "smoke": {"architectures": ("unet",), "tasks": ("autoencoder",), "fractions": (0.05, 1.0),
              "min_steps": 10},
    # 12 conditions x 4 sizes x up to 4 strategies, ~6 minutes on 2 CPU cores
    "quick": {"architectures": ("unet", "pspnet"), "tasks": ("segmentation",),
              "fractions": (0.01, 0.05, 0.2, 1.0), "min_steps": 40},
    "paper": {"architectures": ("unet", "pspnet", "plain"), "tasks": ("segmentation", "autoencoder"),
              "fractions": (0.01, 0.05, 0.2, 1.0), "min_steps": 100},
}
COMPARISONS = (("rule", "scratch"), ("rule", "reuse_all"), ("reuse_all", "scratch"),
               ("first_k", "scratch"))


def rule_spec(runner: Runner, source: RunSpec, small_target: RunSpec, *, threshold: float,
              use_relative: bool, network_reusable: bool) -> tuple[RunSpec, list[str]]:
    """The rule strategy's run: ``small_target`` with the selected layers' kernels from
    ``source`` (``small_target`` itself when none is selected), and those layers.

    Everything the rule reads about the target is ``small_target``'s training samples
    (through :func:`select_for_target`): never the full target set, never test data.
    """
    _, layers = select_for_target(runner, source, small_target, threshold=threshold,
                                  use_relative=use_relative, network_reusable=network_reusable)
    if not layers:
        return small_target, []
    keys = kernel_keys(runner.train_many([source])[0].state, layers)
    return small_target.replace(init_from=source, init_keys=tuple(keys)), layers


def fit_rule(points: pd.DataFrame) -> dict:
    """Criterion and threshold for the rule from other pairs' points (E3's method).

    ``points``: rows with ``rmse``, ``rel_rmse`` and ``reusable``. Both criteria are fit by
    balanced accuracy; the better one is kept. When the points hold one class only there
    is nothing to separate: threshold inf (reuse every layer) if all are reusable, 0 (only
    an identical kernel passes) if none is, or if there are no labelled points at all.
    """
    labels = points.reusable.to_numpy(bool)
    if len(labels) == 0:  # no labelled layer elsewhere (every model at chance): no evidence
        return {"criterion": "rmse", "threshold": 0.0, "fit_accuracy": math.nan}
    if labels.all() or not labels.any():
        return {"criterion": "rel_rmse", "threshold": math.inf if labels.all() else 0.0,
                "fit_accuracy": math.nan}
    fits = {c: fit_threshold(points[c], labels) for c in CRITERIA}
    best = max(CRITERIA, key=lambda c: fits[c][1])
    return {"criterion": best, "threshold": fits[best][0], "fit_accuracy": fits[best][1]}


def run(runner: Runner, profile: Profile, architectures=("unet", "pspnet"), tasks=("segmentation",),
        pairs=("fashion-split", "fashion-to-digits"), fractions=(0.01, 0.05, 0.2, 1.0),
        reuse_threshold: float = 0.8, min_steps: int = 40, shift: float = 0.5
        ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """All E4 measurements and the rule's decisions.

    Returns (results: architecture, task, pair, seed, n_T, fraction, strategy, metric,
    value, n_reused; decisions: architecture, task, pair, seed, n_T, network_reusable,
    criterion, threshold, fit_accuracy, k, rule_layers). ``reuse_threshold`` is the
    reuse score a layer (E2) or network (E1) must keep to count as reusable.
    """
    if len(set(pairs)) < 2:
        raise ValueError(f"pairs={list(pairs)!r}; E4 needs >= 2 pairs: each pair's rule is "
                         "fit on the other pairs")
    if not fractions or not all(0 < f <= 1 for f in fractions):
        raise ValueError(f"fractions={fractions!r}; allowed: values in (0, 1]")
    conds = e2.conditions(profile, architectures, tasks, pairs, shift)
    runs = e2.trained(runner, profile, conds)
    # what each pair teaches the others, from its full-data runs (never used on itself)
    swaps = e2.swap_scores(runner, profile, architectures, tasks, pairs, (False,), shift)
    all_conv = _all_conv(runner, profile, conds, runs)
    # small scratch runs: the rule's only view of the target
    small = {(i, f): small_spec(r["target"].spec, max(2, round(f * r["target"].spec.n_train)), min_steps)
             for i, r in enumerate(runs) for f in fractions}
    small_runs = dict(zip(small, runner.train_many(list(small.values()))))
    points = _small_points(conds, runs, small_runs, swaps, reuse_threshold)

    plans, decisions, fits = [], [], {}
    for (i, f), scratch in small.items():
        c, r = conds[i], runs[i]
        source = r["source"].spec
        reusable = bool(verdicts(_others(all_conv, c), reuse_threshold).reusable.all())
        k = int(e2.first_k(e2.select(_others(swaps, c), reuse_threshold)).k.iloc[0])
        if (c.pair, f) not in fits:  # pooled over architectures and tasks, as in E3
            fits[c.pair, f] = fit_rule(points[(points.pair != c.pair) & (points.fraction == f)])
        fit = fits[c.pair, f]
        rule, layers = rule_spec(runner, source, scratch, threshold=fit["threshold"],
                                 use_relative=fit["criterion"] == "rel_rmse", network_reusable=reusable)
        all_layers = conv_layers(r["target"].state)
        strategies = {"scratch": (scratch, []), "reuse_all": _init(scratch, source, r, all_layers),
                      "first_k": _init(scratch, source, r, all_layers[:k]), "rule": (rule, layers)}
        factors = {**c.factors(), "n_T": scratch.n_train, "fraction": f}
        decisions.append({**factors, "network_reusable": reusable, **fit, "k": k,
                          "n_rule_layers": len(layers), "rule_layers": ", ".join(layers)})
        plans.append((i, factors, strategies))
    flat = {s.key: s for _, _, st in plans for s, _ in st.values()}
    done = dict(zip(flat, runner.train_many(list(flat.values()))))
    rows, evaluators = [], {}
    for i, factors, strategies in plans:
        if i not in evaluators:
            evaluators[i] = Evaluator(runner, profile, conds[i], runs[i]["target"])
        ev = evaluators[i]
        for name, (spec, layers) in strategies.items():
            rows.append({**factors, "strategy": name, "metric": ev.metric,
                         "value": ev.score(done[spec.key].state), "n_reused": len(layers)})
    return pd.DataFrame(rows), pd.DataFrame(decisions)


def _others(frame: pd.DataFrame, c) -> pd.DataFrame:
    """Rows of the same architecture and task from every pair but ``c``'s."""
    return frame[(frame.pair != c.pair) & (frame.architecture == c.architecture) & (frame.task == c.task)]


def _init(scratch: RunSpec, source: RunSpec, runs: dict, layers: list[str]) -> tuple[RunSpec, list[str]]:
    if not layers:
        return scratch, []
    keys = tuple(kernel_keys(runs["target"].state, layers))
    return scratch.replace(init_from=source, init_keys=keys), layers


def _all_conv(runner: Runner, profile: Profile, conds, runs) -> pd.DataFrame:
    """E1's all-conv swap score per condition, in E1's frame layout (for its verdict rule)."""
    rows = []
    for c, r in zip(conds, runs):
        ev = Evaluator(runner, profile, c, r["target"])
        keys = kernel_keys(r["target"].state, ev.layers)
        rows.append({**ev.swap_row(r["source"].state, keys), "measure": "all_conv", "init": "shared",
                     "bn_reestimated": False})
    return pd.DataFrame(rows)


def _small_points(conds, runs, small_runs, swaps, reuse_threshold) -> pd.DataFrame:
    """Per condition x fraction x layer: RMSE(theta_S, small scratch model) and whether the
    layer is reusable by its full-data single-layer swap score (used for other pairs only)."""
    labels = swaps.set_index([*e2.FACTORS, "layer"]).reuse_score
    frames = []
    for (i, f), run_ in small_runs.items():
        c = conds[i]
        layers = conv_layers(run_.state)
        d = kernel_rmse(runs[i]["source"].state, run_.state, layers)
        d["reuse_score"] = [labels.get((*c.factors().values(), name), np.nan) for name in layers]
        frames.append(d.assign(**c.factors(), fraction=f))
    points = pd.concat(frames, ignore_index=True)
    points = points[np.isfinite(points.reuse_score)].copy()
    points["reusable"] = points.reuse_score >= reuse_threshold
    return points


def paired_tests(results: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Seed-matched tests per task x n_T x comparison (a vs b), pairs matched on
    architecture, pair and seed; ``better`` when mean(a - b) > 0 and paired t p < alpha."""
    rows = []
    for (task, fraction), g in results.groupby(["task", "fraction"], sort=True):
        wide = g.pivot_table(index=["architecture", "pair", "seed"], columns="strategy", values="value")
        for a, b in COMPARISONS:
            if a in wide and b in wide:
                t = paired_test(wide[a], wide[b])
                rows.append({"task": task, "fraction": fraction, "n_T": int(g.n_T.median()),
                             "comparison": f"{a} vs {b}", **t,
                             "better": bool(t["mean_diff"] > 0 and t["p_t"] < alpha)})
    return pd.DataFrame(rows)


def verdict_text(tests: pd.DataFrame, decisions: pd.DataFrame, alpha: float = 0.05) -> str:
    """Whether reuse chosen by the rule "significantly improves" on scratch (the paper's
    success condition), per task, and how the rule compares with reusing every layer.

    Where the rule reused no layer at all for a task, the rule *is* scratch and the claim
    is untested there ("not tested"), which is different from "does not hold".
    """
    lines = []
    for task, g in tests.groupby("task", sort=False):
        vs_scratch = g[g.comparison == "rule vs scratch"]
        wins = vs_scratch[vs_scratch.better]
        sizes = ", ".join(str(n) for n in wins.n_T) or "none"
        d = decisions[decisions.task == task]
        used = int((d.n_rule_layers > 0).sum())
        state = ("is not tested (the rule reused no layer in any cell)" if used == 0
                 else "holds at every n_T" if len(wins) == len(vs_scratch)
                 else "does not hold at any n_T" if wins.empty else "holds only at some n_T")
        lines.append(f"- {task}: the rule reused at least one layer in {used} of {len(d)} cells "
                     f"(condition (a) passed in {int(d.network_reusable.sum())}).")
        lines.append(f"- {task}: the success condition (rule significantly better than scratch, "
                     f"paired t p < {alpha}) {state}; n_T where it holds: {sizes}.")
        for r in vs_scratch.itertuples():
            lines.append(f"  - n_T = {r.n_T}: rule - scratch = {r.mean_diff:.3g} "
                         f"[{r.ci_low:.3g}, {r.ci_high:.3g}], p_t = {r.p_t:.3g}, "
                         f"p_wilcoxon = {r.p_wilcoxon:.3g}, d_z = {r.cohen_dz:.2f}.")
        vs_all = g[g.comparison == "rule vs reuse_all"]
        worse = vs_all[(vs_all.mean_diff < 0) & (vs_all.p_t < alpha)]
        lines.append(f"  - against reusing every conv layer: the rule is significantly better at "
                     f"{', '.join(str(n) for n in vs_all[vs_all.better].n_T) or 'no'} n_T and "
                     f"significantly worse at {', '.join(str(n) for n in worse.n_T) or 'no'} n_T.")
    return "\n".join(lines)
