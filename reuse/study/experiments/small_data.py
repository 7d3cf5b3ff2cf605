"""E4, small-data transfer: does the two-condition rule pay off? (docs/protocol.md, sections 5-6)

Target training on n_T samples (fractions of the profile's target training set). Every
strategy starts from theta_0 of the seed, takes the kernels of some conv layers from
theta_S, and fine-tunes everything on the same n_T samples for the same steps:

- ``scratch``: nothing reused;
- ``reuse_all``: every swappable conv layer;
- ``first_k``: the first k layers, k = the leading layers E2's rule selects in every
  *other* pair;
- ``rule_strict``: the paper's two conditions as it states them, decided without the
  held-out pair's full data: (a) the network is reusable: E1's J1 holds for this
  architecture and task in at least one other pair; (b) a layer's RMSE between theta_S and
  the scratch model trained on the same n_T samples is at most E3's threshold, fitted on
  the other pairs. Where (a) fails it reuses nothing and *is* scratch (no extra training);
- ``rule``: the same with condition (a) read at the level of the architecture, because J1
  is demanding (every kernel at once) and where it never holds the strict rule never
  reuses a layer: (a) holds when the network's kernels survive an exchange between
  same-domain models, i.e. J1's positive control (the twin) holds in every other pair;
- ``rmse_only``: condition (b) alone;
- ``random``: random layer sets of the size ``rmse_only`` chose (several draws);
- ``oracle``: the layers whose single-layer swap into the full-data theta_T keeps the
  reuse score above the margin (E2, this seed): it reads the full target data, so it is
  reported and never used to decide.

The fashion-random-labels pair (a source that memorised shuffled labels) is where reuse
can hurt; the rule should avoid that harm. The rule's controls: applied with the
same-domain twin as the source it should pick layers, with the different-initialisation
control none.
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
from .common import Evaluator, conditions, small_spec, trained

STRATEGIES = ("scratch", "reuse_all", "first_k", "rule_strict", "rule", "rmse_only", "random", "oracle")
HARM_PAIR = "fashion-random-labels"
COMPARISONS = (("rule_strict", "scratch"), ("rule", "scratch"), ("rmse_only", "scratch"),
               ("reuse_all", "scratch"), ("first_k", "scratch"), ("rule", "reuse_all"),
               ("rmse_only", "random"), ("oracle", "scratch"))


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


def _others(frame: pd.DataFrame, c) -> pd.DataFrame:
    """Rows of the same architecture and task from every pair but ``c``'s."""
    return frame[(frame.pair != c.pair) & (frame.architecture == c.architecture) & (frame.task == c.task)]


def _init(scratch: RunSpec, source: RunSpec, target_state: dict, layers: list[str]) -> RunSpec:
    if not layers:
        return scratch
    return scratch.replace(init_from=source, init_keys=tuple(kernel_keys(target_state, layers)))


