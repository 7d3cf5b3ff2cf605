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
:func:`compute` returns the learning curves and one row per cell; :func:`summary` one row per
condition with the verdict.

Sources are judged alike, one rung of the ladder at a time (:func:`compute_sources`,
:func:`source_summary`, :func:`source_lines`): each source run on its own learning curve,
scored on its monitor split (the source domain's own test images), against the source's
own chance (the best input-blind predictor fitted on its training targets, scored on those
test images: for the scrambled rung, on its scrambled masks or images). A source is
adequate when every seed has plateaued *and* ends at least ``MIN_GAP`` above that chance: a
source that learnt nothing (the scrambled rung is the one at risk) would make its rung a
"far" source by failure rather than by distance.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pandas as pd

from reuse.toolkit.metrics import PRIMARY_METRIC, chance_level
from reuse.toolkit.verdicts import ADEQUATE, MIN_GAP

from ..config import Grid, Profile
from ..training.data import target_pair
from ..training.spec import TrainedRun
from ..training.train import Runner
from .common import (
    CONDITION,
    CONDITION_DONORS,
    Condition,
    Evaluator,
    cell_table,
    conditions,
    ladder_grid,
    trained,
)

LATE = 0.75  # the last quarter of a run's steps is where a trained run has stopped rising
RUNS = ("target", "twin")
# the runs E1 trains in one call for each rung: asked for together here too, so that a GPU's
# grouped training batches them as notebook 01 always has (groups can differ by rounding)
E1_ROLES = ("source", "target", *CONDITION_DONORS[1:])


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


def compute(runner: Runner, profile: Profile, grid: Grid | None = None
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
        row = {"twin_value": ev.score_run(r["twin"])}
        for name in RUNS:
            curve, share = _curve(c, name, r[name], ev.chance)
            row |= {f"{name}_rise": share, f"{name}_plateaued": plateaued(share)}
            curves += curve
        rows.append(row)
    return pd.DataFrame(curves), pd.concat([cell_table(evaluators), pd.DataFrame(rows)], axis=1)


def _curve(c: Condition, name: str, run: TrainedRun, chance: float) -> tuple[list[dict], float]:
    """A run's learning curve as tidy rows (``run`` = ``name``) and its :func:`rise_share`."""
    metric = PRIMARY_METRIC[c.task]
    steps, values = [h["step"] for h in run.history], [h[metric] for h in run.history]
    rows = [{**c.factors(), "run": name, "step": step, "metric": metric, "value": value}
            for step, value in zip(steps, values)]
    return rows, rise_share(steps, values, chance)


def source_chance(runner: Runner, run: TrainedRun) -> float:
    """The source's own chance level on its monitor split (the test images its learning curve
    is scored on): :func:`reuse.toolkit.metrics.chance_level` fitted on the source's training
    targets, as the :class:`~reuse.study.experiments.common.Evaluator` does for the target."""
    spec = run.spec
    _, train_y = runner.train_split(spec)
    _, test_y = runner.monitor_split(spec)
    return chance_level(spec.task, train_y, test_y, runner.n_outputs(spec))[PRIMARY_METRIC[spec.task]]


def compute_sources(runner: Runner, profile: Profile, grid: Grid | None = None
                    ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(curves, cells) of the source runs of ``grid`` (the profile's source ladder by default:
    every rung, the scrambled one included), judged as :func:`compute` judges targets.

    curves: :func:`compute`'s columns with run 'source' (each source's learning curve on its
    monitor split, the source domain's test images), ready to concatenate with :func:`compute`'s.
    cells: architecture, task, pair, seed, metric, source_value (the curve's last point),
    chance (the source's own, :func:`source_chance`), gap, min_gap, learned (gap >= min_gap),
    source_rise (:func:`rise_share`) and source_plateaued (:func:`plateaued`)."""
    grid = ladder_grid(profile) if grid is None else grid
    conds = conditions(grid, profile.seeds)
    curves, rows = [], []
    for c, r in zip(conds, trained(runner, profile, conds, roles=E1_ROLES)):
        metric, source = PRIMARY_METRIC[c.task], r["source"]
        chance = source_chance(runner, source)
        curve, share = _curve(c, "source", source, chance)
        curves += curve
        value = source.history[-1][metric]
        gap = value - chance
        rows.append({**c.factors(), "metric": metric, "source_value": value, "chance": chance, "gap": gap,
                     "min_gap": MIN_GAP[metric], "learned": gap >= MIN_GAP[metric], "source_rise": share,
                     "source_plateaued": plateaued(share)})
    return pd.DataFrame(curves), pd.DataFrame(rows)


def source_summary(cells: pd.DataFrame) -> pd.DataFrame:
    """Per architecture x task x rung (:func:`compute_sources`'s cells): the mean final source value
    and its own chance, the smallest and the mean gap above that chance over seeds, the largest
    and the mean late rise, how many seeds learnt (gap >= ``min_gap``) and plateaued, and
    ``adequate`` when every seed did both."""
    d = cells.assign(both=cells.learned & cells.source_plateaued)
    g = d.groupby(CONDITION, sort=False)
    return g.agg(metric=("metric", "first"), source=("source_value", "mean"), chance=("chance", "mean"),
                 smallest_gap=("gap", "min"), mean_gap=("gap", "mean"), min_gap=("min_gap", "first"),
                 max_rise=("source_rise", "max"), mean_rise=("source_rise", "mean"), seeds=("seed", "count"),
                 learned_seeds=("learned", "sum"), plateaued_seeds=("source_plateaued", "sum"),
                 adequate=("both", "all")).reset_index()


def source_lines(table: pd.DataFrame) -> list[str]:
    """The sources' adequacy as Markdown lines, one per architecture x task x rung, with the
    numbers (computed from :func:`source_summary`)."""
    lines = [f"- Source adequacy: {int(table.adequate.sum())} of {len(table)} sources (architecture x task x "
             f"rung) ended at least the minimum gap above their own chance and plateaued in every seed "
             f"(each on its own test images; late rise under {1 - ADEQUATE:.0%} of the gap)."]
    for r in table.itertuples():
        learned = ("learned its task" if r.learned_seeds == r.seeds
                   else f"did not learn its task in {r.seeds - r.learned_seeds} of {r.seeds} seeds")
        lines.append(f"  - {r.architecture}/{r.task}/{r.pair}: the source {learned}: {r.metric} "
                     f"{r.source:.3g} against its own chance {r.chance:.3g} (gap {r.mean_gap:.3g}, smallest "
                     f"over seeds {r.smallest_gap:.3g}, minimum {r.min_gap:g}); plateaued in "
                     f"{r.plateaued_seeds} of {r.seeds} seeds (largest late rise {r.max_rise:.3f} of "
                     f"the gap).")
    return lines


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
