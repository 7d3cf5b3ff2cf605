"""Training adequacy: are the networks trained to a plateau? (docs/protocol.md, section 6)

A swap into a network that has not learnt its task measures noise. Each run is judged on
its own learning curve (the primary metric on its monitor split, recorded during
training): it has plateaued when the curve rose by less than
1 - :data:`~reuse.toolkit.verdicts.ADEQUATE` (5%) of its final gap above chance over the
last quarter of its steps. So one seed's verdict never depends on another seed's run, and
no longer run is trained for it. Chance is the cell's, on the target test split (the
monitor split is drawn from the same test images).
A condition is adequate when every seed's target and twin have plateaued. Pairs that
share another pair's target runs (every rung of the ladder) are judged as that pair.
:func:`run` returns the learning curves and one row per cell; :func:`summary` one row per
condition with the verdict.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pandas as pd

from reuse.toolkit.metrics import PRIMARY
from reuse.toolkit.verdicts import ADEQUATE

from ..config import Grid, Profile
from ..data import target_pair
from ..train import Runner
from .common import CONDITION, Condition, Evaluator, cell_table, conditions, trained

LATE = 0.75  # the last quarter of a run's steps is where a trained run has stopped rising
RUNS = ("target", "twin")


def late_rise(steps: Sequence[int], values: Sequence[float]) -> float:
    """How much a learning curve rose over the last quarter of training: its last value
    minus its value at the last recorded step at or before ``LATE`` of the final step."""
    if not len(steps) or len(steps) != len(values):
        raise ValueError(f"{len(steps)} steps, {len(values)} values; expected one value per step, >= 1")
    before = [v for s, v in zip(steps, values) if s <= LATE * steps[-1]]
    return float(values[-1] - (before[-1] if before else values[0]))


def rise_share(steps: Sequence[int], values: Sequence[float], chance: float) -> float:
    """:func:`late_rise` as a share of the final gap above chance (inf when the run ends
    at or below chance: not trained whatever its curve does)."""
    gap = values[-1] - chance
    return late_rise(steps, values) / gap if gap > 0 else float("inf")


def plateaued(share: float) -> bool:
    """Whether a run's late rise is small enough to call it trained."""
    return bool(share < 1 - ADEQUATE)


def _shared_target(c: Condition) -> Condition:
    """``c`` as the pair whose target runs it shares (every rung of the ladder: fashion-split)."""
    shared = target_pair(c.pair)
    return c if shared == c.pair else dataclasses.replace(c, pair=shared, shift=0.0)


def run(runner: Runner, profile: Profile, grid: Grid | None = None
        ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(curves, cells) of ``grid`` (the profile's main grid by default).

    curves: architecture, task, pair, seed, run ('target' or 'twin'), step, metric, value
    (the learning curves, on each run's monitor split). cells: architecture, task, pair,
    seed, metric, target_value, twin_value, chance, gap, min_gap, usable (on the target
    test split), and per run in :data:`RUNS` ``<run>_rise`` (:func:`rise_share` of its
    curve) and ``<run>_plateaued`` (:func:`plateaued`).
    """
    grid = profile.grid if grid is None else grid
    # a pair whose target side is another pair's has the same target runs: judged as that pair
    conds = list(dict.fromkeys(_shared_target(c) for c in conditions(grid, profile.seeds)))
    runs = trained(runner, profile, conds, roles=RUNS)
    curves, evaluators, rows = [], [], []
    for c, r in zip(conds, runs):
        ev = Evaluator(runner, profile, c, r["target"])
        evaluators.append(ev)
        metric = PRIMARY[c.task]
        row = {"twin_value": ev.score_run(r["twin"])}
        for name in RUNS:
            steps, values = [h["step"] for h in r[name].history], [h[metric] for h in r[name].history]
            share = rise_share(steps, values, ev.chance)
            row |= {f"{name}_rise": share, f"{name}_plateaued": plateaued(share)}
            curves += [{**c.factors(), "run": name, "step": step, "metric": metric, "value": value}
                       for step, value in zip(steps, values)]
        rows.append(row)
    return pd.DataFrame(curves), pd.concat([cell_table(evaluators), pd.DataFrame(rows)], axis=1)


def summary(cells: pd.DataFrame) -> pd.DataFrame:
    """Per condition: mean target, twin and chance; the largest and the mean late rise
    (:func:`rise_share`) over seeds and runs; ``adequate`` when every seed's target and twin
    have plateaued; and how many seeds are usable (far enough above chance)."""
    rises = cells[[f"{name}_rise" for name in RUNS]]
    d = cells.assign(max_rise=rises.max(axis=1), mean_rise=rises.mean(axis=1),
                     plateaued=cells[[f"{name}_plateaued" for name in RUNS]].all(axis=1))
    g = d.groupby(CONDITION, sort=False)
    return g.agg(metric=("metric", "first"), target=("target_value", "mean"),
                 twin=("twin_value", "mean"), chance=("chance", "first"), max_rise=("max_rise", "max"),
                 mean_rise=("mean_rise", "mean"), seeds=("seed", "count"), usable_seeds=("usable", "sum"),
                 adequate=("plateaued", "all")).reset_index()


def verdict_lines(table: pd.DataFrame) -> list[str]:
    """The adequacy check as Markdown lines, computed from :func:`summary`."""
    bad = table[~table.adequate]
    lines = [f"- Training adequacy: {int(table.adequate.sum())} of {len(table)} conditions have plateaued "
             f"in every seed's target and twin (the last quarter of training added less than "
             f"{1 - ADEQUATE:.0%} of the gap above chance)."]
    lines += [f"  - not adequate: {r.architecture}/{r.task}/{r.pair}: largest late rise {r.max_rise:.3f} "
              f"of the gap, mean {r.mean_rise:.3f} (target {r.target:.3g}, chance {r.chance:.3g})."
              for r in bad.itertuples()]
    return lines
