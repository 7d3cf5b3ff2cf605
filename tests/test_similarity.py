"""reuse.toolkit.similarity against independent computations: a numpy CKA with an explicit centring
matrix, the published torch-cka package, a direct LogME without the SVD trick."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import ortho_group
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from reuse.toolkit.similarity import (activations, cka_cross, cka_layers, features, linear_cka, logme,
                                     minibatch_cka, pwcca, same_layers, svcca)


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


def _hsic1_numpy(k: np.ndarray, l_: np.ndarray) -> float:
    """Song et al. 2012 eq. 5, with explicit zero-diagonal matrices."""
    n = k.shape[0]
    k, l_ = k - np.diag(np.diag(k)), l_ - np.diag(np.diag(l_))
    one = np.ones(n)
    return (np.trace(k @ l_) + one @ k @ one * (one @ l_ @ one) / ((n - 1) * (n - 2))
            - 2 / (n - 2) * one @ k @ l_ @ one) / (n * (n - 3))


def test_minibatch_cka_is_the_ratio_of_hsic_averaged_over_batches():
    """Against a numpy reference (Nguyen et al. 2021, sec. 3.1), for batches of unequal size,
    every pair of features; and one batch of everything gives the full-batch cka_layers."""
    xs = [_randn(30, p, seed=i) for i, p in enumerate((4, 9))]
    ys = [_randn(30, 6, seed=5) + xs[0][:, :1], _randn(30, 3, seed=6), xs[1] @ _randn(9, 2, seed=7)]
    cuts = [0, 12, 30]
    batches = [([x[a:b] for x in xs], [y[a:b] for y in ys]) for a, b in zip(cuts, cuts[1:])]
    biased, debiased = minibatch_cka(iter(batches))
    assert biased.shape == debiased.shape == (2, 3)

    def mean_hsic(u, v, biased):
        out = []
        for a, b in zip(cuts, cuts[1:]):
            uu, vv = (t[a:b].numpy() - t[a:b].numpy().mean(0) for t in (u, v))
            k, l_ = uu @ uu.T, vv @ vv.T
            out.append(np.sum(k * l_) / (b - a - 1) ** 2 if biased else _hsic1_numpy(k, l_))
        return np.mean(out)
    for i, x in enumerate(xs):
        for j, y in enumerate(ys):
            for ours, flag in ((biased, True), (debiased, False)):
                ref = mean_hsic(x, y, flag) / np.sqrt(mean_hsic(x, x, flag) * mean_hsic(y, y, flag))
                assert ours[i, j] == pytest.approx(ref, rel=1e-10)
    one = minibatch_cka([(xs, xs)])
    for flag, got in zip((False, True), one):
        np.testing.assert_allclose(np.diag(got), cka_layers(xs, xs, flag), rtol=1e-12)
        assert np.diag(got) == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError, match="one k >= 4"):
        minibatch_cka([([xs[0][:3]], [ys[0][:3]])])
    with pytest.raises(ValueError, match="batches is empty"):
        minibatch_cka([])


def test_minibatch_cka_is_one_for_related_features_and_near_the_full_batch_value():
    """Identical and linearly related features (an orthogonal map, a scale) give 1.0 in
    every batch; on noisy related features the debiased mini-batch value (10 batches of
    200) is close to the full-batch one on all 2,000 rows, since both estimate one value."""
    x = _randn(2000, 20, seed=0)
    q = torch.as_tensor(ortho_group.rvs(20, random_state=0))
    y = x[:, :5] @ _randn(5, 8, seed=1) + 2.0 * _randn(2000, 8, seed=2)
    batches = [([x[i:i + 200]], [x[i:i + 200], 3.0 * x[i:i + 200] @ q, y[i:i + 200]])
               for i in range(0, 2000, 200)]
    biased, debiased = minibatch_cka(batches)
    assert debiased[0, :2] == pytest.approx(1.0, abs=1e-12) and biased[0, :2] == pytest.approx(1.0, abs=1e-12)
    full = linear_cka(x, y, debiased=True)
    assert 0.1 < full < 0.9 and debiased[0, 2] == pytest.approx(full, abs=0.02)


def test_minibatch_cka_matches_torch_cka_over_several_batches():
    """torch-cka averages its unbiased HSIC terms over the loader's batches and then takes
    the ratio, as we do: 4 batches of 10 inputs, every pair of 2 x 2 layers."""
    from torch_cka import CKA

    m1, m2 = _small_cnn(0), _small_cnn(1)
    x = torch.randn(40, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    layers = ["0", "3"]
    batches = [([features(a) for a in activations(m1, xb, layers).values()],
                [features(b) for b in activations(m2, xb, layers).values()]) for xb in x.split(10)]
    ours = minibatch_cka(batches)[1]
    cka = CKA(m1, m2, "first", "second", layers, layers)
    loader = DataLoader(TensorDataset(x), batch_size=10)
    cka.compare(loader, loader)
    np.testing.assert_allclose(ours, cka.export()["CKA"].numpy(), atol=2e-4)


@pytest.mark.parametrize("kind", ["linear", "conv1d"])
def test_cka_cross_of_a_model_with_itself_and_a_perturbed_copy(kind):
    """A Linear-only and a Conv1d model: every layer pair in forward order; a layer meets
    itself with CKA 1 when source = target; the batches do not change that."""
    torch.manual_seed(0)
    if kind == "linear":
        model, x = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4)), torch.randn(50, 6)
    else:
        model, x = nn.Sequential(nn.Conv1d(2, 4, 3), nn.ReLU(), nn.Conv1d(4, 3, 3)), torch.randn(50, 2, 12)
    state = model.state_dict()
    other = {k: v + 0.3 * torch.randn_like(v) for k, v in state.items()}
    cross = cka_cross(model, state, state, x, ["0", "2"], batch_size=16)
    assert list(cross.columns) == ["source_layer", "target_layer", "cka", "cka_debiased"]
    assert list(zip(cross.source_layer, cross.target_layer)) == [("0", "0"), ("0", "2"), ("2", "0"), ("2", "2")]
    same = same_layers(cross)
    assert list(same.layer) == ["0", "2"] and same[["cka", "cka_debiased"]].to_numpy() == pytest.approx(1.0)
    assert cross.cka_debiased.to_numpy() == pytest.approx(cka_cross(model, state, state, x, ["0", "2"], 50)
                                                          .cka_debiased.to_numpy(), abs=0.2)
    moved = same_layers(cka_cross(model, state, other, x, ["0", "2"], batch_size=16))
    assert (moved.cka_debiased < 1 - 1e-6).all()
    with pytest.raises(ValueError, match="batch_size=3; allowed: >= 4"):
        cka_cross(model, state, state, x, ["0"], batch_size=3)


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
