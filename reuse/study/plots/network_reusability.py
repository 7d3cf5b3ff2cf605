"""Figures of notebook 01: training adequacy (learning curves) and E1 (network reusability).

Each takes a tidy frame of :mod:`reuse.study.experiments.adequacy` or
:mod:`reuse.study.experiments.network_reusability` and returns a Figure; nothing here computes.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from .common import DONOR_ORDER, NO_SCORES, ORDER, dodge, empty_figure, finite, t_interval


def learning_curves(curves: pd.DataFrame) -> plt.Figure:
    """Primary metric on the monitor split vs optimiser step: every seed's target and twin,
    a panel per condition, and every seed's source (rows with run 'source'), a panel per rung
    (its own test images and chance; training adequacy reads each curve's last quarter)."""
    if curves.empty:
        return empty_figure("no learning curves")
    side = (curves.run == "source").map({True: " (source)", False: ""})
    d = curves.assign(condition=curves.architecture + " / " + curves.task + "\n" + curves.pair + side)
    panels = list(dict.fromkeys(d.condition))
    ncols = min(4, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 2.6 * nrows), squeeze=False)
    colours = {"target": "tab:blue", "twin": "tab:orange", "source": "tab:green"}
    for ax, panel in zip(axes.flat, panels):
        p = d[d.condition == panel]
        for (run, seed), g in p.groupby(["run", "seed"], sort=False):
            ax.plot(g.step, g.value, color=colours.get(run, "grey"), lw=0.8, alpha=0.6, label=run)
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
                    col_order=["kept", "re-estimated"], row="pair", errorbar=t_interval, dodge=dodge(d, "donor"),
                    linestyle="none", height=2.8, aspect=1.5, sharey=True)
    for ax in g.axes.flat:
        ax.axhline(margin, color="k", ls="--", lw=1)
        ax.axhline(0, color="grey", lw=0.8)
        ax.tick_params(axis="x", labelsize=7)
    g.set_ylabels("reuse score r")
    return g.figure


VERDICT_COLOURS = {"holds": "tab:green", "refuted": "tab:red", "undecided": "tab:grey"}


def ladder(table: pd.DataFrame, margin: float, rungs: list[str]) -> plt.Figure:
    """J1 over the source ladder, near to far (``rungs``, the pairs in ladder order): the
    source's all-conv reuse score with its 95% CI, coloured by J1's verdict, beside the
    twin (rung 0) and the theta_0 reset (dotted); a panel per architecture x task."""
    if table.empty:
        return empty_figure(NO_SCORES)
    panels = list(table.groupby(["architecture", "task"], sort=False))
    fig, axes = plt.subplots(1, len(panels), figsize=(1.0 + 0.9 * (len(rungs) + 1) * len(panels), 3.4),
                             squeeze=False, sharey=True)
    for ax, ((arch, task), g) in zip(axes.flat, panels):
        g = g.set_index("pair").reindex([r for r in rungs if r in set(g.pair)])
        x = range(1, len(g) + 1)
        ax.errorbar([0], [g.twin_estimate.mean()], fmt="s", color="tab:orange", label="twin (rung 0)",
                    yerr=[[g.twin_estimate.mean() - g.twin_ci_low.mean()],
                          [g.twin_ci_high.mean() - g.twin_estimate.mean()]])
        for xi, (pair, r) in zip(x, g.iterrows()):
            ax.errorbar([xi], [r.source_estimate], yerr=[[r.source_estimate - r.source_ci_low],
                                                         [r.source_ci_high - r.source_estimate]],
                        fmt="o", color=VERDICT_COLOURS.get(r.verdict, "k"))
        if g.reset_estimate.notna().any():
            ax.plot([0, len(g)], [g.reset_estimate.mean()] * 2, ":", color="k", label="reset to theta_0")
        for verdict_, colour in VERDICT_COLOURS.items():
            ax.plot([], [], "o", color=colour, label=f"J1 {verdict_}")
        ax.axhline(margin, color="k", ls="--", lw=1)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xticks(range(len(g) + 1), ["twin", *g.index], rotation=40, ha="right", fontsize=7)
        ax.set_title(f"{arch} / {task}", fontsize=9)
        ax.set_ylabel("all-conv reuse score r (source)")
    axes.flat[-1].legend(fontsize=6, loc="upper right")
    fig.tight_layout()
    return fig


