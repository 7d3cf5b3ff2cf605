"""Per-layer criteria between two models' layer weights (docs/protocol.md, section 4: M3).

``RMSE_l = sqrt(mean((W_S,l - W_T,l)^2))`` over every weight of layer l, the
scale-free ``relRMSE_l = RMSE_l / sqrt(mean(W_T,l^2))`` (the RMSE of the paper's
abstract, arXiv 2008.03411, and its normalised form) and the cosine distance
``1 - <W_S,l, W_T,l> / (||W_S,l|| ||W_T,l||)`` of the flattened weights. All in float64,
on weights of any shape.

Models may be given as modules, state dicts or checkpoint paths
(:func:`reuse.toolkit.checkpoints.load_state`). A layer is a module with a ``weight`` of one
of the :data:`KINDS`, told apart by the weight's number of dimensions, since a state holds
nothing else: ``linear`` 2 (``Linear`` ``[out, in]``; an ``Embedding`` looks the same),
``conv1d`` 3, ``conv2d`` 4, ``conv3d`` 5 (``ConvNd`` ``[out, in, *k]``, ``ConvTransposeNd``
``[in, out, *k]``). The study swaps 2-D convolutions only (:func:`conv_layers`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import pandas as pd
import torch

from .checkpoints import ModelLike, load_state

COLUMNS = ["layer", "index", "n_weights", "rmse", "rel_rmse", "cosine_distance"]
KINDS = ("linear", "conv1d", "conv2d", "conv3d")
_NDIM = {"linear": 2, "conv1d": 3, "conv2d": 4, "conv3d": 5}  # a kind's weight dimensions


def check_kinds(kinds: Iterable[str]) -> tuple[str, ...]:
    """``kinds`` as a tuple of :data:`KINDS`; ValueError naming an unknown one or none."""
    kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise ValueError(f"kinds={list(kinds)}; allowed: a non-empty list of {', '.join(KINDS)}")
    return kinds


def find_layers(model: ModelLike, kinds: Iterable[str] = KINDS) -> list[str]:
    """Layers of a model of the given :data:`KINDS` (all by default), in state order.

    Read from the state alone (no forward pass); state order is the order in which
    modules were registered, which is forward order for sequential models (ResNet,
    VGG, MobileNet, this package's models).
    """
    ndims = {_NDIM[k] for k in check_kinds(kinds)}
    state = load_state(model, what="model")
    return [k[: -len(".weight")] for k, v in state.items() if k.endswith(".weight") and v.ndim in ndims]


def conv_layers(model: ModelLike) -> list[str]:
    """The 2-D conv layers (4-D weights) of a model, in state order: the layers the study
    swaps (its heads are convolutions too)."""
    return find_layers(model, ("conv2d",))


def check_layers(state: dict[str, torch.Tensor], layers: Iterable[str] | None) -> list[str]:
    """``layers`` as a list of layer names of ``state`` (every layer of :data:`KINDS` when
    None).

    Raises TypeError for a plain string or non-string names, ValueError for names that
    are not layers of ``state`` (a BN layer, a typo).
    """
    allowed = find_layers(state)
    if layers is None:
        return allowed
    if isinstance(layers, (str, bytes)) or not isinstance(layers, Iterable):
        raise TypeError(f"layers={layers!r}; allowed: None (every layer) or a list of "
                        f"names such as {allowed[:3]}")
    layers = list(layers)
    for name in layers:
        if not isinstance(name, str):
            raise TypeError(f"layer {name!r} is a {type(name).__name__}; allowed: layer names "
                            f"(str) such as {allowed[:3]}")
        weight = state.get(f"{name}.weight")
        if weight is None:
            raise ValueError(f"layer {name!r} has no '{name}.weight' in the model; allowed: "
                             f"layers such as {allowed[:5]}")
        if weight.ndim not in _NDIM.values():
            raise ValueError(f"layer {name!r} is not a layer of {', '.join(KINDS)} (weight ndim "
                             f"{weight.ndim}); allowed: layers such as {allowed[:5]}")
    return layers


def _pair(source: ModelLike, target: ModelLike, layers: Iterable[str] | None
          ) -> tuple[list[str], list[torch.Tensor], list[torch.Tensor]]:
    """Layer names and the two lists of weights, checked for equal shapes."""
    s, t = load_state(source, what="source"), load_state(target, what="target")
    layers = check_layers(t, layers)
    missing = [name for name in layers if f"{name}.weight" not in s]
    if missing:
        raise ValueError(f"layers {missing[:5]} of the target are missing in the source: the "
                         "architectures differ")
    ws, wt = [s[f"{n}.weight"] for n in layers], [t[f"{n}.weight"] for n in layers]
    for name, a, b in zip(layers, ws, wt):
        if a.shape != b.shape:
            raise ValueError(f"layer {name}: source weight {tuple(a.shape)} vs target "
                             f"{tuple(b.shape)}; allowed: equal shapes (one architecture)")
    return layers, ws, wt


def kernel_rmse(source: ModelLike, target: ModelLike,
                layers: Iterable[str] | None = None) -> pd.DataFrame:
    """One row per layer: ``layer``, ``index`` (position in ``layers``), ``n_weights``,
    ``rmse``, ``rel_rmse``, ``cosine_distance``, in float64, on the target weights' device
    with one transfer back. ``layers=None``: every layer of :data:`KINDS` of the target.

    ``rel_rmse = ||W_S - W_T|| / ||W_T||`` (the sizes cancel), NaN (not inf) for an all-zero
    target kernel; ``cosine_distance`` is NaN for an all-zero kernel. One norm per layer, stacked: measured faster than both a
    per-layer loop of ``float()`` reads (which waits for the device at every layer) and a
    single flattened ``index_add_`` pass (whose concatenation costs more than it saves for
    8-30 layers); benchmarks/bench.py (d). One layer's float64 copies at a time (all of them
    at once held four times the float32 weights), its norms written into one tensor made
    before them (a small result kept per layer pinned their freed memory in the heap: 1 GB
    kept of a 2 GB pair; benchmarks/bench_memory.py).
    """
    layers, ws, wt = _pair(source, target, layers)
    if not layers:
        return pd.DataFrame(columns=COLUMNS)
    device = wt[0].device
    norms = torch.empty(len(layers), 4, dtype=torch.float64, device=device)
    for i, (a, b) in enumerate(zip(ws, wt)):
        norms[i] = _norms(a.to(device), b)
    diff, norm_s, norm_t, dot = norms.T
    numels = [b.numel() for b in wt]
    # math.sqrt, not a float64 tensor sqrt: that one reaches MKL, whose last bits depend on
    # the CPU vendor; the norms above are reductions that do not
    sizes = torch.tensor([math.sqrt(n) for n in numels], dtype=torch.float64, device=device)
    rel = torch.where(norm_t > 0, diff / norm_t, torch.nan)  # undefined for an all-zero target
    values = torch.stack([diff / sizes, rel, 1 - dot / (norm_s * norm_t)]).cpu().numpy()
    return pd.DataFrame({"layer": layers, "index": range(len(layers)),
                         "n_weights": numels, "rmse": values[0],
                         "rel_rmse": values[1], "cosine_distance": values[2]})


def _norms(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[||a - b||, ||a||, ||b||, <a, b>]`` of two weights, flattened, in float64."""
    a, b = a.double().flatten(), b.double().flatten()
    return torch.stack([torch.linalg.vector_norm(a - b), torch.linalg.vector_norm(a),
                        torch.linalg.vector_norm(b), a @ b])


