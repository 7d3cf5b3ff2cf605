"""Figures of notebook 03 (E3, the kernel-RMSE criterion)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from .common import DONOR_ORDER, dodge, empty_figure, present, t_interval

CRITERION_LABELS = {"rmse": "kernel RMSE", "rel_rmse": "relative kernel RMSE",
                    "floor_ratio": "RMSE / noise floor"}


def rmse_vs_score(points: pd.DataFrame, thresholds: dict[str, float], margin: float) -> plt.Figure:
    """Every (cell, layer, donor) point: each criterion (a column) against the single-layer
    reuse score, with the threshold fitted on the source's points (vertical) and the
    margin (horizontal)."""
    if points.empty:
        return empty_figure("no usable point")
    crits = [c for c in CRITERION_LABELS if c in points]
    fig, axes = plt.subplots(1, len(crits), figsize=(5 * len(crits), 3.8), squeeze=False)
    for ax, crit in zip(axes[0], crits):
        d = points[np.isfinite(points[crit]) & (points[crit] > 0)]
        sns.scatterplot(data=d, x=crit, y="reuse_score", hue="donor",
                        hue_order=[x for x in DONOR_ORDER if x in set(d.donor)], style="pair", ax=ax,
                        s=14, alpha=0.6)
        if np.isfinite(thresholds.get(crit, np.nan)):
            ax.axvline(thresholds[crit], color="r", lw=1, label="threshold (source points)")
        ax.axhline(margin, color="k", ls="--", lw=1)
        ax.set_xscale("log")
        ax.set_xlabel(CRITERION_LABELS[crit])
        ax.set_ylabel("single-layer reuse score r")
        ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def noise_floor(distances: pd.DataFrame, criterion: str = "rel_rmse") -> plt.Figure:
    """``criterion`` per layer between theta_T and each other run (source, twin,
    different init, batch-order twin = the noise floor), means with 95% CIs over seeds."""
    if distances.empty:
        return empty_figure("no distances")
    d = distances.copy()
    d["layer #"] = d["index"] + 1
    d["condition"] = d.architecture + " / " + d.task
    g = sns.catplot(data=d, kind="point", x="layer #", y=criterion, hue="comparison", col="pair",
                    row="condition", errorbar=t_interval, dodge=dodge(d, "comparison", 0.3), height=2.6, aspect=1.5,
                    sharey=True, sharex=False,
                    hue_order=[x for x in [*DONOR_ORDER, "order"] if x in set(d.comparison)])
    g.set_ylabels(CRITERION_LABELS.get(criterion, criterion))
    return g.figure


def per_kernel(frame: pd.DataFrame) -> plt.Figure:
    """Distribution of per-kernel (output channel) RMSE per layer, a panel per architecture/task."""
    if frame.empty:
        return empty_figure("no kernels")
    d = frame.copy()
    d["layer #"] = d["index"] + 1
    g = sns.catplot(data=d, kind="box", x="layer #", y="rmse", col="architecture", row="task",
                    height=2.8, aspect=1.6, sharey=False, fliersize=1,
                    col_order=present("architecture", d),
                    row_order=present("task", d))
    g.set_ylabels("per-kernel RMSE")
    return g.figure


def dose_response(dose: pd.DataFrame) -> plt.Figure:
    """The ladder's graded shifts: relative RMSE per layer (left) and reuse score (right: single layers
    and all conv kernels) vs shift strength s, means with 95% CIs over seeds."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    if dose.empty:
        return empty_figure("no dose-response runs")
    layers = dose[dose.layer != "(all conv)"].copy()
    layers["layer #"] = (layers["index"] + 1).astype(str)
    sns.lineplot(data=layers, x="shift", y="rel_rmse", hue="layer #", style="architecture",
                 errorbar=t_interval, marker="o", ax=axes[0], palette="viridis")
    axes[0].set_ylabel("relative kernel RMSE")
    d = dose.assign(swapped=np.where(dose.layer == "(all conv)", "all conv kernels", "one layer (mean)"))
    sns.lineplot(data=d, x="shift", y="reuse_score", hue="swapped", style="architecture",
                 errorbar=t_interval, marker="o", ax=axes[1])
    axes[1].set_ylabel("reuse score r")
    for ax in axes:
        ax.set_xlabel("shift strength s")
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return fig


def kernel_pictures(kernels: dict[str, dict[str, np.ndarray]], max_kernels: int = 8) -> plt.Figure:
    """Source, target and difference kernels (rows) of each layer (first input channel of
    up to ``max_kernels`` output channels); one colour scale per layer, difference included."""
    n_rows = 3 * len(kernels)
    n_cols = max(min(max_kernels, k["source"].shape[0]) for k in kernels.values())
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.1 * n_cols + 1, 1.1 * n_rows), squeeze=False)
    for li, (name, k) in enumerate(kernels.items()):
        lim = max(np.abs(k[part][:max_kernels, 0]).max() for part in ("source", "target", "difference"))
        for pi, part in enumerate(("source", "target", "difference")):
            row = axes[3 * li + pi]
            for j, ax in enumerate(row):
                ax.set_xticks([])
                ax.set_yticks([])
                if j < min(max_kernels, k[part].shape[0]):
                    ax.imshow(k[part][j, 0], cmap="RdBu", vmin=-lim, vmax=lim)
                else:
                    ax.set_visible(False)
            row[0].set_ylabel(f"{name}\n{part}", fontsize=7)
    fig.tight_layout()
    return fig
