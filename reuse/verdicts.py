"""Three-valued verdicts, the margins they use, and the statistics behind them.

A claim is judged from a confidence interval and a margin fixed in advance
(docs/protocol.md, section 6): **holds** when the whole CI lies on the claim's side of the
margin, **refuted** when it lies on the other side, **undecided** otherwise. Beside every
verdict goes the smallest effect the design can detect: the distance from the margin that
a true mean must have for the verdict to be decided with 80% power.

The unit of replication is the seed (one independent set of training runs): per-seed
values go into :func:`mean_verdict` (Student-t over seeds), and statistics pooled over
layers or conditions are bootstrapped over seeds (:func:`seed_bootstrap`), never over
points that share a seed.

The margins are the same at every scale; notebooks print them before their results.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from scipy import stats

VERDICTS = ("holds", "refuted", "undecided")
LEVEL = 0.95  # confidence level of every interval
POWER = 0.8  # power of the detectable effects printed beside verdicts

# --- margins, fixed before any result was seen (docs/protocol.md, section 6) ---------
# The reuse score is 1 for a swap that loses nothing and 0 for one that falls to the
# best input-blind predictor. A same-domain twin (the positive control) is expected near 1
# and a model from another initialisation (the negative control) near 0; REUSABLE sits
# midway, so a swap "works" when it keeps at least half of the above-chance performance.
REUSABLE = 0.5  # J1 (all conv kernels), J2 (one layer), E3 labels, Y1
LITTLE_LOSS = 0.9  # "can be reused directly", "little loss": C2, C4
SENSITIVE = 0.5  # "very sensitive": C3 (a swap loses more than half)
USEFUL_ACCURACY = 0.6  # J3: held-out balanced accuracy of a criterion's threshold
# conditions whose target model is not this far above chance are excluded from verdicts
MIN_GAP = {"miou": 0.1, "psnr": 1.0}  # mIoU points; dB
ADEQUATE = 0.95  # training adequacy: share of a 4x longer run's above-chance gap


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


def mean_verdict(values, margin: float, side: str = "above", level: float = LEVEL) -> dict:
    """Mean of per-seed ``values`` with its Student-t CI, the verdict against ``margin`` and
    the detectable effect. Keys: estimate, ci_low, ci_high, n, verdict, detectable."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    n = len(v)
    out = {"estimate": float(v.mean()) if n else np.nan, "ci_low": np.nan, "ci_high": np.nan,
           "n": n, "verdict": "undecided", "detectable": np.nan}
    if n >= 2:
        se = float(v.std(ddof=1) / np.sqrt(n))
        half = float(stats.t.ppf(0.5 + level / 2, n - 1) * se)
        out.update(ci_low=out["estimate"] - half, ci_high=out["estimate"] + half,
                   detectable=detectable(se, n - 1, level))
        out["verdict"] = verdict(out["ci_low"], out["ci_high"], margin, side)
    return out


def seed_bootstrap(frame: pd.DataFrame, statistic: Callable[[pd.DataFrame], float],
                   seed_column: str = "seed", n_boot: int = 1000, level: float = LEVEL,
                   random_state: int = 0) -> dict:
    """``statistic(frame)`` with a percentile CI from resampling whole seeds.

    Every row of a drawn seed comes along (a seed drawn twice comes twice, relabelled so
    that within-seed groupings stay apart), so points sharing a training run are never
    treated as independent. Keys: estimate, ci_low, ci_high, se, n_seeds, n_boot (valid
    resamples).
    """
    seeds = np.array(sorted(frame[seed_column].unique()))
    estimate = float(statistic(frame))
    rng = np.random.default_rng(random_state)
    frame = frame.reset_index(drop=True)
    rows = {s: np.flatnonzero(frame[seed_column].to_numpy() == s) for s in seeds}
    values = []
    if len(seeds) >= 2:
        for _ in range(n_boot):
            drawn = rng.choice(seeds, len(seeds), replace=True)
            index = np.concatenate([rows[s] for s in drawn])
            labels = np.repeat(np.arange(len(drawn)), [len(rows[s]) for s in drawn])
            sample = frame.iloc[index].assign(**{seed_column: labels}).reset_index(drop=True)
            value = statistic(sample)
            if np.isfinite(value):
                values.append(value)
    if values:
        lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
        se = float(np.std(values, ddof=1)) if len(values) > 1 else np.nan
    else:
        lo = hi = se = np.nan
    return {"estimate": estimate, "ci_low": float(lo), "ci_high": float(hi), "se": se,
            "n_seeds": len(seeds), "n_boot": len(values)}


def bootstrap_verdict(frame: pd.DataFrame, statistic: Callable[[pd.DataFrame], float],
                      margin: float, side: str = "above", **kwargs) -> dict:
    """:func:`seed_bootstrap` plus the verdict against ``margin`` and the detectable effect
    (normal quantiles on the bootstrap standard error)."""
    out = seed_bootstrap(frame, statistic, **kwargs)
    out["verdict"] = verdict(out["ci_low"], out["ci_high"], margin, side)
    out["detectable"] = detectable(out["se"])
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


def describe(row, margin_text: str) -> str:
    """'holds (0.93 [0.88, 0.98] vs margin ...; detectable 0.07)' for a verdict row."""
    return (f"{row['verdict']} ({row['estimate']:.3g} [{row['ci_low']:.3g}, {row['ci_high']:.3g}] "
            f"vs {margin_text}; n = {int(row['n'])}; smallest detectable effect "
            f"{row['detectable']:.2g})")
