"""Figures from the experiments' tidy frames. Computing never plots; these only draw.

Every function takes a frame and returns a matplotlib Figure; :func:`save_figure`
writes it as PNG and SVG into the figures folder under a stable name.
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from . import files
from .stats import mean_ci

ORDER = {"architecture": ["unet", "pspnet", "plain"], "task": ["segmentation", "autoencoder"]}
# svg.hashsalt and no date: the same figure gives the same bytes, so git diffs stay quiet
plt.rcParams.update({"svg.hashsalt": "reuse", "figure.dpi": 100, "savefig.bbox": "tight"})


def _t_interval(values) -> tuple[float, float]:
    """seaborn errorbar callable: the same Student-t 95% CI as the tables."""
    _, lo, hi = mean_ci(values)
    return lo, hi


def save_figure(fig: plt.Figure, name: str, figures_dir: str | Path) -> list[Path]:
    """Write ``fig`` to ``figures_dir/name.png`` and ``.svg``; returns the paths."""
    folder = Path(figures_dir)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{name}.{ext}" for ext in ("png", "svg")]
    for path in paths:  # whole or not at all: a full disk leaves the old file, not half a new one
        buffer = io.BytesIO()
        fig.savefig(buffer, format=path.suffix[1:], metadata={"Date": None} if path.suffix == ".svg" else None)
        files.write_atomic(path, buffer.getbuffer())
    return paths


NO_SCORES = "no reuse score to draw: every cell was excluded (target too close to chance) or is NaN"


def empty_figure(note: str) -> plt.Figure:
    """A small figure that says why there is nothing to draw (e.g. every cell excluded)."""
    fig, ax = plt.subplots(figsize=(6, 1.2))
    ax.axis("off")
    ax.text(0.5, 0.5, note, ha="center", va="center", fontsize=10)
    return fig


def finite(frame: pd.DataFrame, column: str = "reuse_score") -> pd.DataFrame:
    """Rows whose ``column`` is finite: a panel whose values are all NaN is left out rather
    than failing seaborn (which cannot draw a column with no values)."""
    return frame[pd.to_numeric(frame[column], errors="coerce").abs() < float("inf")]


def dodge(frame: pd.DataFrame, hue: str, width: float = 0.4) -> float | bool:
    """seaborn's ``dodge`` for ``hue``: none with one hue level (seaborn divides by zero)."""
    return width if frame[hue].nunique() > 1 else False


DONOR_ORDER = ["source", "twin", "different_init"]
DONOR_LABELS = {"source": "source", "twin": "same-domain twin (+ control)",
                "different_init": "different init (- control)"}


def learning_curves(curves: pd.DataFrame) -> plt.Figure:
    """Primary metric on the monitor split vs optimiser step: every seed's target (thin),
    the twin, and the first seed's run with 4x the steps (thick), a panel per condition."""
    if curves.empty:
        return empty_figure("no learning curves")
    d = curves.assign(condition=curves.architecture + " / " + curves.task + "\n" + curves.pair)
    panels = list(dict.fromkeys(d.condition))
    ncols = min(4, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 2.6 * nrows), squeeze=False)
    colours = {"target": "tab:blue", "twin": "tab:orange", "long": "k"}
    for ax, panel in zip(axes.flat, panels):
        p = d[d.condition == panel]
        for (run, seed), g in p.groupby(["run", "seed"], sort=False):
            ax.plot(g.step, g.value, color=colours.get(run, "grey"), lw=2 if run == "long" else 0.8,
                    alpha=1 if run == "long" else 0.6, label=run)
        ax.set_title(panel, fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel("optimiser step")
        ax.set_ylabel(p.metric.iloc[0])
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles))
        ax.legend(unique.values(), unique.keys(), fontsize=6)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig


def reuse_scores(frame: pd.DataFrame, margin: float) -> plt.Figure:
    """Reuse score of swapping all conv kernels from each donor (mean and 95% CI over
    seeds), BN statistics kept (left) and re-estimated (right), a row per pair."""
    d = finite(frame[frame.measure == "all_conv"]).copy()
    if d.empty:
        return empty_figure(NO_SCORES)
    d["condition"] = d.architecture + "\n" + d.task
    d["BN statistics"] = d.bn_reestimated.map({False: "kept", True: "re-estimated"})
    g = sns.catplot(data=d, kind="point", x="condition", y="reuse_score", hue="donor",
                    hue_order=[x for x in DONOR_ORDER if x in set(d.donor)], col="BN statistics",
                    col_order=["kept", "re-estimated"], row="pair", errorbar=_t_interval, dodge=dodge(d, "donor"),
                    linestyle="none", height=2.8, aspect=1.5, sharey=True)
    for ax in g.axes.flat:
        ax.axhline(margin, color="k", ls="--", lw=1)
        ax.axhline(0, color="grey", lw=0.8)
        ax.tick_params(axis="x", labelsize=7)
    g.set_ylabels("reuse score r")
    return g.figure


def layer_curves(frame: pd.DataFrame, margin: float) -> plt.Figure:
    """Reuse score vs the share of the first (prefix) / last (suffix) conv layers swapped
    from the source, BN statistics re-estimated."""
    d = finite(frame[frame.measure.isin(["prefix", "suffix"])]).copy()
    if d.empty:
        return empty_figure(NO_SCORES)
    d["share of conv layers swapped"] = d.k / d.n_layers
    g = sns.relplot(data=d, kind="line", x="share of conv layers swapped", y="reuse_score",
                    hue="architecture", hue_order=[a for a in ORDER["architecture"] if a in set(d.architecture)],
                    style="measure", row="task", col="pair", marker="o", errorbar=_t_interval,
                    height=2.8, aspect=1.4, facet_kws={"sharey": False})
    for ax in g.axes.flat:
        ax.axhline(margin, color="k", ls="--", lw=1)
        ax.axhline(0, color="grey", lw=0.8)
    g.set_ylabels("reuse score r")
    return g.figure


def parameter_types(frame: pd.DataFrame, margins: dict[str, float]) -> plt.Figure:
    """Reuse score of swapping one parameter type over the whole network (C1-C4), from the
    source and from the twin, BN statistics kept."""
    d = finite(frame[frame.measure == "param_type"])
    if d.empty:
        return empty_figure(NO_SCORES)
    g = sns.catplot(data=d, kind="point", x="param_type", y="reuse_score", hue="donor",
                    hue_order=[x for x in DONOR_ORDER if x in set(d.donor)], col="architecture",
                    row="task", errorbar=_t_interval, dodge=dodge(d, "donor"), linestyle="none", height=3,
                    aspect=1.6, sharey=False)
    for ax in g.axes.flat:
        for m in margins.values():
            ax.axhline(m, color="k", ls="--", lw=0.8)
        ax.axhline(0, color="grey", lw=0.8)
        ax.tick_params(axis="x", rotation=35)
    g.set_ylabels("reuse score r")
    return g.figure
