"""The seed-level intervals behind verdicts: the leave-one-seed-out jackknife with Student-t
quantiles (:func:`reuse.toolkit.stats.seed_jackknife`), and correlations on Fisher's z scale
(:func:`reuse.toolkit.stats.correlation_ci`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

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


def test_correlation_ci_is_a_t_interval_on_fisher_z_mapped_back():
    """By hand: z_i = atanh(r_i), mean and s of z, t_{n-1} interval, tanh back."""
    r = np.array([0.5, 0.7, 0.3, 0.6])
    z = np.log((1 + r) / (1 - r)) / 2  # atanh, written out
    half = 3.182446305284263 * z.std(ddof=1) / 2  # t(0.975, 3) * s / sqrt(4)
    out = stats.correlation_ci(r)
    assert out["estimate"] == pytest.approx(np.tanh(z.mean()), abs=1e-14) and out["n"] == 4
    assert (out["ci_low"], out["ci_high"]) == pytest.approx((np.tanh(z.mean() - half), np.tanh(z.mean() + half)),
                                                           abs=1e-12)
    assert out["se_z"] == pytest.approx(z.std(ddof=1) / 2, abs=1e-14)


def test_correlation_ci_never_leaves_minus_one_one_and_contains_its_estimate():
    """LogME's per-seed rho (1, 1, 1, 1, 0.8): a t interval on the values reached 1.03; on the
    z scale it stays below 1, and its estimate lies inside it where the plain mean does not."""
    r = [1.0, 1.0, 1.0, 1.0, 0.8]
    plain = stats.mean_ci(r)
    assert plain["ci_high"] > 1
    out = stats.correlation_ci(r)
    assert -1 <= out["ci_low"] <= out["estimate"] <= out["ci_high"] <= 1
    assert plain["estimate"] < out["ci_low"]  # why the estimate is tanh(mean z), not the plain mean
    rng = np.random.default_rng(0)
    for _ in range(200):
        out = stats.correlation_ci(rng.choice([-1.0, -0.8, 0.4, 1.0], size=rng.integers(2, 6)))
        assert -1 <= out["ci_low"] <= out["estimate"] <= out["ci_high"] <= 1
    assert stats.correlation_ci([1.0, 1.0])["estimate"] == pytest.approx(stats.CLIP)  # +-1 is clipped
    assert np.isnan(stats.correlation_ci([0.3])["ci_low"])
    with pytest.raises(ValueError, match="\\[-1, 1\\]"):
        stats.correlation_ci([0.5, 1.5])


def test_jackknife_of_a_correlation_on_the_z_scale_stays_in_range():
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"seed": np.repeat(np.arange(5), 6), "x": rng.normal(size=30)})
    frame["y"] = frame.x + 0.05 * rng.normal(size=30)  # rho near 1: a plain jackknife spills over

    def rho(f):
        return float(np.corrcoef(f.x, f.y)[0, 1])
    out = stats.seed_jackknife(frame, rho, correlation=True)
    assert out["estimate"] == pytest.approx(rho(frame)) and -1 < out["ci_low"] < out["estimate"] < out["ci_high"] < 1
    left_out = np.arctanh([rho(frame[frame.seed != s]) for s in range(5)])
    se = np.sqrt(4 / 5 * np.sum((left_out - left_out.mean()) ** 2))
    assert out["se"] == pytest.approx(se)
    assert out["ci_low"] == pytest.approx(np.tanh(np.arctanh(rho(frame)) - 2.7764451051977987 * se))


def test_mean_ci_clipped_to_the_range_of_its_statistic():
    out = stats.mean_ci([1.9, 1.2, 2.0], bounds=(-2.0, 2.0))
    assert out["ci_high"] == 2.0 and out["ci_low"] == stats.mean_ci([1.9, 1.2, 2.0])["ci_low"]


def test_near_duplicates_map_each_group_to_its_first_member():
    rng = np.random.default_rng(1)
    a = rng.random(40)
    frame = pd.DataFrame({"a": a, "b": a + 1e-4 * rng.random(40), "c": -a, "d": rng.random(40),
                          "e": np.where(np.arange(40) < 38, a, np.nan), "flat": 1.0})
    out = stats.near_duplicates(frame, ["a", "b", "c", "d", "e", "flat"], 0.99)
    assert set(out) == {"b", "c", "e"} and {k: first for k, (first, _) in out.items()} == {"b": "a", "c": "a", "e": "a"}
    assert out["c"][1] == pytest.approx(-1.0) and out["e"][1] == pytest.approx(1.0)
    assert stats.near_duplicates(frame, ["d", "a"], 0.99) == {}


def test_spearman_drops_nonfinite_pairs_and_is_nan_without_a_ranking():
    assert stats.spearman([1, 2, 3, 4], [1, 2, 3, 5]) == 1.0
    assert stats.spearman([1, 2, 3, np.nan, 5], [3, 2, 1, 9, np.inf]) == -1.0  # the NaN and inf pairs dropped
    assert np.isnan(stats.spearman([1, 2], [1, 2]))  # two points: no ranking to test
    assert np.isnan(stats.spearman([1, 1, 1], [1, 2, 3]))  # a constant side


def test_within_spearman_averages_within_groups_and_leaves_out_groups_without_a_ranking():
    frame = pd.DataFrame({"g": list("aaabbbccc"), "x": [1, 2, 3, 1, 2, 3, 1, 2, 3],
                          "y": [1, 2, 3, 3, 1, 2, 5, 5, 5]})
    # a: +1, b: -0.5, c constant (left out); pooled over all nine points the sign differs
    assert stats.within_spearman(frame, "g", "x", "y") == pytest.approx((1 - 0.5) / 2)
    assert np.isnan(stats.within_spearman(frame[frame.g == "c"], "g", "x", "y"))
