"""E2, layer selection (the paper's second judgment; docs/protocol.md, sections 5-6).

Per architecture x task x pair x seed and conv layer l:

- :func:`swap_scores` (M1): the reuse score of swapping layer l's kernels from each donor
  (source, same-domain twin, different-initialisation control) into theta_T, and of resetting
  them to theta_T's own initialisation theta_0 (the baseline a donor must beat), with the
  target's BN statistics kept and re-estimated on target training data;
- :func:`init_gains` (M2): train on n_T target samples from theta_0 with layer l alone,
  or layers 1..l, taken from theta_S, frozen or fine-tuned; gain g = m(reuse) - m(scratch),
  scratch = the same samples, seed and steps from theta_0.

:func:`select` judges each layer (the rule in :data:`RULE`, gated by the layer's own
controls) and :func:`yosinski_checks` confronts both measurements with Yosinski et al.
2014, all three-valued. Runs come from :func:`common.trained`, so E1's trained models are
loaded from the cache.
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd

from reuse.toolkit.criteria import conv_layers, kernel_keys
from reuse.toolkit.stats import within_spearman
from reuse.toolkit.verdicts import LITTLE_LOSS, REUSABLE, cluster_verdict, conjunction, mean_verdict

from ..config import Grid, Profile
from ..training.train import Runner
from .common import (
    CONDITION,
    CONDITION_DONORS,
    FACTORS,
    RESET,
    Evaluator,
    cell_table,
    conditions,
    controlled_verdicts,
    minus_reset,
    per_seed,
    small_spec,
    swappable,
    trained,
    usable_only,
)

# a priori order of domain distance (a choice, not measured): fashion-split keeps the input
# statistics, digits-to-fashion's source has other images altogether
DISTANCE_ORDER = ("fashion-split", "digits-to-fashion")
PRIMARY_BN = True  # layers are judged after re-estimating BN statistics, as networks are in E1
RULE = (f"layer l's kernels from the donor swapped into theta_T alone, BN statistics "
        f"re-estimated on target training data. Reusable from the source when both hold: the 95% "
        f"CI over seeds of the mean reuse score lies above {REUSABLE}, and the 95% CI of the "
        f"per-seed difference source minus theta_0 reset (the layer set back to theta_T's untrained "
        f"initialisation, same BN handling) lies above 0: a layer that keeps the margin untrained "
        f"shows nothing about the source's kernels. Refuted when the score's CI lies below "
        f"{REUSABLE} or the difference's below 0, else undecided. A layer's verdict counts only "
        f"where its own controls behave: the twin's layer holds and the different-initialisation "
        f"control's layer is refuted.")


def swap_scores(runner: Runner, profile: Profile, grid: Grid | None = None,
                reestimate=(False, True)) -> tuple[pd.DataFrame, pd.DataFrame]:
    """M1 per conv layer: (swaps, cells). Swaps: one row per condition x donor x layer x BN
    re-estimation (donor :data:`RESET`: the layer reset to theta_0, the baseline a donor must
    beat) with architecture, task, pair, seed, donor, layer, index, n_layers,
    depth (index / (n_layers - 1): 0 = first conv, 1 = last), bn_reestimated, metric,
    value, target_value, chance, delta, reuse_score."""
    grid = profile.grid if grid is None else grid
    conds = conditions(grid, profile.seeds)
    rows, evaluators = [], []
    for i, (c, runs) in enumerate(zip(conds, trained(runner, profile, conds,
                                                      ("source", "target", *CONDITION_DONORS[1:])))):
        ev = Evaluator(runner, profile, c, runs["target"])
        evaluators.append(ev)
        n = len(ev.swap_layers)
        key_sets = [kernel_keys(runs["target"].state, [layer]) for layer in ev.swap_layers]
        for donor in (*CONDITION_DONORS, RESET):
            for reest in reestimate:
                scored = (ev.reset_rows(key_sets, reest) if donor == RESET
                          else ev.swap_rows(runs[donor], key_sets, reest))
                rows += [{**row, "donor": donor, "layer": layer, "index": index, "n_layers": n,
                          "depth": index / max(n - 1, 1), "bn_reestimated": reest}
                         for index, (layer, row) in enumerate(zip(ev.swap_layers, scored))]
        if runner.progress:
            print(f"  swapped {i + 1}/{len(conds)}", file=sys.stderr, flush=True)
    return pd.DataFrame(rows), cell_table(evaluators)


def layer_points(n_layers: int, points: int | None) -> list[int]:
    """Indices of the layers M2 is measured at: all, or ``points`` spread evenly from the
    first to the last conv layer (M2 trains a model per point, so quick runs use a few)."""
    if points is None or points >= n_layers:
        return list(range(n_layers))
    if points < 1:
        raise ValueError(f"points={points}; allowed: None or an integer >= 1")
    return sorted({int(round(v)) for v in np.linspace(0, n_layers - 1, points)})


def init_gains(runner: Runner, profile: Profile, grid: Grid | None = None,
               modes=("frozen", "finetuned")) -> pd.DataFrame:
    """M2: gain of initialising from theta_S, one row per condition x layer x set x mode.

    ``profile.e2_fraction`` of the target training set is used (n_T); the layers are
    :func:`layer_points` of ``profile.e2_points``; sets are 'single' (layer l) and 'prefix'
    (layers 1..l). Columns: architecture, task, pair, seed, n_T, layer, index, n_layers,
    depth, set, mode, metric, value, scratch_value, gain.
    """
    grid = profile.e2_grid if grid is None else grid
    conds = conditions(grid, profile.seeds)
    plans = []  # (condition, runs, scratch spec, [(row factors, spec)])
    for c, runs in zip(conds, trained(runner, profile, conds, ("source", "target"))):
        source, target = runs["source"].spec, runs["target"].spec
        n_t = max(2, round(profile.e2_fraction * target.n_train))
        scratch = small_spec(target, n_t, profile.small)
        layers = swappable(conv_layers(runs["target"].state))
        todo = []
        for index in layer_points(len(layers), profile.e2_points):
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
        base = ev.score_run(done[scratch.key])
        scores = {}
        for factors, spec in todo:
            if spec.key not in scores:
                scores[spec.key] = ev.score_run(done[spec.key])
            rows.append({**c.factors(), **factors, "metric": ev.metric, "value": scores[spec.key],
                         "scratch_value": base, "gain": scores[spec.key] - base})
    return pd.DataFrame(rows)


def layer_verdicts(swaps: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """Per architecture x task x pair x layer: each donor's mean single-layer reuse score
    (BN re-estimated) over usable seeds with its CI and verdict, the theta_0 reset's score and
    the source minus the reset (:func:`minus_reset`); ``verdict`` is :data:`RULE`'s (the source
    above the margin and above the reset) where the layer's controls behave, else 'undecided';
    ``selected`` when it holds."""
    if RESET not in set(swaps.donor):
        raise ValueError(f"swaps have no {RESET!r} rows (donors {sorted(set(swaps.donor))}): J2 needs the "
                         "reset baseline; compute them with swap_scores")
    d = usable_only(swaps, cells)
    out = controlled_verdicts(d[d.bn_reestimated == PRIMARY_BN], [*CONDITION, "index", "layer"], REUSABLE)
    out["selected"] = out.verdict == "holds"
    return out


def selection_table(selected: pd.DataFrame) -> pd.DataFrame:
    """One row per architecture x task x pair: layers, how many are selected, refuted and
    undecided, how many beat their theta_0 reset, how many pass each control, and the
    selected layers."""
    rows = []
    for key, g in selected.groupby(CONDITION, sort=False):
        g = g.sort_values("index")
        rows.append({**dict(zip(CONDITION, key)), "n_layers": len(g),
                     "holds": int((g.verdict == "holds").sum()),
                     "refuted": int((g.verdict == "refuted").sum()),
                     "undecided": int((g.verdict == "undecided").sum()),
                     "above_reset": int((g.minus_reset_verdict == "holds").sum()),
                     "twin_holds": int((g.twin_verdict == "holds").sum()),
                     "different_init_refuted": int((g.different_init_verdict == "refuted").sum()),
                     "selected_layers": ", ".join(g[g.selected].layer) or "none"})
    return pd.DataFrame(rows, columns=[*CONDITION, "n_layers", "holds", "refuted", "undecided",
                                       "above_reset", "twin_holds", "different_init_refuted",
                                       "selected_layers"])


def _depth_rho(frame: pd.DataFrame, column: str = "reuse_score") -> float:
    """Mean over conditions of Spearman's rho(depth, ``column``) within the condition."""
    return within_spearman(frame, CONDITION, "depth", column)


