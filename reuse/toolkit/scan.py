"""Swap scans and layer selection for any CNN, with a score the user supplies.

The experiments (E1/E2) swap conv kernels of a source-trained model into a target-trained
one and score the result; this module does the same for any architecture without the
project's Runner:

- :func:`task_score_fn` turns a built-in task (classification, segmentation,
  auto-encoding) and a test split into a ``score_fn(model) -> float`` (the primary metric);
  any other callable with that signature (higher is better) works everywhere instead;
- :func:`swap_scan` scores single-layer, prefix, suffix and all-layer swaps: a tidy frame;
- :func:`score_swaps`: many swapped states of one model scored on a built-in task, with
  the forward work they share done once (the study's E1-E5 score their swaps here);
- :class:`Swapper`: the target with chosen layers swapped in, scored by any ``score_fn``
  (used by :func:`swap_scan` and by :func:`reuse.toolkit.selection.check_joint`).

Which layers to reuse is decided in :mod:`reuse.toolkit.selection`.

"Swapping layer l" replaces its kernel (weight, and bias where present) in the target by
the source's; BN statistics may then be re-estimated on target inputs (``bn_data``), as in
E1 (:func:`reuse.toolkit.surgery.reestimate_bn`). The reuse score (:func:`reuse.toolkit.metrics.reuse_score`)
is ``(score - chance) / (target_score - chance)``: 1 = nothing lost, 0 = chance.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch
from torch import nn
from tqdm import tqdm  # text bars: tqdm.auto warns in kernels without ipywidgets

from .checkpoints import ModelLike, load_state
from .criteria import check_layers, kernel_keys
from .metrics import PRIMARY_METRIC, chance_level, evaluate, reuse_score
from .scoring import evaluate_states, score_states
from .surgery import check_compatible, reestimate_bn, swap_state

SETS = ("single", "prefix", "suffix", "all")
ScoreFn = Callable[[nn.Module], float]


def _task(task: str) -> str:
    if task not in PRIMARY_METRIC:
        raise ValueError(f"task={task!r}; allowed: {', '.join(PRIMARY_METRIC)}")
    return task


def task_score_fn(task: str, x: torch.Tensor, y: torch.Tensor, n_outputs: int | None = None,
                  batch_size: int = 512, precision: str = "fp32") -> ScoreFn:
    """``score_fn(model)``: the task's primary metric (:data:`reuse.toolkit.metrics.PRIMARY_METRIC`) of a
    model on inputs ``x`` ``[N, C, H, W]`` and targets ``y`` (classes ``[N]``, class maps
    ``[N, H, W]`` or images), on their device, at ``precision`` (fp32 by default).

    ``n_outputs`` (number of classes) is needed for segmentation only.
    """
    metric = PRIMARY_METRIC[_task(task)]
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"x has {len(x)} samples and y {len(y)}; allowed: the same number, >= 1")
    if task == "segmentation" and not (isinstance(n_outputs, int) and n_outputs >= 2):
        raise ValueError(f"n_outputs={n_outputs!r}; segmentation needs the number of classes (>= 2)")

    def score_fn(model: nn.Module) -> float:
        return evaluate(model, x, y, task, n_outputs or 1, batch_size, (metric,), precision)[metric]
    return score_fn


def chance(task: str, train_y: torch.Tensor, test_y: torch.Tensor, n_outputs: int = 1) -> float:
    """The primary metric of the best input-blind predictor fitted on ``train_y`` and scored
    on ``test_y`` (:func:`reuse.toolkit.metrics.chance_level`): the 0 of the reuse score."""
    return chance_level(_task(task), train_y, test_y, n_outputs)[PRIMARY_METRIC[task]]


@dataclass
class Swapper:
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


def swapper(source: ModelLike, target: ModelLike, score_fn: ScoreFn, model: nn.Module | None,
             bn_data: torch.Tensor | None) -> Swapper:
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
    return Swapper(swap_state(t, s, kernel_keys(t, None)), t, model, score_fn, bn_data)


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


def reuse_or_nan(score: float, target_score: float, chance_value: float | None) -> float:
    """The reuse score, or NaN where no chance level is known."""
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
    swap = swapper(source, target, score_fn, model, bn_data)
    layers = check_layers(swap.target, layers)
    todo = _key_sets(layers, sets)
    target_score = swap.score([])
    rows = []
    for name, k, chosen in tqdm(todo, desc="swap scan", disable=not progress):
        score = swap.score(chosen)
        rows.append({"set": name, "k": k,
                     "layer": chosen[0] if len(chosen) == 1 else f"{chosen[0]}..{chosen[-1]}",
                     "layers": ";".join(chosen), "n_layers": len(chosen), "score": score,
                     "target_score": target_score, "delta": score - target_score,
                     "relative": score / target_score if target_score else math.nan,
                     "reuse_score": reuse_or_nan(score, target_score, chance)})
    return pd.DataFrame(rows)


def score_swaps(model: nn.Module, target: dict[str, torch.Tensor], donor: dict[str, torch.Tensor],
                key_sets: Sequence[Sequence[str]], x: torch.Tensor, y: torch.Tensor, task: str,
                n_outputs: int, *, bn_data: torch.Tensor | None = None, precision: str = "fp32"
                ) -> list[float]:
    """The task's primary metric of ``target`` with each key set taken from ``donor``.

    ``model``: the architecture, on the device of ``x`` (its state is overwritten).
    ``key_sets``: lists of state keys (:func:`reuse.toolkit.criteria.kernel_keys`, or any
    other entries such as BN statistics); an empty set scores ``target`` itself. With
    ``bn_data`` every state has BN statistics re-estimated on it, so states are scored one
    by one. Without, the forward work the states share is done once on the CPU
    (:func:`reuse.toolkit.scoring.score_states`: 1.5x the loop, which is bound by
    arithmetic), and states run 16 at a time with ``vmap`` on CUDA, which is bound by
    kernel launches (:func:`reuse.toolkit.scoring.evaluate_states`: 1.25x there, where
    sharing gave 0.99x; benchmarks/README.md, section c). The numbers equal a loop of
    :func:`reuse.toolkit.metrics.evaluate` up to the rounding of vmapped convolutions.
    """
    metric = PRIMARY_METRIC[_task(task)]
    states = [swap_state(target, donor, list(keys)) for keys in key_sets]
    if bn_data is None and x.device.type == "cuda":
        return evaluate_states(model, states, x, y, task, n_outputs, metric, chunk=16, precision=precision)
    if bn_data is None:
        return [s[metric] for s in score_states(model, states, x, y, task, n_outputs, (metric,),
                                                 precision=precision)]
    return [score_state(model, s, x, y, task, n_outputs, bn_data=bn_data, precision=precision)
            for s in states]


def score_state(model: nn.Module, state: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                task: str, n_outputs: int, *, bn_data: torch.Tensor | None = None,
                precision: str = "fp32") -> float:
    """The task's primary metric of ``model`` with ``state`` loaded (its state is overwritten),
    BN statistics re-estimated on ``bn_data`` first when given."""
    metric = PRIMARY_METRIC[_task(task)]
    model.load_state_dict(state)
    scored = reestimate_bn(model, bn_data) if bn_data is not None else model
    return evaluate(scored, x, y, task, n_outputs, metrics=(metric,), precision=precision)[metric]
