"""Which conv layers to reuse: the paper's two-condition rule as a user-facing function.

arXiv 2008.03411 (abstract): reuse works when (a) the network is reusable and (b) the
RMSE between the source- and target-trained kernels of a layer is small enough. Entry
points:

- :func:`select_layers` applies the rule to two trained models (modules, state dicts or
  checkpoint paths): a per-layer table (RMSE, relative RMSE, noise floor, verdict and the
  reason for it) and the layers to reuse; given a ``score_fn`` it also scores the chosen
  set swapped together and backs off greedily when that joint swap fails
  (:func:`reuse.scan.check_joint`);
- the experiments (``reuse.experiments.small_data``) apply it to a model trained on a few
  target samples.

The RMSE compares weights position by position, which means something only when both
models have the same architecture and started from the same initialisation theta_0
(otherwise hidden units can be permuted and the RMSE measures the permutation).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import pandas as pd
import torch
from torch import nn

from .checkpoints import ModelLike, load_state
from .criteria import check_layers, conv_layers, kernel_rmse
from .surgery import check_compatible

__all__ = ["CRITERIA", "conv_layers", "kernel_keys", "select_layers"]

CRITERIA = ("rmse", "rel_rmse")


def kernel_keys(model: ModelLike, layers: Iterable[str]) -> list[str]:
    """State keys of the kernels (weight and, where present, bias) of conv ``layers``."""
    state = load_state(model, what="model")
    layers = check_layers(state, layers)
    return [k for name in layers for k in (f"{name}.weight", f"{name}.bias") if k in state]


def select_layers(source_state: ModelLike, target_state: ModelLike,
                  layers: Iterable[str] | None = None, *, noise_floor: pd.DataFrame | None = None,
                  threshold: float, use_relative: bool = False, network_reusable: bool = True,
                  score_fn: Callable[[nn.Module], float] | None = None,
                  model: nn.Module | None = None, bn_data: torch.Tensor | None = None,
                  chance: float | None = None, margin: float = 0.5
                  ) -> tuple[pd.DataFrame, list[str]]:
    """Per-layer verdicts of the two-condition rule and the layers to reuse.

    ``source_state`` / ``target_state``: state dicts of one architecture trained on the
    source and the target from the same theta_0. ``layers``: conv layers to judge (all
    when None). ``noise_floor``: optional frame with columns ``layer`` and the criterion
    (``rmse`` or ``rel_rmse``): the same criterion between two target-only runs, shown
    beside each layer so a user sees whether a difference exceeds retraining noise (it
    does not change the verdict). A layer is reused when ``network_reusable`` and its
    criterion (relative RMSE when ``use_relative``) is ``<= threshold``.

    ``score_fn(model) -> float`` (higher is better), when given, checks the chosen layers
    *as a whole*: the target with all of them swapped in is scored and, if it fails, layers
    are dropped greedily (:func:`reuse.scan.check_joint`; ``model``, ``bn_data``, ``chance``
    and ``margin`` are passed on). Dropped layers get ``reuse`` False and a reason that
    says so; the check's log is in ``table.attrs["joint_check"]``.

    Returns (table with columns layer, index, rmse, rel_rmse, cosine_distance, criterion,
    noise_floor, reuse, reason; the layers to reuse, in forward order).
    """
    if model is None and isinstance(target_state, nn.Module):
        model = target_state  # the architecture for the joint check (copied there)
    source_state = load_state(source_state, what="source")
    target_state = load_state(target_state, what="target")
    try:
        check_compatible(target_state, source_state)
    except ValueError as err:
        raise ValueError(f"select_layers needs two models of the same architecture trained from a "
                         f"shared initialisation: {err}") from None
    if not (isinstance(threshold, (int, float)) and threshold >= 0):  # NaN fails >= 0
        raise ValueError(f"threshold={threshold!r}; allowed: a number >= 0 (inf reuses every layer)")
    criterion = CRITERIA[bool(use_relative)]
    layers = check_layers(target_state, layers)
    if not layers:
        raise ValueError("layers is empty; pass conv layer names or None for all of them")
    table = kernel_rmse(source_state, target_state, layers)
    layers = list(table.layer)
    table["criterion"] = criterion
    table["noise_floor"] = _floor(noise_floor, layers, criterion)
    values = table[criterion].to_numpy()
    table["reuse"] = bool(network_reusable) & (values <= threshold)
    table["reason"] = [_reason(criterion, v, threshold, f, network_reusable)
                       for v, f in zip(values, table.noise_floor)]
    chosen = [name for name, ok in zip(layers, table.reuse) if ok]
    if score_fn is None or not chosen:
        return table, chosen
    from .scan import check_joint  # scan builds on this module; imported here to avoid a cycle

    kept, log = check_joint(source_state, target_state, chosen, score_fn, model=model,
                            bn_data=bn_data, chance=chance, margin=margin)
    dropped = table.reuse & ~table.layer.isin(kept)
    table.loc[dropped, "reuse"] = False
    table.loc[dropped, "reason"] = ("not reused: passed the rule, but dropped by the joint check ("
                                    "the chosen layers swapped together failed); " + table.reason[dropped])
    table.attrs["joint_check"] = log
    return table, kept


def _floor(noise_floor: pd.DataFrame | None, layers: list[str], criterion: str) -> list[float]:
    if noise_floor is None:
        return [math.nan] * len(layers)
    if not {"layer", criterion} <= set(noise_floor.columns):
        raise ValueError(f"noise_floor needs columns 'layer' and {criterion!r}; got "
                         f"{list(noise_floor.columns)}")
    per_layer = noise_floor.groupby("layer")[criterion].mean()
    return [float(per_layer.get(name, math.nan)) for name in layers]


def _reason(criterion: str, value: float, threshold: float, floor: float, network_reusable: bool) -> str:
    name = {"rmse": "RMSE", "rel_rmse": "relative RMSE"}[criterion]
    if not network_reusable:
        return "not reused: the network is not reusable (condition a fails)"
    side = "<=" if value <= threshold else ">"
    text = f"{name} {value:.4g} {side} threshold {threshold:.4g}"
    if math.isfinite(floor):
        text += f"; noise floor {floor:.4g} ({'within' if value <= floor else 'above'} retraining noise)"
    return ("reused: " if value <= threshold else "not reused: ") + text
