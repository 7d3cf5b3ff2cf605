"""E1, network reusability (the paper's first judgment, PROTOCOL section 5).

:func:`run` swaps source-trained parameters into a target-trained model of the same
initialisation and scores it on the target test split (measurement M1), for: all conv
kernels (with and without BN re-estimation, and the different-initialisation
control), the first k / last k conv layers, and each parameter type over the whole
network. :func:`verdicts` and :func:`companion_checks` turn the tidy result into the
notebook's judgments with stated, computed rules.
"""

from __future__ import annotations

import sys

import pandas as pd

from ..config import Profile, check_choices
from ..data import PAIRS, TASKS
from ..models import ARCHITECTURES
from ..stats import summarise
from ..surgery import KERNEL_TYPES, prefix, select_keys, suffix
from ..train import Runner
from .common import Condition, Evaluator, specs

# the parameter-type ablation: one type over the whole network, and BN's two pairs
TYPE_SETS = {
    "conv_weight": ("conv_weight",), "conv_bias": ("conv_bias",),
    "bn_weight": ("bn_weight",), "bn_bias": ("bn_bias",),
    "bn_running_mean": ("bn_running_mean",), "bn_running_var": ("bn_running_var",),
    "bn_affine": ("bn_weight", "bn_bias"), "bn_stats": ("bn_running_mean", "bn_running_var"),
}
SINGLE_TYPES = tuple(TYPE_SETS)[:6]


def run(runner: Runner, profile: Profile, architectures=ARCHITECTURES, tasks=TASKS,
        pairs=("fashion-split", "fashion-to-digits"), shift: float = 0.5) -> pd.DataFrame:
    """All E1 measurements, one row each.

    Columns: architecture, task, pair, seed, measure ('all_conv', 'prefix', 'suffix',
    'param_type'), init ('shared' or 'different'), bn_reestimated, k (layers swapped),
    n_layers, param_type, metric, value, target_value, chance, reuse_score.
    """
    architectures = check_choices("architectures", architectures, ARCHITECTURES)
    tasks = check_choices("tasks", tasks, TASKS)
    pairs = check_choices("pairs", pairs, PAIRS)
    conditions = [Condition(a, t, p, s, shift if p == "fashion-shift" else 0.0)
                  for a in architectures for t in tasks for p in pairs for s in profile.seeds]
    condition_specs = [specs(runner, profile, c) for c in conditions]
    flat = [spec for sp in condition_specs for spec in sp.values()]
    runs = dict(zip([s.key for s in flat], runner.train_many(flat)))
    rows = []
    for i, (c, sp) in enumerate(zip(conditions, condition_specs)):
        source, target, target_diff = (runs[sp[k].key] for k in ("source", "target", "target_diff"))
        ev = Evaluator(runner, profile, c, target)
        rows += _measure(ev, source.state, target_diff.state)
        if runner.progress:
            print(f"  scored {i + 1}/{len(conditions)} {c.architecture}/{c.task}/{c.pair} seed {c.seed}",
                  file=sys.stderr, flush=True)
    return pd.DataFrame(rows)


def _measure(ev: Evaluator, source: dict, target_diff: dict) -> list[dict]:
    layers, n = ev.layers, len(ev.layers)
    kernels = select_keys(ev.model, layers, KERNEL_TYPES)
    tags = [dict(measure="all_conv")]
    key_sets = [kernels]
    for k in range(1, n + 1):
        tags += [dict(measure="prefix", k=k), dict(measure="suffix", k=k)]
        key_sets += [select_keys(ev.model, prefix(layers, k), KERNEL_TYPES),
                     select_keys(ev.model, suffix(layers, k), KERNEL_TYPES)]
    for name, types in TYPE_SETS.items():
        tags.append(dict(measure="param_type", param_type=name))
        key_sets.append(select_keys(ev.model, None, types))
    scored = list(zip(ev.swap_rows(source, key_sets), tags))
    scored.append((ev.swap_row(source, kernels, reestimate=True),
                   dict(measure="all_conv", bn_reestimated=True)))
    scored.append((ev.swap_row(source, kernels, target=target_diff,
                               target_value=ev.score(target_diff)),
                   dict(measure="all_conv", init="different")))
    defaults = dict(k=n, param_type="kernels", init="shared", bn_reestimated=False)
    return [{**row, **defaults, **tag, "n_layers": n} for row, tag in scored]


