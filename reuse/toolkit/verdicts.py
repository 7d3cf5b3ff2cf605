"""Three-valued verdicts, the margins they use, and the statistics behind them.

A claim is judged from a confidence interval and a margin fixed in advance
(docs/protocol.md, section 6): **holds** when the whole CI lies on the claim's side of the
margin, **refuted** when it lies on the other side, **undecided** otherwise. Beside every
verdict goes the smallest effect the design can detect: the distance from the margin that
a true mean must have for the verdict to be decided with 80% power.

The unit of replication is the seed (one independent set of training runs): per-seed
values go into :func:`mean_verdict` (Student-t over seeds), and statistics pooled over
layers or conditions go into :func:`cluster_verdict` (a leave-one-seed-out jackknife with
Student-t quantiles, :func:`reuse.toolkit.stats.seed_jackknife`), never resampling points
that share a seed. A percentile bootstrap over 5 seeds undercovers (its intervals were
about 1.5x too narrow); the jackknife-t is the standard small-cluster correction.
Correlations (a Spearman or Pearson rho) are judged on Fisher's z scale instead, so their
intervals stay in [-1, 1]: per-seed values by :func:`correlation_verdict`, pooled ones by
:func:`cluster_verdict` with ``correlation=True``.

The margins (:mod:`reuse.toolkit.margins`, read here as ``verdicts.REUSABLE`` ...) are the same
at every scale; notebooks print them before their results.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from scipy import stats

# the margins, read here as verdicts.REUSABLE etc. by the notebooks and experiments
from .margins import ADEQUATE, LITTLE_LOSS, MIN_GAP, REUSABLE, SENSITIVE, USEFUL_ACCURACY  # noqa: F401
from .stats import LEVEL, correlation_ci, fisher_z, mean_ci, seed_jackknife

VERDICTS = ("holds", "refuted", "undecided")
POWER = 0.8  # power of the detectable effects printed beside verdicts


def verdict(ci_low: float, ci_high: float, margin: float, side: str = "above") -> str:
    """'holds' if the CI lies wholly on ``side`` ('above' or 'below') of ``margin``,
    'refuted' if it lies wholly on the other side, else 'undecided' (also for NaN)."""
    if side not in ("above", "below"):
        raise ValueError(f"side={side!r}; allowed: 'above', 'below'")
    if not (np.isfinite(ci_low) and np.isfinite(ci_high)):
        return "undecided"
    above, below = ci_low > margin, ci_high < margin
    if side == "below":
        above, below = below, above
    return "holds" if above else "refuted" if below else "undecided"


def detectable(se: float, df: float | None = None, level: float = LEVEL, power: float = POWER) -> float:
    """Smallest |true value - margin| decided with probability ``power``: (q_{1-a/2} + q_power)
    times the standard error, with Student-t quantiles on ``df`` degrees of freedom (normal
    when None)."""
    if not np.isfinite(se):
        return float("nan")
    dist = stats.norm if df is None else stats.t(df)
    return float((dist.ppf(0.5 + level / 2) + dist.ppf(power)) * se)


def mean_verdict(values, margin: float, side: str = "above", level: float = LEVEL,
                 bounds: tuple[float, float] | None = None) -> dict:
    """Mean of per-seed ``values`` with its Student-t CI (:func:`reuse.toolkit.stats.mean_ci`,
    ``bounds`` clipping it to the statistic's range), the verdict against ``margin`` and the
    detectable effect. Keys: estimate, ci_low, ci_high, n, verdict, detectable."""
    ci = mean_ci(values, level, bounds)
    n = ci["n"]
    return {"estimate": ci["estimate"], "ci_low": ci["ci_low"], "ci_high": ci["ci_high"], "n": n,
            "verdict": verdict(ci["ci_low"], ci["ci_high"], margin, side),
            "detectable": detectable(ci["se"], n - 1, level) if n >= 2 else np.nan}


def correlation_verdict(values, margin: float = 0.0, side: str = "above", level: float = LEVEL) -> dict:
    """:func:`mean_verdict` for per-seed correlations (each in [-1, 1]): the interval is a
    Student-t interval on Fisher's z scale mapped back (:func:`reuse.toolkit.stats.correlation_ci`,
    estimate tanh of the mean z), so it never leaves [-1, 1]. The detectable effect is
    computed on the z scale and mapped back as the distance from ``margin``, towards
    ``side``, that a true correlation must have to be decided with 80% power (it saturates
    below 1 - |margin|). Keys: estimate, ci_low, ci_high, n, verdict, detectable."""
    ci = correlation_ci(values, level)
    n = ci["n"]
    return {"estimate": ci["estimate"], "ci_low": ci["ci_low"], "ci_high": ci["ci_high"], "n": n,
            "verdict": verdict(ci["ci_low"], ci["ci_high"], margin, side),
            "detectable": _correlation_distance(detectable(ci["se_z"], n - 1, level), margin, side)
            if n >= 2 else np.nan}


def _correlation_distance(z_effect: float, margin: float, side: str) -> float:
    """A detectable effect on Fisher's z scale as a distance from ``margin`` in correlation units."""
    z_margin = float(fisher_z(margin))
    return float(abs(np.tanh(z_margin + (z_effect if side == "above" else -z_effect)) - margin))


def cluster_verdict(frame: pd.DataFrame, statistic: Callable[[pd.DataFrame], float], margin: float,
                    side: str = "above", seed_column: str = "seed", level: float = LEVEL,
                    correlation: bool = False) -> dict:
    """:func:`reuse.toolkit.stats.seed_jackknife` plus the verdict against ``margin`` and the
    detectable effect (Student-t quantiles on n_seeds - 1 degrees of freedom, as the CI).
    ``correlation=True`` for a statistic that is a correlation: jackknifed on Fisher's z scale,
    bounds and detectable effect mapped back as in :func:`correlation_verdict`."""
    out = seed_jackknife(frame, statistic, seed_column, level, correlation)
    out["verdict"] = verdict(out["ci_low"], out["ci_high"], margin, side)
    effect = detectable(out["se"], out["n_seeds"] - 1, level)  # NaN se below two seeds
    out["detectable"] = _correlation_distance(effect, margin, side) if correlation else effect
    return out


def gated(source: str, positive: str, negative: str) -> tuple[str, str]:
    """(verdict, controls) of a judgment whose positive control must hold and whose
    negative control must be refuted: the source's verdict when both behave, else
    'undecided' (the rule cannot tell reusable from not reusable there)."""
    problems = ([f"positive control {positive}"] if positive != "holds" else []) + \
               ([f"negative control {negative}"] if negative != "refuted" else [])
    if problems:
        return "undecided", "failed: " + ", ".join(problems)
    return source, "passed"


def conjunction(*parts: str) -> str:
    """The verdict of a claim that needs every part: 'refuted' when any part is refuted,
    'holds' when all hold, else 'undecided' (e.g. "above the margin *and* above the reset")."""
    if "refuted" in parts:
        return "refuted"
    return "holds" if parts and all(p == "holds" for p in parts) else "undecided"


def describe(row, margin_text: str) -> str:
    """'holds (0.93 [0.88, 0.98] vs margin ...; detectable 0.07)' for a verdict row."""
    return (f"{row['verdict']} ({row['estimate']:.3g} [{row['ci_low']:.3g}, {row['ci_high']:.3g}] "
            f"vs {margin_text}; n = {int(row['n'])}; smallest detectable effect "
            f"{row['detectable']:.2g})")
