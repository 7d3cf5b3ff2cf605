"""Figures of notebook 06 (your own model) from the frames of :mod:`reuse.study.experiments.own_model`.

Each takes a tidy frame (one row per seed x donor x layer) and returns a Figure; the
layer axis is the conv layers in forward order, labelled with their module paths.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from reuse.toolkit.analyze_plots import layer_axis

from .common import DONOR_LABELS, DONOR_ORDER, empty_figure, finite, t_interval


def kernel_distances(distances: pd.DataFrame) -> plt.Figure:
    """Relative kernel RMSE per conv layer between theta_T and each other model (mean and
    95% CI over seeds): the twin is the noise floor of retraining, the different-init
    model what RMSE says without a shared initialisation."""
    d = finite(distances, "rel_rmse").assign(model=lambda f: f.comparison.map(DONOR_LABELS))
    if d.empty:
        return empty_figure("no kernel distances to draw")
    fig, ax = plt.subplots(figsize=(8, 3.4))
    order = [DONOR_LABELS[c] for c in DONOR_ORDER if c in set(d.comparison)]
    sns.lineplot(data=d, x="index", y="rel_rmse", hue="model", hue_order=order, marker="o",
                 errorbar=t_interval, ax=ax)
    names = d.drop_duplicates("index").sort_values("index")
    layer_axis(ax, names["layer"], names["index"], fontsize=6)
    ax.set_xlabel("conv layer (forward order)")
    ax.set_ylabel("relative RMSE to theta_T")
    ax.set_ylim(bottom=0)
    fig.tight_layout()
    return fig


def single_layer_scores(scans: pd.DataFrame, chosen: pd.DataFrame, margin: float) -> plt.Figure:
    """Single-layer reuse score per conv layer for each donor (mean and 95% CI over seeds),
    the margin dashed, and the layers the selection keeps marked along the top."""
    d = finite(scans[scans.set == "single"]).assign(model=lambda f: f.donor.map(DONOR_LABELS))
    if d.empty:
        return empty_figure("no single-layer swap scores to draw")
    fig, ax = plt.subplots(figsize=(8, 3.6))
    order = [DONOR_LABELS[c] for c in DONOR_ORDER if c in set(d.donor)]
    layers = list(dict.fromkeys(d.layer))  # forward order, as scanned
    sns.pointplot(data=d, x="layer", y="reuse_score", hue="model", hue_order=order, order=layers,
                  errorbar=t_interval, dodge=0.4 if len(order) > 1 else False, linestyle="none", ax=ax)
    ax.axhline(margin, color="k", ls="--", lw=1)
    ax.axhline(0, color="grey", lw=0.8)
    kept = [layers.index(layer) for layer in chosen.layer[chosen.reusable] if layer in layers]
    ax.plot(kept, [1.08] * len(kept), "v", color="k", label="selected")
    ax.tick_params(axis="x", rotation=90, labelsize=6)
    ax.set_xlabel("conv layer (forward order)")
    ax.set_ylabel("reuse score r")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def prefix_suffix(scans: pd.DataFrame, margin: float) -> plt.Figure:
    """Reuse score of swapping the first k (prefix) or last k (suffix) conv layers from the
    source, against k (mean and 95% CI over seeds)."""
    d = finite(scans[(scans.donor == "source") & scans.set.isin(["prefix", "suffix"])])
    if d.empty:
        return empty_figure("no prefix / suffix swaps to draw")
    fig, ax = plt.subplots(figsize=(5, 3.2))
    sns.lineplot(data=d, x="k", y="reuse_score", hue="set", marker="o", errorbar=t_interval, ax=ax)
    ax.axhline(margin, color="k", ls="--", lw=1)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("conv layers swapped from theta_S (k)")
    ax.set_ylabel("reuse score r")
    fig.tight_layout()
    return fig


def distance_vs_score(distances: pd.DataFrame, scans: pd.DataFrame, margin: float) -> plt.Figure:
    """Each (seed, layer, donor): relative kernel RMSE against single-layer reuse score."""
    s = scans[scans.set == "single"][["seed", "donor", "layer", "reuse_score"]]
    d = distances.rename(columns={"comparison": "donor"}).merge(s, on=["seed", "donor", "layer"])
    d = finite(d).assign(model=lambda f: f.donor.map(DONOR_LABELS))
    if d.empty:
        return empty_figure("no points to draw")
    fig, ax = plt.subplots(figsize=(5, 3.6))
    order = [DONOR_LABELS[c] for c in DONOR_ORDER if c in set(d.donor)]
    sns.scatterplot(data=d, x="rel_rmse", y="reuse_score", hue="model", hue_order=order, s=18, ax=ax)
    ax.axhline(margin, color="k", ls="--", lw=1)
    ax.set_xlabel("relative RMSE to theta_T")
    ax.set_ylabel("single-layer reuse score r")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