def minus_reset_points(swaps: pd.DataFrame) -> pd.DataFrame:
    """Per condition x seed x layer: the source's single-layer reuse score minus that of the
    same layer reset to theta_0 (:data:`RESET`), paired by seed (``minus_reset``), with the
    layer's ``index`` and ``depth``: what the source's kernels add over untrained ones, Y2's
    points. ``swaps``: rows of one BN variant; empty without reset rows."""
    keys = [*FACTORS, "index", "depth"]
    score = {d: swaps[swaps.donor == d].groupby(keys, sort=False).reuse_score.mean()
             for d in ("source", RESET)}
    diff = (score["source"] - score[RESET]).dropna().rename("minus_reset")
    return diff.reset_index()


def yosinski_checks(swaps: pd.DataFrame, cells: pd.DataFrame, gains: pd.DataFrame | None) -> pd.DataFrame:
    """Yosinski et al. 2014's observations, three-valued, from the source's single-layer
    swaps (BN re-estimated) of usable cells; seeds are the replicates.

    - Y1 first-layer kernels are general: r(first layer) above LITTLE_LOSS and above the
      first layer reset to theta_0 (each seed's value averaged over conditions; Student-t CIs
      over seeds; the ``minus_reset_*`` columns; holds when both hold, refuted when either is).
    - Y2 transfer costs more with depth, as a claim about the source's kernels: what a
      source layer adds over the same layer reset to theta_0 shrinks with depth. Spearman
      rho(depth, r(source) - r(reset)) within each condition (the difference paired by seed
      and layer, :func:`minus_reset_points`), averaged over conditions, below 0 (leave-one-
      seed-out CI). Beside it, exploratory: the same rho of the source's r alone (``raw_*``,
      Y2's former rule) and of the reset's r alone (``reset_estimate``, ``reset_ci_*``): an
      untrained layer's score falls with depth too, so the raw slope alone cannot show that
      the source's kernels are what grows worse.
    - Y3 costs grow with domain distance: per seed, the mean r over layers on
      digits-to-fashion minus fashion-split (matched on architecture and task) below 0.
    - Y4 fine-tuning recovers what freezing loses: M2 gain(fine-tuned) - gain(frozen)
      above 0 (per seed, averaged over conditions, layers and sets).
    """
    judged = usable_only(swaps, cells)
    judged = judged[judged.bn_reestimated == PRIMARY_BN]
    first, d = judged[judged["index"] == 0], judged[judged.donor == "source"]
    y1 = mean_verdict(per_seed(first[first.donor == "source"], "reuse_score", []).reuse_score, LITTLE_LOSS)
    y1.update(minus_reset(first))
    y1.update({f"raw_{k}": y1[k] for k in ("estimate", "ci_low", "ci_high", "verdict")})
    y1["verdict"] = conjunction(y1["verdict"], y1["minus_reset_verdict"])
    rows = [("Y1", "first-layer kernels are general (transfer with little loss)",
             f"r(first layer) above {LITTLE_LOSS} and above the first layer reset to theta_0", y1)]
    y2 = cluster_verdict(minus_reset_points(judged), lambda f: _depth_rho(f, "minus_reset"), 0.0, "below",
                         correlation=True)
    y2["n"] = y2["n_seeds"]
    raw = cluster_verdict(d, _depth_rho, 0.0, "below")
    reset = cluster_verdict(judged[judged.donor == RESET], _depth_rho, 0.0, "below")
    y2.update({f"raw_{k}": raw[k] for k in ("estimate", "ci_low", "ci_high", "verdict")},
              reset_estimate=reset["estimate"], reset_ci_low=reset["ci_low"], reset_ci_high=reset["ci_high"])
    rows.append(("Y2", "what a source layer adds over its theta_0 reset shrinks with depth (transfer "
                       "costs more the deeper the layer)",
                 "mean within-condition Spearman rho(depth, r(source) - r(theta_0 reset)), the difference "
                 "paired by seed and layer, below 0; the source's rho(depth, r) alone and the reset's are "
                 "reported beside it and decide nothing (an untrained layer's r falls with depth too)", y2))
    if set(DISTANCE_ORDER) <= set(d.pair):
        per = d.groupby(["architecture", "task", "pair", "seed"]).reuse_score.mean().unstack("pair")
        diff = (per[DISTANCE_ORDER[1]] - per[DISTANCE_ORDER[0]]).dropna().rename("d").reset_index()
        rows.append(("Y3", "transfer costs more for a more distant domain",
                     f"mean r({DISTANCE_ORDER[1]}) - r({DISTANCE_ORDER[0]}) below 0",
                     mean_verdict(per_seed(diff, "d", []).d, 0.0, "below")))
    if gains is not None and len(gains) and {"frozen", "finetuned"} <= set(gains["mode"]):
        wide = gains.pivot_table(index=[*FACTORS, "layer", "set"], columns="mode", values="gain")
        wide = (wide["finetuned"] - wide["frozen"]).rename("d").reset_index()
        rows.append(("Y4", "fine-tuning recovers what freezing loses",
                     "gain(fine-tuned) - gain(frozen) above 0",
                     mean_verdict(per_seed(wide, "d", []).d, 0.0, "above")))
    keys = ("estimate", "ci_low", "ci_high", "n", "verdict", "detectable", "raw_estimate", "raw_ci_low",
            "raw_ci_high", "raw_verdict", "reset_estimate", "reset_ci_low", "reset_ci_high",
            "minus_reset_estimate", "minus_reset_ci_low", "minus_reset_ci_high", "minus_reset_verdict")
    return pd.DataFrame([{"check": c, "statement": st, "rule": rule, **{k: v.get(k, np.nan) for k in keys}}
                         for c, st, rule, v in rows])


