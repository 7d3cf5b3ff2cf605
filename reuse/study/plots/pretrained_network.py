"""Figures of notebook 07 (a real pretrained network) from the frames of
:mod:`reuse.study.experiments.pretrained_network`.

Each takes a tidy frame (one row per task x seed x donor x layer) and returns a Figure with
one panel per target task (near, far); the layer axis is ONet's conv layers in forward order.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from .common import empty_figure, finite, t_interval

DONOR_LABELS = {"pretrained": "theta_P put back (frozen?)", "twin": "fine-tuned twin (+ control)",
                "scratch": "trained from scratch (- control)", "reset": "reset to theta_0 (baseline)"}


def _tasks(frame: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(frame.task))


def single_layer_scores(scans: pd.DataFrame, margin: float) -> plt.Figure:
    """Single-layer reuse score in theta_FT per conv layer and donor (mean and 95% CI over
    seeds), one panel per task, the margin dashed."""
    d = finite(scans[scans.set == "single"]).assign(model=lambda f: f.donor.map(DONOR_LABELS))
    if d.empty:
        return empty_figure("no single-layer swap scores to draw")
    tasks = _tasks(d)
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.6), squeeze=False, sharey=True)
    order = [DONOR_LABELS[k] for k in DONOR_LABELS if k in set(d.donor)]
    for ax, task in zip(axes[0], tasks):
        g = d[d.task == task]
        sns.pointplot(data=g, x="layer", y="reuse_score", hue="model", hue_order=order,
                      order=list(dict.fromkeys(g.layer)), errorbar=t_interval, dodge=0.4, linestyle="none",
                      ax=ax, legend=ax is axes[0][-1])
        ax.axhline(margin, color="k", ls="--", lw=1)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_title(task)
        ax.set_xlabel("conv layer swapped into theta_FT")
        ax.set_ylabel("reuse score")
    if axes[0][-1].get_legend():
        sns.move_legend(axes[0][-1], "upper left", bbox_to_anchor=(1.02, 1), fontsize=8, title=None)
    fig.tight_layout()
    return fig


def prefix_scores(scans: pd.DataFrame, margin: float) -> plt.Figure:
    """theta_P's first k conv layers put back into theta_FT ("freeze the first k"), reuse score
    against k (mean and 95% CI over seeds), one line per task."""
    d = finite(scans[(scans.donor == "pretrained") & (scans.set == "prefix")])
    if d.empty:
        return empty_figure("no prefix swaps to draw")
    fig, ax = plt.subplots(figsize=(5, 3.2))
    sns.lineplot(data=d, x="k", y="reuse_score", hue="task", marker="o", errorbar=t_interval, ax=ax)
    ax.axhline(margin, color="k", ls="--", lw=1)
    ax.set_xlabel("first k conv layers from theta_P")
    ax.set_ylabel("reuse score")
    ax.set_xticks(sorted(d.k.unique()))
    fig.tight_layout()
    return fig


def distance_vs_score(distances: pd.DataFrame, scans: pd.DataFrame) -> plt.Figure:
    """Per task: relative RMSE between theta_P and theta_FT against theta_P's single-layer reuse
    score, one point per seed and layer (coloured by layer): does the distance sort the layers?"""
    d = distances[distances.donor == "pretrained"][["task", "seed", "layer", "rel_rmse"]]
    s = scans[(scans.donor == "pretrained") & (scans.set == "single")][["task", "seed", "layer", "reuse_score"]]
    m = finite(d.merge(s, on=["task", "seed", "layer"]))
    if m.empty:
        return empty_figure("no layer to draw")
    tasks = _tasks(m)
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.5 * len(tasks), 3.3), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        g = m[m.task == task]
        sns.scatterplot(data=g, x="rel_rmse", y="reuse_score", hue="layer", ax=ax, legend=ax is axes[0][-1])
        ax.set_title(task)
        ax.set_xlabel("relative RMSE, theta_P vs theta_FT")
        ax.set_ylabel("reuse score (theta_P's layer put back)")
    fig.tight_layout()
    return fig


def accuracies(runs: pd.DataFrame) -> plt.Figure:
    """Test accuracy of every run per task and role (one point per seed; chance dotted)."""
    if runs.empty:
        return empty_figure("no runs to draw")
    fig, ax = plt.subplots(figsize=(5, 3.2))
    # a swarm, not a strip: seaborn jitters a strip with numpy's global generator, so the
    # committed figure would change bits from run to run on the same numbers
    sns.swarmplot(data=runs, x="task", y="accuracy", hue="role", dodge=True, ax=ax)
    for i, task in enumerate(_tasks(runs)):
        c = runs[runs.task == task].chance.mean()
        ax.plot([i - 0.4, i + 0.4], [c, c], color="grey", ls=":", lw=1)
    ax.set_ylabel("test accuracy")
    fig.tight_layout()
    return fig
