"""Figures of notebook 04 (E4, small-data transfer)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from .common import dodge, empty_figure, present, t_interval

STRATEGY_ORDER = ["scratch", "reuse_all", "first_k", "rule_strict", "rule", "rmse_only", "random",
                  "oracle"]


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
