"""Figures from the experiments' tidy frames. Computing never plots; these only draw.

Every function takes a frame and returns a matplotlib Figure; :func:`save_figure`
writes it as PNG and SVG into the figures folder under a stable name.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

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
    for path in paths:
        fig.savefig(path, metadata={"Date": None} if path.suffix == ".svg" else None)
    return paths


def reuse_scores(summary: pd.DataFrame, threshold: float) -> plt.Figure:
    """Mean reuse score (with 95% CI) of swapping all conv kernels, one panel per pair.

    ``summary``: output of ``network_reusability.reuse_summary``.
    """
    s = summary.copy()
    s["variant"] = s.init + " init" + s.bn_reestimated.map({True: " + BN re-est.", False: ""})
    variants = sorted(s.variant.unique(), key=lambda v: (not v.startswith("shared"), v))
    pairs = list(dict.fromkeys(s.pair))
    fig, axes = plt.subplots(len(pairs), 1, figsize=(9, 3.2 * len(pairs)), squeeze=False)
    for ax, pair in zip(axes[:, 0], pairs):
        p = s[s.pair == pair].copy()
        p["condition"] = p.architecture + "\n" + p.task
        conds = list(dict.fromkeys(p.condition))
        width = 0.8 / len(variants)
        for j, variant in enumerate(variants):
            v = p[p.variant == variant].set_index("condition").reindex(conds)
            xs = [i + (j - (len(variants) - 1) / 2) * width for i in range(len(conds))]
            err = [(v["mean"] - v.ci_low).clip(lower=0).fillna(0), (v.ci_high - v["mean"]).clip(lower=0).fillna(0)]
            ax.bar(xs, v["mean"], width, yerr=err, capsize=2, label=variant)
        ax.axhline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold}")
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xticks(range(len(conds)), conds, fontsize=8)
        ax.set_ylabel("reuse score r")
        ax.set_title(f"pair {pair}: all conv kernels from source into target")
        ax.set_ylim(min(-0.2, float(p["mean"].min()) - 0.1), 1.3)
    axes[0, 0].legend(fontsize=8, ncol=2, loc="lower right")
    fig.tight_layout()
    return fig


def layer_curves(frame: pd.DataFrame, threshold: float) -> plt.Figure:
    """Reuse score vs the number k of first (prefix) / last (suffix) conv layers swapped."""
    d = frame[frame.measure.isin(["prefix", "suffix"])].copy()
    d["fraction of conv layers swapped"] = d.k / d.n_layers
    g = sns.relplot(data=d, kind="line", x="fraction of conv layers swapped", y="reuse_score",
                    hue="architecture", hue_order=ORDER["architecture"], style="measure",
                    row="task", row_order=ORDER["task"], col="pair", marker="o",
                    errorbar=_t_interval, height=2.8, aspect=1.4, facet_kws={"sharey": False})
    for ax in g.axes.flat:
        ax.axhline(threshold, color="k", ls="--", lw=1)
        ax.axhline(0, color="grey", lw=0.8)
    g.set_ylabels("reuse score r")
    return g.figure


def parameter_types(frame: pd.DataFrame, threshold: float) -> plt.Figure:
    """Reuse score of swapping one parameter type over the whole network (C1-C4)."""
    d = frame[frame.measure == "param_type"]
    g = sns.catplot(data=d, kind="point", x="param_type", y="reuse_score", hue="architecture",
                    hue_order=ORDER["architecture"], col="task", col_order=ORDER["task"],
                    row="pair", errorbar=_t_interval, dodge=0.4, linestyle="none",
                    height=3, aspect=1.8, sharey=False)
    for ax in g.axes.flat:
        ax.axhline(threshold, color="k", ls="--", lw=1)
        ax.axhline(0, color="grey", lw=0.8)
        ax.tick_params(axis="x", rotation=35)
    g.set_ylabels("reuse score r")
    return g.figure
