"""Figures from the experiments' tidy frames. Computing never plots; these only draw.

Every function takes a frame and returns a matplotlib Figure; :func:`save_figure`
writes it as PNG and SVG into the figures folder under a stable name.
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from reuse.toolkit import files
from reuse.toolkit.stats import mean_ci

ORDER = {"architecture": ["unet", "pspnet", "plain"], "task": ["segmentation", "autoencoder"]}
# svg.hashsalt and no date: the same figure gives the same bytes, so git diffs stay quiet
plt.rcParams.update({"svg.hashsalt": "reuse", "figure.dpi": 100, "savefig.bbox": "tight"})


def t_interval(values) -> tuple[float, float]:
    """seaborn errorbar callable: the same Student-t 95% CI as the tables."""
    ci = mean_ci(values)
    return ci["ci_low"], ci["ci_high"]


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


DONOR_ORDER = ["source", "twin", "different_init", "theta_0"]
DONOR_LABELS = {"source": "source", "twin": "same-domain twin (+ control)",
                "different_init": "different init (- control)", "theta_0": "reset to theta_0 (baseline)"}


def present(factor: str, frame: pd.DataFrame) -> list[str]:
    """The values of ``factor`` in ``frame``, in the house order of :data:`reuse.study.plots.common.ORDER`."""
    values = set(frame[factor])
    return [v for v in ORDER[factor] if v in values] + sorted(values - set(ORDER[factor]))
