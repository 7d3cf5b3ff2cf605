"""Figures of E5 (criteria comparison) from its tidy tables; computing never plots."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .common import empty_figure

FAMILY_COLOURS = {"weights": "tab:blue", "alignment": "tab:purple", "activations": "tab:green",
                  "reset": "tab:orange", "weight-blind": "tab:grey"}


def ranking(table: pd.DataFrame, duels: pd.DataFrame, tie: float) -> plt.Figure:
    """Left: each criterion's ROC AUC for 'reusable' with its 95% CI over seeds, best first
    (0.5 = chance; rows of family 'weight-blind', the baselines, in their better direction).
    Right: the paper's RMSE minus each rival in AUC, with the tie band."""
    if "auc" not in table or not np.isfinite(table.auc).any():
        return empty_figure("no criterion could be scored (fewer than two pairs or one class only)")
    t = table[np.isfinite(table.auc)].sort_values("auc")
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 0.45 * len(t) + 1.5),
                                      gridspec_kw={"width_ratios": [1, 1]})
    y = np.arange(len(t))
    colours = [FAMILY_COLOURS.get(f, "grey") for f in t.family]
    left.hlines(y, t.auc_ci_low, t.auc_ci_high, colors=colours)
    left.scatter(t.auc, y, c=colours, zorder=3)
    left.set_yticks(y, t.criterion)
    left.axvline(0.5, color="grey", lw=0.8, ls=":")
    left.set_xlabel("ROC AUC for 'reusable' (source swaps, 95% CI over seeds)")
    for family, colour in FAMILY_COLOURS.items():
        left.scatter([], [], c=colour, label=family)
    left.legend(fontsize=8, loc="lower right")
    d = duels.set_index("rival").reindex([c for c in t.criterion if c in set(duels.rival)])
    yd = np.arange(len(d))
    right.axvspan(-tie, tie, color="grey", alpha=0.15, label=f"tie (±{tie})")
    right.errorbar(d.auc_difference, yd, xerr=[d.auc_difference - d.ci_low, d.ci_high - d.auc_difference],
                   fmt="o", color="black", capsize=3)
    right.axvline(0, color="grey", lw=0.8)
    right.set_yticks(yd, d.index)
    right.set_xlabel("AUC(paper's RMSE) - AUC(rival): > 0 the RMSE wins")
    right.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def controls(table: pd.DataFrame) -> plt.Figure:
    """Per criterion: the share of the twin's layers at or below the criterion's threshold
    (should be high) and of the different-init control's (should be low)."""
    if "twin_share_below" not in table:
        return empty_figure("no thresholds were fitted, so the controls were not run")
    t = table.dropna(subset=["twin_share_below"]).sort_values("criterion")
    fig, ax = plt.subplots(figsize=(9, 3.2))
    x = np.arange(len(t))
    ax.bar(x - 0.2, t.twin_share_below, 0.4, label="same-domain twin (+ control): should be high")
    ax.bar(x + 0.2, t.different_init_share_below, 0.4, label="different init (- control): should be low")
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.set_xticks(x, t.criterion, rotation=30, ha="right")
    ax.set_ylabel("share of layers at or\nbelow the threshold")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1, 1))
    fig.tight_layout()
    return fig
