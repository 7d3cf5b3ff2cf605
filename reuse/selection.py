"""Which conv layers to reuse: the paper's two-condition rule as a user-facing function.

arXiv 2008.03411 (abstract): reuse works when (a) the network is reusable and (b) the
RMSE between the source- and target-trained kernels of a layer is small enough. Entry
points:

- :func:`select_layers` applies the rule to two trained states: a per-layer table
  (RMSE, relative RMSE, noise floor, verdict and the reason for it) and the layers to
  reuse;
- the experiments (``reuse.experiments.small_data``) apply it to a model trained on a few
  target samples.

The RMSE compares weights position by position, which means something only when both
models have the same architecture and started from the same initialisation theta_0
(otherwise hidden units can be permuted and the RMSE measures the permutation).
"""

from __future__ import annotations

import math

import pandas as pd
import torch

from .criteria import kernel_rmse
from .surgery import check_compatible

CRITERIA = ("rmse", "rel_rmse")


def conv_layers(state: dict[str, torch.Tensor]) -> list[str]:
    """Conv layers of a state, in state order: modules whose ``weight`` is 4-D.

    Read from the state alone (no model, no data); for this package's models state
    order is forward order.
    """
    return [k[: -len(".weight")] for k, v in state.items() if k.endswith(".weight") and v.ndim == 4]


def kernel_keys(state: dict[str, torch.Tensor], layers: list[str]) -> list[str]:
    """State keys of the kernels (weight and, where present, bias) of ``layers``."""
    missing = [name for name in layers if f"{name}.weight" not in state]
    if missing:
        raise ValueError(f"layers not in the state: {missing[:5]}")
    return [k for name in layers for k in (f"{name}.weight", f"{name}.bias") if k in state]


def select_layers(source_state: dict[str, torch.Tensor], target_state: dict[str, torch.Tensor],
                  layers: list[str] | None = None, *, noise_floor: pd.DataFrame | None = None,
                  threshold: float, use_relative: bool = False, network_reusable: bool = True
                  ) -> tuple[pd.DataFrame, list[str]]:
    """Per-layer verdicts of the two-condition rule and the layers to reuse.

    ``source_state`` / ``target_state``: state dicts of one architecture trained on the
    source and the target from the same theta_0. ``layers``: conv layers to judge (all
    when None). ``noise_floor``: optional frame with columns ``layer`` and the criterion
    (``rmse`` or ``rel_rmse``): the same criterion between two target-only runs, shown
    beside each layer so a user sees whether a difference exceeds retraining noise (it
    does not change the verdict). A layer is reused when ``network_reusable`` and its
    criterion (relative RMSE when ``use_relative``) is ``<= threshold``.

    Returns (table with columns layer, index, rmse, rel_rmse, criterion, noise_floor,
    reuse, reason; the layers to reuse, in forward order).
    """
    try:
        check_compatible(target_state, source_state)
    except ValueError as err:
        raise ValueError(f"select_layers needs two models of the same architecture trained from a "
                         f"shared initialisation: {err}") from None
    if not (isinstance(threshold, (int, float)) and threshold >= 0):  # NaN fails >= 0
        raise ValueError(f"threshold={threshold!r}; allowed: a number >= 0 (inf reuses every layer)")
    criterion = CRITERIA[bool(use_relative)]
    layers = conv_layers(target_state) if layers is None else list(layers)
    if not layers:
        raise ValueError("layers is empty; pass conv layer names or None for all of them")
    table = kernel_rmse(source_state, target_state, layers)
    table["criterion"] = criterion
    table["noise_floor"] = _floor(noise_floor, layers, criterion)
    values = table[criterion].to_numpy()
    table["reuse"] = bool(network_reusable) & (values <= threshold)
    table["reason"] = [_reason(criterion, v, threshold, f, network_reusable)
                       for v, f in zip(values, table.noise_floor)]
    return table, [name for name, ok in zip(layers, table.reuse) if ok]


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
