"""E1, network reusability (the paper's first judgment; docs/protocol.md, sections 5-6).

:func:`compute` swaps donor parameters into theta_T and scores the result on the target test
split (measurement M1): all conv kernels from each donor (source, same-domain twin,
different-initialisation control), with the target's BN statistics kept and re-estimated
on target data; the first k / last k conv layers from the source; and each parameter
type over the whole network from the source and the twin, and put back to theta_0 (the
baseline of C2 and C4).

:func:`verdicts` judges J1 per condition (the rule in :data:`RULE`), gated by its two
controls; :func:`companion_checks` judges C1-C4. Both are three-valued.
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd

from reuse.toolkit.alignment import apply_permutation, mismatched, permutation_spec, weight_matching
from reuse.toolkit.criteria import kernel_keys
from reuse.toolkit.stats import conjunction_p, p_value
from reuse.toolkit.surgery import select_keys
from reuse.toolkit.verdicts import LITTLE_LOSS, REUSABLE, SENSITIVE, conjunction, mean_verdict

from ..config import Grid, Profile
from ..training.data import rung_coordinates
from ..training.train import Runner, TrainedRun
from .common import (
    CONDITION,
    CONDITION_DONORS,
    FACTORS,
    RESET,
    Evaluator,
    cell_table,
    conditions,
    controlled_verdicts,
    ladder_grid,
    minus_reset,
    per_seed,
    trained,
    usable_only,
)

# the parameter-type ablation: one type over the whole network, and BN's two pairs
TYPE_SETS = {
    "conv_weight": ("conv_weight",), "conv_bias": ("conv_bias",),
    "bn_weight": ("bn_weight",), "bn_bias": ("bn_bias",),
    "bn_running_mean": ("bn_running_mean",), "bn_running_var": ("bn_running_var",),
    "bn_affine": ("bn_weight", "bn_bias"), "bn_stats": ("bn_running_mean", "bn_running_var"),
}
CURVE_POINTS = 6  # k values of the prefix and suffix curves (each swap re-estimates BN: costly)
STRANGERS = ("stranger", "stranger_aligned")  # the strangers regime's donors, raw and weight-matched
PRIMARY_BN = True  # J1 judges the swap after re-estimating BN statistics (see RULE)
RULE = (f"all conv kernels of the donor swapped into theta_T, BN statistics re-estimated on "
        f"target training data; reusable when the 95% CI over seeds of the mean reuse score "
        f"lies above {REUSABLE} and the CI of the seed-paired difference to the same kernels "
        f"reset to theta_0 lies above 0 (refuted when either lies below). Verdicts count only "
        f"where the twin holds and the different-initialisation control is refuted.")


def compute(runner: Runner, profile: Profile, grid: Grid | None = None, full: bool = True
        ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(measurements, cells) over ``grid`` (the profile's source ladder by default).

    Measurements: one row per swap with architecture, task, pair, seed, donor (the
    :data:`~reuse.study.experiments.common.CONDITION_DONORS` and the theta_0 reset), measure
    ('all_conv', 'prefix', 'suffix', 'param_type'), bn_reestimated, k (layers swapped),
    n_layers, param_type, metric, value, target_value, chance, delta, reuse_score; the
    all-conv swaps (J1's evidence) on every rung, the rest only on the main grid's pairs
    and when ``full``. Cells: :func:`reuse.study.experiments.common.cell_table`."""
    grid = ladder_grid(profile) if grid is None else grid
    conds = conditions(grid, profile.seeds)
    runs = trained(runner, profile, conds, roles=("source", "target", *CONDITION_DONORS[1:]))
    strange = [i for i, c in enumerate(conds) if c.architecture in profile.strangers.architectures
               and c.task in profile.strangers.tasks] if full else []
    for i, r in zip(strange, trained(runner, profile, [conds[i] for i in strange], roles=("stranger",))):
        runs[i] = {**runs[i], **r}
    rows, evaluators = [], []
    for i, (c, r) in enumerate(zip(conds, runs)):
        ev = Evaluator(runner, profile, c, r["target"])
        evaluators.append(ev)
        rows += _measure(ev, r, full and c.pair in profile.grid.pairs)
        if "stranger" in r:
            rows += _strangers(ev, r["stranger"])
        if runner.progress:
            print(f"  scored {i + 1}/{len(conds)} {c.architecture}/{c.task}/{c.pair} seed {c.seed}",
                  file=sys.stderr, flush=True)
    return pd.DataFrame(rows), cell_table(evaluators)


