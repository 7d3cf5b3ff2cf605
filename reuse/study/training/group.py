"""Many same-architecture models trained at once (grouped training).

Small CNNs leave a device (and a 2-core CPU) mostly idle: each step is dozens of tiny
kernels. Here the parameters of N models are stacked along a new leading dimension and
one forward runs all of them with ``torch.func.vmap`` over ``functional_call``
(PyTorch turns a vmapped convolution into one grouped convolution), so N models cost
one set of kernel launches.

- :func:`group_key`, :func:`batched_loss`, :func:`monitor_scores` (with
  :func:`reuse.toolkit.scoring.stack_states`): what the one training algorithm needs to
  run its step on a group of models, vmapped; each member gets what it would get alone
  (its own theta_0, batch order, Adam state, freeze mask, BN running statistics and
  history), up to float rounding. Batched *scoring* is the toolkit's
  (:func:`reuse.toolkit.scoring.evaluate_states`).

Stacked tensors are ``[N, *shape]`` for every state entry (parameters and BN buffers).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.func import functional_call, vmap

from reuse.toolkit.metrics import loss
from reuse.toolkit.scoring import score_stacked


def group_key(spec, runner) -> tuple:
    """Specs with equal keys can be trained together (``reuse.study.training.train._fit`` on a group).

    The same architecture, task, width, depth, image size, optimiser settings, steps and
    batch size, and data of the same shape (training-set size, input and target shapes,
    number of outputs, resolved through ``runner``); pair, domain, seeds, block,
    ``init_from`` and ``freeze`` may differ.
    """
    x, y = runner.train_split(spec)
    return (spec.architecture, spec.task, spec.width, spec.depth, spec.image_size, spec.steps,
            spec.batch_size, spec.lr, spec.weight_decay, len(x), tuple(x.shape[1:]),
            tuple(y.shape[1:]), str(y.dtype), runner.n_outputs(spec))


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
            for m, s in zip(members, score_stacked(model, p, b, mx, my, task, n_out, (metric,),
                                                    precision=precision)):
                scores[m] = s[metric]
    model.train()
    return scores
