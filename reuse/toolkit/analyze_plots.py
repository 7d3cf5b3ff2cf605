"""Figures of ``cnn-reuse analyze``: per-layer kernel distances, swap scores and cross-layer CKA.

Each function takes the tidy frames :mod:`reuse.toolkit.scan` / :mod:`reuse.toolkit.criteria` /
:mod:`reuse.toolkit.similarity` return and
returns a matplotlib ``Figure``; nothing here computes a criterion or a score. Figures are
made without pyplot (no backend or global state touched), so the CLI runs without a display
and a notebook shows them as usual.
"""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure


def layer_axis(ax, names, positions=None, fontsize: float = 7) -> None:
    """Label the x axis with layer names (forward order) at ``positions`` (default 0..n-1)."""
    names = list(names)
    ax.set_xticks(range(len(names)) if positions is None else list(positions), names, rotation=90,
                  fontsize=fontsize)


def plot_layers(layers: pd.DataFrame, ylabel: str = "source vs target") -> Figure:
    """Relative RMSE and cosine distance per conv layer (forward order), and RMSE over the
    twin's noise floor when the frame has ``rmse_over_floor``; ``ylabel`` says what the
    distance is between (or, for a fine-tuned pair, what it measures)."""
    with_floor = "rmse_over_floor" in layers.columns
    fig = Figure(figsize=(max(6, 0.3 * len(layers)), 3.2 * (1 + with_floor)), layout="tight")
    axes = fig.subplots(1 + with_floor, 1, squeeze=False, sharex=True)
    ax = axes[0, 0]
    ax.plot(range(len(layers)), layers.rel_rmse, "o-", label="relative RMSE")
    ax.plot(range(len(layers)), layers.cosine_distance, "s--", label="cosine distance")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    if with_floor:
        ax = axes[1, 0]
        ax.bar(range(len(layers)), layers.rmse_over_floor)
        ax.axhline(1.0, color="k", lw=0.8, ls=":")
        ax.set_ylabel("RMSE / twin floor")
    layer_axis(axes[-1, 0], layers.layer)
    return fig


def plot_swaps(swaps: pd.DataFrame, layers: pd.DataFrame, value: str, margin: float) -> Figure:
    """Swap scores: each layer alone (with ``margin``), prefix/suffix of k layers, and the
    single-layer score against the layer's relative RMSE (does the RMSE predict it?)."""
    fig = Figure(figsize=(15, 3.6), layout="tight")
    axes = fig.subplots(1, 3, gridspec_kw={"width_ratios": [2, 1, 1]})
    single = swaps[swaps.set == "single"]
    if not single.empty:
        axes[0].bar(range(len(single)), single[value])
        layer_axis(axes[0], single.layer)
        axes[0].axhline(margin, color="r", lw=0.8, ls="--", label=f"margin {margin}")
        axes[0].legend(fontsize=8)
    axes[0].set_ylabel(f"{value}, one layer swapped")
    for name, style in (("prefix", "o-"), ("suffix", "s-")):
        part = swaps[swaps.set == name]
        if not part.empty:
            axes[1].plot(part.k, part[value], style, label="first k layers" if name == "prefix" else "last k layers")
    axes[1].axhline(margin, color="r", lw=0.8, ls="--")
    axes[1].set_xlabel("k layers swapped")
    axes[1].set_ylabel(value)
    if axes[1].lines[:-1]:
        axes[1].legend(fontsize=8)
    merged = single.merge(layers[["layer", "rel_rmse"]], on="layer")
    axes[2].scatter(merged.rel_rmse, merged[value])
    axes[2].set_xlabel("relative RMSE")
    axes[2].set_ylabel(f"{value}, one layer swapped")
    return fig


def plot_cka_cross(cross: pd.DataFrame, value: str = "cka_debiased") -> Figure:
    """Heatmap of ``value`` for every source layer (rows) against every target layer
    (columns), both in forward order (:func:`reuse.toolkit.similarity.cka_cross`): a bright
    diagonal says each layer computes the same in both models; an off-diagonal maximum says
    a source layer matches another target layer (Kornblith et al. 2019, fig. 5). The scale is
    0 to 1; a debiased estimate below 0 shows as 0."""
    grid = cross.pivot(index="source_layer", columns="target_layer", values=value)
    order = list(dict.fromkeys(cross.source_layer)), list(dict.fromkeys(cross.target_layer))
    grid = grid.reindex(index=order[0], columns=order[1])
    side = max(4.0, 0.28 * max(grid.shape))
    fig = Figure(figsize=(side + 1.2, side), layout="tight")
    ax = fig.subplots()
    image = ax.imshow(grid.to_numpy(dtype=float), vmin=0, vmax=1, cmap="magma", origin="upper")
    fig.colorbar(image, ax=ax, label=value.replace("_", " "), shrink=0.8)
    layer_axis(ax, grid.columns)
    ax.set_yticks(range(len(grid.index)), grid.index, fontsize=7)
    ax.set_xlabel("target layer")
    ax.set_ylabel("source layer")
    return fig
