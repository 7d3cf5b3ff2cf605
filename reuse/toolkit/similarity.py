"""Similarity of two networks' representations, and transferability of one network's features.

Weight distances (:mod:`reuse.toolkit.criteria`, :mod:`reuse.toolkit.alignment`) compare kernels; the
functions here compare what a layer computes, on data. Entry points:

- :func:`activations`: the outputs of named modules over an input batch ``[N, ...]``;
- :func:`features`: 2-D ``[samples, features]`` views of an activation ``[N, C, H, W]``;
- :func:`linear_cka`, :func:`cka_layers`: linear centred kernel alignment (Kornblith,
  Norouzi, Lee & Hinton 2019, "Similarity of Neural Network Representations Revisited",
  ICML), biased or debiased (the unbiased HSIC estimator of Song et al. 2012, JMLR,
  as used for CKA by Nguyen, Raghu & Kornblith 2021, ICLR);
- :func:`minibatch_cka`, :func:`cka_cross`: CKA of every pair of layers accumulated over
  mini-batches of inputs (Nguyen et al. 2021), so memory does not grow with the number of
  inputs; :func:`same_layers` reads each layer against itself from it;
- :func:`svcca` (Raghu, Gilmer, Yosinski & Sohl-Dickstein 2017, "SVCCA", NeurIPS) and
  :func:`pwcca` (Morcos, Raghu & Bengio 2018, "Insights on representational similarity
  in neural networks with canonical correlation", NeurIPS);
- :func:`logme` (You, Liu, Wang & Long 2021, "LogME: Practical Assessment of
  Pre-trained Models for Transfer Learning", ICML): evidence of a linear model on the
  features for one-hot targets.

All similarities are computed in float64 and returned as Python floats (or numpy arrays
for :func:`cka_layers` and :func:`minibatch_cka`). Inputs may be torch tensors or numpy arrays.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

ArrayLike = torch.Tensor | np.ndarray
FEATURE_VIEWS = ("flatten", "positions")
# inputs per mini-batch of cka_cross: the 1,000 test images cnn-reuse analyze scores by default
# fit one batch (the full-batch values); a batch's Gram stacks take 2 L k^2 float64 (320 MB
# for resnet18's 20 layers)
CKA_BATCH = 1000


def activations(model: nn.Module, x: torch.Tensor, layers: Sequence[str],
                batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Outputs of the modules named in ``layers`` (``model.named_modules()`` names) for the
    input ``x`` ``[N, ...]``, as float32 tensors ``[N, ...]`` on ``x``'s device.

    Runs ``model`` in eval mode (BN running statistics, no dropout) under
    ``torch.inference_mode`` in batches of ``batch_size``, then restores every module's
    training flag. Outputs are copied, so a later in-place op (``ReLU(inplace=True)``
    after a BN layer) does not change them. The model must already be on ``x``'s device.
    """
    if isinstance(layers, str) or not isinstance(layers, Sequence):
        raise TypeError(f"layers={layers!r}; allowed: a list of module names")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}; allowed: >= 1")
    modules = dict(model.named_modules())
    unknown = [name for name in layers if name not in modules]
    if unknown:
        allowed = [n for n in modules if n][:5]
        raise ValueError(f"layers {unknown[:5]} are not modules of the model; allowed: "
                         f"names from named_modules() such as {allowed}")
    outputs: dict[str, list[torch.Tensor]] = {name: [] for name in layers}

    def hook(name: str):
        def store(module: nn.Module, inputs, output) -> None:
            if not isinstance(output, torch.Tensor):
                raise TypeError(f"layer {name!r} returned {type(output).__name__}; "
                                "allowed: modules whose output is one tensor")
            outputs[name].append(output.detach().to(x.device, torch.float32, copy=True))
        return store

    training = {m: m.training for m in model.modules()}
    handles = [modules[name].register_forward_hook(hook(name)) for name in dict.fromkeys(layers)]
    try:
        model.eval()
        with torch.inference_mode():
            for batch in x.split(batch_size):
                model(batch)
    finally:
        for handle in handles:
            handle.remove()
        for module, flag in training.items():
            module.train(flag)
    return {name: torch.cat(outputs[name]) for name in layers}


