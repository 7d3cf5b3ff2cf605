"""Figures for E2-E4 from their tidy frames (computing never plots; these only draw).

Save with :func:`reuse.plots.save_figure`; error bars are the tables' Student-t 95% CI
(:func:`reuse.plots._t_interval`).
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from .plots import DONOR_ORDER, NO_SCORES, ORDER, _t_interval, dodge, empty_figure, finite

STRATEGY_ORDER = ["scratch", "reuse_all", "first_k", "rule_strict", "rule", "rmse_only", "random",
                  "oracle"]
CRITERION_LABELS = {"rmse": "kernel RMSE", "rel_rmse": "relative kernel RMSE",
                    "floor_ratio": "RMSE / noise floor"}


def _present(factor: str, frame: pd.DataFrame) -> list[str]:
    """The values of ``factor`` in ``frame``, in the house order of :data:`reuse.plots.ORDER`."""
    values = set(frame[factor])
    return [v for v in ORDER[factor] if v in values] + sorted(values - set(ORDER[factor]))


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
    seeds, hue = donor, a panel per condition; the dashed line is the margin."""
    d = finite(swaps[swaps.bn_reestimated]).copy()
    if d.empty:
        return empty_figure(NO_SCORES)
    d["layer #"] = d["index"] + 1
    d["condition"] = d.architecture + " / " + d.task
    g = sns.catplot(data=d, kind="point", x="layer #", y="reuse_score", hue="donor",
                    hue_order=[x for x in DONOR_ORDER if x in set(d.donor)], col="pair",
                    row="condition", errorbar=_t_interval, dodge=dodge(d, "donor"), linestyle="none", height=2.6,
                    aspect=1.5, sharey=True, sharex=False)
    for ax in g.axes.flat:
        ax.axhline(margin, color="k", ls="--", lw=1)
        ax.axhline(0, color="grey", lw=0.8)
    g.set_ylabels("single-layer reuse score r")
    return g.figure


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
                    row="condition", errorbar=_t_interval, dodge=dodge(d, "comparison", 0.3), height=2.6, aspect=1.5,
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
                    col_order=_present("architecture", d),
                    row_order=_present("task", d))
    g.set_ylabels("per-kernel RMSE")
    return g.figure


def dose_response(dose: pd.DataFrame) -> plt.Figure:
    """fashion-shift: relative RMSE per layer (left) and reuse score (right: single layers
    and all conv kernels) vs shift strength s, means with 95% CIs over seeds."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    if dose.empty:
        return empty_figure("no dose-response runs")
    layers = dose[dose.layer != "(all conv)"].copy()
    layers["layer #"] = (layers["index"] + 1).astype(str)
    sns.lineplot(data=layers, x="shift", y="rel_rmse", hue="layer #", style="architecture",
                 errorbar=_t_interval, marker="o", ax=axes[0], palette="viridis")
    axes[0].set_ylabel("relative kernel RMSE")
    d = dose.assign(swapped=np.where(dose.layer == "(all conv)", "all conv kernels", "one layer (mean)"))
    sns.lineplot(data=d, x="shift", y="reuse_score", hue="swapped", style="architecture",
                 errorbar=_t_interval, marker="o", ax=axes[1])
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


def small_data_differences(differences: pd.DataFrame) -> plt.Figure:
    """Each strategy minus scratch (mean and 95% CI over seeds), a panel per pair, hue = n_T:
    the paired view, free of the seed-to-seed spread that the raw curves carry."""
    if differences.empty:
        return empty_figure("no small-data results")
    order = [s for s in STRATEGY_ORDER if s in set(differences.strategy)]
    d = differences.assign(n_T=differences.n_T.map(lambda n: f"n_T = {n}"))
    g = sns.catplot(data=d, kind="point", x="strategy", y="difference", order=order,
                    hue="n_T", palette="deep", col="pair", row="task", errorbar=_t_interval, dodge=dodge(d, "n_T"),
                    linestyle="none", height=3, aspect=1.3, sharey=False)
    for ax in g.axes.flat:
        ax.axhline(0, color="k", lw=1)
        ax.tick_params(axis="x", rotation=40)
    g.set_ylabels("metric minus scratch (mIoU or PSNR)")
    return g.figure


def small_data_curves(results: pd.DataFrame) -> plt.Figure:
    """Target metric vs n_T (log) per strategy with 95% CIs over seeds (random: the mean
    over draws); rows = task, columns = architecture x pair."""
    if results.empty:
        return empty_figure("no small-data results")
    d = (results.groupby(["task", "architecture", "pair", "seed", "n_T", "strategy"], as_index=False)
         .value.mean())
    d = d.assign(cell=d.architecture + " / " + d.pair)
    g = sns.relplot(data=d, kind="line", x="n_T", y="value", hue="strategy", style="strategy",
                    hue_order=[s for s in STRATEGY_ORDER if s in set(d.strategy)], row="task",
                    col="cell", marker="o", errorbar=_t_interval, height=2.8, aspect=1.2,
                    facet_kws={"sharey": False},
                    row_order=_present("task", d))
    sizes = sorted(set(d.n_T))
    for ax in g.axes.flat:
        ax.set_xscale("log")
        ax.set_xticks(sizes, [str(n) for n in sizes])
        ax.minorticks_off()
    g.set_titles("{row_name} | {col_name}")
    g.set_ylabels("target metric (mIoU or PSNR)")
    return g.figure