def verdict_text(table: pd.DataFrame, checks: pd.DataFrame) -> str:
    """The notebook's computed findings, one Markdown line each."""
    lines = [f"- J2 {r.architecture}/{r.task}/{r.pair}: {r.holds} of {r.n_layers} layers reusable, "
             f"{r.refuted} not, {r.undecided} undecided ({r.above_reset} beat their theta_0 reset; "
             f"controls: the twin holds in {r.twin_holds}, "
             f"the different-init control is refuted in {r.different_init_refuted}); selected: "
             f"{r.selected_layers}." for r in table.itertuples()]
    lines += [f"- {r.check} ({r.statement}; {r.rule}): **{r.verdict}** ({r.estimate:.3g} "
              f"[{r.ci_low:.3g}, {r.ci_high:.3g}], n = {int(r.n)} seeds, smallest detectable effect "
              f"{r.detectable:.2g})" + _beside(r) + "." for r in checks.itertuples()]
    return "\n".join(lines)


def _beside(r) -> str:
    """What a Yosinski check's line reports beside its verdict: the source minus the theta_0
    reset (Y1), or the statistic of the source alone and of the reset alone (Y2)."""
    if isinstance(r.minus_reset_verdict, str):
        return (f"; minus the theta_0 reset {r.minus_reset_estimate:+.3g} [{r.minus_reset_ci_low:+.3g}, "
                f"{r.minus_reset_ci_high:+.3g}]: {r.minus_reset_verdict}")
    if isinstance(r.raw_verdict, str):
        return (f"; exploratory, the same statistic of the source's r alone {r.raw_estimate:+.3g} "
                f"[{r.raw_ci_low:+.3g}, {r.raw_ci_high:+.3g}] ({r.raw_verdict} on its own) and of the "
                f"theta_0 reset's r alone {r.reset_estimate:+.3g} [{r.reset_ci_low:+.3g}, "
                f"{r.reset_ci_high:+.3g}]")
    return ""