def rmse_over_floor(source: ModelLike, target: ModelLike, twin: ModelLike,
                    layers: Iterable[str] | None = None) -> pd.DataFrame:
    """:func:`kernel_rmse` of source against target, with the layer's own noise floor beside
    it: ``floor_rmse``, the RMSE between ``twin`` (a second training of the target's task from
    the same theta_0: other data or batch order) and the target, and ``rmse_over_floor`` =
    rmse / floor_rmse (NaN, not inf, for a zero floor).

    Between networks that share theta_0 a layer's RMSE is set mostly by how far training moves
    that layer, whatever the source; dividing by what retraining on the target's own task
    moves it leaves what the source adds: about 1 for a source as close as a retraining,
    more for a farther one (docs/protocol.md, section 4, M3)."""
    table = kernel_rmse(source, target, layers)
    floor = kernel_rmse(twin, target, list(table.layer)).rmse.to_numpy()
    return table.assign(floor_rmse=floor, rmse_over_floor=table.rmse / pd.Series(floor).where(floor > 0))


def per_kernel_rmse(source: ModelLike, target: ModelLike, layers: Iterable[str] | None = None,
                    transposed: Iterable[str] = ()) -> pd.DataFrame:
    """One row per (layer, output channel or unit): the RMSE of that channel's kernel.

    Layers named in ``transposed`` are ``ConvTransposeNd`` (weight ``[in, out, *k]``),
    whose output channel is dim 1.
    """
    transposed = set(transposed)
    rows = []
    for name, a, b in zip(*_pair(source, target, layers)):
        diff = (a.double() - b.double()) ** 2
        per_out = diff.transpose(0, 1) if name in transposed else diff
        values = per_out.reshape(per_out.shape[0], -1).mean(1).tolist()
        rows += [{"layer": name, "kernel": i, "rmse": math.sqrt(v)} for i, v in enumerate(values)]
    return pd.DataFrame(rows)


def kernel_keys(model: ModelLike, layers: Iterable[str]) -> list[str]:
    """State keys of the kernels (weight and, where present, bias) of ``layers``."""
    state = load_state(model, what="model")
    layers = check_layers(state, layers)
    return [k for name in layers for k in (f"{name}.weight", f"{name}.bias") if k in state]
