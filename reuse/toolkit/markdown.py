"""One Markdown table writer, for the study's summaries and ``cnn-reuse analyze``'s report.

Our own instead of ``DataFrame.to_markdown``: that needs ``tabulate``, one more dependency
for a dozen lines. Cells: missing values (None, NaN) blank, floats to 4 significant
digits, ``|`` escaped and line breaks flattened so a cell never breaks the table.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np


def cell(value: Any) -> str:
    """One value as a table cell."""
    if value is None or (isinstance(value, (float, np.floating)) and math.isnan(value)):
        return ""
    if isinstance(value, (float, np.floating)):
        return format(float(value), ".4g")
    return escape(str(value))


def escape(text: str) -> str:
    """``text`` safe inside a cell."""
    return text.replace("|", r"\|").replace("\n", " ")


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table: ``columns`` as its header, each of ``rows`` (values in column order)
    as a line."""
    lines = ["| " + " | ".join(escape(str(c)) for c in columns) + " |",
             "|" + "|".join(" --- " for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
