"""Pieces every experiment shares: conditions, the runs of a condition, scoring swaps.

The runs of one condition and seed (docs/protocol.md, section 3), all but the different-
initialisation control from the same theta_0:

- ``source`` (theta_S): trained on the source domain;
- ``target`` (theta_T): trained on block 0 of the target training data;
- ``twin`` (the positive control): the same task and distribution as theta_T, trained on
  the disjoint block 1 of the target data in another batch order;
- ``order`` (the noise floor): theta_T's data in another batch order (first
  ``profile.order_twins`` seeds);
- ``different_init`` (the negative control): theta_T's data and order from another
  initialisation.

``source``, ``twin`` and ``different_init`` are *donors*: their kernels are swapped into
theta_T and scored on the target test split (measurement M1).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from reuse.toolkit.metrics import PRIMARY_METRIC, chance_level, reuse_score
from reuse.toolkit.scan import score_state, score_swaps
from reuse.toolkit.selection import decide
from reuse.toolkit.verdicts import MIN_GAP

from ..config import Grid, Profile, SmallData, check_choices, get_profile
from ..training.data import GRADED_SHIFT, LABELS_ONLY, PAIRS, DENSE_TASKS, parse_pair, target_pair
from ..training.models import ARCHITECTURES, conv_layer_names
from ..training.spec import state_digest
from ..training.train import Runner, RunSpec, TrainedRun, check_settings

DIFFERENT_INIT_OFFSET = 1000  # init seed of the different-initialisation control: seed + this
TWIN_OFFSET = 500  # order seed of the same-domain twin: seed + this (its data: block 1)
ORDER_OFFSET = 2000  # order seed of the batch-order twin: seed + this
# the runs of a condition, and those swapped into (or compared with) its theta_T
CONDITION_ROLES = ("source", "target", "twin", "order", "different_init", "stranger")
CONDITION_DONORS = ("source", "twin", "different_init")
# the baseline of every swap judgment: the same keys of theta_T put back to their initial
# values theta_0 (Zhang, Bengio & Singer 2019's re-initialisation test), BN handled alike
RESET = "theta_0"
FACTORS = ["architecture", "task", "pair", "seed"]
CONDITION = ["architecture", "task", "pair"]


@dataclass(frozen=True)
class Condition:
    """One architecture x task x pair x seed cell of an experiment."""

    architecture: str
    task: str
    pair: str
    seed: int
    shift: float = 0.0

    def factors(self) -> dict:
        return {"architecture": self.architecture, "task": self.task, "pair": self.pair,
                "seed": self.seed}


def conditions(grid: Grid, seeds, shift: float = 0.5) -> list[Condition]:
    """Every architecture x task x pair x seed cell of ``grid`` (``shift`` for fashion-shift).

    Pairs that differ from another only in labels (fashion-random-labels) are skipped for
    auto-encoding, which ignores labels: there they would repeat the other pair.
    """
    architectures = check_choices("architectures", grid.architectures, ARCHITECTURES)
    tasks = check_choices("tasks", grid.tasks, DENSE_TASKS)
    pairs = [grid.pairs] if isinstance(grid.pairs, str) else list(grid.pairs)
    if not pairs:
        raise ValueError(f"pairs={pairs!r}; allowed: one or more of {', '.join(PAIRS)} "
                         "('<pair>@<s>' for doses)")
    doses = {p: parse_pair(p)[1] for p in pairs}  # parse_pair names a bad pair or dose
    return [Condition(a, t, p, s, shift if p == "fashion-shift" else dose or 0.0)
            for a in architectures for t in tasks for p, dose in doses.items() for s in seeds
            if t == "segmentation" or p not in LABELS_ONLY]


def grid_of(profile: Profile, architectures=None, tasks=None, pairs=None, base: Grid | None = None) -> Grid:
    """``base`` (the profile's main grid by default) with any of its fields replaced."""
    base = profile.grid if base is None else base
    return Grid(tuple(architectures or base.architectures), tuple(tasks or base.tasks),
                tuple(pairs or base.pairs))


def ladder_grid(profile: Profile) -> Grid:
    """The main grid's architectures and tasks over the profile's source ladder (E1, E4)."""
    return Grid(profile.grid.architectures, profile.grid.tasks, profile.ladder)


def session_profile(profile: str, seeds=None, *, precision: str | None = None, threads: int | None = None,
                    workers: int | None = None, architectures=None, tasks=None, pairs=None) -> Profile:
    """The profile a notebook runs at: ``None`` arguments keep its values; ``architectures``,
    ``tasks``, ``pairs`` replace those of its main grid, E2's small-data grid and E4's grid,
    and ``pairs`` the source ladder, whose graded shifts E3's dose series keeps. Every value
    is checked against what is allowed (a ValueError names it): the profile's (name, seeds),
    the runner's settings (precision, threads, workers), the grid's architectures, tasks and
    pairs. The arguments are the notebooks' parameter names, so `cnn-reuse run` checks its
    ``--set`` values with this function before any notebook starts."""
    prof = get_profile(profile, seeds, precision=precision, threads=threads, workers=workers)
    check_settings(prof.precision, prof.threads, prof.workers)
    if architectures or tasks or pairs:
        prof = dataclasses.replace(
            prof, grid=grid_of(prof, architectures, tasks, pairs), ladder=tuple(pairs or prof.ladder),
            e2_grid=grid_of(prof, architectures, tasks, pairs, base=prof.e2_grid),
            e4_grid=grid_of(prof, architectures, tasks, pairs, base=prof.e4_grid),
            e3_dose=Grid(tuple(architectures or prof.e3_dose.architectures), tuple(tasks or prof.e3_dose.tasks),
                         tuple(p for p in pairs if parse_pair(p)[0] == GRADED_SHIFT) if pairs else prof.e3_dose.pairs))
        conditions(prof.grid, prof.seeds)  # names a bad architecture, task or pair
    return prof


def session(profile: str, seeds=None, device: str = "auto", cache_dir=None, data_dir=None, *,
            precision: str | None = None, threads: int | None = None, workers: int | None = None,
            compile_model: bool = False, architectures=None, tasks=None, pairs=None,
            cluster: str | None = None) -> tuple[Profile, Runner]:
    """What every notebook starts with: the profile (:func:`session_profile`) and a runner for
    it, which trains on the Dask scheduler at ``cluster`` when one is given. E1's strangers
    regime keeps its architectures and tasks inside the narrowed grid."""
    prof = session_profile(profile, seeds, precision=precision, threads=threads, workers=workers,
                           architectures=architectures, tasks=tasks, pairs=pairs)
    executor = None
    if cluster:
        from distributed import (
            Client,  # only with a cluster: nothing imports Dask otherwise
        )

        executor = Client(cluster).get_executor()
    runner = Runner.for_profile(prof, device, cache_dir, data_dir, compile=compile_model, cluster=executor)
    return prof, runner


def output_dirs(profile: str, figures_dir=None, results_dir=None) -> tuple[Path, Path]:
    """Where a notebook writes: ``../figures/<profile>`` and ``../results/<profile>`` unless
    given, so profiles never overwrite each other's outputs."""
    return (Path(figures_dir or f"../figures/{profile}"), Path(results_dir or f"../results/{profile}"))


def specs(runner: Runner, profile: Profile, c: Condition, roles=CONDITION_ROLES) -> dict[str, RunSpec]:
    """The specs of ``roles`` for a condition (``order`` only for the profile's first
    ``order_twins`` seeds). The target trains on at most half its domain, so that the
    twin's block is disjoint from it."""
    base = RunSpec(c.architecture, c.task, c.pair, init_seed=c.seed, data_seed=c.seed,
                   order_seed=c.seed, shift=c.shift, image_size=profile.image_size,
                   width=profile.width(c.architecture), depth=profile.depth, steps=profile.steps,
                   batch_size=profile.batch_size, lr=profile.lr)
    n_src = min(profile.n_source, runner.available(c.pair, "source"))
    n_tgt = min(profile.n_target, runner.available(c.pair, "target") // 2)
    # sources that take target-class images from the end of the target's permutation
    if (parse_pair(c.pair)[0] in ("fashion-shifted", "fashion-overlap")
            and 2 * n_tgt + n_src > runner.available(c.pair, "target")):
        raise ValueError(f"{c.pair}: n_source {n_src} + 2 x n_target {n_tgt} exceed the "
                         f"{runner.available(c.pair, 'target')} images its source and target share; "
                         "lower n_source or n_target")
    # a pair whose target side is another pair's shares that pair's target runs
    shared = target_pair(c.pair)
    target = base.replace(domain="target", n_train=n_tgt, pair=shared,
                          shift=c.shift if shared == c.pair else 0.0)
    all_specs = {
        "source": base.replace(domain="source", n_train=n_src),
        "target": target,
        "twin": target.replace(block=1, order_seed=c.seed + TWIN_OFFSET),
        "order": target.replace(order_seed=c.seed + ORDER_OFFSET),
        "different_init": target.replace(init_seed=c.seed + DIFFERENT_INIT_OFFSET),
        # the strangers regime: the source's data and order from the control's theta_0
        "stranger": base.replace(domain="source", n_train=n_src, init_seed=c.seed + DIFFERENT_INIT_OFFSET),
    }
    unknown = set(roles) - set(all_specs)
    if unknown:
        raise ValueError(f"roles {sorted(unknown)}; allowed: {', '.join(CONDITION_ROLES)}")
    with_order = c.seed in profile.seeds[:profile.order_twins]
    return {r: all_specs[r] for r in roles if r != "order" or with_order}


def trained(runner: Runner, profile: Profile, conds: list[Condition], roles
            ) -> list[dict[str, TrainedRun]]:
    """The runs of ``roles`` for each condition (one ``train_many`` call). ``roles`` has no
    default: every role is a training per condition, so each caller names the ones it reads."""
    sp = [specs(runner, profile, c, roles) for c in conds]
    flat = [s for d in sp for s in d.values()]
    runs = dict(zip([s.key for s in flat], runner.train_many(flat)))
    return [{k: runs[s.key] for k, s in d.items()} for d in sp]


class Evaluator:
    """Scores states of one architecture on a condition's target test split.

    ``layers``: every conv layer in forward order; ``swap_layers``: those a swap may take
    (all but the head, :func:`swappable`).
    BN statistics are re-estimated on the first ``profile.n_bn`` target training samples.
    """

    def __init__(self, runner: Runner, profile: Profile, condition: Condition, target: TrainedRun):
        c, spec = condition, target.spec
        self.runner, self.condition, self.target = runner, condition, target
        self.task, self.metric = c.task, PRIMARY_METRIC[c.task]
        self.precision = runner.precision
        self.n_out = runner.n_outputs(spec)
        n_test = min(profile.n_test, runner.available(c.pair, "target", "test"))
        self.x, self.y = runner.split(c.pair, "target", c.task, "test", spec.data_seed, c.shift,
                                      n_test, spec.image_size)
        train_x, train_y = runner.train_split(spec)
        self.bn_x = train_x[:profile.n_bn]
        self.chance = chance_level(c.task, train_y, self.y, self.n_out)[self.metric]
        self.model = runner.model(target)
        self.layers = conv_layer_names(self.model)
        self.swap_layers = swappable(self.layers)
        # what fixes a score besides the states: scores are memoised on disk under this
        self._identity = {"target": spec.key, "pair": c.pair, "shift": c.shift, "seed": spec.data_seed,
                          "n_test": len(self.x), "n_bn": len(self.bn_x), "precision": self.precision}
        self.target_value = self.score_run(target)
        self.gap = self.target_value - self.chance

    @property
    def usable(self) -> bool:
        """Whether the target model is far enough above chance (:data:`MIN_GAP`) to judge swaps."""
        return bool(self.gap >= MIN_GAP[self.metric])

    def score(self, state: dict[str, torch.Tensor], reestimate: bool = False) -> float:
        """The primary metric of ``state`` on the target test split (BN statistics
        re-estimated on target training data first when ``reestimate``)."""
        return score_state(self.model, state, self.x, self.y, self.task, self.n_out,
                           bn_data=self.bn_x if reestimate else None, precision=self.precision)

    def swap_rows(self, donor: TrainedRun, key_sets: list[list[str]], reestimate: bool = False) -> list[dict]:
        """One row per key set: theta_T with those keys from ``donor``, scored (memoised)."""
        return self._rows(donor.spec.key, donor.state, donor.digest(), key_sets, reestimate)

    def reset_rows(self, key_sets: list[list[str]], reestimate: bool = False) -> list[dict]:
        """One row per key set: theta_T with those keys reset to its initialisation theta_0
        (Zhang, Bengio & Singer 2019's re-initialisation test), scored (memoised)."""
        theta_0 = self.runner.build(self.target.spec).state_dict()
        return self.state_rows(f"theta_0:{self.target.spec.key}", theta_0, key_sets, reestimate)

    def state_rows(self, donor_id: str, donor_state: dict[str, torch.Tensor], key_sets: list[list[str]],
                   reestimate: bool = False) -> list[dict]:
        """One row per key set: theta_T with those keys from ``donor_state`` (any state of the
        architecture, named ``donor_id`` in the memo), scored (memoised under its digest)."""
        return self._rows(donor_id, donor_state, state_digest(donor_state), key_sets, reestimate)

    def _rows(self, donor_id: str, donor_state: dict[str, torch.Tensor], donor_digest: str,
              key_sets: list[list[str]], reestimate: bool) -> list[dict]:
        parts = {**self._identity, "donor": donor_id, "key_sets": key_sets, "reestimate": reestimate}

        def compute():  # the toolkit's swap-and-score path (shared forward work on the CPU)
            return score_swaps(self.model, self.target.state, donor_state, key_sets, self.x, self.y,
                               self.task, self.n_out, bn_data=self.bn_x if reestimate else None,
                               precision=self.precision)
        weights = [self.target.digest(), donor_digest]
        return [self.row(v) for v in self.runner.memo(parts, compute, weights)]

    def score_run(self, run: TrainedRun) -> float:
        """:meth:`score` of a trained run's own weights (memoised)."""
        parts = {**self._identity, "run": run.spec.key}
        return self.runner.memo(parts, lambda: [self.score(run.state)], [run.digest()])[0]

    def row(self, value: float) -> dict:
        """A measurement row: factors, the metric, the target's value, chance, the raw
        difference to the target and the reuse score."""
        return {**self.condition.factors(), "metric": self.metric, "value": value,
                "target_value": self.target_value, "chance": self.chance,
                "delta": value - self.target_value,
                "reuse_score": reuse_score(value, self.target_value, self.chance)}


def swappable(layers: list[str]) -> list[str]:
    """The conv layers (in forward order, head last) a swap may take: all but the head.

    The head is the task's read-out: where classes differ, its channel k is another class
    on each side (a swap would measure a relabelling), and where they agree, swapping it
    too hands over the whole network, so that even a model of another initialisation keeps
    everything (the negative control fails). One rule for every rung of the ladder keeps
    its swaps comparable."""
    return layers[:-1]


def small_spec(target: RunSpec, n: int, small: SmallData) -> RunSpec:
    """``target`` trained on its first ``n`` samples for ``small.steps`` steps, in batches of
    at most ``small.batch_size`` (about ``n / 4`` for small sets, at least 2: BatchNorm).

    At ``n == target.n_train`` the spec is ``target`` itself, so the full run is reused.
    """
    if target.n_train is None or not 2 <= n <= target.n_train:
        raise ValueError(f"n={n}; allowed 2..{target.n_train} (the target run's n_train)")
    if n == target.n_train:
        return target
    return target.replace(n_train=n, steps=small.steps,
                          batch_size=min(small.batch_size, max(2, n // 4)))


def cell_table(evaluators: list[Evaluator]) -> pd.DataFrame:
    """One row per cell: target value, chance, gap and whether it is usable."""
    return pd.DataFrame([{**ev.condition.factors(), "metric": ev.metric, "target_value": ev.target_value,
                          "chance": ev.chance, "gap": ev.gap, "min_gap": MIN_GAP[ev.metric],
                          "usable": ev.usable} for ev in evaluators])


def excluded_text(cells: pd.DataFrame) -> list[str]:
    """One Markdown line per excluded cell (target too close to chance), or a line saying
    that none was excluded. No seed is ever dropped without such a line."""
    bad = cells[~cells.usable]
    if bad.empty:
        return [f"- No cell excluded: every target model is at least the minimum gap above "
                f"chance (mIoU {MIN_GAP['miou']}, PSNR {MIN_GAP['psnr']} dB)."]
    return [f"- Excluded {r.architecture}/{r.task}/{r.pair} seed {r.seed}: target {r.target_value:.3g}, "
            f"chance {r.chance:.3g}, gap {r.gap:.3g} < {r.min_gap} ({r.metric})."
            for r in bad.itertuples()]


def usable_only(frame: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """Rows of ``frame`` whose cell (architecture, task, pair, seed) is usable."""
    ok = cells[cells.usable][FACTORS]
    return frame.merge(ok, on=FACTORS, how="inner")


_STATS = ("estimate", "ci_low", "ci_high", "verdict")
_RESET_KEYS = ("reset_estimate", *(f"minus_reset_{k}" for k in _STATS))


def controlled_verdicts(frame: pd.DataFrame, by: list[str], margin: float) -> pd.DataFrame:
    """The reuse rule (:func:`reuse.toolkit.selection.decide`) per group of ``by``, from the
    seed means of its rows: the source's swaps against ``margin``, the :data:`RESET` baseline and
    the controls (the twin, positive; the different-initialisation model, negative).

    Columns: each donor's mean reuse score over seeds with its CI and verdict against
    ``margin`` (``<donor>_estimate``, ``_ci_low``, ``_ci_high``, ``_verdict``), ``reset_estimate``
    and the source minus the reset, paired by seed (``minus_reset_*``), the source's mean raw
    metric difference to theta_T (``source_delta``: the reuse score's guard), its ``n`` and
    ``detectable`` effect, ``reusable`` (above the margin *and* above the reset; without reset
    rows that part is undecided, and so is the claim) and the gated ``verdict`` with
    ``controls`` ('undecided' unless the twin holds and the other initialisation is refuted)."""
    rows = []
    for key, g in frame.groupby(by, sort=False):
        score = {d: per_seed(g[g.donor == d], "reuse_score", []).set_index("seed").reuse_score
                 for d in (*CONDITION_DONORS, RESET)}
        r = decide(score["source"], margin=margin, reset=score[RESET], positive=score["twin"],
                   negative=score["different_init"])
        row: dict = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        row.update({f"source_{k}": r[k if k != "verdict" else "above_margin"] for k in _STATS})
        for donor, control in (("twin", "positive"), ("different_init", "negative")):
            row.update({f"{donor}_{k}": r[f"{control}_{k}"] for k in _STATS})
        raw = per_seed(g[g.donor == "source"], "delta", [])["delta"]
        row.update(n=r["n"], detectable=r["detectable"], source_delta=float(raw.mean()),
                   **{k: r[k] for k in _RESET_KEYS}, reusable=r["reusable"], verdict=r["verdict"],
                   controls=r["controls"])
        rows.append(row)
    columns = [*by, *(f"{d}_{k}" for d in CONDITION_DONORS for k in _STATS), *_RESET_KEYS, "source_delta",
               "n", "detectable", "reusable", "verdict", "controls"]
    return pd.DataFrame(rows, columns=columns)


def minus_reset(frame: pd.DataFrame) -> dict:
    """The theta_0 reset's mean reuse score (``reset_estimate``) and the source minus the reset,
    paired by seed, with its t CI and verdict against 0 (``minus_reset_*``): what the source's
    kernels add over untrained ones, the rule's baseline part (:func:`reuse.toolkit.selection.decide`).
    ``frame``: rows of donors 'source' and :data:`RESET`."""
    score = {d: per_seed(frame[frame.donor == d], "reuse_score", []).set_index("seed").reuse_score
             for d in ("source", RESET)}
    r = decide(score["source"], reset=score[RESET])
    return {k: r[k] for k in _RESET_KEYS}


def verdict_text(table: pd.DataFrame) -> str:
    """One Markdown line per verdict of a table with ``judgment``, ``verdict``, ``estimate``,
    ``ci_low``, ``ci_high``, ``n``, ``detectable``, ``controls`` and ``rule`` (notebooks 06, 07)."""
    return "\n".join(f"- {r.judgment}: **{r.verdict}** ({r.estimate:.3g} [{r.ci_low:.3g}, {r.ci_high:.3g}], "
                     f"n = {int(r.n)} seeds, smallest detectable effect {r.detectable:.2g}; controls "
                     f"{r.controls}). Rule: {r.rule}." for r in table.itertuples())


def per_seed(frame: pd.DataFrame, value: str, by: list[str]) -> pd.DataFrame:
    """The mean of ``value`` per ``by`` + seed (dropping NaN): the per-seed replicates."""
    return frame.groupby([*by, "seed"], sort=False)[value].mean().dropna().reset_index()



def criterion_spread(frame: pd.DataFrame, criteria, by: list[str], source: str = "pair") -> pd.DataFrame:
    """Can a per-layer criterion tell sources apart? Per group of ``by`` and criterion, on the
    seed means of each (source, layer): the median over layers of the criterion's range across
    sources (``across_sources``) beside the median over sources of its range across layers
    (``across_layers``), and the shares of its variance that the layer (``layer_share``) and the
    source within a layer (``source_share``) explain. A criterion set by which layer it is
    (between siblings, raw and relative RMSE) picks the same layers for every source
    (docs/protocol.md, section 10)."""
    rows = []
    for key, g in frame.groupby(by, sort=False):
        for criterion in criteria:
            m = g.groupby([source, "layer"], sort=False)[criterion].mean().dropna().rename("v").reset_index()
            if m.empty:
                continue
            layer_mean = m.groupby("layer").v.transform("mean")
            total = float(((m.v - m.v.mean()) ** 2).sum())
            ranges = [m.groupby(k).v.agg(lambda v: v.max() - v.min()).median() for k in ("layer", source)]
            rows.append({**dict(zip(by, key if isinstance(key, tuple) else (key,))), "criterion": criterion,
                         "across_sources": float(ranges[0]), "across_layers": float(ranges[1]),
                         "layer_share": float(((layer_mean - m.v.mean()) ** 2).sum() / total) if total else np.nan,
                         "source_share": float(((m.v - layer_mean) ** 2).sum() / total) if total else np.nan})
    return pd.DataFrame(rows)