def reuse_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean reuse score of swapping all conv kernels with its 95% CI over seeds, per
    architecture x task x pair x (init, BN re-estimation)."""
    all_conv = frame[frame.measure == "all_conv"]
    return summarise(all_conv, ["architecture", "task", "pair", "init", "bn_reestimated"])


def verdicts(frame: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Which networks are reusable: shared init, no BN re-estimation, all conv kernels.

    Rule: reusable when the lower end of the 95% CI of the mean reuse score over seeds
    is at least ``threshold`` (the swap keeps that fraction of above-chance performance).
    """
    s = reuse_summary(frame)
    s = s[(s.init == "shared") & ~s.bn_reestimated].drop(columns=["init", "bn_reestimated"])
    s["reusable"] = s.ci_low >= threshold
    return s.reset_index(drop=True)


def companion_checks(frame: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """C1-C4 of the companion paper (arXiv 2008.03414), each with a computed verdict.

    Pooled over every architecture, task, pair and seed, from the parameter-type swaps:
    - C1 BN running statistics matter more than BN weight and bias: the paired difference
      r(bn_affine) - r(bn_stats) has a 95% CI above 0.
    - C2 BN weight and bias can be reused: r(bn_affine) has a CI lower end >= threshold.
    - C3 the network is very sensitive to conv weights: r(conv_weight) has the lowest
      mean of the six types and its CI upper end is below threshold.
    - C4 conv biases are not sensitive: r(conv_bias) has a CI lower end >= threshold.
    """
    types = frame[frame.measure == "param_type"]
    wide = types.pivot_table(index=["architecture", "task", "pair", "seed"], columns="param_type",
                             values="reuse_score")
    s = summarise(types, ["param_type"]).set_index("param_type")
    diff = (wide["bn_affine"] - wide["bn_stats"]).rename("d").to_frame()
    d = summarise(diff.assign(g=0), ["g"], value="d").iloc[0]
    lowest = s.loc[list(SINGLE_TYPES), "mean"].idxmin()
    rows = [
        ("C1", "BN running mean/var matter more than BN weight/bias",
         "95% CI of r(bn_affine) - r(bn_stats) above 0", d, d.ci_low > 0),
        ("C2", "BN weight and bias can be reused",
         f"CI lower end of r(bn_affine) >= {threshold}", s.loc["bn_affine"],
         s.loc["bn_affine", "ci_low"] >= threshold),
        ("C3", "the network is very sensitive to conv weights",
         f"r(conv_weight) lowest of the six types (lowest: {lowest}) and CI upper end < {threshold}",
         s.loc["conv_weight"], lowest == "conv_weight" and s.loc["conv_weight", "ci_high"] < threshold),
        ("C4", "conv biases are not sensitive and can be reused directly",
         f"CI lower end of r(conv_bias) >= {threshold}", s.loc["conv_bias"],
         s.loc["conv_bias", "ci_low"] >= threshold),
    ]
    return pd.DataFrame([{"claim": c, "statement": st, "rule": rule, "estimate": v["mean"],
                          "ci_low": v["ci_low"], "ci_high": v["ci_high"],
                          "verdict": "holds" if ok else "does not hold"}
                         for c, st, rule, v, ok in rows])


def verdict_text(verdict_table: pd.DataFrame, checks: pd.DataFrame, threshold: float) -> str:
    """The notebook's conclusion, written from the computed tables."""
    lines = []
    for arch, group in verdict_table.groupby("architecture", sort=False):
        ok = group[group.reusable]
        cells = ", ".join(f"{r.task}/{r.pair}" for r in ok.itertuples()) or "none"
        lines.append(f"- {arch}: reusable in {len(ok)} of {len(group)} task/pair conditions "
                     f"(lower 95% CI end of r >= {threshold}): {cells}.")
    for r in checks.itertuples():
        lines.append(f"- {r.claim} ({r.statement}): {r.verdict} "
                     f"(estimate {r.estimate:.2f}, 95% CI [{r.ci_low:.2f}, {r.ci_high:.2f}]).")
    return "\n".join(lines)