def features(act: torch.Tensor, how: str = "flatten", max_rows: int | None = None,
             seed: int = 0) -> torch.Tensor:
    """A 2-D ``[samples, features]`` view of an activation ``act`` ``[N, C, ...]``.

    ``"flatten"``: one row per input, ``[N, C*H*W]`` (for CKA, whose Gram matrices are
    ``N x N``). ``"positions"``: every spatial position of every input is a sample,
    ``[N*H*W, C]`` (for SVCCA / PWCCA, whose CCA needs many more samples than features).
    With ``max_rows``, that many rows are drawn without replacement (kept in order) from
    a generator seeded with ``seed``: the same seed draws the same rows from two models'
    activations of one input batch, so the rows stay paired.
    """
    if how not in FEATURE_VIEWS:
        raise ValueError(f"how={how!r}; allowed: {', '.join(FEATURE_VIEWS)}")
    if act.ndim < 2:
        raise ValueError(f"act.shape={tuple(act.shape)}; allowed: [N, C, ...] (ndim >= 2)")
    if max_rows is not None and max_rows < 1:
        raise ValueError(f"max_rows={max_rows}; allowed: None or >= 1")
    rows = act.reshape(act.shape[0], -1) if how == "flatten" else \
        act.movedim(1, -1).reshape(-1, act.shape[1])
    if max_rows is not None and rows.shape[0] > max_rows:
        generator = torch.Generator().manual_seed(seed)
        keep = torch.randperm(rows.shape[0], generator=generator)[:max_rows].sort().values
        rows = rows[keep.to(rows.device)]
    return rows


def _as_float64(a: ArrayLike, name: str) -> torch.Tensor:
    t = torch.as_tensor(a)
    if t.ndim != 2:
        raise ValueError(f"{name}.shape={tuple(t.shape)}; allowed: 2-D [samples, features] "
                         "(see features())")
    return t.to(torch.float64)


def _centred(a: ArrayLike, name: str) -> torch.Tensor:
    t = _as_float64(a, name)
    return t - t.mean(0)


def _hsic_terms(kx: torch.Tensor, ky: torch.Tensor, debiased: bool, cross: bool = False) -> torch.Tensor:
    """HSIC (up to a factor shared by all three terms of CKA) of stacked Gram matrices
    ``kx``, ``ky`` ``[B, n, n]`` of centred features, one value per stack entry ``[B]``;
    with ``cross``, of every entry of ``kx`` ``[A, n, n]`` with every entry of ``ky``
    ``[B, n, n]``, ``[A, B]`` (the same terms, with matrix products for the pairings).

    Biased: ``<K, L>_F`` (``K = HKH`` already, the features being centred). Debiased: the
    U-statistic of Song et al. 2012, eq. 5, on ``K~`` (``K`` with its diagonal zeroed):
    ``[tr(K~L~) + 1'K~1 1'L~1 / ((n-1)(n-2)) - 2/(n-2) 1'K~L~1] / (n(n-3))``; it is
    unchanged by centring, which is done for numerical accuracy only. Every term is read
    from ``K``, ``L``, their diagonals and row sums, so no ``[B, n, n]`` temporary is made
    (the Frobenius products are batched ``[1, n^2] x [n^2, 1]`` matmuls): with 20 layers of
    1000 samples, elementwise products were memory-bound and slower than a layer loop.
    """
    n = kx.shape[1]
    fx, fy = kx.reshape(len(kx), n * n), ky.reshape(len(ky), n * n)
    if cross:
        dot, inner, times = fx @ fy.T, (lambda u, v: u @ v.T), (lambda u, v: u[:, None] * v)
    else:
        dot = torch.bmm(fx.unsqueeze(1), fy.unsqueeze(2)).flatten()
        inner, times = (lambda u, v: (u * v).sum(1)), torch.mul
    if not debiased:
        return dot
    dx, dy = kx.diagonal(dim1=1, dim2=2), ky.diagonal(dim1=1, dim2=2)
    rx, ry = kx.sum(2) - dx, ky.sum(2) - dy                   # row sums of K~, L~ [B, n]
    value = (dot - inner(dx, dy) + times(rx.sum(1), ry.sum(1)) / ((n - 1) * (n - 2))
             - 2 / (n - 2) * inner(rx, ry))
    return value / (n * (n - 3))