def _measure(ev: Evaluator, runs: dict, full: bool) -> list[dict]:
    layers, n = ev.swap_layers, len(ev.swap_layers)
    kernels = kernel_keys(ev.target.state, layers)
    out = []

    def add(scored, **tag):
        out.extend({**row, "k": n, "param_type": "kernels", "bn_reestimated": False, **tag,
                    "n_layers": n} for row in scored)
    for reest in (False, True):
        for donor in CONDITION_DONORS:
            add(ev.swap_rows(runs[donor], [kernels], reest), measure="all_conv", donor=donor,
                bn_reestimated=reest)
        add(ev.reset_rows([kernels], reest), measure="all_conv", donor=RESET, bn_reestimated=reest)
    if not full:
        return out
    ks = sorted({int(round(k)) for k in np.linspace(1, n, min(n, CURVE_POINTS))})
    for measure, pick in (("prefix", lambda k: layers[:k]), ("suffix", lambda k: layers[n - k:])):
        sets = [kernel_keys(ev.target.state, pick(k)) for k in ks]
        for k, row in zip(ks, ev.swap_rows(runs["source"], sets, PRIMARY_BN)):
            add([row], measure=measure, donor="source", k=k, bn_reestimated=PRIMARY_BN)
    bns = [name for name, m in ev.model.named_modules() if "BatchNorm" in type(m).__name__]
    sets = {name: select_keys(ev.model, [*layers, *bns], types) for name, types in TYPE_SETS.items()}
    sets = {name: keys for name, keys in sets.items() if keys}  # e.g. no learnt conv bias
    # from the source, the twin (for reference) and theta_0 (the baseline of C2 and C4: the same
    # types put back to their initial values, e.g. BN weight 1 and bias 0), BN statistics kept
    for donor in ("source", "twin", RESET):
        scored = (ev.reset_rows(list(sets.values())) if donor == RESET
                  else ev.swap_rows(runs[donor], list(sets.values())))
        for name, row in zip(sets, scored):
            add([row], measure="param_type", donor=donor, param_type=name)
    return out


def _strangers(ev: Evaluator, stranger: TrainedRun) -> list[dict]:
    """The strangers regime: all conv kernels of a source trained from another theta_0,
    swapped into theta_T as they are and after weight matching (Ainsworth et al. 2023)
    permutes its channels onto theta_T's; BN statistics re-estimated."""
    kernels = kernel_keys(ev.target.state, ev.swap_layers)
    spec = permutation_spec(ev.model)
    # a head whose classes differ (digits' 10 against 5) is never swapped: it stays out of the cost
    perms = weight_matching(spec, stranger.state, ev.target.state,
                            ignore=mismatched(stranger.state, ev.target.state))
    aligned = apply_permutation(spec, perms, stranger.state)
    rows = ev.swap_rows(stranger, [kernels], PRIMARY_BN) + ev.state_rows(
        f"aligned:{stranger.spec.key}:{ev.target.spec.key}", aligned, [kernels], PRIMARY_BN)
    n = len(ev.swap_layers)
    return [{**row, "measure": "all_conv", "donor": donor, "bn_reestimated": PRIMARY_BN, "k": n, "n_layers": n,
             "param_type": "kernels"} for row, donor in zip(rows, STRANGERS)]


