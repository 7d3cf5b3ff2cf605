"""Figures of notebook 04 (E4, small-data transfer)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from .common import dodge, empty_figure, present, t_interval

STRATEGY_ORDER = ["scratch", "reuse_all", "rule", "rmse_only", "random", "oracle"]
VERDICT_COLOURS = {"holds": "tab:green", "refuted": "tab:red", "undecided": "tab:grey"}


def headline(heads: pd.DataFrame) -> plt.Figure:
    """The primary claims H1-H3b (estimate and 95% CI over seeds, coloured by verdict), a
    panel per task x n_T; the dotted line is half the reuse-all benefit (the design's target
    for the smallest detectable effect)."""
    if heads.empty:
        return empty_figure("no primary claim could be judged")
    panels = list(heads.groupby(["task", "n_T"], sort=True))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3), squeeze=False, sharey=True)
    for ax, ((task, n_t), g) in zip(axes.flat, panels):
        for x, r in enumerate(g.itertuples()):
            ax.errorbar([x], [r.estimate], yerr=[[r.estimate - r.ci_low], [r.ci_high - r.estimate]],
                        fmt="o", color=VERDICT_COLOURS.get(r.verdict, "k"))
        ax.axhline(0, color="k", lw=1)
        ax.axhline(abs(g.reuse_all_benefit.iloc[0]) / 2, color="grey", ls=":", lw=1)
        ax.set_xticks(range(len(g)), list(g.claim))
        ax.set_title(f"{task}, n_T = {n_t}", fontsize=9)
    axes.flat[0].set_ylabel("seed-paired difference (mIoU or PSNR)")
    for verdict_, colour in VERDICT_COLOURS.items():
        axes.flat[-1].plot([], [], "o", color=colour, label=verdict_)
    axes.flat[-1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def differences(differences: pd.DataFrame) -> plt.Figure:
    """Each strategy minus scratch (mean and 95% CI over seeds), a panel per pair, hue = n_T:
    the paired view, free of the seed-to-seed spread that the raw curves carry."""
    if differences.empty:
        return empty_figure("no small-data results")
    order = [s for s in STRATEGY_ORDER if s in set(differences.strategy)]
    d = differences.assign(n_T=differences.n_T.map(lambda n: f"n_T = {n}"))
    g = sns.catplot(data=d, kind="point", x="strategy", y="difference", order=order,
                    hue="n_T", palette="deep", col="pair", row="task", errorbar=t_interval, dodge=dodge(d, "n_T"),
                    linestyle="none", height=3, aspect=1.3, sharey=False)
    for ax in g.axes.flat:
        ax.axhline(0, color="k", lw=1)
        ax.tick_params(axis="x", rotation=40)
    g.set_ylabels("metric minus scratch (mIoU or PSNR)")
    return g.figure


def curves(results: pd.DataFrame) -> plt.Figure:
    """Target metric vs n_T (log) per strategy with 95% CIs over seeds (random: the mean
    over draws); rows = task, columns = architecture x pair."""
    if results.empty:
        return empty_figure("no small-data results")
    d = (results.groupby(["task", "architecture", "pair", "seed", "n_T", "strategy"], as_index=False)
         .value.mean())
    d = d.assign(cell=d.architecture + " / " + d.pair)
    g = sns.relplot(data=d, kind="line", x="n_T", y="value", hue="strategy", style="strategy",
                    hue_order=[s for s in STRATEGY_ORDER if s in set(d.strategy)], row="task",
                    col="cell", marker="o", errorbar=t_interval, height=2.8, aspect=1.2,
                    facet_kws={"sharey": False},
                    row_order=present("task", d))
    sizes = sorted(set(d.n_T))
    for ax in g.axes.flat:
        ax.set_xscale("log")
        ax.set_xticks(sizes, [str(n) for n in sizes])
        ax.minorticks_off()
    g.set_titles("{row_name} | {col_name}")
    g.set_ylabels("target metric (mIoU or PSNR)")
    return g.figure