def cka_layers(xs: Sequence[ArrayLike], ys: Sequence[ArrayLike],
               debiased: bool = False) -> np.ndarray:
    """Linear CKA of each pair ``(xs[l] [n, p_l], ys[l] [n, q_l])``, as ``[L]`` float64.

    The ``n x n`` Gram matrices of all layers are written into two ``[L, n, n]`` stacks and
    the three HSIC terms of every layer computed in one batched pass (``n`` must be equal
    across layers). Equal to a loop of :func:`linear_cka`. NaN for a layer whose
    activations are constant over the samples (zero HSIC of a side with itself: CKA is
    undefined) and, when ``debiased``, where the unbiased self-HSIC estimate is not
    positive (tiny ``n``).
    """
    if len(xs) != len(ys):
        raise ValueError(f"len(xs)={len(xs)}, len(ys)={len(ys)}; allowed: equal lengths")
    if not len(xs):
        return np.zeros(0)
    n = {a.shape[0] for a in [*xs, *ys]}
    if len(n) != 1:
        raise ValueError(f"sample counts {sorted(n)}; allowed: one n for every x and y")
    n = n.pop()
    if debiased and n < 4:
        raise ValueError("debiased CKA needs n >= 4 samples (its estimator divides by n-3)")
    kx = _grams(xs, "x")
    ky = _grams(ys, "y", kx.device)
    xy, xx, yy = (_hsic_terms(a, b, debiased).cpu().numpy()
                  for a, b in ((kx, ky), (kx, kx), (ky, ky)))
    valid = (xx > 0) & (yy > 0)
    out = np.full(len(xs), np.nan)
    out[valid] = xy[valid] / np.sqrt(xx[valid] * yy[valid])
    return out


def _grams(xs: Sequence[ArrayLike], name: str, device: torch.device | None = None) -> torch.Tensor:
    """Gram matrices ``[L, n, n]`` (float64) of the centred features ``xs[l]`` ``[n, p_l]``,
    on ``device`` (default: that of ``xs[0]``)."""
    device = torch.as_tensor(xs[0]).device if device is None else device
    n = xs[0].shape[0]
    out = torch.empty(len(xs), n, n, dtype=torch.float64, device=device)
    for i, x in enumerate(xs):
        x = _centred(x, name).to(device)
        torch.mm(x, x.T, out=out[i])
    return out


