"""Figures of notebook 04 (E4, small-data transfer)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from .common import dodge, empty_figure, present, t_interval

STRATEGY_ORDER = ["scratch", "reuse_all", "random_k", "pass", "fail", "rule", "rmse_only", "random"]
VERDICT_COLOURS = {"holds": "tab:green", "refuted": "tab:red", "undecided": "tab:grey"}
REGIME_ORDER = ["siblings", "strangers", "fine-tuned"]


def headline(heads: pd.DataFrame) -> plt.Figure:
    """The factorial's claims H1-H3b (estimate and 95% CI over seeds), a panel per regime x
    task x n_T, coloured by the verdict after Holm's correction where ``heads`` has
    ``verdict_holm`` (the primary, siblings claims) and before it elsewhere, as the legend
    says; the dotted line is half the reuse-all benefit where (a) holds (the design's target
    for the smallest detectable effect)."""
    if heads.empty:
        return empty_figure("no primary claim could be judged")
    after = heads.verdict_holm.fillna(heads.verdict) if "verdict_holm" in heads else heads.verdict
    heads = heads.assign(shown=after, corrected=heads.get("verdict_holm", pd.Series(dtype=object)).notna())
    panels = [(k, g) for r in REGIME_ORDER for k, g in heads[heads.regime == r].groupby(["regime", "task", "n_T"])]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 3.2), squeeze=False, sharey=True)
    for ax, ((regime, task, n_t), g) in zip(axes.flat, panels):
        for x, r in enumerate(g.itertuples()):
            ax.errorbar([x], [r.estimate], yerr=[[r.estimate - r.ci_low], [r.ci_high - r.estimate]],
                        fmt="o" if r.corrected else "s", color=VERDICT_COLOURS.get(r.shown, "k"))
        ax.axhline(0, color="k", lw=1)
        ax.axhline(abs(g.reuse_all_benefit.iloc[0]) / 2, color="grey", ls=":", lw=1)
        ax.set_xticks(range(len(g)), list(g.claim))
        ax.set_title(f"{regime}\n{task}, n_T = {n_t}", fontsize=9)
    axes.flat[0].set_ylabel("seed-paired difference (mIoU or PSNR)")
    for verdict_, colour in VERDICT_COLOURS.items():
        axes.flat[-1].plot([], [], "o", color=colour, label=f"{verdict_}, after Holm")
        axes.flat[-1].plot([], [], "s", color=colour, label=f"{verdict_}, uncorrected (exploratory)")
    axes.flat[-1].legend(fontsize=6, loc="best")
    fig.tight_layout()
    return fig


def factorial(per_seed: pd.DataFrame) -> plt.Figure:
    """The (a) x (b) cells: the mean gain over scratch of a group of layers that pass (b) and
    of one that fails it, where (a) holds and where it fails, with 95% CIs over seeds; a
    panel per regime x n_T. Parallel lines mean no interaction."""
    if per_seed.empty:
        return empty_figure("no factorial cell to draw")
    cells = {"ab": ("(a) holds", "(b) passes"), "a_b": ("(a) holds", "(b) fails"),
             "_ab": ("(a) fails", "(b) passes"), "__b": ("(a) fails", "(b) fails")}
    d = per_seed.melt(id_vars=["regime", "task", "n_T", "seed"], value_vars=list(cells), var_name="cell",
                      value_name="gain").dropna(subset=["gain"])
    d = d.assign(a=d.cell.map(lambda c: cells[c][0]), b=d.cell.map(lambda c: cells[c][1]),
                 panel=d.regime + ", n_T = " + d.n_T.astype(str))
    g = sns.catplot(data=d, kind="point", x="a", y="gain", hue="b", col="panel", order=["(a) holds", "(a) fails"],
                    hue_order=["(b) passes", "(b) fails"], errorbar=t_interval, dodge=0.2, height=2.8,
                    aspect=0.9, palette=["tab:blue", "tab:orange"])
    for ax in g.axes.flat:
        ax.axhline(0, color="k", lw=1)
        ax.set_xlabel("")
    g.set_titles("{col_name}")
    g.set_ylabels("gain over scratch (mIoU or PSNR)")
    return g.figure


def b_passes(layers: pd.DataFrame) -> plt.Figure:
    """Where (b) passes: the share of seeds in which each layer (rows, forward order) passes
    for each rung (columns, the ladder's order), siblings, a panel per n_T. A criterion set
    by the layer alone would give the same column for every rung."""
    d = layers[(layers.donor == "source") & (layers.regime == "siblings")]
    if d.empty:
        return empty_figure("no layer was judged")
    sizes = sorted(set(d.n_T))
    fig, axes = plt.subplots(1, len(sizes), figsize=(0.55 * d.pair.nunique() * len(sizes) + 3, 4), squeeze=False)
    for ax, n_t in zip(axes.flat, sizes):
        part = d[d.n_T == n_t]
        share = part.pivot_table(index="layer", columns="pair", values="b", aggfunc="mean", sort=False)
        share = share.reindex(index=list(dict.fromkeys(part.sort_values("index").layer)),
                              columns=list(dict.fromkeys(part.pair)))
        sns.heatmap(share.astype(float), ax=ax, vmin=0, vmax=1, cmap="Blues", cbar=ax is axes.flat[-1],
                    cbar_kws={"label": "share of seeds where (b) passes"})
        held = set(part[part.a.astype(bool)].pair)
        ax.set_xticklabels([f"{p} (a)" if p in held else p for p in share.columns], rotation=60, ha="right",
                           fontsize=7)
        ax.set_title(f"n_T = {n_t}", fontsize=9)
        ax.set_xlabel("rung ((a): J1 holds)")
    fig.tight_layout()
    return fig


def differences(differences: pd.DataFrame) -> plt.Figure:
    """Each strategy minus scratch (mean and 95% CI over seeds) in the siblings regime, a
    panel per pair, hue = n_T: the paired view, free of the seed-to-seed spread that the raw
    curves carry."""
    differences = differences[differences.regime == "siblings"]
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
    over draws), siblings regime; rows = task, columns = architecture x pair."""
    results = results[results.regime == "siblings"]
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