def run(runner: Runner, profile: Profile, grid: Grid | None = None, fractions=None
        ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """All E4 measurements and the decisions behind them.

    Returns (results: architecture, task, pair, seed, n_T, fraction, strategy, draw,
    metric, value, n_reused; decisions: architecture, task, pair, seed, n_T, fraction,
    strict_a, network_reusable, criterion, threshold, fit_accuracy, k, n_layers, n_rule,
    rule_layers, rmse_only_layers, oracle_layers, twin_picked, different_init_picked).
    """
    grid = profile.e4_grid if grid is None else grid
    fractions = profile.e4_fractions if fractions is None else tuple(fractions)
    if not fractions or not all(0 < f <= 1 for f in fractions):
        raise ValueError(f"fractions={fractions!r}; allowed: values in (0, 1]")
    conds = conditions(grid, profile.seeds)
    runs = trained(runner, profile, conds)
    # what each pair teaches the others, from its full-data runs (never used on itself)
    all_conv, cells = e1.run(runner, profile, grid, full=False)
    j1 = e1.verdicts(all_conv, cells)
    swaps, _ = e2.swap_scores(runner, profile, grid, reestimate=(e2.PRIMARY_BN,))
    selected = e2.layer_verdicts(swaps, cells)
    points = e3.points(e3.kernel_distances(runner, profile, grid), swaps, cells)
    oracle_scores = swaps[(swaps.donor == "source")].set_index([*e2.FACTORS, "layer"]).reuse_score
    small = {(i, f): small_spec(r["target"].spec, max(2, round(f * r["target"].spec.n_train)),
                                profile.small)
             for i, r in enumerate(runs) for f in fractions}
    small_runs = dict(zip(small, runner.train_many(list(small.values()))))

    plans, decisions, fits = [], [], {}
    for (i, f), scratch in small.items():
        c, r = conds[i], runs[i]
        source, target_state = r["source"].spec, r["target"].state
        ev_layers = Evaluator(runner, profile, c, r["target"]).swap_layers
        others = _others(j1, c)
        strict = bool((others.verdict == "holds").any())
        reusable = bool(len(others)) and bool((others.twin_verdict == "holds").all())
        k = int(e2.first_k(_others(selected, c)).k.iloc[0]) if not _others(selected, c).empty else 0
        if c.pair not in fits:  # pooled over architectures and tasks, as in E3
            fits[c.pair] = fit_rule(points[points.pair != c.pair])
        fit = fits[c.pair]
        small_state = small_runs[i, f].state
        rmse_layers = _picked(r["source"].state, small_state, ev_layers, fit)
        rule_layers = rmse_layers if reusable else []
        oracle = [name for name in ev_layers
                  if oracle_scores.get((*c.factors().values(), name), np.nan) >= REUSABLE]
        rng = np.random.default_rng([c.seed, i, int(f * 1e6)])
        draws = [sorted(rng.choice(len(ev_layers), len(rmse_layers), replace=False).tolist())
                 for _ in range(profile.e4_random_draws)] if rmse_layers else []
        strategies = {("scratch", 0): [], ("reuse_all", 0): ev_layers, ("first_k", 0): ev_layers[:k],
                      ("rule_strict", 0): rmse_layers if strict else [], ("rule", 0): rule_layers,
                      ("rmse_only", 0): rmse_layers, ("oracle", 0): oracle}
        for d, idx in enumerate(draws):
            strategies[("random", d)] = [ev_layers[j] for j in idx]
        factors = {**c.factors(), "n_T": scratch.n_train, "fraction": f}
        decisions.append({**factors, "strict_a": strict, "network_reusable": reusable, **fit, "k": k,
                          "n_layers": len(ev_layers), "n_rule": len(rule_layers),
                          "rule_layers": ", ".join(rule_layers),
                          "rmse_only_layers": ", ".join(rmse_layers),
                          "oracle_layers": ", ".join(oracle),
                          "twin_picked": len(_picked(r["twin"].state, small_state, ev_layers, fit)),
                          "different_init_picked": len(_picked(r["different_init"].state, small_state,
                                                               ev_layers, fit))})
        plans.append((i, factors, {key: (_init(scratch, source, target_state, layers), layers)
                                   for key, layers in strategies.items()}))
    flat = {s.key: s for _, _, st in plans for s, _ in st.values()}
    done = dict(zip(flat, runner.train_many(list(flat.values()))))
    rows, evaluators = [], {}
    for i, factors, strategies in plans:
        if i not in evaluators:
            evaluators[i] = Evaluator(runner, profile, conds[i], runs[i]["target"])
        ev = evaluators[i]
        for (name, draw), (spec, layers) in strategies.items():
            rows.append({**factors, "strategy": name, "draw": draw, "metric": ev.metric,
                         "value": ev.score_run(done[spec.key]), "n_reused": len(layers)})
    return pd.DataFrame(rows), pd.DataFrame(decisions)


def differences(results: pd.DataFrame) -> pd.DataFrame:
    """Each strategy's metric minus scratch's, per cell (random: the mean over draws): one
    row per task x architecture x pair x seed x n_T x strategy with column ``difference``."""
    keys = ["task", "architecture", "pair", "seed", "n_T"]
    wide = results.pivot_table(index=keys, columns="strategy", values="value", aggfunc="mean")
    diff = wide.sub(wide["scratch"], axis=0).drop(columns="scratch")
    return diff.stack().rename("difference").reset_index()


def comparisons(results: pd.DataFrame, pairs=None) -> pd.DataFrame:
    """Strategy a minus strategy b per task x fraction (random: the mean over draws), each
    seed's difference averaged over architectures and pairs (``pairs``: all when None);
    three-valued against 0: holds when a is better, refuted when b is."""
    d = results if pairs is None else results[results.pair.isin(pairs)]
    wide = d.pivot_table(index=["task", "fraction", "architecture", "pair", "seed"],
                         columns="strategy", values="value", aggfunc="mean")
    rows = []
    for (task, fraction), g in wide.groupby(level=["task", "fraction"], sort=True):
        n_t = int(d[(d.task == task) & (d.fraction == fraction)].n_T.median())
        for a, b in COMPARISONS:
            if a in g and b in g:
                diff = (g[a] - g[b]).dropna().groupby(level="seed").mean()
                v = mean_verdict(diff, 0.0, "above")
                rows.append({"task": task, "fraction": fraction, "n_T": n_t,
                             "comparison": f"{a} - {b}", **v})
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


def verdict_text(tests: pd.DataFrame, harm: pd.DataFrame, controls: pd.DataFrame,
                 decisions: pd.DataFrame) -> str:
    """The notebook's computed findings, one Markdown line each."""
    lines = []
    for task, d in decisions.groupby("task", sort=False):
        lines.append(f"- {task}: the paper's condition (a) (J1 holds in another pair) passed in "
                     f"{int(d.strict_a.sum())} of {len(d)} cells, the architecture-level (a) in "
                     f"{int(d.network_reusable.sum())}; the rule reused at least one layer in "
                     f"{int((d.n_rule > 0).sum())} cells, condition (b) alone in "
                     f"{int((d.rmse_only_layers != '').sum())}.")
    for r in tests.itertuples():
        lines.append(f"- {r.task}, n_T = {r.n_T}: {r.comparison} = {r.estimate:.3g} "
                     f"[{r.ci_low:.3g}, {r.ci_high:.3g}] (n = {r.n} seeds, smallest detectable "
                     f"effect {r.detectable:.2g}): **{r.verdict}**.")
    for r in harm.itertuples():
        lines.append(f"- {HARM_PAIR} only, {r.task}, n_T = {r.n_T}: {r.comparison} = {r.estimate:.3g} "
                     f"[{r.ci_low:.3g}, {r.ci_high:.3g}]: **{r.verdict}**.")
    for r in controls.itertuples():
        lines.append(f"- control, {r.task}, fraction {r.fraction}: (b) picks most layers of the "
                     f"{r.control.replace('_', '-')} model: {r.verdict} (share {r.estimate:.2f} "
                     f"[{r.ci_low:.2f}, {r.ci_high:.2f}]; expected {r.expected}: control "
                     f"{'passed' if r.verdict == r.expected else 'failed'}).")
    return "\n".join(lines)


def records(tests: pd.DataFrame, harm: pd.DataFrame, controls: pd.DataFrame) -> pd.DataFrame:
    """Every verdict of the notebook, one row each."""
    rows = []
    for where, frame in (("all pairs", tests), (HARM_PAIR, harm)):
        rows += [{"judgment": f"{r.comparison} ({r.task}, n_T {r.n_T}, {where})", "verdict": r.verdict,
                  "estimate": r.estimate, "ci_low": r.ci_low, "ci_high": r.ci_high,
                  "detectable": r.detectable, "n": r.n, "controls": "n/a"} for r in frame.itertuples()]
    rows += [{"judgment": f"control: (b) picks most layers of the {r.control} ({r.task}, fraction {r.fraction})",
              "verdict": r.verdict, "estimate": r.estimate, "ci_low": r.ci_low, "ci_high": r.ci_high,
              "detectable": r.detectable, "n": r.n, "controls": "n/a"} for r in controls.itertuples()]
    return pd.DataFrame(rows)


def findings(tests: pd.DataFrame, harm: pd.DataFrame, decisions: pd.DataFrame) -> str:
    """What the E4 verdicts mean, computed from them."""
    if tests.empty:
        return "- No comparison could be made."
    lines = []
    if decisions.pair.nunique() < 2:
        lines.append("- Only one pair ran: the rule's conditions are learnt from the other pairs, so "
                     "with none it reuses nothing here; run two or more pairs to test it.")
    strict = int(decisions.strict_a.sum())
    lines.append(f"- The rule as the paper states it reused layers in {strict} of {len(decisions)} cells: "
                 + ("J1 never holds in another pair here, so it is scratch everywhere and the paper's "
                    "success condition cannot be seen with it." if strict == 0 else
                    "see its rows above."))
    top = tests[tests.n_T == tests.n_T.max()].set_index("comparison")
    for name, text in (("reuse_all - scratch", "reusing every layer against scratch"),
                       ("rule - scratch", "the rule against scratch"),
                       ("rule - reuse_all", "the rule against reusing every layer"),
                       ("rmse_only - random", "condition (b)'s layers against random layers of the same number")):
        if name in top.index:
            r = top.loc[name]
            lines.append(f"- At n_T = {int(top.n_T.iloc[0])}, {text}: {r.verdict} ({r.estimate:+.3g} "
                         f"[{r.ci_low:+.3g}, {r.ci_high:+.3g}]).")
    if harm.empty:
        lines.append(f"- Negative transfer: {HARM_PAIR} did not run, so harm avoidance is not tested.")
        return "\n".join(lines)
    hurts = harm[(harm.comparison == "reuse_all - scratch") & (harm.verdict == "refuted")]
    lines.append(f"- Negative transfer on {HARM_PAIR}: reusing every layer is worse than scratch at "
                 + (", ".join(f"n_T = {n}" for n in hurts.n_T) if len(hurts) else
                    "no n_T (no harm to avoid at this scale)") + ".")
    return "\n".join(lines)