def findings(selected: pd.DataFrame) -> str:
    """What the layer verdicts mean, computed from them."""
    if selected.empty:
        return "- No condition has a usable target model: nothing is judged."
    n = len(selected)
    lines = [f"- Controls per layer: the twin's layer holds in {int((selected.twin_verdict == 'holds').sum())} "
             f"of {n} layers and the different-initialisation control's layer is refuted in "
             f"{int((selected.different_init_verdict == 'refuted').sum())}; "
             f"{int((selected.controls == 'passed').sum())} layers can be judged."]
    ok = selected[selected.controls == "passed"]
    if len(ok):
        margin_only = ok[(ok.source_verdict == "holds") & (ok.minus_reset_verdict != "holds")]
        lines.append(f"- Of those, {int((ok.verdict == 'holds').sum())} are reusable from the source "
                     f"(above the margin and above the theta_0 reset), "
                     f"{int((ok.verdict == 'refuted').sum())} are not and "
                     f"{int((ok.verdict == 'undecided').sum())} are undecided; {len(margin_only)} keep the "
                     f"margin but do not beat the layer reset to theta_0, so the margin alone does not show "
                     f"that the source's kernels matter there.")
        by_depth = ok.assign(half=np.where(ok["index"] < ok.groupby(CONDITION)["index"].transform("max") / 2,
                                           "first half", "second half"))
        shares = by_depth.groupby("half").selected.mean()
        lines.append("- Share of judged layers that are reusable: "
                     + "; ".join(f"{h} {v:.0%}" for h, v in shares.items()) + ".")
    failed = selected[selected.controls != "passed"]
    if len(failed):
        negative = int(failed.controls.str.contains("negative").sum())
        positive = int(failed.controls.str.contains("positive").sum())
        lines.append(f"- Of the {len(failed)} layers whose controls fail, {negative} fail the negative "
                     f"control (a kernel from another initialisation keeps the margin once BN statistics "
                     f"are re-estimated: the swap cannot show that the source's kernel matters there) and "
                     f"{positive} the positive one (even the twin's kernel breaks the target).")
    return "\n".join(lines)


def records(selected: pd.DataFrame, checks: pd.DataFrame) -> pd.DataFrame:
    """Every verdict of the notebook (each layer's J2, Y1-Y4), one row each."""
    rows = [{"judgment": f"J2 {r.architecture}/{r.task}/{r.pair} layer {int(r.index) + 1} {r.layer}",
             "verdict": r.verdict, "estimate": r.source_estimate, "ci_low": r.source_ci_low,
             "ci_high": r.source_ci_high, "detectable": r.detectable, "n": r.n, "controls": r.controls}
            for r in selected.itertuples()]
    rows += [{"judgment": r.check, "verdict": r.verdict, "estimate": r.estimate, "ci_low": r.ci_low,
              "ci_high": r.ci_high, "detectable": r.detectable, "n": r.n, "controls": "n/a"}
             for r in checks.itertuples()]
    return pd.DataFrame(rows)
