"""reuse.toolkit.similarity against independent computations: a numpy CKA with an explicit centring
matrix, the published torch-cka package, a direct LogME without the SVD trick."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import ortho_group
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from reuse.toolkit.similarity import activations, cka_layers, features, linear_cka, logme, pwcca, svcca


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _cka_numpy(x: np.ndarray, y: np.ndarray) -> float:
    """Kornblith et al. 2019 eq. 3-4 written with the centring matrix H = I - 11'/n."""
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    k, l_ = x @ x.T, y @ y.T
    hsic = lambda a, b: np.trace(a @ h @ b @ h) / (n - 1) ** 2  # noqa: E731
    return hsic(k, l_) / np.sqrt(hsic(k, k) * hsic(l_, l_))


def _small_cnn(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                         nn.Conv2d(6, 5, 3, padding=1), nn.ReLU())


def test_cka_matches_numpy_reference_and_is_one_on_itself():
    x, y = _randn(50, 7, seed=1), _randn(50, 4, seed=2)
    y = y + 0.5 * x[:, :4]
    assert linear_cka(x, y) == pytest.approx(_cka_numpy(x.numpy(), y.numpy()), rel=1e-12)
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, x, debiased=True) == pytest.approx(1.0, abs=1e-12)
    assert 0 < linear_cka(x, y) < 1


@pytest.mark.parametrize("debiased", [False, True])
def test_cka_invariant_to_orthogonal_maps_and_isotropic_scaling(debiased):
    x, y = _randn(40, 6, seed=3), _randn(40, 5, seed=4) + _randn(40, 5, seed=3)[:, :5]
    q = torch.from_numpy(ortho_group.rvs(6, random_state=0))
    ref = linear_cka(x, y, debiased)
    assert linear_cka(x @ q * 3.5, y, debiased) == pytest.approx(ref, rel=1e-10)
    assert linear_cka(x, 0.01 * y, debiased) == pytest.approx(ref, rel=1e-10)
    # a non-isotropic scaling changes it: the invariance test can fail
    assert linear_cka(x * torch.arange(1.0, 7.0, dtype=torch.float64), y, debiased) != \
        pytest.approx(ref, rel=1e-3)


def test_cka_nan_for_constant_activations():
    x = _randn(20, 3)
    assert np.isnan(linear_cka(x, torch.full((20, 4), 2.0)))
    assert np.isnan(linear_cka(torch.zeros(20, 4), x, debiased=True))


def test_cka_layers_equals_loop_of_linear_cka():
    widths = [(3, 8), (12, 2), (5, 5), (30, 1)]
    xs = [_randn(25, p, seed=i) for i, (p, _) in enumerate(widths)]
    ys = [_randn(25, q, seed=10 + i) + xs[i][:, :1] for i, (_, q) in enumerate(widths)]
    for debiased in (False, True):
        loop = [linear_cka(x, y, debiased) for x, y in zip(xs, ys)]
        np.testing.assert_allclose(cka_layers(xs, ys, debiased), loop, rtol=1e-12)
    assert cka_layers([], []).shape == (0,)


