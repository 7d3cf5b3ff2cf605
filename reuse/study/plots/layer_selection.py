"""Figures of notebook 02 (E2, layer selection); heatmaps are shared with E4."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from .common import DONOR_ORDER, NO_SCORES, ORDER, dodge, empty_figure, finite, t_interval


def _panels(frame: pd.DataFrame) -> list[tuple[str, str]]:
    keys = frame[["architecture", "task"]].drop_duplicates()
    rank = {a: i for i, a in enumerate(ORDER["architecture"])} | {t: i for i, t in enumerate(ORDER["task"])}
    return sorted(map(tuple, keys.to_numpy()), key=lambda k: (rank.get(k[0], 9), rank.get(k[1], 9)))


def layer_heatmaps(frame: pd.DataFrame, value: str, column: str, title: str,
                   center: float | None = None, vmin: float | None = None,
                   vmax: float | None = None) -> plt.Figure:
    """Layers (rows) x conditions (``column`` values) heatmap of the seed-mean of ``value``,
    one panel per architecture/task; ``center`` gives a diverging map (gains)."""
    panels = _panels(frame)
    if not panels:
        return empty_figure(NO_SCORES)
    ncols = min(2, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.5 * ncols, 4.2 * nrows), squeeze=False)
    for ax, (arch, task) in zip(axes.flat, panels):
        d = frame[(frame.architecture == arch) & (frame.task == task)]
        m = d.pivot_table(index=["index", "layer"], columns=column, values=value, aggfunc="mean",
                          sort=False).sort_index(level=0)
        m.index = [f"{i + 1} {name}" for i, name in m.index]
        sns.heatmap(m, ax=ax, annot=True, fmt=".2f", annot_kws={"fontsize": 6},
                    cmap="RdBu" if center is not None else "viridis", center=center,
                    vmin=vmin, vmax=vmax, cbar_kws={"label": value})
        ax.set_title(f"{arch} / {task}")
        ax.set_xlabel("")
        ax.tick_params(axis="x", rotation=30, labelsize=7)
        ax.tick_params(axis="y", labelsize=7)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def selected_layers(swaps: pd.DataFrame, margin: float) -> plt.Figure:
    """Single-layer reuse score per layer (BN statistics re-estimated) with 95% CIs over
    seeds, hue = donor (theta_0: the layer reset to its initialisation, the baseline a donor
    must beat), a panel per condition; the dashed line is the margin."""
    d = finite(swaps[swaps.bn_reestimated]).copy()
    if d.empty:
        return empty_figure(NO_SCORES)
    d["layer #"] = d["index"] + 1
    d["condition"] = d.architecture + " / " + d.task
    g = sns.catplot(data=d, kind="point", x="layer #", y="reuse_score", hue="donor",
                    hue_order=[x for x in DONOR_ORDER if x in set(d.donor)], col="pair",
                    row="condition", errorbar=t_interval, dodge=dodge(d, "donor"), linestyle="none", height=2.6,
                    aspect=1.5, sharey=True, sharex=False)
    for ax in g.axes.flat:
        ax.axhline(margin, color="k", ls="--", lw=1)
        ax.axhline(0, color="grey", lw=0.8)
    g.set_ylabels("single-layer reuse score r")
    return g.figure
