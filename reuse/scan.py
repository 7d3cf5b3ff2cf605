"""Swap scans and layer selection for any CNN, with a score the user supplies.

The experiments (E1/E2) swap conv kernels of a source-trained model into a target-trained
one and score the result; this module does the same for any architecture without the
project's Runner:

- :func:`task_score_fn` turns a built-in task (classification, segmentation,
  auto-encoding) and a test split into a ``score_fn(model) -> float`` (the primary metric);
  any other callable with that signature (higher is better) works everywhere instead;
- :func:`swap_scan` scores single-layer, prefix, suffix and all-layer swaps: a tidy frame;
- :func:`select` picks the layers whose single swaps keep the score (a CI over seeds, or a
  point estimate with a warning for one seed);
- :func:`check_joint` scores the chosen layers swapped *together* and backs off greedily
  when that fails (singles passing does not make their union pass).

"Swapping layer l" replaces its kernel (weight, and bias where present) in the target by
the source's; BN statistics may then be re-estimated on target inputs (``bn_data``), as in
E1 (:func:`reuse.surgery.reestimate_bn`). The reuse score (:func:`reuse.metrics.reuse_score`)
is ``(score - chance) / (target_score - chance)``: 1 = nothing lost, 0 = chance.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch
from torch import nn
from tqdm import tqdm  # text bars: tqdm.auto warns in kernels without ipywidgets

from .checkpoints import ModelLike, load_state
from .criteria import check_layers
from .metrics import PRIMARY, chance_level, evaluate, reuse_score
from .selection import kernel_keys
from .surgery import check_compatible, reestimate_bn, swap_state
from .verdicts import mean_verdict

SETS = ("single", "prefix", "suffix", "all")
ScoreFn = Callable[[nn.Module], float]


def _task(task: str) -> str:
    if task not in PRIMARY:
        raise ValueError(f"task={task!r}; allowed: {', '.join(PRIMARY)}")
    return task


def task_score_fn(task: str, x: torch.Tensor, y: torch.Tensor, n_outputs: int | None = None,
                  batch_size: int = 512, precision: str = "fp32") -> ScoreFn:
    """``score_fn(model)``: the task's primary metric (:data:`reuse.metrics.PRIMARY`) of a
    model on inputs ``x`` ``[N, C, H, W]`` and targets ``y`` (classes ``[N]``, class maps
    ``[N, H, W]`` or images), on their device, at ``precision`` (fp32 by default).

    ``n_outputs`` (number of classes) is needed for segmentation only.
    """
    metric = PRIMARY[_task(task)]
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"x has {len(x)} samples and y {len(y)}; allowed: the same number, >= 1")
    if task == "segmentation" and not (isinstance(n_outputs, int) and n_outputs >= 2):
        raise ValueError(f"n_outputs={n_outputs!r}; segmentation needs the number of classes (>= 2)")

    def score_fn(model: nn.Module) -> float:
        return evaluate(model, x, y, task, n_outputs or 1, batch_size, (metric,), precision)[metric]
    return score_fn


def chance(task: str, train_y: torch.Tensor, test_y: torch.Tensor, n_outputs: int = 1) -> float:
    """The primary metric of the best input-blind predictor fitted on ``train_y`` and scored
    on ``test_y`` (:func:`reuse.metrics.chance_level`): the 0 of the reuse score."""
    return chance_level(_task(task), train_y, test_y, n_outputs)[PRIMARY[task]]


@dataclass
class _Swapper:
    """Scores the target with the kernels of some layers taken from the source."""

    swapped: dict[str, torch.Tensor]  # the target with every conv kernel from the source
    target: dict[str, torch.Tensor]
    model: nn.Module  # a private copy: its state is overwritten
    score_fn: ScoreFn
    bn_data: torch.Tensor | None
    loaded: set[str] = field(default_factory=set)  # keys of the model now from the source

    def __post_init__(self):
        self.model.load_state_dict(self.target)

    def score(self, layers: Sequence[str]) -> float:
        # only the entries that change are loaded, picked from a state swapped once
        # (swap_state checks and casts the source there): a full swap_state and load per
        # set took 0.8 s on resnet18, most of it re-checking and copying unchanged tensors
        keys = kernel_keys(self.target, layers)
        changes = {k: self.target[k] for k in self.loaded.difference(keys)}
        changes.update((k, self.swapped[k]) for k in keys)
        self.model.load_state_dict(changes, strict=False)
        self.loaded = set(keys)
        model = self.model if self.bn_data is None or not layers else reestimate_bn(self.model, self.bn_data)
        value = self.score_fn(model.eval())
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            try:
                value = float(value)  # a 0-d tensor or numpy scalar
            except (TypeError, ValueError):
                raise TypeError(f"score_fn returned {type(value).__name__}; allowed: a number") from None
        return float(value)


def _swapper(source: ModelLike, target: ModelLike, score_fn: ScoreFn, model: nn.Module | None,
             bn_data: torch.Tensor | None) -> _Swapper:
    if not callable(score_fn):
        raise TypeError(f"score_fn is a {type(score_fn).__name__}; allowed: a callable model -> float")
    if model is None:
        if not isinstance(target, nn.Module):
            raise ValueError("model=None needs the target as an nn.Module; pass model=<an nn.Module "
                             "of the architecture> when the target is a state dict or a path")
        model = target
    elif not isinstance(model, nn.Module):
        raise TypeError(f"model is a {type(model).__name__}; allowed: an nn.Module of the architecture")
    if bn_data is not None and len(bn_data) < 2:
        raise ValueError(f"bn_data holds {len(bn_data)} samples; allowed: None or >= 2 samples")
    s, t = load_state(source, what="source"), load_state(target, what="target")
    model = copy.deepcopy(model)  # the user's module is never modified
    check_compatible(model.state_dict(), t)
    check_compatible(t, s)
    device = next(iter(model.state_dict().values())).device
    t = {k: v.to(device) for k, v in t.items()}
    return _Swapper(swap_state(t, s, kernel_keys(t, None)), t, model, score_fn, bn_data)


def _key_sets(layers: list[str], sets: Iterable[str]) -> list[tuple[str, int, list[str]]]:
    sets = [sets] if isinstance(sets, str) else list(sets)
    bad = [s for s in sets if s not in SETS]
    if bad or not sets:
        raise ValueError(f"sets={sets!r}; allowed: a non-empty list of {', '.join(SETS)}")
    out = []
    for name in sets:
        if name == "single":
            out += [("single", 1, [layer]) for layer in layers]
        elif name == "prefix":
            out += [("prefix", k, layers[:k]) for k in range(1, len(layers) + 1)]
        elif name == "suffix":
            out += [("suffix", k, layers[len(layers) - k:]) for k in range(1, len(layers) + 1)]
        else:
            out.append(("all", len(layers), list(layers)))
    return out


def _reuse(score: float, target_score: float, chance_value: float | None) -> float:
    return math.nan if chance_value is None else reuse_score(score, target_score, chance_value)


def swap_scan(source: ModelLike, target: ModelLike, score_fn: ScoreFn, *,
              model: nn.Module | None = None, layers: Iterable[str] | None = None,
              sets: Iterable[str] = SETS, bn_data: torch.Tensor | None = None,
              chance: float | None = None, progress: bool = False) -> pd.DataFrame:
    """Score the target with each set of conv layers' kernels swapped in from the source.

    ``source``/``target``: modules, state dicts or checkpoint paths of one architecture;
    ``model``: an ``nn.Module`` of it (a copy is used; default: the target if it is a
    module). ``layers``: conv layers in forward order (default: all). ``sets``: any of
    ``single`` (each layer alone), ``prefix``/``suffix`` (the first/last k layers, k = 1..L),
    ``all``. ``bn_data`` ``[N, C, H, W]``: target inputs BN statistics are re-estimated on
    after each swap (the unswapped target is scored as it is). ``chance``: the score of an
    input-blind predictor, for the reuse score.

    One row per swap: set, k, layer (the layer, or ``first..last``), layers (";"-joined),
    n_layers, score, target_score, delta (score - target_score), relative (score /
    target_score), reuse_score (NaN without ``chance``).
    """
    swapper = _swapper(source, target, score_fn, model, bn_data)
    layers = check_layers(swapper.target, layers)
    todo = _key_sets(layers, sets)
    target_score = swapper.score([])
    rows = []
    for name, k, chosen in tqdm(todo, desc="swap scan", disable=not progress):
        score = swapper.score(chosen)
        rows.append({"set": name, "k": k,
                     "layer": chosen[0] if len(chosen) == 1 else f"{chosen[0]}..{chosen[-1]}",
                     "layers": ";".join(chosen), "n_layers": len(chosen), "score": score,
                     "target_score": target_score, "delta": score - target_score,
                     "relative": score / target_score if target_score else math.nan,
                     "reuse_score": _reuse(score, target_score, chance)})
    return pd.DataFrame(rows)


def select(scans: pd.DataFrame | Sequence[pd.DataFrame], *, margin: float = 0.5,
           value: str = "reuse_score") -> pd.DataFrame:
    """Per conv layer, whether swapping it alone keeps ``value`` above ``margin``.

    ``scans``: :func:`swap_scan` frames, one per seed (a list), or one frame with a ``seed``
    column; only their ``single`` rows are used. With two or more seeds a layer is reusable
    when the lower end of the 95% Student-t CI of its mean exceeds ``margin``
    (:func:`reuse.verdicts.mean_verdict`). With one seed there is no CI: the point estimate
    decides (``estimate > margin``) and a warning says so.

    Columns: layer, estimate, ci_low, ci_high, n (seeds), reusable, basis.
    """
    frame = _seeded(scans)
    if value not in frame.columns:
        raise ValueError(f"value={value!r} is not a column of the scans; allowed: "
                         f"{', '.join(c for c in ('reuse_score', 'relative', 'score', 'delta') if c in frame)}")
    single = frame[frame["set"] == "single"]
    if single.empty:
        raise ValueError("the scans hold no 'single' rows; run swap_scan with 'single' in sets")
    if single[value].isna().all():
        raise ValueError(f"every {value!r} is NaN (a reuse score needs chance=...); pass "
                         "value='relative' to judge score / target_score instead")
    n_seeds = single["seed"].nunique()
    if n_seeds == 1:
        warnings.warn(f"select: one seed, so each layer is judged by its point estimate of "
                      f"{value} (> {margin}) without a confidence interval; scan more seeds "
                      "for CIs", stacklevel=2)
    rows = []
    for layer, group in single.groupby("layer", sort=False):
        v = mean_verdict(group[value], margin)
        n = int(v["n"])  # seeds with a finite value: a NaN seed does not count
        reusable = v["ci_low"] > margin if n > 1 else v["estimate"] > margin
        rows.append({"layer": layer, "estimate": v["estimate"], "ci_low": v["ci_low"],
                     "ci_high": v["ci_high"], "n": n, "reusable": bool(reusable),
                     "basis": f"95% CI over {n} seeds" if n > 1 else f"point estimate ({n} seed)"})
    return pd.DataFrame(rows)


def _seeded(scans: pd.DataFrame | Sequence[pd.DataFrame]) -> pd.DataFrame:
    if isinstance(scans, pd.DataFrame):
        return scans if "seed" in scans.columns else scans.assign(seed=0)
    if isinstance(scans, (list, tuple)) and scans and all(isinstance(s, pd.DataFrame) for s in scans):
        return pd.concat([s.assign(seed=i) for i, s in enumerate(scans)], ignore_index=True)
    raise TypeError(f"scans is a {type(scans).__name__}; allowed: a swap_scan DataFrame or a "
                    "non-empty list of them (one per seed)")


def check_joint(source: ModelLike, target: ModelLike, layers: Iterable[str], score_fn: ScoreFn, *,
                model: nn.Module | None = None, bn_data: torch.Tensor | None = None,
                chance: float | None = None, margin: float = 0.5, progress: bool = False
                ) -> tuple[list[str], pd.DataFrame]:
    """Score ``layers`` swapped together; while that fails, drop the layer whose removal
    gives the highest score and rescore (greedy backward elimination).

    A set passes when its reuse score (with ``chance``; the target must score above it) or
    else its ``relative`` score (score / target_score) exceeds ``margin``. Costs one score when the union passes and
    at most L(L+1)/2 more otherwise.

    Returns (the layers kept, in the given order; a log with one row per step: step, dropped
    (None at step 0), layers, n_layers, score, target_score, relative, reuse_score, passes).
    When the log has more than one row, the check backed off.
    """
    swapper = _swapper(source, target, score_fn, model, bn_data)
    current = check_layers(swapper.target, layers)
    target_score = swapper.score([])
    if chance is not None and math.isnan(_reuse(target_score, target_score, chance)):
        raise ValueError(f"the target scores {target_score:.4g}, not above chance={chance:.4g}: no "
                         "reuse score; pass chance=None to judge score / target_score instead")

    def row(step: int, dropped: str | None, chosen: list[str], score: float) -> dict:
        relative = score / target_score if target_score else math.nan
        r = _reuse(score, target_score, chance)
        return {"step": step, "dropped": dropped, "layers": ";".join(chosen), "n_layers": len(chosen),
                "score": score, "target_score": target_score, "relative": relative,
                "reuse_score": r, "passes": bool((r if chance is not None else relative) > margin)}

    log = [row(0, None, current, swapper.score(current))]
    bar = tqdm(total=len(current) * (len(current) + 1) // 2, desc="joint check", disable=not progress)
    while not log[-1]["passes"] and current:
        trials = []
        for layer in current:
            rest = [n for n in current if n != layer]
            trials.append((swapper.score(rest), layer, rest))
            bar.update()
        score, dropped, current = max(trials, key=lambda t: t[0])  # first of equals: earliest layer
        log.append(row(len(log), dropped, current, score))
    bar.close()
    return current, pd.DataFrame(log)