def test_debiased_cka_matches_torch_cka_on_the_same_activations():
    """torch-cka (PyPI torch-cka 0.21) computes the unbiased HSIC of Nguyen et al. 2021
    eq. 3 on uncentred Gram matrices in float32, averaged over the loader's batches (one
    batch here, so no averaging). Quirks: its model names must differ (else a warning);
    it asserts on NaN (constant activations) instead of returning NaN as we do; its HSIC
    terms are float32, hence the tolerance."""
    from torch_cka import CKA

    m1, m2 = _small_cnn(0), _small_cnn(1)
    x = torch.randn(40, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    layers = ["0", "3"]
    ours = np.array([[linear_cka(features(a), features(b), debiased=True)
                      for b in activations(m2, x, layers).values()]
                     for a in activations(m1, x, layers).values()])
    cka = CKA(m1, m2, "first", "second", layers, layers)
    loader = DataLoader(TensorDataset(x), batch_size=len(x))
    cka.compare(loader, loader)
    np.testing.assert_allclose(ours, cka.export()["CKA"].numpy(), atol=2e-4)


def test_activations_restore_mode_and_copy_outputs():
    model = _small_cnn(0).train()
    model[2].inplace = True
    x = torch.randn(10, 3, 6, 6)
    acts = activations(model, x, ["1", "3"], batch_size=3)
    assert model.training and all(m.training for m in model.modules())
    model.eval()
    with torch.no_grad():
        bn = model[1](model[0](x))
    torch.testing.assert_close(acts["1"], bn)          # not clamped by the in-place ReLU
    assert acts["3"].shape == (10, 5, 6, 6) and acts["3"].dtype == torch.float32
    with pytest.raises(ValueError, match="not modules"):
        activations(model, x, ["9"])


def test_features_views_and_deterministic_subsampling():
    act = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    assert features(act).shape == (2, 12)
    pos = features(act, "positions")
    assert pos.shape == (8, 3)
    torch.testing.assert_close(pos[1], act[0, :, 0, 1])     # sample 0, position (0, 1)
    a, b = features(act, "positions", 5, seed=3), features(act, "positions", 5, seed=3)
    assert a.shape == (5, 3) and torch.equal(a, b)
    with pytest.raises(ValueError, match="how="):
        features(act, "channels")


def test_svcca_pwcca_invertible_map_is_one_and_noise_is_small():
    x = _randn(4000, 8, seed=5)
    m = _randn(8, 8, seed=6) + 3 * torch.eye(8, dtype=torch.float64)
    assert svcca(x, x @ m, keep=1.0) == pytest.approx(1.0, abs=1e-9)
    assert pwcca(x, x @ m) == pytest.approx(1.0, abs=1e-9)
    q = torch.from_numpy(ortho_group.rvs(8, random_state=1))
    assert svcca(x, 2 * x @ q) == pytest.approx(1.0, abs=1e-9)   # same variance spectrum
    noise = _randn(4000, 6, seed=7)
    assert svcca(x, noise) < 0.06 and pwcca(x, noise) < 0.06
    # rank deficiency: a duplicated column is dropped, not regularised
    assert svcca(torch.cat([x, x[:, :1]], 1), x, keep=1.0) == pytest.approx(1.0, abs=1e-9)
    assert np.isnan(svcca(x, torch.ones(4000, 2)))


def _logme_direct(f: np.ndarray, y: np.ndarray, iters: int = 2000) -> float:
    """LogME without the SVD trick: A = alpha I + beta F'F inverted at every step and
    gamma = d - alpha tr(A^-1), to convergence, evidence with log|A| directly."""
    n, d = f.shape
    out = []
    for c in np.unique(y):
        t = (y == c).astype(float)
        alpha, beta = 1.0, 1.0
        for _ in range(iters):
            a_inv = np.linalg.inv(alpha * np.eye(d) + beta * f.T @ f)
            m = beta * a_inv @ f.T @ t
            gamma = d - alpha * np.trace(a_inv)
            new = gamma / (m @ m + 1e-5), (n - gamma) / (((t - f @ m) ** 2).sum() + 1e-5)
            done = abs(new[0] / new[1] - alpha / beta) / (alpha / beta) < 1e-12
            alpha, beta = new
            if done:
                break
        a = alpha * np.eye(d) + beta * f.T @ f
        m = beta * np.linalg.solve(a, f.T @ t)
        evidence = (d / 2 * np.log(alpha) + n / 2 * np.log(beta) - beta / 2 * ((t - f @ m) ** 2).sum()
                    - alpha / 2 * m @ m - 0.5 * np.linalg.slogdet(a)[1] - n / 2 * np.log(2 * np.pi))
        out.append(evidence / n)
    return float(np.mean(out))


@pytest.mark.parametrize("n,d", [(120, 6), (15, 30)])
def test_logme_matches_direct_fixed_point(n, d):
    rng = np.random.default_rng(n)
    f = rng.normal(size=(n, d))
    y = rng.integers(0, 3, n)
    f[:, 0] += y                       # some signal
    assert logme(f, y, tol=1e-12) == pytest.approx(_logme_direct(f, y), rel=1e-7)


def test_logme_prefers_separable_features():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 300)
    separable = np.eye(4)[y] * 3 + 0.1 * rng.normal(size=(300, 4))
    noise = rng.normal(size=(300, 4))
    assert logme(torch.from_numpy(separable), torch.from_numpy(y)) > logme(noise, y) + 1
    with pytest.raises(ValueError, match="labels"):
        logme(noise, y.astype(float))