def regimes(frame: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """The all-conv swap per rung in each regime measured: *siblings* (the source, shared
    theta_0) and *strangers* (a source from another theta_0, raw and weight-matched), each
    mean reuse score over seeds with its CI, verdict against :data:`REUSABLE`, number of seeds
    and detectable effect, and the seed-paired gain of weight matching (aligned minus raw,
    against 0; its seeds in ``n``). Exploratory."""
    d = usable_only(frame, cells)
    d = d[(d.measure == "all_conv") & (d.bn_reestimated == PRIMARY_BN)]
    rows = []
    for key, g in d.groupby(CONDITION, sort=False):
        if not g.donor.isin(STRANGERS).any():
            continue
        score = {name: per_seed(g[g.donor == name], "reuse_score", []).set_index("seed").reuse_score
                 for name in ("source", *STRANGERS)}
        row = dict(zip(CONDITION, key))
        for name, regime in (("source", "siblings"), *zip(STRANGERS, ("strangers", "strangers_aligned"))):
            v = mean_verdict(score[name], REUSABLE)
            row.update({f"{regime}_{k}": v[k]
                        for k in ("estimate", "ci_low", "ci_high", "verdict", "n", "detectable")})
        v = mean_verdict((score[STRANGERS[1]] - score[STRANGERS[0]]).dropna(), 0.0)
        row.update({f"matching_gain_{k}": v[k] for k in ("estimate", "ci_low", "ci_high", "verdict")},
                   n=v["n"])
        rows.append(row)
    return pd.DataFrame(rows)


def regime_text(table: pd.DataFrame) -> str:
    """One line per rung measured in the strangers regime."""
    return "\n".join(
        f"- regimes, {r.architecture}/{r.task}/{r.pair}: siblings {r.siblings_estimate:.2f} "
        f"({r.siblings_verdict}), "
        f"strangers {r.strangers_estimate:.2f} ({r.strangers_verdict}), strangers after weight matching "
        f"{r.strangers_aligned_estimate:.2f} ({r.strangers_aligned_verdict}); matching adds "
        f"{r.matching_gain_estimate:+.2f} [{r.matching_gain_ci_low:+.2f}, {r.matching_gain_ci_high:+.2f}] "
        f"({r.matching_gain_verdict}, n = {r.n})." for r in table.itertuples())


def verdicts(frame: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """J1 per condition: for each donor, the mean reuse score of the all-conv swap (BN
    re-estimated) over usable seeds with its CI, verdict and detectable effect; the
    source's verdict counts only where both controls behave (``controls``)."""
    d = usable_only(frame, cells)
    d = d[(d.measure == "all_conv") & (d.bn_reestimated == PRIMARY_BN)]
    return controlled_verdicts(d, CONDITION, REUSABLE)


def bn_variants(frame: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """Mean all-conv reuse score per condition x donor, BN statistics kept vs re-estimated."""
    d = usable_only(frame, cells)
    d = d[d.measure == "all_conv"]
    return (d.pivot_table(index=[*CONDITION, "donor"], columns="bn_reestimated", values="reuse_score",
                          aggfunc="mean", sort=False)
            .rename(columns={False: "BN kept", True: "BN re-estimated"}).reset_index())


def companion_checks(frame: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """C1-C4 of the companion paper (arXiv 2008.03414), three-valued.

    From the source's parameter-type swaps (BN statistics kept: C1 is about them), each
    seed's value averaged over the usable conditions, CI over seeds:

    - C1 BN running statistics matter more than BN weight and bias:
      r(bn_affine) - r(bn_stats) above 0;
    - C2 BN weight and bias can be reused: r(bn_affine) above LITTLE_LOSS *and* above the
      same parameters reset to theta_0 (weight 1, bias 0), paired by seed;
    - C3 the network is very sensitive to conv weights: r(conv_weight) below SENSITIVE;
    - C4 conv biases are not sensitive and can be reused directly: r(conv_bias) above
      LITTLE_LOSS *and* above the same biases reset to theta_0, paired by seed, over the
      biases that get gradients (convs feeding BatchNorm have none; heads are left out where
      classes differ).

    C2 and C4 say the source's parameters can be reused, which a high score alone cannot
    show where the parameters barely left theta_0: like J1 and Y1 they are conjunctions
    (:func:`~reuse.toolkit.verdicts.conjunction`: refuted when either part is refuted; without
    reset rows that part is undecided, and so is the claim), with ``margin_verdict`` (the
    score against the margin alone), ``reset_estimate`` and ``minus_reset_*`` beside.
    C1 and C3 claim no reuse: C1 compares two parameter types within the source's swaps, and
    C3 is a *low* score (sensitivity), which closeness to theta_0 could never produce; the
    reset does not apply to them and their ``minus_reset_*`` are NaN.
    """
    d = usable_only(frame, cells)
    d = d[d.measure == "param_type"]
    wide = (d[d.donor == "source"].pivot_table(index=FACTORS, columns="param_type", values="reuse_score")
            .reindex(columns=list(TYPE_SETS)).reset_index())
    wide["affine_minus_stats"] = wide["bn_affine"] - wide["bn_stats"]
    checks = [
        ("C1", "BN running mean/var matter more than BN weight/bias",
         "r(bn_affine) - r(bn_stats) above 0", "affine_minus_stats", 0.0, "above", False),
        ("C2", "BN weight and bias can be reused",
         f"r(bn_affine) above {LITTLE_LOSS} and above BN weight and bias reset to theta_0 (paired by seed)",
         "bn_affine", LITTLE_LOSS, "above", True),
        ("C3", "the network is very sensitive to conv weights", f"r(conv_weight) below {SENSITIVE}",
         "conv_weight", SENSITIVE, "below", False),
        ("C4", "conv biases are not sensitive and can be reused directly",
         f"r(conv_bias) above {LITTLE_LOSS} and above the same biases reset to theta_0 (paired by seed; "
         f"biases that get gradients)", "conv_bias", LITTLE_LOSS, "above", True),
    ]
    stats = ("estimate", "ci_low", "ci_high", "verdict")
    rows = []
    for claim, statement, rule, column, margin, side, against_reset in checks:
        v = mean_verdict(per_seed(wide, column, [])[column], margin, side)
        measured = wide[wide[column].notna()]
        row = {"claim": claim, "statement": statement, "rule": rule, **v, "margin_verdict": v["verdict"],
               "reset_estimate": np.nan, **{f"minus_reset_{k}": np.nan for k in stats}}
        if against_reset:
            row.update(minus_reset(d[d.param_type == column]))
            row["verdict"] = conjunction(v["verdict"], row["minus_reset_verdict"])
        rows.append({**row, "margin": margin, "side": side,
                     "conditions": len(measured[CONDITION].drop_duplicates())})
    return pd.DataFrame(rows)


def verdict_text(table: pd.DataFrame, checks: pd.DataFrame) -> str:
    """The notebook's computed findings, one Markdown line each."""
    lines = []
    for r in table.itertuples():
        reset = (f"minus the theta_0 reset {r.minus_reset_estimate:+.2f} [{r.minus_reset_ci_low:+.2f}, "
                 f"{r.minus_reset_ci_high:+.2f}] ({r.minus_reset_verdict}), ")
        lines.append(f"- J1 {r.architecture}/{r.task}/{r.pair}: **{r.verdict}** (source "
                     f"{r.source_estimate:.2f} [{r.source_ci_low:.2f}, {r.source_ci_high:.2f}], {reset}raw "
                     f"difference to theta_T {r.source_delta:+.3g}, n = "
                     f"{r.n}, smallest detectable effect {r.detectable:.2f}; twin {r.twin_verdict}, "
                     f"different init {r.different_init_verdict}: controls {r.controls}).")
    for r in checks.itertuples():
        reset = (f"; against the margin alone {r.margin_verdict}, the theta_0 reset {r.reset_estimate:.2f}, "
                 f"minus the reset {r.minus_reset_estimate:+.2f} [{r.minus_reset_ci_low:+.2f}, "
                 f"{r.minus_reset_ci_high:+.2f}] ({r.minus_reset_verdict})"
                 if isinstance(r.minus_reset_verdict, str) else "")
        lines.append(f"- {r.claim} ({r.statement}; {r.rule}): **{r.verdict}** ({r.estimate:.2f} "
                     f"[{r.ci_low:.2f}, {r.ci_high:.2f}], n = {r.n} seeds over {r.conditions} "
                     f"conditions, smallest detectable effect {r.detectable:.2f}{reset}).")
    return "\n".join(lines)


def findings(table: pd.DataFrame, variants: pd.DataFrame) -> str:
    """What the verdicts mean, computed from them (so it cannot contradict them)."""
    if table.empty:
        return "- No condition has a usable target model: nothing is judged."
    n = len(table)
    twin = int((table.twin_verdict == "holds").sum())
    neg = int((table.different_init_verdict == "refuted").sum())
    ok = table[table.controls == "passed"]
    lines = [f"- Controls: the same-domain twin holds in {twin} of {n} conditions and the "
             f"different-initialisation control is refuted in {neg} of {n}; the rule can tell "
             f"reusable from not reusable in the {len(ok)} conditions where both behave."]
    if len(ok):
        lines.append(f"- Where the controls behave, the source is reusable in "
                     f"{int((ok.verdict == 'holds').sum())}, not reusable in "
                     f"{int((ok.verdict == 'refuted').sum())} and undecided in "
                     f"{int((ok.verdict == 'undecided').sum())} of {len(ok)} conditions.")
    failed = table[table.controls != "passed"]
    for r in failed.itertuples():
        lines.append(f"- {r.architecture}/{r.task}/{r.pair} stays undecided because its controls "
                     f"fail ({r.controls.removeprefix('failed: ')}): the swap score there does not "
                     f"separate a same-domain model from a model of another initialisation.")
    twin_rows = variants[variants.donor == "twin"]
    if len(twin_rows) and {"BN kept", "BN re-estimated"} <= set(twin_rows.columns):
        lines.append(f"- Re-estimating BN statistics moves the twin's all-conv score from "
                     f"{twin_rows['BN kept'].mean():.2f} to {twin_rows['BN re-estimated'].mean():.2f} "
                     f"(mean over conditions): without it even a same-domain swap breaks.")
    return "\n".join(lines)


def ladder_text(table: pd.DataFrame, rungs: list[str]) -> str:
    """J1 along the ladder in one sentence per architecture x task: how many rungs hold and
    are refuted (the design's requirement: at least two each, with the controls passing)."""
    lines = []
    for (arch, task), g in table.groupby(["architecture", "task"], sort=False):
        g = g.set_index("pair").reindex([r for r in rungs if r in set(g.pair)])
        steps = ", ".join(f"{pair} {r.verdict} ({r.source_estimate:.2f})" for pair, r in g.iterrows())
        twin = g.twin_verdict.iloc[0] if len(g) else "n/a"
        held = 1 + int((g.verdict == "holds").sum()) if twin == "holds" else int((g.verdict == "holds").sum())
        refuted = int((g.verdict == "refuted").sum())
        enough = "both ways" if held >= 2 and refuted >= 2 else "not both ways (fewer than two rungs each)"
        lines.append(f"- J1 along the ladder, {arch}/{task}: twin {twin}, then {steps}. Counting the "
                     f"twin, J1 holds on {held} rungs and is refuted on {refuted}: condition (a) comes "
                     f"out {enough}.")
    return "\n".join(lines)


def records(table: pd.DataFrame, checks: pd.DataFrame, regime_table: pd.DataFrame) -> pd.DataFrame:
    """Every verdict of the notebook, one row each, for results/ and the summary (J1 with
    the source's score against the margin; its verdict also needs the reset comparison)."""
    rows = [{"judgment": f"J1 {r.architecture}/{r.task}/{r.pair}", "verdict": r.verdict,
             "estimate": r.source_estimate, "ci_low": r.source_ci_low, "ci_high": r.source_ci_high,
             "detectable": r.detectable, "n": r.n, "controls": r.controls, "margin": REUSABLE,
             "side": "above", "p": _conjunction_p(r, "source_", REUSABLE, r.source_verdict)}
            for r in table.itertuples()]
    rows += [{"judgment": f"{regime} {r.architecture}/{r.task}/{r.pair}: all-conv swap reusable",
              **{k: getattr(r, f"{regime}_{k}")
                 for k in ("verdict", "estimate", "ci_low", "ci_high", "detectable", "n")},
              "controls": "n/a", "margin": REUSABLE, "side": "above"}
             for r in regime_table.itertuples() for regime in ("strangers", "strangers_aligned")]
    rows += [{"judgment": r.claim, "verdict": r.verdict, "estimate": r.estimate, "ci_low": r.ci_low,
              "ci_high": r.ci_high, "detectable": r.detectable, "n": r.n, "controls": "n/a",
              "margin": r.margin, "side": r.side, "p": _conjunction_p(r, "", r.margin, r.margin_verdict)
              if isinstance(r.minus_reset_verdict, str) else np.nan} for r in checks.itertuples()]
    return pd.DataFrame(rows)


def _conjunction_p(r, prefix: str, margin: float, verdict: str) -> float:
    """The p of a claim "above ``margin`` and above the theta_0 reset" for the Holm step
    (:func:`reuse.study.conjunction_p`) from a verdict row: the ``<prefix>estimate``,
    ``_ci_low``, ``_ci_high`` part against ``margin`` (its verdict ``verdict``) and the
    ``minus_reset_*`` part against 0."""
    return conjunction_p([
        (p_value(getattr(r, f"{prefix}estimate"), getattr(r, f"{prefix}ci_low"),
                        getattr(r, f"{prefix}ci_high"), r.n, margin), verdict),
        (p_value(r.minus_reset_estimate, r.minus_reset_ci_low, r.minus_reset_ci_high, r.n, 0.0),
         r.minus_reset_verdict)])


def by_coordinates(table: pd.DataFrame) -> pd.DataFrame:
    """J1 per rung beside where the rung stands (:func:`reuse.study.training.data.rung_coordinates`: the
    share of the target's classes its source has, the shift of its images, other data,
    scrambled targets), so that J1 can be read against label overlap and against shift: (a)
    is a test only if it is not just "the same labels as the target"."""
    coords = pd.DataFrame([{"pair": p, **rung_coordinates(p)} for p in table.pair.unique()],
                          columns=["pair", "label_overlap", "shift", "other_data", "scrambled"])
    cols = [*CONDITION, "label_overlap", "shift", "other_data", "scrambled", "source_estimate", "source_ci_low",
            "source_ci_high", "minus_reset_estimate", "verdict", "controls", "n"]
    return table.merge(coords, on="pair", how="left")[cols]


def coordinates_text(coords: pd.DataFrame) -> str:
    """One line per architecture x task: on how many rungs J1 holds, is refuted and is
    undecided, and which label overlaps and shifts each verdict spans."""
    lines = []
    for (arch, task), g in coords.groupby(["architecture", "task"], sort=False):
        parts = []
        for verdict in ("holds", "refuted", "undecided"):
            v = g[g.verdict == verdict]
            if len(v):
                spots = ", ".join(f"{r.pair} (overlap {r.label_overlap:g}, shift {r['shift']:g})"
                                  for _, r in v.iterrows())
                parts.append(f"{verdict} on {len(v)} ({spots})")
        mixed = g[(g.label_overlap > 0) & (g.label_overlap < 1)]
        lines.append(f"- J1 against label overlap and shift, {arch}/{task}: " + "; ".join(parts)
                     + (f". On the rungs of partial label overlap J1 is {', '.join(sorted(set(mixed.verdict)))}"
                        if len(mixed) else "") + ".")
    return "\n".join(lines)
