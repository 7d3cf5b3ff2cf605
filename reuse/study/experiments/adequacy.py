"""Training adequacy: are the networks trained to a plateau? (docs/protocol.md, section 8)

A swap into a network that has not learnt its task measures noise. Per architecture x
task x pair, the first seed's target run is repeated with ``profile.adequacy_factor``
times the steps; every seed's target must reach :data:`~reuse.toolkit.verdicts.ADEQUATE` (95%) of
that longer run's gap above chance. Pairs that share another pair's target runs
(fashion-random-labels) are judged as that pair. :func:`run` returns the learning curves and one row
per cell; :func:`summary` one row per condition with the verdict.
"""

from __future__ import annotations

import dataclasses

import pandas as pd

from reuse.toolkit.metrics import PRIMARY
from reuse.toolkit.verdicts import ADEQUATE

from ..config import Grid, Profile
from ..data import SAME_TARGET
from ..train import Runner
from .common import CONDITION, Evaluator, cell_table, conditions, specs, trained


def run(runner: Runner, profile: Profile, grid: Grid | None = None
        ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(curves, cells) of ``grid`` (the profile's main grid by default).

    curves: architecture, task, pair, seed, run ('target', 'twin' or 'long'), step, metric,
    value (the learning curves, on each run's monitor split). cells: architecture, task,
    pair, seed, metric, target_value, twin_value, chance, gap, min_gap, usable, long_value,
    long_steps, ratio (gap / the long run's gap), all on the target test split.
    """
    grid = profile.grid if grid is None else grid
    # a pair whose target side is another pair's has the same target runs: judged as that pair
    conds = list(dict.fromkeys(dataclasses.replace(c, pair=SAME_TARGET.get(c.pair, c.pair))
                               for c in conditions(grid, profile.seeds)))
    runs = trained(runner, profile, conds, roles=("target", "twin"))
    first = {}
    for c in conds:
        first.setdefault((c.architecture, c.task, c.pair), c)
    longs = {k: specs(runner, profile, c, ("target",))["target"] for k, c in first.items()}
    longs = {k: s.replace(steps=s.steps * profile.adequacy_factor) for k, s in longs.items()}
    long_runs = dict(zip(longs, runner.train_many(list(longs.values()))))
    curves, evaluators, rows = [], [], []
    long_values = {}
    for c, r in zip(conds, runs):
        key = (c.architecture, c.task, c.pair)
        ev = Evaluator(runner, profile, c, r["target"])
        evaluators.append(ev)
        if key not in long_values:
            long_values[key] = ev.score_run(long_runs[key])
        rows.append({"twin_value": ev.score_run(r["twin"]), "long_value": long_values[key],
                     "long_steps": longs[key].steps})
        named = {"target": r["target"], "twin": r["twin"]}
        if c == first[key]:
            named["long"] = long_runs[key]
        for name, run_ in named.items():
            metric = PRIMARY[c.task]
            curves += [{**c.factors(), "run": name, "step": h["step"], "metric": metric,
                        "value": h[metric]} for h in run_.history]
    cells = pd.concat([cell_table(evaluators), pd.DataFrame(rows)], axis=1)
    cells["ratio"] = cells.gap / (cells.long_value - cells.chance)
    return pd.DataFrame(curves), cells


def summary(cells: pd.DataFrame) -> pd.DataFrame:
    """Per condition: mean target, twin, long run and chance; the ratio of the seed the
    long run shares (``same_seed_ratio``: training length alone), the smallest and the mean
    ratio over seeds (seed-to-seed spread included); ``adequate`` when every seed's ratio is
    at least :data:`ADEQUATE`; and how many seeds are usable (far enough above chance)."""
    g = cells.groupby(CONDITION, sort=False)
    out = g.agg(metric=("metric", "first"), target=("target_value", "mean"),
                twin=("twin_value", "mean"), long_run=("long_value", "first"),
                chance=("chance", "first"), same_seed_ratio=("ratio", "first"),
                min_ratio=("ratio", "min"), mean_ratio=("ratio", "mean"), seeds=("seed", "count"),
                usable_seeds=("usable", "sum")).reset_index()
    out["adequate"] = out.min_ratio >= ADEQUATE
    return out


def verdict_lines(table: pd.DataFrame, factor: int) -> list[str]:
    """The adequacy check as Markdown lines, computed from :func:`summary`."""
    bad = table[~table.adequate]
    lines = [f"- Training adequacy: {int(table.adequate.sum())} of {len(table)} conditions reach "
             f"{ADEQUATE:.0%} of a {factor}x longer run's gap above chance in every seed."]
    lines += [f"  - not adequate: {r.architecture}/{r.task}/{r.pair}: smallest ratio {r.min_ratio:.3f}, "
              f"mean {r.mean_ratio:.3f}, the long run's own seed {r.same_seed_ratio:.3f} (target "
              f"{r.target:.3g}, long run {r.long_run:.3g}, chance {r.chance:.3g})."
              for r in bad.itertuples()]
    return lines