def minibatch_cka(batches: Iterable[tuple[Sequence[ArrayLike], Sequence[ArrayLike]]]
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Linear CKA of every pair ``(x_a, y_b)`` of ``A`` and ``B`` features, accumulated over
    mini-batches: ``batches`` yields ``(xs, ys)``, ``xs[a]`` ``[k, p_a]`` and ``ys[b]``
    ``[k, q_b]`` of one batch of ``k`` inputs (rows paired, ``k >= 4``; ``k`` may vary).
    Returns ``(cka, cka_debiased)``, each ``[A, B]`` float64.

    Each side is centred within its batch and each HSIC estimated on it, then averaged over
    batches: ``CKA = mean_i HSIC(X_i, Y_i) / sqrt(mean_i HSIC(X_i, X_i) mean_i HSIC(Y_i, Y_i))``
    (Nguyen, Raghu & Kornblith 2021, ICLR, section 3.1). Only one batch's Gram matrices are
    held at a time, so memory does not grow with the number of inputs. This is another
    estimator than the full-batch CKA of :func:`cka_layers`, equal to it when one batch holds
    every input: ``cka_debiased`` (the unbiased HSIC_1 of Song et al. 2012) estimates the same
    population value whatever ``k``, with more variance for small ``k``; ``cka`` (the biased
    HSIC, divided by ``(k-1)^2``) carries a bias that shrinks with ``k``, not with the number of
    batches. NaN where a side is constant over the inputs (or, debiased, where its self-HSIC
    estimate is not positive).
    """
    sums = None
    for xs, ys in batches:
        if not len(xs) or not len(ys):
            raise ValueError(f"a batch with {len(xs)} x and {len(ys)} y features; allowed: >= 1 each")
        k = {a.shape[0] for a in [*xs, *ys]}
        if len(k) != 1 or min(k) < 4:
            raise ValueError(f"batch sample counts {sorted(k)}; allowed: one k >= 4 for every x and y "
                             "(the unbiased HSIC divides by k-3)")
        k = k.pop()
        kx = _grams(xs, "x")
        ky = _grams(ys, "y", kx.device)
        terms = [torch.stack([_hsic_terms(a, b, debiased, cross) / scale
                              for debiased, scale in ((False, (k - 1) ** 2), (True, 1))])
                 for a, b, cross in ((kx, ky, True), (kx, kx, False), (ky, ky, False))]
        sums = terms if sums is None else [s + t for s, t in zip(sums, terms)]
        del xs, ys, kx, ky  # freed before the next batch is made: one batch held at a time
    if sums is None:
        raise ValueError("batches is empty; allowed: at least one (xs, ys) batch")
    xy, xx, yy = (t.cpu().numpy() for t in sums)                # [2, A, B], [2, A], [2, B]
    valid = (xx[:, :, None] > 0) & (yy[:, None, :] > 0)
    out = np.full(xy.shape, np.nan)
    out[valid] = xy[valid] / np.sqrt((xx[:, :, None] * yy[:, None, :])[valid])
    return out[0], out[1]


def linear_cka(x: ArrayLike, y: ArrayLike, debiased: bool = False) -> float:
    """Linear CKA of the features ``x`` ``[n, p]`` and ``y`` ``[n, q]`` (rows paired):
    ``HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` with ``K = x x'``, ``L = y y'``
    (Kornblith et al. 2019, eq. 4; debiased: Nguyen et al. 2021, eq. 3). 1 for ``y = x``;
    invariant to orthogonal maps and isotropic scaling of either side. NaN when either
    side is constant over the samples. See :func:`cka_layers` for many layers at once.
    """
    return float(cka_layers([x], [y], debiased)[0])


def _basis(a: ArrayLike, name: str, keep: float = 1.0) -> np.ndarray:
    """Orthonormal basis ``[n, k]`` of the centred columns of ``a`` ``[n, p]``: left
    singular vectors whose singular values exceed numpy's rank tolerance
    (``s_max * max(n, p) * eps``), so null directions are dropped, then the fewest of
    them that hold ``keep`` of the variance."""
    t = _as_float64(a, name).cpu().numpy()
    if t.shape[0] < 2:
        raise ValueError(f"{name} has {t.shape[0]} samples; allowed: >= 2")
    t = t - t.mean(0)
    u, s, _ = np.linalg.svd(t, full_matrices=False)
    rank = int((s > s.max(initial=0.0) * max(t.shape) * np.finfo(float).eps).sum())
    if rank == 0:
        return u[:, :0]
    var = np.cumsum(s[:rank] ** 2) / (s[:rank] ** 2).sum()
    k = min(int(np.searchsorted(var, keep - 1e-12)) + 1, rank)
    return u[:, :k]


def _cca(qx: np.ndarray, qy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Canonical correlations ``[k]`` of two orthonormal bases and the canonical
    variates ``[n, k]`` of the first (singular value decomposition of ``qx' qy``)."""
    u, rho, _ = np.linalg.svd(qx.T @ qy, full_matrices=False)
    return np.clip(rho, 0.0, 1.0), qx @ u


def _check_pair(x: ArrayLike, y: ArrayLike) -> None:
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} samples, y {y.shape[0]}; allowed: equal "
                         "(paired rows)")


def svcca(x: ArrayLike, y: ArrayLike, keep: float = 0.99) -> float:
    """SVCCA of ``x`` ``[n, p]`` and ``y`` ``[n, q]`` (Raghu et al. 2017): keep the top
    singular directions of each (centred) side holding ``keep`` of its variance, then the
    mean canonical correlation of the two subspaces, in [0, 1].

    Rank deficiency: directions with singular value below numpy's rank tolerance are
    dropped before the variance cut, so CCA runs on full-rank bases and needs no
    regularisation. NaN when either side is constant. CCA needs ``n`` well above the
    number of kept directions (use :func:`features` ``how="positions"``): with ``n`` close
    to it, every correlation tends to 1.
    """
    if not 0 < keep <= 1:
        raise ValueError(f"keep={keep}; allowed: 0 < keep <= 1 (share of variance)")
    _check_pair(x, y)
    qx, qy = _basis(x, "x", keep), _basis(y, "y", keep)
    if not qx.shape[1] or not qy.shape[1]:
        return float("nan")
    return float(_cca(qx, qy)[0].mean())


def pwcca(x: ArrayLike, y: ArrayLike) -> float:
    """Projection-weighted CCA of ``x`` ``[n, p]`` and ``y`` ``[n, q]`` (Morcos et al. 2018):
    ``sum_i a_i rho_i / sum_i a_i`` over canonical correlations ``rho_i``, with weights
    ``a_i = sum_j |<h_i, z_j>|``, ``h_i`` the unit canonical variates of the side ``z``
    with fewer non-null directions (``x`` on a tie) and ``z_j`` its centred neurons, as in
    the authors' reference code. Null directions are dropped as in :func:`svcca` (no
    variance cut). In [0, 1]; NaN when either side is constant.
    """
    _check_pair(x, y)
    qx, qy = _basis(x, "x"), _basis(y, "y")
    if not qx.shape[1] or not qy.shape[1]:
        return float("nan")
    z, qz, qo = (x, qx, qy) if qx.shape[1] <= qy.shape[1] else (y, qy, qx)
    rho, h = _cca(qz, qo)
    zc = _as_float64(z, "z").cpu().numpy()
    weights = np.abs(h.T @ (zc - zc.mean(0))).sum(1)
    return float((weights * rho).sum() / weights.sum())


def logme(features: ArrayLike, labels: ArrayLike, max_iter: int = 100,
          tol: float = 1e-8) -> float:
    """LogME of ``features`` ``[n, d]`` for class ``labels`` ``[n]`` (int) (You et al. 2021):
    for each class present, the log evidence of Bayesian linear regression of its one-hot
    column on the features, maximised over the prior and noise precisions
    (``alpha``, ``beta``) by fixed-point iteration, divided by ``n``; then the mean over
    classes. Higher: the features fit the labels linearly, with a simpler model.

    The SVD trick: with ``F = U S V'`` once, every iteration costs ``O(k)`` per class
    (``k = rank F``), and all classes iterate together. The iteration stops when
    ``alpha / beta`` changes by less than ``tol`` (relative) for every class, or after
    ``max_iter`` steps. ``log|A|`` counts the ``d - k`` null directions (``log alpha``
    each), as the ICML version of thuml/LogME does; its later fixed-point code leaves
    them out, which differs when ``d > n``. Features are used as given (not centred).
    """
    f = _as_float64(features, "features").cpu().numpy()
    y = torch.as_tensor(labels)
    if y.ndim != 1 or y.shape[0] != f.shape[0] or y.is_floating_point() or y.is_complex():
        raise ValueError(f"labels: shape {tuple(y.shape)}, dtype {y.dtype}; allowed: integer "
                         f"class ids [n] with n = {f.shape[0]}")
    if max_iter < 1 or tol <= 0:
        raise ValueError(f"max_iter={max_iter}, tol={tol}; allowed: max_iter >= 1, tol > 0")
    y = y.cpu().numpy()
    n, d = f.shape
    onehot = (y[:, None] == np.unique(y)[None, :]).astype(np.float64)    # [n, C]
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    k = int((s > s.max(initial=0.0) * max(n, d) * np.finfo(float).eps).sum())
    sigma = s[:k, None] ** 2                                              # [k, 1]
    proj2 = (u[:, :k].T @ onehot) ** 2                                    # [k, C]
    residual0 = (onehot ** 2).sum(0) - proj2.sum(0)                       # [C]
    eps = 1e-5  # thuml/LogME's guard against a zero denominator
    alpha, beta = np.ones(onehot.shape[1]), np.ones(onehot.shape[1])

    def terms(alpha: np.ndarray, beta: np.ndarray):
        t = alpha / beta
        gamma = (sigma / (sigma + t)).sum(0)
        m2 = (sigma * proj2 / (sigma + t) ** 2).sum(0)
        res2 = (proj2 / (1 + sigma / t) ** 2).sum(0) + residual0
        return gamma, m2, res2

    for _ in range(max_iter):
        gamma, m2, res2 = terms(alpha, beta)
        new_alpha, new_beta = gamma / (m2 + eps), (n - gamma) / (res2 + eps)
        change = np.abs(new_alpha / new_beta - alpha / beta) / (alpha / beta)
        alpha, beta = new_alpha, new_beta
        if (change <= tol).all():
            break
    _, m2, res2 = terms(alpha, beta)
    evidence = (k / 2 * np.log(alpha) + n / 2 * np.log(beta)
                - 0.5 * np.log(alpha + beta * sigma).sum(0)
                - beta / 2 * res2 - alpha / 2 * m2 - n / 2 * np.log(2 * np.pi))
    return float((evidence / n).mean())


def cka_cross(model: nn.Module, source: dict[str, torch.Tensor], target: dict[str, torch.Tensor],
              x: torch.Tensor, layers: Sequence[str], batch_size: int = CKA_BATCH) -> pd.DataFrame:
    """Mini-batch CKA (:func:`minibatch_cka`) of the outputs of every layer of ``model`` loaded
    with ``source`` against every layer of it loaded with ``target`` (state dicts of it), on
    inputs ``x`` ``[N, ...]`` (rows = inputs, flattened) split into ``ceil(N / batch_size)``
    batches of near-equal size. One row per pair: ``source_layer``, ``target_layer`` (each in
    ``layers`` order), ``cka``, ``cka_debiased``. ``model`` is not modified.
    """
    if batch_size < 4:
        raise ValueError(f"batch_size={batch_size}; allowed: >= 4 (the unbiased HSIC divides by k-3)")
    layers = list(layers)
    models = []
    for state in (source, target):
        m = copy.deepcopy(model)
        m.load_state_dict(state)
        models.append(m)

    def batches():
        for xb in x.tensor_split(-(-len(x) // batch_size)):
            acts = [activations(m, xb, layers) for m in models]
            yield tuple([features(a.pop(n)) for n in layers] for a in acts)  # popped: held by the consumer only

    cka, debiased = minibatch_cka(batches())
    return pd.DataFrame({"source_layer": np.repeat(layers, len(layers)),
                         "target_layer": np.tile(layers, len(layers)),
                         "cka": cka.ravel(), "cka_debiased": debiased.ravel()})


def same_layers(cross: pd.DataFrame) -> pd.DataFrame:
    """The rows of a :func:`cka_cross` frame where a layer meets itself: ``layer``, ``cka``,
    ``cka_debiased`` (does the layer compute the same in source and target?)."""
    same = cross[cross.source_layer == cross.target_layer]
    return same.drop(columns="target_layer").rename(columns={"source_layer": "layer"}).reset_index(drop=True)