def layer_curves(frame: pd.DataFrame, margin: float) -> plt.Figure:
    """Reuse score vs the share of the first (prefix) / last (suffix) conv layers swapped
    from the source, BN statistics re-estimated."""
    d = finite(frame[frame.measure.isin(["prefix", "suffix"])]).copy()
    if d.empty:
        return empty_figure(NO_SCORES)
    d["share of conv layers swapped"] = d.k / d.n_layers
    g = sns.relplot(data=d, kind="line", x="share of conv layers swapped", y="reuse_score",
                    hue="architecture", hue_order=[a for a in ORDER["architecture"] if a in set(d.architecture)],
                    style="measure", row="task", col="pair", marker="o", errorbar=t_interval,
                    height=2.8, aspect=1.4, facet_kws={"sharey": False})
    for ax in g.axes.flat:
        ax.axhline(margin, color="k", ls="--", lw=1)
        ax.axhline(0, color="grey", lw=0.8)
    g.set_ylabels("reuse score r")
    return g.figure


def parameter_types(frame: pd.DataFrame, margins: dict[str, float]) -> plt.Figure:
    """Reuse score of swapping one parameter type over the whole network (C1-C4), from the
    source and from the twin, and of putting it back to theta_0 (the reset, C2's and C4's
    baseline), BN statistics kept."""
    d = finite(frame[frame.measure == "param_type"])
    if d.empty:
        return empty_figure(NO_SCORES)
    g = sns.catplot(data=d, kind="point", x="param_type", y="reuse_score", hue="donor",
                    hue_order=[x for x in DONOR_ORDER if x in set(d.donor)], col="architecture",
                    row="task", errorbar=t_interval, dodge=dodge(d, "donor"), linestyle="none", height=3,
                    aspect=1.6, sharey=False)
    for ax in g.axes.flat:
        for m in margins.values():
            ax.axhline(m, color="k", ls="--", lw=0.8)
        ax.axhline(0, color="grey", lw=0.8)
        ax.tick_params(axis="x", rotation=35)
    g.set_ylabels("reuse score r")
    return g.figure


def coordinates(coords: pd.DataFrame, margin: float) -> plt.Figure:
    """J1's all-conv reuse score (95% CI) against the share of the target's classes the source
    has (x) and the shift of its images (marker), coloured by J1's verdict; a panel per
    architecture x task. Rungs with other data or scrambled targets sit at overlap 0, labelled."""
    if coords.empty:
        return empty_figure(NO_SCORES)
    panels = list(coords.groupby(["architecture", "task"], sort=False))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False, sharey=True)
    markers = {s: m for s, m in zip(sorted(set(coords["shift"])), "os^Dv")}
    for ax, ((arch, task), g) in zip(axes.flat, panels):
        for r in g.itertuples():
            x = r.label_overlap + (0.03 if r.other_data else -0.03 if r.scrambled else 0)
            ax.errorbar([x], [r.source_estimate], yerr=[[r.source_estimate - r.source_ci_low],
                                                        [r.source_ci_high - r.source_estimate]],
                        fmt=markers[r.shift], color=VERDICT_COLOURS.get(r.verdict, "k"))
            if r.other_data or r.scrambled:
                ax.annotate("digits" if r.other_data else "scrambled", (x, r.source_estimate), fontsize=6,
                            xytext=(4, 0), textcoords="offset points")
        ax.axhline(margin, color="k", ls="--", lw=1)
        ax.set_xlabel("share of the target's classes in the source")
        ax.set_title(f"{arch} / {task}", fontsize=9)
    axes.flat[0].set_ylabel("all-conv reuse score r (source)")
    for s, m in markers.items():
        axes.flat[-1].plot([], [], m, color="k", label=f"shift {s:g}")
    for verdict_, colour in VERDICT_COLOURS.items():
        axes.flat[-1].plot([], [], "o", color=colour, label=f"J1 {verdict_}")
    axes.flat[-1].legend(fontsize=6, loc="best")
    fig.tight_layout()
    return fig
