"""E4, small-data transfer: the paper's headline as a factorial test (docs/protocol.md, sections 5-6).

The abstract's headline: reuse succeeds when (a) the network is reusable and (b) the kernel
RMSE between source and target is small, and then reused parameters improve the target
task. Every strategy starts from theta_0 of the seed, takes the kernels of some conv layers
from a source, and fine-tunes everything on the same n_T target samples for the same steps.
For every rung of the source ladder (one target, sources near to far):

- (a) per source: J1 of its own pair (judged on full-data models, before any small-data run,
  with its controls and the theta_0 reset); a rung where J1 does not hold counts as (a)
  failing, as the rule is stated;
- (b) per *layer* and source, from the target's n_T samples only: the layer's kernel RMSE to
  theta_T^n (trained from theta_0 on the n_T samples with the full-run schedule) over its
  noise floor, the RMSE of theta_T^n's batch-order twin (:func:`criterion_rows`); a layer
  passes where that ratio is at most the median over every (rung, layer) of its seed
  (:func:`split_b`). Between siblings a layer's raw RMSE is set mostly by how far training
  moves it; over its own floor it can differ between sources of one layer, and the notebook
  tables how much it does (:func:`reuse.study.experiments.common.criterion_spread`);
- the factorial: per rung, a random group of :attr:`Profile.e4_group` layers that pass (b)
  (``pass``) and one of layers that fail it (``fail``), each reused alone; beside them
  ``reuse_all`` (every swappable layer) and ``random_k`` (a random group of the same size);
  ``scratch`` reuses nothing. The 2x2 cells (a) x (b) are the rungs' groups, and the primary
  claims (:data:`HEADLINE`) are judged per regime, task and n_T by :func:`headline`.

Regimes (:data:`REGIMES`): *siblings* (the source shares theta_0; primary), *strangers* (the
source trained from another theta_0, its channels weight-matched onto theta_T^n before (b)
and before its kernels are reused) and *fine-tuned* (theta_S fine-tuned on the n_T samples
is the target side of (b): a layer passes where fine-tuning moves it little beyond the
disagreement of two fine-tunings); the last two on the architectures and tasks of
:attr:`Profile.e4_regimes`, exploratory.

The rule as it was tested before (exploratory, :func:`rule_claims`): (a) as above and (b) a
threshold on the raw or relative RMSE to the small scratch model, fitted on the *other*
rungs' E3 points (``rule``; ``rmse_only``: its layers without (a); ``random``: random sets of
its size).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from reuse.toolkit.criteria import kernel_keys, rmse_over_floor
from reuse.toolkit.selection import DISTANCE_CRITERIA, select_layers
from reuse.toolkit.stats import fit_threshold
from reuse.toolkit.verdicts import mean_verdict

from .. import claims
from ..config import Grid, Profile
from ..training.train import Runner, RunSpec
from . import layer_selection as e2
from . import network_reusability as e1
from . import rmse_threshold as e3
from .common import CONDITION, CONDITION_DONORS, ORDER_OFFSET, Evaluator, conditions, small_spec, trained

REGIMES = ("siblings", "strangers", "fine-tuned")
GROUPS = ("pass", "fail")  # the factorial's layer groups: layers that pass (b), and fail it
STRATEGIES = ("scratch", "reuse_all", "random_k", *GROUPS, "rule", "rmse_only", "random")
B_QUANTILE = 0.5  # (b) passes at or below this quantile of the floor ratio over the seed's points
HARM_PAIR = "fashion-scrambled"  # the ladder's negative-transfer rung: reuse can hurt there
# exploratory comparisons (a minus b) over every rung
COMPARISONS = (("reuse_all", "scratch"), ("rmse_only", "scratch"), ("random_k", "scratch"))
# the primary family of E4 (siblings regime), named in docs/protocol.md before any result
HEADLINE = {
    "H1": "where (a) and (b) both hold, reusing (b)'s layers beats scratch",
    "H2": "the gain of (b)'s layers over (b)'s failures is larger where (a) holds than where it fails "
          "(interaction)",
    "H3a": "where (a) holds, (b)'s layers beat reusing every layer",
    "H3b": "where (a) holds, (b)'s layers beat random layer groups of the same size",
}
# the rule as tested before the factorial design: exploratory, for comparison
RULE_CLAIMS = {
    "H1": "where (a) and a fitted (b) both hold, the rule beats scratch",
    "H2": "the gain of the fitted (b)'s layers is larger where (a) holds than where it fails",
    "H3a": "the rule beats reusing every layer, where the two differ",
    "H3b": "the rule beats random layer sets of its size, where it takes some but not all layers",
}


def fit_rule(points: pd.DataFrame) -> dict:
    """Criterion and threshold of the earlier rule's (b), from other pairs' source points
    (E3's method): each criterion of :data:`DISTANCE_CRITERIA` is fitted by balanced accuracy and
    the better one kept. With one class only there is nothing to separate: threshold inf
    (reuse every layer) when every layer is reusable, 0 when none is or there are no points."""
    src = points[points.donor == "source"]
    labels = src.reusable.to_numpy(bool)
    if len(labels) == 0 or not labels.any():
        return {"criterion": "rmse", "threshold": 0.0, "fit_accuracy": np.nan}
    if labels.all():
        return {"criterion": "rmse", "threshold": np.inf, "fit_accuracy": np.nan}
    # the floor ratio is left out: the floor is measured between full-data twins
    fits = {c: fit_threshold(src[c], labels) for c in DISTANCE_CRITERIA}
    best = max(DISTANCE_CRITERIA, key=lambda c: fits[c][1])
    return {"criterion": best, "threshold": fits[best][0], "fit_accuracy": fits[best][1]}


def _picked(donor: dict, small: dict, layers: list[str], fit: dict) -> list[str]:
    """Layers whose criterion between ``donor`` and the small model is within the threshold
    (the earlier rule's (b), :func:`reuse.toolkit.selection.select_layers`)."""
    return select_layers(donor, small, layers, threshold=fit["threshold"],
                         use_relative=fit["criterion"] == "rel_rmse")[1]


def _init(scratch: RunSpec, source: RunSpec, target_state: dict, layers: list[str],
          align_to: RunSpec | None = None) -> RunSpec:
    """``scratch`` with the kernels of ``layers`` from ``source`` (weight-matched onto
    ``align_to`` first when given); ``scratch`` itself for no layer."""
    if not layers:
        return scratch
    return scratch.replace(init_from=source, init_keys=tuple(kernel_keys(target_state, layers)),
                           align_to=align_to)


def references(target: RunSpec, n: int, profile: Profile) -> tuple[RunSpec, RunSpec]:
    """(theta_T^n, its batch-order twin): trained from theta_0 on the first ``n`` samples of
    ``target``'s block with the full run's steps (batches of about n / 4), the target side of
    condition (b). The schedule is the source's, so that both sides moved from theta_0 for as
    long; only the n_T samples are read (no peeking at the full target set)."""
    ref = target.replace(n_train=n, batch_size=min(profile.batch_size, max(2, n // 4)))
    return ref, ref.replace(order_seed=target.order_seed + ORDER_OFFSET)


def finetuned(ref: RunSpec, source: RunSpec, keys: list[str], steps: int) -> tuple[RunSpec, RunSpec]:
    """(theta_S fine-tuned on ``ref``'s samples, the same in another batch order): every key
    in ``keys`` (all but the head's) from theta_S, ``steps`` steps; the fine-tuned regime's
    target side of (b)."""
    ft = ref.replace(init_from=source, init_keys=tuple(keys), steps=steps)
    return ft, ft.replace(order_seed=ref.order_seed + ORDER_OFFSET)


def criterion_rows(donor: dict, ref: dict, floor: dict, layers: list[str]) -> pd.DataFrame:
    """Per layer: rmse, rel_rmse and cosine distance of ``donor`` to ``ref``, ``floor_rmse``
    (``floor`` to ``ref``: what retraining alone moves the layer) and ``floor_ratio`` = rmse /
    floor_rmse, condition (b)'s criterion (:func:`reuse.toolkit.criteria.rmse_over_floor`)."""
    return (rmse_over_floor(donor, ref, floor, layers).rename(columns={"rmse_over_floor": "floor_ratio"})
            .drop(columns="n_weights"))


def split_b(layers: pd.DataFrame, quantile: float = B_QUANTILE) -> pd.DataFrame:
    """``layers`` with ``b_threshold`` and ``b``: per architecture, task, regime, fraction and
    seed, the ``quantile`` of ``floor_ratio`` over every source's (rung, layer) point, and
    whether the point is at or below it. Controls (other donors) are judged against the same
    threshold but never set it. A threshold from the points' own spread, not from any
    outcome: it makes (b) pass and fail on every seed, so the factorial has both levels."""
    keys = ["architecture", "task", "regime", "fraction", "seed"]
    src = layers[layers.donor == "source"]
    threshold = src.groupby(keys).floor_ratio.quantile(quantile).rename("b_threshold")
    out = layers.drop(columns=["b_threshold", "b"], errors="ignore").join(threshold, on=keys)
    return out.assign(b=out.floor_ratio <= out.b_threshold)


def groups(layers: list[str], passes: list[bool], k: int, rng: np.random.Generator) -> dict[str, list[str]]:
    """The factorial's layer groups of one rung: ``pass`` (k layers drawn from those passing
    (b)), ``fail`` (k from those failing it), ``random_k`` (k from all), ``reuse_all``; a group
    is left out where fewer than k layers qualify. Drawn in this order from ``rng``."""
    chosen = {}
    for name, pool in (("pass", [n for n, p in zip(layers, passes) if p]),
                       ("fail", [n for n, p in zip(layers, passes) if not p]), ("random_k", layers)):
        if len(pool) >= k:
            chosen[name] = [pool[i] for i in sorted(rng.choice(len(pool), k, replace=False))]
    return {**chosen, "reuse_all": list(layers)}


def compute(runner: Runner, profile: Profile, grid: Grid | None = None, fractions=None
        ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """All E4 measurements and the decisions behind them.

    Returns (results: architecture, task, pair, seed, n_T, fraction, regime, strategy, draw,
    metric, value, n_reused, full_value (the full-data theta_T's metric); decisions (the
    earlier rule): architecture, task, pair, seed, n_T, fraction, j1, strict_a, criterion,
    threshold, fit_accuracy, n_layers, n_rule, n_rmse_only, rule_layers, rmse_only_layers,
    twin_picked, different_init_picked; layers (condition b): architecture, task, regime,
    pair, seed, n_T, fraction, donor (source, or the controls twin and different_init),
    layer, index, rmse, rel_rmse, cosine_distance, floor_rmse, floor_ratio, b_threshold, b,
    a (J1 holds), group (the factorial group that took the layer, or '')).
    """
    grid = profile.e4_grid if grid is None else grid
    fractions = profile.e4_fractions if fractions is None else tuple(fractions)
    if not fractions or not all(0 < f <= 1 for f in fractions):
        raise ValueError(f"fractions={fractions!r}; allowed: values in (0, 1]")
    conds = conditions(grid, profile.seeds)
    runs = trained(runner, profile, conds, ("target", *CONDITION_DONORS))  # the source and its controls
    regimes = {i: [r for r in REGIMES if r == "siblings" or (c.architecture in profile.e4_regimes.architectures
                                                              and c.task in profile.e4_regimes.tasks)]
               for i, c in enumerate(conds)}
    regime_fractions = set(fractions if profile.e4_regime_fractions is None else profile.e4_regime_fractions)
    strange = [i for i in regimes if "strangers" in regimes[i]]
    for i, r in zip(strange, trained(runner, profile, [conds[i] for i in strange], ("stranger",))):
        runs[i] = {**runs[i], **r}
    # condition (a) per source, from full-data models, before any small-data run
    all_conv, cells = e1.compute(runner, profile, grid, full=False)
    j1 = e1.verdicts(all_conv, cells).set_index(CONDITION).verdict
    # the earlier rule's evidence: E3's points on the other rungs
    swaps, _ = e2.swap_scores(runner, profile, grid, reestimate=(e2.PRIMARY_BN,))
    points = e3.points(e3.kernel_distances(runner, profile, grid), swaps, cells)
    evaluators = {i: Evaluator(runner, profile, c, r["target"]) for i, (c, r) in enumerate(zip(conds, runs))}
    sizes = {(i, f): max(2, round(f * r["target"].spec.n_train)) for i, r in enumerate(runs) for f in fractions}
    small = {key: small_spec(runs[key[0]]["target"].spec, n, profile.small) for key, n in sizes.items()}
    refs = {key: references(runs[key[0]]["target"].spec, n, profile) for key, n in sizes.items()}
    fts = {}
    for (i, f), (ref, _) in refs.items():
        if "fine-tuned" in regimes[i] and f in regime_fractions:
            head = evaluators[i].layers[-1]
            keys = [k for k in runs[i]["target"].state if not k.startswith(f"{head}.")]
            fts[i, f] = finetuned(ref, runs[i]["source"].spec, keys, profile.small.steps)
    needed = [*small.values(), *(s for pair in (*refs.values(), *fts.values()) for s in pair)]
    done = dict(zip([s.key for s in needed], runner.train_many(needed)))

    table, decisions, plans, fits, cell_factors = [], [], [], {}, {}
    for (i, f), scratch in small.items():
        c, r, ev = conds[i], runs[i], evaluators[i]
        layers, a = ev.swap_layers, j1.get((c.architecture, c.task, c.pair), "undecided")
        factors = {**c.factors(), "n_T": scratch.n_train, "fraction": f}
        ref, floor = (done[s.key].state for s in refs[i, f])
        sides = {"siblings": (r["source"].state, ref, floor)}
        if "strangers" in regimes[i] and f in regime_fractions:
            aligned = _init(scratch, r["stranger"].spec, r["target"].state, layers, align_to=refs[i, f][0])
            sides["strangers"] = (runner.parent_state(aligned), ref, floor)
        if (i, f) in fts:
            sides["fine-tuned"] = (r["source"].state, *(done[s.key].state for s in fts[i, f]))
        for regime, (donor, target_side, floor_side) in sides.items():
            donors = {"source": donor}
            if regime == "siblings":  # the controls: what (b) says of a same-task model and a stranger
                donors.update(twin=r["twin"].state, different_init=r["different_init"].state)
            for name, state in donors.items():
                table.append(criterion_rows(state, target_side, floor_side, layers).assign(
                    **factors, regime=regime, donor=name, a=a == "holds"))
        # the earlier rule, strictly as stated per source
        if c.pair not in fits:  # the other rungs' points, pooled over architectures and tasks (E3)
            fits[c.pair] = fit_rule(points[points.pair != c.pair])
        fit, small_state = fits[c.pair], done[scratch.key].state
        rmse_layers = _picked(r["source"].state, small_state, layers, fit)
        rule_layers = rmse_layers if a == "holds" else []
        decisions.append({**factors, "j1": a, "strict_a": a == "holds", **fit, "n_layers": len(layers),
                          "n_rule": len(rule_layers), "n_rmse_only": len(rmse_layers),
                          "rule_layers": ", ".join(rule_layers), "rmse_only_layers": ", ".join(rmse_layers),
                          "twin_picked": len(_picked(r["twin"].state, small_state, layers, fit)),
                          "different_init_picked": len(_picked(r["different_init"].state, small_state,
                                                               layers, fit))})
        rng = np.random.default_rng([c.seed, i, int(f * 1e6)])
        draws = ([sorted(rng.choice(len(layers), len(rule_layers), replace=False).tolist())
                  for _ in range(profile.e4_random_draws)] if 0 < len(rule_layers) < len(layers) else [])
        chosen = {("siblings", "scratch", 0): [], ("siblings", "rule", 0): rule_layers,
                  ("siblings", "rmse_only", 0): rmse_layers}
        chosen.update({("siblings", "random", d): [layers[j] for j in idx] for d, idx in enumerate(draws)})
        plans.append((i, f, factors, scratch, sides, chosen))
        cell_factors[i, f] = factors
    table = split_b(pd.concat(table, ignore_index=True))

    specs, group_rows = {}, []
    for i, f, factors, scratch, sides, chosen in plans:
        r, layers = runs[i], evaluators[i].swap_layers
        for regime in sides:
            mine = table[(table.regime == regime) & (table.donor == "source") & (table.pair == factors["pair"])
                          & (table.seed == factors["seed"]) & (table.fraction == f)]
            rng = np.random.default_rng([factors["seed"], i, int(f * 1e6), REGIMES.index(regime)])
            for name, picked in groups(list(mine.layer), list(mine.b), profile.e4_group, rng).items():
                chosen[regime, name, 0] = picked
                if name != "reuse_all":
                    group_rows += [{**factors, "regime": regime, "layer": n, "group": name} for n in picked]
        for (regime, name, draw), picked in chosen.items():
            source, align = ((r["stranger"].spec, refs[i, f][0]) if regime == "strangers"
                             else (r["source"].spec, None))
            specs[i, f, regime, name, draw] = (_init(scratch, source, r["target"].state, picked, align), picked)
    flat = list({s.key: s for s, _ in specs.values()}.values())
    trained_runs = dict(zip([s.key for s in flat], runner.train_many(flat)))
    rows = []
    for (i, f, regime, name, draw), (spec, picked) in specs.items():
        ev = evaluators[i]
        rows.append({**cell_factors[i, f], "regime": regime, "strategy": name,
                     "draw": draw, "metric": ev.metric, "value": ev.score_run(trained_runs[spec.key]),
                     "n_reused": len(picked), "full_value": ev.target_value})
    members = (pd.DataFrame(group_rows).groupby([*CONDITION, "seed", "fraction", "regime", "layer"]).group
               .agg(lambda g: ", ".join(sorted(set(g)))) if group_rows else None)
    table = (table.join(members, on=[*CONDITION, "seed", "fraction", "regime", "layer"])
             if members is not None else table.assign(group=np.nan))
    table["group"] = table.group.where(table.donor == "source").fillna("")
    return pd.DataFrame(rows), pd.DataFrame(decisions), table


KEYS = ["task", "fraction", "architecture", "pair", "seed"]


def _per_cell(results: pd.DataFrame, regime: str) -> pd.DataFrame:
    """One row per cell (task, fraction, architecture, pair, seed) of ``regime``: each strategy's
    metric (random draws averaged), the strategies the regime did not run taken from the
    siblings' (scratch always: it reuses nothing), and ``full``."""
    def wide(frame):
        return frame.pivot_table(index=KEYS, columns="strategy", values="value", aggfunc="mean")
    out = wide(results[results.regime == regime])
    if regime != "siblings":
        out = wide(results[results.regime == "siblings"]).drop(columns=out.columns, errors="ignore").join(
            out, how="inner")
    cells = results.groupby(KEYS)
    return out.assign(full=cells.full_value.first(), n_T=cells.n_T.first()).reset_index()


def factorial(results: pd.DataFrame, layers: pd.DataFrame) -> pd.DataFrame:
    """Per regime, task, fraction and seed: the four cells' gains over scratch (``ab``, ``a_b``
    for (a) holds with the pass / fail group, ``_ab``, ``__b`` where (a) fails; each the mean
    over that seed's rungs with such a group), the interaction ``ab - a_b - (_ab - __b)``, and
    where (a) holds the pass group minus reuse-all and minus random_k; with the number of
    rungs behind each cell."""
    a = layers[layers.donor == "source"].groupby(["regime", *KEYS]).a.first()
    rows = []
    for regime in [r for r in REGIMES if r in set(results.regime)]:
        w = _per_cell(results, regime).join(a.loc[regime], on=KEYS)
        w = w[w.a.notna()]
        for (task, fraction, seed), g in w.groupby(["task", "fraction", "seed"], sort=True):
            held, failed = g[g.a.astype(bool)], g[~g.a.astype(bool)]
            cell = {}
            for name, part, group in (("ab", held, "pass"), ("a_b", held, "fail"),
                                      ("_ab", failed, "pass"), ("__b", failed, "fail")):
                gain = (part[group] - part.scratch).dropna() if group in part else pd.Series(dtype=float)
                cell[name], cell[f"n_{name}"] = (float(gain.mean()) if len(gain) else np.nan), len(gain)
            versus = {k: ((held["pass"] - held[k]).dropna() if {"pass", k} <= set(held) else pd.Series(dtype=float))
                      for k in ("reuse_all", "random_k")}
            benefit = (held.reuse_all - held.scratch).dropna() if "reuse_all" in held else pd.Series(dtype=float)
            rows.append({"regime": regime, "task": task, "fraction": fraction, "n_T": int(g.n_T.median()),
                         "seed": seed, **cell,
                         "interaction": cell["ab"] - cell["a_b"] - (cell["_ab"] - cell["__b"]),
                         "vs_reuse_all": versus["reuse_all"].mean() if len(versus["reuse_all"]) else np.nan,
                         "vs_random_k": versus["random_k"].mean() if len(versus["random_k"]) else np.nan,
                         "reuse_all_benefit": benefit.mean() if len(benefit) else np.nan})
    return pd.DataFrame(rows)


_HEAD_COLUMNS = {"H1": ("ab", "n_ab"), "H2": ("interaction", None), "H3a": ("vs_reuse_all", "n_ab"),
                 "H3b": ("vs_random_k", "n_ab")}


def headline(results: pd.DataFrame, layers: pd.DataFrame) -> pd.DataFrame:
    """The claims of :data:`HEADLINE` per regime, task and fraction, three-valued against 0
    with Student-t CIs over seeds (each seed's rungs averaged first; a seed without the cells a
    claim needs drops out, and ``n`` says how many remain); ``cells``: the rung-seed cells behind
    the (a)+(b) cell. Beside them the reuse-all benefit where (a) holds, the claim's
    target for power (see :func:`power`). Primary in the siblings regime only."""
    per_seed = factorial(results, layers)
    rows = []
    for (regime, task, fraction), g in per_seed.groupby(["regime", "task", "fraction"], sort=False):
        benefit = mean_verdict(g.reuse_all_benefit.dropna(), 0.0)["estimate"]
        for claim, (column, count) in _HEAD_COLUMNS.items():
            v = mean_verdict(g[column].dropna(), 0.0, "above")
            rows.append({"regime": regime, "claim": claim, "statement": HEADLINE[claim], "task": task,
                         "fraction": fraction, "n_T": int(g.n_T.median()), **v,
                         "cells": int(g.n_ab.sum()) if v["n"] else 0, "reuse_all_benefit": benefit})
    return pd.DataFrame(rows)


def power(heads: pd.DataFrame, family_size: int) -> pd.DataFrame:
    """``heads`` with each claim's smallest detectable effect at its Holm level
    (``detectable_holm``, :func:`reuse.study.claims.detectable_at_holm`: alpha / family_size,
    Holm's strictest step, which bounds every later one) beside the raw one, half the
    reuse-all benefit where (a) holds and whether each is at most that (``powered``,
    ``powered_holm``)."""
    half = heads.reuse_all_benefit.abs() / 2
    holm = pd.Series([claims.detectable_at_holm(r, family_size) for r in heads.to_dict("records")],
                     index=heads.index, dtype=float)
    return heads.assign(detectable_holm=holm, half_benefit=half, powered=heads.detectable <= half,
                        powered_holm=holm <= half)


def _rule_wide(results: pd.DataFrame, decisions: pd.DataFrame) -> pd.DataFrame:
    """The earlier rule's cells: :func:`_per_cell` of the siblings with its decisions."""
    cols = ["n_T", "strict_a", "n_rule", "n_rmse_only", "n_layers"]
    return _per_cell(results, "siblings").drop(columns="n_T").join(decisions.set_index(KEYS)[cols], on=KEYS)


def _seed_verdict(values: pd.Series, seeds: pd.Series) -> dict:
    """Per-seed means of ``values`` (cells pooled within a seed), judged against 0."""
    return mean_verdict(values.groupby(seeds.to_numpy()).mean(), 0.0, "above")


def rule_claims(results: pd.DataFrame, decisions: pd.DataFrame) -> pd.DataFrame:
    """The earlier rule's claims (:data:`RULE_CLAIMS`, exploratory) per task x fraction, as
    they were judged before the factorial design: H1 the rule against scratch where it reuses
    something, H2 the gain of the fitted (b)'s layers where (a) holds minus where it fails
    (on a layer set that hardly changes between rungs: not an interaction of (a) and (b)),
    H3a/H3b the rule against reuse-all and random sets of its size."""
    rows = []
    for (task, fraction), w in _rule_wide(results, decisions).groupby(["task", "fraction"], sort=True):
        gain = w.rmse_only - w.scratch
        both, differs = w.n_rule > 0, w.n_rule < w.n_layers
        h2 = (gain[w.strict_a].groupby(w.seed[w.strict_a]).mean()
              - gain[~w.strict_a].groupby(w.seed[~w.strict_a]).mean()).dropna()
        claims = {"H1": (_seed_verdict((w.rule - w.scratch)[both], w.seed[both]), int(both.sum())),
                  "H2": (mean_verdict(h2, 0.0, "above"), len(w)),
                  "H3a": (_seed_verdict((w.rule - w.reuse_all)[differs], w.seed[differs]), int(differs.sum()))}
        if "random" in w:
            some = both & differs & w.random.notna()
            claims["H3b"] = (_seed_verdict((w.rule - w.random)[some], w.seed[some]), int(some.sum()))
        for claim, (v, n_cells) in claims.items():
            rows.append({"claim": claim, "statement": RULE_CLAIMS[claim], "task": task, "fraction": fraction,
                         "n_T": int(w.n_T.median()), **v, "cells": n_cells if v["n"] else 0})
    return pd.DataFrame(rows)


def design_check(results: pd.DataFrame) -> pd.DataFrame:
    """Is n_T small enough to test reuse? Per task x fraction: the full-data target minus
    scratch (seed-paired, CI against 0): it must hold, or scratch leaves reuse nothing to add."""
    rows = []
    for (task, fraction), w in _per_cell(results, "siblings").groupby(["task", "fraction"], sort=True):
        rows.append({"task": task, "fraction": fraction, "n_T": int(w.n_T.median()),
                     "scratch": w.scratch.mean(), "full": w.full.mean(),
                     **_seed_verdict(w.full - w.scratch, w.seed)})
    return pd.DataFrame(rows)


def differences(results: pd.DataFrame) -> pd.DataFrame:
    """Each strategy's metric minus scratch's, per cell and regime (random draws averaged):
    one row per regime x task x architecture x pair x seed x n_T x strategy, column
    ``difference``."""
    frames = []
    for regime in [r for r in REGIMES if r in set(results.regime)]:
        w = _per_cell(results, regime).set_index([*KEYS, "n_T"]).drop(columns="full")
        own = set(results[results.regime == regime].strategy) - {"scratch"}
        diff = w.sub(w["scratch"], axis=0)[sorted(own)].rename_axis(columns="strategy")
        frames.append(diff.stack().rename("difference").reset_index().assign(regime=regime))
    return pd.concat(frames, ignore_index=True)


def comparisons(results: pd.DataFrame, pairs=None) -> pd.DataFrame:
    """Exploratory, siblings: strategy a minus strategy b per task x fraction (random draws
    averaged), each seed's difference averaged over architectures and pairs (``pairs``: all
    when None); three-valued against 0: holds when a is better, refuted when b is."""
    d = results[results.regime == "siblings"]
    d = d if pairs is None else d[d.pair.isin(pairs)]
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


def control_table(layers: pd.DataFrame) -> pd.DataFrame:
    """(b)'s controls per task x fraction (siblings): the per-seed share of layers passing (b),
    CI against 0.5, with the same-domain twin as the source (it should hold: retraining on the
    target's own task keeps a layer as close as the closer half of the sources) and with the
    different-initialisation model (it should be refuted)."""
    d = layers[layers.regime == "siblings"]
    rows = []
    for (task, fraction), g in d.groupby(["task", "fraction"], sort=True):
        for donor in ("twin", "different_init"):
            share = g[g.donor == donor].groupby("seed").b.mean()
            rows.append({"task": task, "fraction": fraction, "control": donor,
                         "expected": "holds" if donor == "twin" else "refuted",
                         **mean_verdict(share, 0.5, "above")})
    return pd.DataFrame(rows)


def b_table(layers: pd.DataFrame) -> pd.DataFrame:
    """How (b) came out per regime, fraction, rung and (a): the share of layers passing (mean
    over seeds) and the layers that pass in most seeds, so a reader sees (b) vary by source."""
    d = layers[layers.donor == "source"]
    rows = []
    for (regime, fraction, pair), g in d.groupby(["regime", "fraction", "pair"], sort=False):
        often = g.groupby("layer", sort=False).b.mean()
        rows.append({"regime": regime, "fraction": fraction, "n_T": int(g.n_T.median()), "pair": pair,
                     "a": bool(g.a.iloc[0]), "share_b": float(g.b.mean()),
                     "floor_ratio": float(g.floor_ratio.mean()),
                     "passes_in_most_seeds": ", ".join(often.index[often > 0.5])})
    return pd.DataFrame(rows)


def verdict_text(heads: pd.DataFrame, old: pd.DataFrame, tests: pd.DataFrame, harm: pd.DataFrame,
                 controls: pd.DataFrame, design: pd.DataFrame) -> str:
    """The notebook's computed verdicts, one Markdown line each: the factorial's claims by
    regime (siblings primary), then the earlier rule's, the exploratory comparisons and the
    controls."""
    lines = [f"- design, {r.task}, n_T = {r.n_T}: full-data target minus scratch {r.estimate:.3g} "
             f"[{r.ci_low:.3g}, {r.ci_high:.3g}] (n = {r.n} seeds): scratch is clearly worse: {r.verdict}."
             for r in design.itertuples()]
    for r in heads.itertuples():
        where = "primary" if r.regime == "siblings" else "exploratory"
        lines.append(f"- {where}, {r.regime}, {r.claim}, {r.task}, n_T = {r.n_T} ({r.statement}), before "
                     f"Holm's correction: {r.verdict} ({r.estimate:+.3g} [{r.ci_low:+.3g}, {r.ci_high:+.3g}], "
                     f"n = {r.n} seeds over {r.cells} (a)+(b) cells; smallest detectable effect "
                     f"{r.detectable:.2g}).")
    for r in old.itertuples():
        lines.append(f"- exploratory, the earlier rule's {r.claim}, {r.task}, n_T = {r.n_T} ({r.statement}): "
                     f"{r.verdict} ({r.estimate:+.3g} [{r.ci_low:+.3g}, {r.ci_high:+.3g}], n = {r.n} seeds).")
    for where, frame in (("exploratory", tests), (f"exploratory, {HARM_PAIR} only", harm)):
        for r in frame.itertuples():
            lines.append(f"- {where}, {r.task}, n_T = {r.n_T}: {r.comparison} = {r.estimate:.3g} "
                         f"[{r.ci_low:.3g}, {r.ci_high:.3g}] (n = {r.n} seeds): {r.verdict}.")
    for r in controls.itertuples():
        lines.append(f"- control, {r.task}, fraction {r.fraction}: (b) passes most layers of the "
                     f"{r.control.replace('_', '-')} model: {r.verdict} (share {r.estimate:.2f} "
                     f"[{r.ci_low:.2f}, {r.ci_high:.2f}], n = {r.n} seeds; expected {r.expected}: control "
                     f"{'passed' if r.verdict == r.expected else 'failed'}).")
    return "\n".join(lines)


def _record(judgment: str, r, margin: float = 0.0) -> dict:
    return {"judgment": judgment, "verdict": r.verdict, "estimate": r.estimate, "ci_low": r.ci_low,
            "ci_high": r.ci_high, "detectable": r.detectable, "n": r.n, "controls": "n/a",
            "margin": margin, "side": "above"}


def judgment(head) -> str:
    """The recorded name of a factorial claim (a row of :func:`headline`): primary in the
    siblings regime (named H1-H3b), exploratory in the others (named after the regime)."""
    name = f"{head.claim} {head.statement} ({head.task}, n_T {head.n_T})"
    return name if head.regime == "siblings" else f"{head.regime}: {name}"


def records(heads: pd.DataFrame, old: pd.DataFrame, tests: pd.DataFrame, harm: pd.DataFrame,
            controls: pd.DataFrame) -> pd.DataFrame:
    """Every verdict of the notebook, one row each: the factorial's claims (primary in the
    siblings regime), the earlier rule's claims, the exploratory comparisons and (b)'s
    controls."""
    rows = [{**_record(judgment(r), r), **_power_label(r)} for r in heads.itertuples()]
    rows += [_record(f"the earlier rule's {r.claim}: {r.statement} ({r.task}, n_T {r.n_T})", r)
             for r in old.itertuples()]
    for where, frame in (("all rungs", tests), (HARM_PAIR, harm)):
        rows += [_record(f"{r.comparison} ({r.task}, n_T {r.n_T}, {where})", r) for r in frame.itertuples()]
    rows += [_record(f"control: (b) passes most layers of the {r.control} ({r.task}, fraction {r.fraction})",
                     r, 0.5) for r in controls.itertuples()]
    return pd.DataFrame(rows)


def _power_label(head) -> dict:
    """``power``: whether a primary claim (a row of :func:`power`) can detect half the
    reuse-all benefit at its Holm level, or is decided only by a design with more seeds."""
    if head.regime != "siblings" or not hasattr(head, "powered_holm") or head.n < 2:
        return {}
    if head.powered_holm:
        return {"power": f"powered at its Holm level (detectable {head.detectable_holm:.2g} <= {head.half_benefit:.2g})"}
    return {"power": f"underpowered at its Holm level (detectable {head.detectable_holm:.2g} > half the reuse-all "
                     f"benefit {head.half_benefit:.2g}): decided only by a design with more seeds (the full profile)"}


def _after_holm(head, family: pd.DataFrame) -> tuple[str, str]:
    """(verdict after Holm, what to say beside the estimate) of a primary claim, from
    ``family`` (:func:`reuse.study.publishing.report.family_adjusted`)."""
    row = family.set_index("judgment").loc[judgment(head)]
    if not head.n:
        return row.verdict_holm, "no seed has the cells it needs"
    said = f"{head.estimate:+.3g} [{head.ci_low:+.3g}, {head.ci_high:+.3g}], n = {head.n} seeds"
    if row.verdict_holm != head.verdict:
        said += f", {head.verdict} before the correction"
    if np.isfinite(row.p_holm):
        said += f", Holm-adjusted p {row.p_holm:.2g}"
    if np.isfinite(row.get("detectable_holm", np.nan)):  # power against the benefit: findings' own line
        said += f"; detectable {head.detectable:.2g} raw, {row.detectable_holm:.2g} at Holm's level"
    return row.verdict_holm, said


def findings(heads: pd.DataFrame, layers: pd.DataFrame, harm: pd.DataFrame, family: pd.DataFrame) -> str:
    """What the E4 verdicts mean, computed from them; the first line is the headline's
    verdict in one sentence a reader can quote. The primary claims (siblings) are stated
    after Holm's correction over the primary family of ``family`` (every recorded verdict with
    this notebook's, :func:`reuse.study.publishing.report.family_adjusted`), as SUMMARY.md states them,
    with their power at that level (``heads`` from :func:`power`)."""
    if heads.empty:
        return "- No comparison could be made."
    primary = family[family.family == "primary"]
    notebooks = sorted(primary.notebook.unique())
    over = (f"after Holm's correction over the {len(primary)} primary claims recorded at this profile "
            f"(by notebook{'s' * (len(notebooks) > 1)} {', '.join(notebooks)})")
    sib = heads[heads.regime == "siblings"]
    said = []
    for r in sib[sib.claim == "H1"].sort_values("n_T").itertuples():
        verdict, beside = _after_holm(r, family)
        said.append(f"{verdict} at n_T = {r.n_T} ({beside})")
    lines = [f"- **Headline.** \"Where the network is reusable and the layer's kernel RMSE is small (over its "
             f"own noise floor), reusing it beats training from scratch\" {'; '.join(said)}; {over}."]
    src = layers[(layers.donor == "source") & (layers.regime == "siblings")]
    if src.pair.nunique() < 2:
        lines.append("- Only one rung ran: (b)'s median split and the (a) x (b) cells need two or more rungs.")
    if src.a.all() or not src.a.any():
        lines.append(f"- (a) {'holds' if src.a.all() else 'fails'} on every rung that ran: the interaction H2 "
                     "cannot be measured.")
    for claim in ("H2", "H3a", "H3b"):
        for r in sib[sib.claim == claim].itertuples():
            verdict, beside = _after_holm(r, family)
            lines.append(f"- {claim} at n_T = {r.n_T} ({r.statement}): {verdict} ({beside}).")
    if "detectable_holm" in sib:
        judged = sib[sib.n > 1]
        weak = judged[~judged.powered_holm.astype(bool)]
        lines.append(f"- Power at the Holm level: {len(judged) - len(weak)} of {len(judged)} primary E4 claims can "
                     "detect half the reuse-all benefit where (a) holds"
                     + (("; not " + ", ".join(f"{r.claim} at n_T = {r.n_T} (detectable {r.detectable_holm:.2g} "
                                              f"against {r.half_benefit:.2g})" for r in weak.itertuples())
                         + ": a verdict there needs more seeds (the full profile)") if len(weak) else "") + ".")
    for regime in [r for r in REGIMES[1:] if r in set(heads.regime)]:
        part = heads[heads.regime == regime]
        lines.append(f"- In the {regime} regime (exploratory): " + "; ".join(
            f"{r.claim} at n_T = {r.n_T} {r.verdict} ({r.estimate:+.3g} [{r.ci_low:+.3g}, {r.ci_high:+.3g}])"
            for r in part.itertuples()) + ".")
    if harm.empty:
        lines.append(f"- Negative transfer: {HARM_PAIR} did not run, so harm avoidance is not tested.")
        return "\n".join(lines)
    hurts = harm[(harm.comparison == "reuse_all - scratch") & (harm.verdict == "refuted")]
    lines.append(f"- Negative transfer on {HARM_PAIR}: reusing every layer is worse than scratch at "
                 + (", ".join(f"n_T = {n}" for n in hurts.n_T) if len(hurts) else
                    "no n_T (no harm to avoid at this scale)") + ".")
    return "\n".join(lines)
