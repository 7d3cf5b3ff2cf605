"""The seed-level interval behind pooled verdicts: the leave-one-seed-out jackknife with
Student-t quantiles (:func:`reuse.toolkit.stats.seed_jackknife`)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from reuse.toolkit import stats


def _clustered(rng: np.random.Generator, n_seeds: int = 5, rows=(2, 7)) -> pd.DataFrame:
    """Rows of a few seeds (uneven counts) that share a seed effect: true mean 0."""
    sizes = rng.integers(*rows, n_seeds)
    effect = np.repeat(rng.normal(size=n_seeds), sizes)
    return pd.DataFrame({"seed": np.repeat(np.arange(n_seeds), sizes),
                         "x": effect + 0.5 * rng.normal(size=sizes.sum())})


def _seed_mean(frame: pd.DataFrame) -> float:
    return float(frame.groupby("seed").x.mean().mean())


def test_jackknife_of_a_seed_mean_is_the_t_interval():
    """For a mean of per-seed values the jackknife SE is s / sqrt(n) exactly, so the interval
    is mean_ci's (a percentile bootstrap over 5 seeds was narrower than this)."""
    frame = _clustered(np.random.default_rng(0))
    out = stats.seed_jackknife(frame, _seed_mean)
    t = stats.mean_ci(frame.groupby("seed").x.mean())
    for key in ("estimate", "ci_low", "ci_high", "se"):
        assert abs(out[key] - t[key]) < 1e-12, key
    assert out["n_seeds"] == 5


def test_jackknife_covers_at_its_nominal_level_with_five_seeds():
    """A pooled mean over rows of 5 clustered seeds: the interval covers the true 0 in about
    95% of draws (a percentile bootstrap over the 5 seeds covers about 85%)."""
    rng = np.random.default_rng(2024)
    hits = 0
    for _ in range(400):
        out = stats.seed_jackknife(_clustered(rng), lambda f: float(f.x.mean()))
        hits += out["ci_low"] <= 0.0 <= out["ci_high"]
    assert hits / 400 >= 0.92


def test_jackknife_bounds_are_nan_without_two_seeds_or_a_finite_replicate():
    one = stats.seed_jackknife(pd.DataFrame({"seed": [0, 0], "x": [1.0, 2.0]}), lambda f: float(f.x.mean()))
    assert one["estimate"] == 1.5 and one["n_seeds"] == 1
    assert np.isnan([one["ci_low"], one["ci_high"], one["se"]]).all()
    frame = pd.DataFrame({"seed": [0, 1, 2], "x": [1.0, 2.0, 4.0]})
    gap = stats.seed_jackknife(frame, lambda f: float(f.x.mean()) if 0 in set(f.seed) else np.nan)
    assert gap["estimate"] == 7 / 3 and np.isnan([gap["ci_low"], gap["ci_high"], gap["se"]]).all()
