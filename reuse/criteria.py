"""Per-layer criteria between two models' convolution kernels (docs/protocol.md, section 4: M3).

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
    ``rel_rmse``, in float64, on the target weights' device with one transfer back.

    ``rel_rmse = ||W_S - W_T|| / ||W_T||`` (the sizes cancel). One norm per layer,
    stacked: measured faster than both a per-layer loop of ``float()`` reads (which waits
    for the device at every layer) and a single flattened ``index_add_`` pass (whose
    concatenation costs more than it saves for 8-30 layers); benchmarks/bench.py (d).
    """
    ws, wt = _weights(source, layers), _weights(target, layers)
    for name, a, b in zip(layers, ws, wt):
        if a.shape != b.shape:
            raise ValueError(f"layer {name}: source {tuple(a.shape)} vs target {tuple(b.shape)}")
    if not layers:
        return pd.DataFrame(columns=["layer", "index", "n_weights", "rmse", "rel_rmse"])
    device = wt[0].device
    diff = torch.stack([torch.linalg.vector_norm(a.to(device, torch.float64) - b.double())
                        for a, b in zip(ws, wt)])
    norm_t = torch.stack([torch.linalg.vector_norm(b.double()) for b in wt])
    numels = [b.numel() for b in wt]
    sizes = torch.tensor(numels, dtype=torch.float64, device=device)
    values = torch.stack([diff / sizes.sqrt(), diff / norm_t]).cpu().numpy()
    return pd.DataFrame({"layer": layers, "index": range(len(layers)),
                         "n_weights": numels, "rmse": values[0],
                         "rel_rmse": values[1]})


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
