"""Per-layer criteria between two models' convolution kernels (PROTOCOL M3).

``RMSE_l = sqrt(mean((W_S,l - W_T,l)^2))`` over every weight of conv layer l, and the
scale-free ``relRMSE_l = RMSE_l / sqrt(mean(W_T,l^2))`` (the RMSE of the paper's
abstract, arXiv 2008.03411, and its normalised form). All in float64.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd
import torch


def _weights(state: dict[str, torch.Tensor], layers: list[str]) -> list[torch.Tensor]:
    missing = [name for name in layers if f"{name}.weight" not in state]
    if missing:
        raise ValueError(f"no '<layer>.weight' in the state for layers {missing[:5]}")
    return [state[f"{name}.weight"] for name in layers]


def kernel_rmse(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor],
                layers: list[str]) -> pd.DataFrame:
    """One row per layer: ``layer``, ``index`` (forward order), ``n_weights``, ``rmse``,
    ``rel_rmse``, computed in one pass over all layers (float64 accumulation).

    Layers are computed together (weights flattened into one vector, summed per layer
    with ``index_add_``) so that a single call gives every layer. Measured against a
    per-layer loop (benchmarks/bench.py, section d), this is slower for our 8-18 layer
    models (x0.07 on the CPU, x0.39 on an H200); issue 4 keeps that open.
    """
    ws, wt = _weights(source, layers), _weights(target, layers)
    for name, a, b in zip(layers, ws, wt):
        if a.shape != b.shape:
            raise ValueError(f"layer {name}: source {tuple(a.shape)} vs target {tuple(b.shape)}")
    device = wt[0].device if wt else torch.device("cpu")
    sizes = torch.tensor([w.numel() for w in wt], device=device)
    seg = torch.repeat_interleave(torch.arange(len(wt), device=device), sizes)
    s = torch.cat([w.reshape(-1) for w in ws]).to(device, torch.float64)
    t = torch.cat([w.reshape(-1) for w in wt]).to(device, torch.float64)
    sq_diff = torch.zeros(len(wt), dtype=torch.float64, device=device).index_add_(0, seg, (s - t) ** 2)
    sq_t = torch.zeros(len(wt), dtype=torch.float64, device=device).index_add_(0, seg, t ** 2)
    n = sizes.to(torch.float64)
    rmse = (sq_diff / n).sqrt()
    rel = rmse / (sq_t / n).sqrt()
    return pd.DataFrame({"layer": layers, "index": range(len(layers)),
                         "n_weights": sizes.cpu().numpy(), "rmse": rmse.cpu().numpy(),
                         "rel_rmse": rel.cpu().numpy()})


def per_kernel_rmse(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor],
                    layers: list[str], transposed: Iterable[str] = ()) -> pd.DataFrame:
    """One row per (layer, output channel): the RMSE of that channel's kernel.

    Layers named in ``transposed`` are ``ConvTranspose2d`` (weight ``[in, out, kh, kw]``),
    whose output channel is dim 1.
    """
    transposed = set(transposed)
    rows = []
    for name, a, b in zip(layers, _weights(source, layers), _weights(target, layers)):
        diff = (a.double() - b.double()) ** 2
        per_out = diff.transpose(0, 1) if name in transposed else diff
        values = per_out.reshape(per_out.shape[0], -1).mean(1).sqrt()
        rows += [{"layer": name, "kernel": i, "rmse": float(v)} for i, v in enumerate(values)]
    return pd.DataFrame(rows)
