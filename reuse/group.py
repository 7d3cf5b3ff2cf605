"""Many same-architecture models at once: grouped training and batched scoring.

Small CNNs leave a device (and a 2-core CPU) mostly idle: each step is dozens of tiny
kernels. Here the parameters of N models are stacked along a new leading dimension and
one forward runs all of them with ``torch.func.vmap`` over ``functional_call``
(PyTorch turns a vmapped convolution into one grouped convolution), so N models cost
one set of kernel launches.

- :func:`stack`, :func:`batched_loss`, :func:`monitor_scores`: what the one training
  algorithm (``reuse.train._fit``) needs to run its step on a group of models, vmapped;
  each member gets what it would get alone (its own theta_0, batch order, Adam state,
  freeze mask, BN running statistics and history), up to float rounding.
- :func:`evaluate_states`: many state dicts of one architecture scored on the same data,
  equal to looping :func:`reuse.metrics.evaluate`.

Stacked tensors are ``[N, *shape]`` for every state entry (parameters and BN buffers).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.func import functional_call, vmap

from .gpu import autocast
from .metrics import PRIMARY, _accumulator, loss, predict
from .scoring import check_states

# member-images per batched forward when scoring: bounds activation memory. 512 on the CPU
# (as evaluate's batch; 4096 there thrashed memory and ran 7x slower), 4096 on a GPU
EVAL_IMAGES = {"cpu": 512, "cuda": 4096}


def _max_images(device: torch.device, max_images: int | None) -> int:
    return max_images if max_images is not None else EVAL_IMAGES.get(device.type, 512)


# ----------------------------------------------------------------------------- stacking
def _split_names(model: nn.Module) -> tuple[list[str], list[str]]:
    return [n for n, _ in model.named_parameters()], [n for n, _ in model.named_buffers()]


def _stack(states: Sequence[dict[str, torch.Tensor]], names: list[str], device: torch.device,
           dtypes: dict[str, torch.dtype]) -> dict[str, torch.Tensor]:
    """``{name: [N, *shape]}`` in plain row-major strides.

    Copied into fresh tensors rather than ``torch.stack``-ed: a 1x1 kernel saved from a
    channels_last model counts as contiguous but keeps odd strides, ``stack`` keeps them,
    and vmapped BatchNorm then fails on CUDA ("NYI: querying is_contiguous inside of vmap").
    """
    out = {}
    for k in names:
        first = states[0][k]
        out[k] = torch.empty((len(states), *first.shape), dtype=dtypes[k], device=device)
        for i, s in enumerate(states):
            out[k][i].copy_(s[k].detach())
    return out


def _forward(model: nn.Module, params: dict, buffers: dict, x: torch.Tensor,
             shared_x: bool) -> torch.Tensor:
    """Outputs ``[N, B, ...]`` of the stacked members on ``x`` (``[B, ...]`` when
    ``shared_x``, else ``[N, B, ...]``), in the mode ``model`` is in."""
    def one(p, b, xb):
        return functional_call(model, (p, b), (xb,), tie_weights=False, strict=True)
    return vmap(one, in_dims=(0, 0, None if shared_x else 0))(params, buffers, x)


@torch.inference_mode()
def _score_stacked(model: nn.Module, params: dict, buffers: dict, x: torch.Tensor,
                   y: torch.Tensor, task: str, n_outputs: int, metrics: tuple[str, ...] | None,
                   max_images: int | None = None, precision: str = "fp32") -> list[dict[str, float]]:
    """Metrics of each stacked member on the same ``x``, ``y`` (model in eval mode)."""
    n = next(iter(params.values())).shape[0]
    batch = max(1, _max_images(x.device, max_images) // n)
    was_training = model.training
    model.eval()
    accs = [_accumulator(task, n_outputs, x.device, metrics) for _ in range(n)]
    try:
        for i in range(0, len(x), batch):
            with autocast(x.device, precision):
                out = _forward(model, params, buffers, x[i:i + batch], shared_x=True)
            for m, acc in enumerate(accs):
                acc.update(predict(task, out[m]), y[i:i + batch])
    finally:
        model.train(was_training)
    return [acc.compute() for acc in accs]


def evaluate_states(model: nn.Module, states: Sequence[dict[str, torch.Tensor]], x: torch.Tensor,
                    y: torch.Tensor, task: str, n_outputs: int, metric: str | None = None,
                    chunk: int = 16, max_images: int | None = None, precision: str = "fp32"
                    ) -> list[float]:
    """``metric`` (the task's primary one when None) of every state in ``states``.

    ``model`` gives the architecture (its own weights are not used; it must be on the
    device of ``x``); ``states`` are its state dicts (any device). States are scored
    ``chunk`` at a time, each chunk in batched forwards of at most ``max_images``
    member-images (default :data:`EVAL_IMAGES` for the device), in eval mode. Equal to
    ``[evaluate(model_with(s), x, y, ...)[metric] for s in states]`` up to float
    rounding of the grouped convolutions.
    """
    if chunk < 1:
        raise ValueError(f"chunk={chunk}; must be >= 1")
    metric = PRIMARY[task] if metric is None else metric
    check_states(model, states)
    out: list[float] = []
    for start in range(0, len(states), chunk):
        params, buffers = stack(states[start:start + chunk], model, x.device)
        scores = _score_stacked(model, params, buffers, x, y, task, n_outputs, (metric,), max_images,
                                precision)
        out += [s[metric] for s in scores]
    return out


def group_key(spec, runner) -> tuple:
    """Specs with equal keys can be trained together (``reuse.train._fit`` on a group).

    The same architecture, task, width, depth, image size, optimiser settings, steps and
    batch size, and data of the same shape (training-set size, input and target shapes,
    number of outputs, resolved through ``runner``); pair, domain, seeds, block,
    ``init_from`` and ``freeze`` may differ.
    """
    x, y = runner.train_split(spec)
    return (spec.architecture, spec.task, spec.width, spec.depth, spec.image_size, spec.steps,
            spec.batch_size, spec.lr, spec.weight_decay, len(x), tuple(x.shape[1:]),
            tuple(y.shape[1:]), str(y.dtype), runner.n_outputs(spec))


# ----------------------------------------------------------------------------- training
def stack(states: Sequence[dict[str, torch.Tensor]], model: nn.Module, device: torch.device
          ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(parameters, buffers) of ``states`` stacked ``[N, *shape]`` on ``device``, in the
    dtypes of ``model``'s entries."""
    pnames, bnames = _split_names(model)
    dtypes = {k: v.dtype for k, v in model.state_dict().items()}
    return _stack(states, pnames, device, dtypes), _stack(states, bnames, device, dtypes)


def batched_loss(model: nn.Module, task: str):
    """``f(params, buffers, x, y) -> [N]``: the task loss of every stacked member on its own
    batch (``x``: ``[N, B, ...]``), the single-model loss vmapped."""
    def member_loss(p, b, xb, yb):
        return loss(task, functional_call(model, (p, b), (xb,), tie_weights=False), yb)
    return vmap(member_loss, in_dims=(0, 0, 0, 0))


def monitor_scores(model: nn.Module, params: dict, buffers: dict, monitor: list, task: str,
                   n_out: int, metric: str, precision: str = "fp32") -> list[float]:
    """The metric of each stacked member on its own monitor split ``(x, y)`` (members
    sharing a split are scored in one batched pass); ``model`` is left in training mode."""
    groups: dict[int, list[int]] = {}
    for m, (mx, _) in enumerate(monitor):
        groups.setdefault(id(mx), []).append(m)
    scores = [math.nan] * len(monitor)
    with torch.no_grad():
        for members in groups.values():
            sel = torch.tensor(members, device=next(iter(params.values())).device)
            p = {k: v.detach().index_select(0, sel) for k, v in params.items()}
            b = {k: v.index_select(0, sel) for k, v in buffers.items()}
            mx, my = monitor[members[0]]
            for m, s in zip(members, _score_stacked(model, p, b, mx, my, task, n_out, (metric,),
                                                    precision=precision)):
                scores[m] = s[metric]
    model.train()
    return scores
