"""Figures of the study, one module per experiment; shared helpers in :mod:`.common`.

Every function takes the tidy frame its experiment returns and gives a matplotlib Figure;
nothing here computes. ``plots.save_figure`` writes a figure as PNG and SVG.
"""

from . import (
               common,
               criteria_comparison,
               layer_selection,
               network_reusability,
               own_model,
               pretrained_network,
               rmse_threshold,
               small_data,
)
from .common import save_figure

__all__ = ["common", "criteria_comparison", "layer_selection", "network_reusability", "own_model",
           "pretrained_network", "rmse_threshold", "small_data", "save_figure"]
