"""E4, small-data transfer: the paper's headline as a test (docs/protocol.md, sections 5-6).

The abstract's headline: reuse succeeds when (a) the network is reusable and (b) the kernel
RMSE is small, and then reused parameters improve the target task. Regime: *fine-tuned*
(every strategy starts from theta_0 of the seed, takes the kernels of some conv layers from
theta_S, and fine-tunes everything on the same n_T target samples for the same steps). For
every rung of the source ladder (one target, sources near to far):

- ``scratch``: nothing reused;
- ``reuse_all``: every swappable conv layer;
- ``rule``: the paper's two conditions, strictly as stated, per source: (a) J1 holds for
  this source's own pair (judged on full-data models, before any small-data run, with its
  controls and the theta_0 reset); (b) a layer's kernel criterion between theta_S and the
  scratch model trained on the same n_T samples is under E3's threshold, fitted on the
  *other* rungs' points. Where (a) fails it reuses nothing and *is* scratch;
- ``rmse_only``: condition (b) alone (the layers the rule would take if (a) held);
- ``random``: random layer sets of the rule's size, where the rule takes some but not all;
- ``oracle``: the layers whose single-layer swap into the full-data theta_T keeps the reuse
  score above the margin (E2): it reads the full target data, so it is reported, never used.

The primary claims (:data:`HEADLINE`, named in docs/protocol.md before any result) are
judged per task and n_T by :func:`headline`; every other comparison is exploratory. The
rule's controls: applied with the same-domain twin as the source it should pick layers,
with the different-initialisation control none.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from reuse.toolkit.criteria import kernel_keys
from reuse.toolkit.selection import CRITERIA as RULE_CRITERIA
from reuse.toolkit.selection import select_layers
from reuse.toolkit.stats import fit_threshold
from reuse.toolkit.verdicts import REUSABLE, mean_verdict

from ..config import Grid, Profile
from ..train import Runner, RunSpec
from . import layer_selection as e2
from . import network_reusability as e1
from . import rmse_threshold as e3
from .common import CONDITION, DONORS, Evaluator, conditions, small_spec, trained

STRATEGIES = ("scratch", "reuse_all", "rule", "rmse_only", "random", "oracle")
HARM_PAIR = "fashion-scrambled"  # the ladder's negative-transfer rung: reuse can hurt there
# exploratory comparisons (a minus b); the primary ones are HEADLINE's
COMPARISONS = (("reuse_all", "scratch"), ("rmse_only", "scratch"),
               ("rmse_only", "random"), ("oracle", "scratch"))
# the primary family of E4: claim -> (statement, cells it is judged on)
HEADLINE = {
    "H1": "where (a) and (b) both hold, reuse (the rule) beats scratch",
    "H2": "the gain of reusing (b)'s layers is larger where (a) holds than where it fails (interaction)",
    "H3a": "the rule beats reusing every layer, where the two differ",
    "H3b": "the rule beats random layer sets of its size, where it takes some but not all layers",
}


def fit_rule(points: pd.DataFrame) -> dict:
    """Criterion and threshold of condition (b), from other pairs' source points (E3's
    method): each criterion of :data:`RULE_CRITERIA` is fitted by balanced accuracy and the
    better one kept. With one class only there is nothing to separate: threshold inf (reuse
    every layer) when every layer is reusable, 0 when none is or there are no points."""
    src = points[points.donor == "source"]
    labels = src.reusable.to_numpy(bool)
    if len(labels) == 0 or not labels.any():
        return {"criterion": "rmse", "threshold": 0.0, "fit_accuracy": np.nan}
    if labels.all():
        return {"criterion": "rmse", "threshold": np.inf, "fit_accuracy": np.nan}
    # the floor ratio is left out: the floor is measured between full-data twins
    fits = {c: fit_threshold(src[c], labels) for c in RULE_CRITERIA}
    best = max(RULE_CRITERIA, key=lambda c: fits[c][1])
    return {"criterion": best, "threshold": fits[best][0], "fit_accuracy": fits[best][1]}


def _picked(donor: dict, small: dict, layers: list[str], fit: dict) -> list[str]:
    """Layers whose criterion between ``donor`` and the small model is within the threshold
    (condition b, :func:`reuse.toolkit.selection.select_layers`)."""
    return select_layers(donor, small, layers, threshold=fit["threshold"],
                         use_relative=fit["criterion"] == "rel_rmse")[1]


def _init(scratch: RunSpec, source: RunSpec, target_state: dict, layers: list[str]) -> RunSpec:
    if not layers:
        return scratch
    return scratch.replace(init_from=source, init_keys=tuple(kernel_keys(target_state, layers)))


def run(runner: Runner, profile: Profile, grid: Grid | None = None, fractions=None
        ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """All E4 measurements and the decisions behind them.

    Returns (results: architecture, task, pair, seed, n_T, fraction, strategy, draw,
    metric, value, n_reused, full_value (the full-data theta_T's metric); decisions:
    architecture, task, pair, seed, n_T, fraction, j1, strict_a, criterion, threshold,
    fit_accuracy, n_layers, n_rule, n_rmse_only, rule_layers, rmse_only_layers,
    oracle_layers, twin_picked, different_init_picked).
    """
    grid = profile.e4_grid if grid is None else grid
    fractions = profile.e4_fractions if fractions is None else tuple(fractions)
    if not fractions or not all(0 < f <= 1 for f in fractions):
        raise ValueError(f"fractions={fractions!r}; allowed: values in (0, 1]")
    conds = conditions(grid, profile.seeds)
    runs = trained(runner, profile, conds, ("target", *DONORS))  # the rule's source and its controls
    # condition (a) per source, from full-data models, before any small-data run
    all_conv, cells = e1.run(runner, profile, grid, full=False)
    j1 = e1.verdicts(all_conv, cells).set_index(CONDITION).verdict
    swaps, _ = e2.swap_scores(runner, profile, grid, reestimate=(e2.PRIMARY_BN,))
    points = e3.points(e3.kernel_distances(runner, profile, grid), swaps, cells)
    oracle_scores = swaps[(swaps.donor == "source")].set_index([*e2.FACTORS, "layer"]).reuse_score
    small = {(i, f): small_spec(r["target"].spec, max(2, round(f * r["target"].spec.n_train)),
                                profile.small)
             for i, r in enumerate(runs) for f in fractions}
    small_runs = dict(zip(small, runner.train_many(list(small.values()))))

    plans, decisions, fits, evaluators = [], [], {}, {}
    for (i, f), scratch in small.items():
        c, r = conds[i], runs[i]
        source, target_state = r["source"].spec, r["target"].state
        ev = evaluators.setdefault(i, Evaluator(runner, profile, c, r["target"]))
        layers = ev.swap_layers
        verdict_a = j1.get((c.architecture, c.task, c.pair), "undecided")
        if c.pair not in fits:  # the other rungs' points, pooled over architectures and tasks (E3)
            fits[c.pair] = fit_rule(points[points.pair != c.pair])
        fit = fits[c.pair]
        small_state = small_runs[i, f].state
        rmse_layers = _picked(r["source"].state, small_state, layers, fit)
        rule_layers = rmse_layers if verdict_a == "holds" else []
        oracle = [name for name in layers
                  if oracle_scores.get((*c.factors().values(), name), np.nan) >= REUSABLE]
        rng = np.random.default_rng([c.seed, i, int(f * 1e6)])
        draws = ([sorted(rng.choice(len(layers), len(rule_layers), replace=False).tolist())
                  for _ in range(profile.e4_random_draws)] if 0 < len(rule_layers) < len(layers) else [])
        strategies = {("scratch", 0): [], ("reuse_all", 0): layers, ("rule", 0): rule_layers,
                      ("rmse_only", 0): rmse_layers, ("oracle", 0): oracle}
        for d, idx in enumerate(draws):
            strategies[("random", d)] = [layers[j] for j in idx]
        factors = {**c.factors(), "n_T": scratch.n_train, "fraction": f}
        decisions.append({**factors, "j1": verdict_a, "strict_a": verdict_a == "holds", **fit,
                          "n_layers": len(layers), "n_rule": len(rule_layers),
                          "n_rmse_only": len(rmse_layers),
                          "rule_layers": ", ".join(rule_layers), "rmse_only_layers": ", ".join(rmse_layers),
                          "oracle_layers": ", ".join(oracle),
                          "twin_picked": len(_picked(r["twin"].state, small_state, layers, fit)),
                          "different_init_picked": len(_picked(r["different_init"].state, small_state,
                                                               layers, fit))})
        plans.append((i, factors, {key: (_init(scratch, source, target_state, chosen), chosen)
                                   for key, chosen in strategies.items()}))
    flat = {s.key: s for _, _, st in plans for s, _ in st.values()}
    done = dict(zip(flat, runner.train_many(list(flat.values()))))
    rows = []
    for i, factors, strategies in plans:
        ev = evaluators[i]
        for (name, draw), (spec, chosen) in strategies.items():
            rows.append({**factors, "strategy": name, "draw": draw, "metric": ev.metric,
                         "value": ev.score_run(done[spec.key]), "n_reused": len(chosen),
                         "full_value": ev.target_value})
    return pd.DataFrame(rows), pd.DataFrame(decisions)


KEYS = ["task", "fraction", "architecture", "pair", "seed"]


def _wide(results: pd.DataFrame, decisions: pd.DataFrame) -> pd.DataFrame:
    """One row per cell (task, fraction, architecture, pair, seed): each strategy's metric
    (random: the mean over draws), the full-data target's and the cell's decisions."""
    wide = results.pivot_table(index=KEYS, columns="strategy", values="value", aggfunc="mean")
    wide["full"] = results.groupby(KEYS).full_value.first()
    cols = ["n_T", "strict_a", "n_rule", "n_rmse_only", "n_layers"]
    return wide.join(decisions.set_index(KEYS)[cols]).reset_index()


def _seed_verdict(values: pd.Series, seeds: pd.Series) -> dict:
    """Per-seed means of ``values`` (cells pooled within a seed), judged against 0."""
    return mean_verdict(values.groupby(seeds.to_numpy()).mean(), 0.0, "above")


def headline(results: pd.DataFrame, decisions: pd.DataFrame) -> pd.DataFrame:
    """The primary claims (:data:`HEADLINE`) per task x fraction, three-valued against 0 with
    Student-t CIs over seeds (each seed's cells averaged first), with the cells each claim
    is judged on; a claim with no such cell is undecided (``cells`` = 0). Beside them the
    design's power: the reuse-all benefit (reuse_all - scratch over every cell) and whether
    H1's smallest detectable effect is at most half of it (``powered``)."""
    rows = []
    for (task, fraction), w in _wide(results, decisions).groupby(["task", "fraction"], sort=True):
        n_t = int(w.n_T.median())
        gain = w.rmse_only - w.scratch
        both = w.n_rule > 0
        differs = w.n_rule < w.n_layers
        h2 = (gain[w.strict_a].groupby(w.seed[w.strict_a]).mean()
              - gain[~w.strict_a].groupby(w.seed[~w.strict_a]).mean()).dropna()
        claims = {
            "H1": (_seed_verdict((w.rule - w.scratch)[both], w.seed[both]), int(both.sum())),
            "H2": (mean_verdict(h2, 0.0, "above"), len(w)),
            "H3a": (_seed_verdict((w.rule - w.reuse_all)[differs], w.seed[differs]), int(differs.sum())),
        }
        if "random" in w:
            some = both & differs & w.random.notna()
            claims["H3b"] = (_seed_verdict((w.rule - w.random)[some], w.seed[some]), int(some.sum()))
        benefit = mean_verdict((w.reuse_all - w.scratch).groupby(w.seed).mean(), 0.0)["estimate"]
        for claim, (v, n_cells) in claims.items():
            rows.append({"claim": claim, "statement": HEADLINE[claim], "task": task, "fraction": fraction,
                         "n_T": n_t, **v, "cells": n_cells if v["n"] else 0, "reuse_all_benefit": benefit,
                         "powered": bool(v["detectable"] <= abs(benefit) / 2)})
    return pd.DataFrame(rows)


def design_check(results: pd.DataFrame, decisions: pd.DataFrame) -> pd.DataFrame:
    """Is n_T small enough to test reuse? Per task x fraction: the full-data target minus
    scratch (seed-paired, CI against 0): it must hold, or scratch leaves reuse nothing to add."""
    rows = []
    for (task, fraction), w in _wide(results, decisions).groupby(["task", "fraction"], sort=True):
        rows.append({"task": task, "fraction": fraction, "n_T": int(w.n_T.median()),
                     "scratch": w.scratch.mean(), "full": w.full.mean(),
                     **_seed_verdict(w.full - w.scratch, w.seed)})
    return pd.DataFrame(rows)


def differences(results: pd.DataFrame) -> pd.DataFrame:
    """Each strategy's metric minus scratch's, per cell (random: the mean over draws): one
    row per task x architecture x pair x seed x n_T x strategy with column ``difference``."""
    keys = ["task", "architecture", "pair", "seed", "n_T"]
    wide = results.pivot_table(index=keys, columns="strategy", values="value", aggfunc="mean")
    diff = wide.sub(wide["scratch"], axis=0).drop(columns="scratch")
    return diff.stack().rename("difference").reset_index()


def comparisons(results: pd.DataFrame, pairs=None) -> pd.DataFrame:
    """Exploratory: strategy a minus strategy b per task x fraction (random: the mean over
    draws), each seed's difference averaged over architectures and pairs (``pairs``: all
    when None); three-valued against 0: holds when a is better, refuted when b is."""
    d = results if pairs is None else results[results.pair.isin(pairs)]
    wide = d.pivot_table(index=KEYS, columns="strategy", values="value", aggfunc="mean")
    rows = []
    for (task, fraction), g in wide.groupby(level=["task", "fraction"], sort=True):
        n_t = int(d[(d.task == task) & (d.fraction == fraction)].n_T.median())
        for a, b in COMPARISONS:
            if a in g and b in g:
                diff = (g[a] - g[b]).dropna().groupby(level="seed").mean()
                rows.append({"task": task, "fraction": fraction, "n_T": n_t,
                             "comparison": f"{a} - {b}", **mean_verdict(diff, 0.0, "above")})
    return pd.DataFrame(rows)


def control_table(decisions: pd.DataFrame) -> pd.DataFrame:
    """The rule's controls per task x fraction: "condition (b) picks most layers" (the
    per-seed share of layers picked, CI against 0.5) with the twin as the source, which
    should hold, and with the different-initialisation control, which should be refuted."""
    rows = []
    for (task, fraction), g in decisions.groupby(["task", "fraction"], sort=True):
        for donor in ("twin", "different_init"):
            share = (g[f"{donor}_picked"] / g.n_layers).groupby(g.seed).mean()
            rows.append({"task": task, "fraction": fraction, "control": donor,
                         "expected": "holds" if donor == "twin" else "refuted",
                         **mean_verdict(share, 0.5, "above")})
    return pd.DataFrame(rows)


def verdict_text(heads: pd.DataFrame, tests: pd.DataFrame, harm: pd.DataFrame, controls: pd.DataFrame,
                 decisions: pd.DataFrame, design: pd.DataFrame) -> str:
    """The notebook's computed findings, one Markdown line each: primary claims first."""
    lines = []
    for task, d in decisions.groupby("task", sort=False):
        held = sorted(set(d.pair[d.strict_a]))
        lines.append(f"- {task}: condition (a) (J1 of the source's own pair) holds for "
                     f"{', '.join(held) if held else 'no rung'}; the rule reused at least one layer in "
                     f"{int((d.n_rule > 0).sum())} of {len(d)} cells, condition (b) alone in "
                     f"{int((d.n_rmse_only > 0).sum())}.")
    for r in design.itertuples():
        lines.append(f"- design, {r.task}, n_T = {r.n_T}: full-data target minus scratch {r.estimate:.3g} "
                     f"[{r.ci_low:.3g}, {r.ci_high:.3g}]: scratch is clearly worse: **{r.verdict}**.")
    for r in heads.itertuples():
        lines.append(f"- primary {r.claim}, {r.task}, n_T = {r.n_T} ({r.statement}), before Holm's "
                     f"correction: **{r.verdict}** "
                     f"({r.estimate:+.3g} [{r.ci_low:+.3g}, {r.ci_high:+.3g}], n = {r.n} seeds over "
                     f"{r.cells} cells; smallest detectable effect {r.detectable:.2g} against half the "
                     f"reuse-all benefit {abs(r.reuse_all_benefit) / 2:.2g}: "
                     f"{'powered' if r.powered else 'underpowered'}).")
    for where, frame in (("exploratory", tests), (f"exploratory, {HARM_PAIR} only", harm)):
        for r in frame.itertuples():
            lines.append(f"- {where}, {r.task}, n_T = {r.n_T}: {r.comparison} = {r.estimate:.3g} "
                         f"[{r.ci_low:.3g}, {r.ci_high:.3g}] (n = {r.n} seeds): **{r.verdict}**.")
    for r in controls.itertuples():
        lines.append(f"- control, {r.task}, fraction {r.fraction}: (b) picks most layers of the "
                     f"{r.control.replace('_', '-')} model: {r.verdict} (share {r.estimate:.2f} "
                     f"[{r.ci_low:.2f}, {r.ci_high:.2f}]; expected {r.expected}: control "
                     f"{'passed' if r.verdict == r.expected else 'failed'}).")
    return "\n".join(lines)


def _record(judgment: str, r, controls: str = "n/a") -> dict:
    return {"judgment": judgment, "verdict": r.verdict, "estimate": r.estimate, "ci_low": r.ci_low,
            "ci_high": r.ci_high, "detectable": r.detectable, "n": r.n, "controls": controls,
            "margin": 0.0 if not judgment.startswith("control") else 0.5, "side": "above"}


def records(heads: pd.DataFrame, tests: pd.DataFrame, harm: pd.DataFrame, controls: pd.DataFrame
            ) -> pd.DataFrame:
    """Every verdict of the notebook, one row each: the primary claims (named H1-H3b), the
    exploratory comparisons and the rule's controls."""
    rows = [_record(_judgment(r), r) for r in heads.itertuples()]
    for where, frame in (("all rungs", tests), (HARM_PAIR, harm)):
        rows += [_record(f"{r.comparison} ({r.task}, n_T {r.n_T}, {where})", r) for r in frame.itertuples()]
    rows += [_record(f"control: (b) picks most layers of the {r.control} ({r.task}, fraction {r.fraction})",
                     r) for r in controls.itertuples()]
    return pd.DataFrame(rows)


def _judgment(head) -> str:
    """The recorded name of a primary claim (a row of :func:`headline`)."""
    return f"{head.claim} {head.statement} ({head.task}, n_T {head.n_T})"


def _after_holm(head, family: pd.DataFrame) -> tuple[str, str]:
    """(verdict after Holm, what to say beside the estimate) of a primary claim, from
    ``family`` (:func:`reuse.study.report.family_adjusted`): its smallest detectable effect
    at both levels, and whether the design is powered at Holm's (half the reuse-all benefit)."""
    row = family.set_index("judgment").loc[_judgment(head)]
    said = f"{head.estimate:+.3g} [{head.ci_low:+.3g}, {head.ci_high:+.3g}]"
    if row.verdict_holm != head.verdict:
        said += f", {head.verdict} before the correction"
    if np.isfinite(row.p_holm):
        said += f", Holm-adjusted p {row.p_holm:.2g}"
    if np.isfinite(row.get("detectable_holm", np.nan)):
        said += f"; detectable {head.detectable:.2g} raw, {row.detectable_holm:.2g} at Holm's level"
        half = abs(getattr(head, "reuse_all_benefit", np.nan)) / 2
        if np.isfinite(half):
            said += (f": {'powered' if row.detectable_holm <= half else 'underpowered'} there against half "
                     f"the reuse-all benefit {half:.2g}")
    return row.verdict_holm, said


def findings(heads: pd.DataFrame, harm: pd.DataFrame, decisions: pd.DataFrame, family: pd.DataFrame) -> str:
    """What the E4 verdicts mean, computed from them; the first line is the headline's
    verdict in one sentence a reader can quote. The primary claims are stated after Holm's
    correction over the primary family of ``family`` (every recorded verdict with this
    notebook's, :func:`reuse.study.report.family_adjusted`), as SUMMARY.md states them."""
    if heads.empty:
        return "- No comparison could be made."
    primary = family[family.family == "primary"]
    notebooks = sorted(primary.notebook.unique())
    over = (f"after Holm's correction over the {len(primary)} primary claims recorded at this profile "
            f"(by notebook{'s' * (len(notebooks) > 1)} {', '.join(notebooks)})")
    said = []
    for r in heads[heads.claim == "H1"].sort_values("n_T").itertuples():
        verdict, beside = _after_holm(r, family)
        said.append(f"{verdict} at n_T = {r.n_T} ({beside}{', no cell where both hold' if r.cells == 0 else ''})")
    lines = [f"- **Headline.** \"Where the network is reusable and the kernel RMSE is small, reuse "
             f"beats training from scratch\" {'; '.join(said)}; {over}."]
    if decisions.pair.nunique() < 2:
        lines.append("- Only one rung ran: condition (b)'s threshold is learnt from the other rungs, so "
                     "with none it reuses nothing here; run two or more rungs to test it.")
    for claim in ("H2", "H3a", "H3b"):
        for r in heads[heads.claim == claim].itertuples():
            verdict, beside = _after_holm(r, family)
            lines.append(f"- {claim} at n_T = {r.n_T} ({r.statement}): {verdict} ({beside}).")
    if harm.empty:
        lines.append(f"- Negative transfer: {HARM_PAIR} did not run, so harm avoidance is not tested.")
        return "\n".join(lines)
    hurts = harm[(harm.comparison == "reuse_all - scratch") & (harm.verdict == "refuted")]
    lines.append(f"- Negative transfer on {HARM_PAIR}: reusing every layer is worse than scratch at "
                 + (", ".join(f"n_T = {n}" for n in hurts.n_T) if len(hurts) else
                    "no n_T (no harm to avoid at this scale)") + ".")
    return "\n".join(lines)
