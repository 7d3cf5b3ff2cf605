"""The one training algorithm: a model, its data and its specs in, trained runs out.

A step is the task loss of a batch, its gradient (zeroed for frozen parameters, plus
weight decay), one Adam update and one cosine learning-rate step. A single model runs it
on its own parameters; a group of same-shape models (:mod:`reuse.study.training.group`) runs the
same step vmapped over stacked parameters. Nothing here knows the run cache or where
data comes from: :class:`reuse.study.training.train.Runner` prepares both.
"""

from __future__ import annotations

import torch
from torch import nn

from reuse.toolkit.gpu import autocast, compiled, prepare_model
from reuse.toolkit.metrics import PRIMARY_METRIC, evaluate, loss
from reuse.toolkit.scoring import stack_states

from . import group
from .spec import RunSpec, TrainedRun

HISTORY_POINTS = 8  # evenly spaced points of the learning curve each run records
Split = tuple[torch.Tensor, torch.Tensor]  # (inputs, targets) on the training device


def history_steps(steps: int) -> list[int]:
    """The steps after which the learning curve is scored: HISTORY_POINTS, evenly spaced."""
    return sorted({max(1, round(steps * (i + 1) / HISTORY_POINTS)) for i in range(HISTORY_POINTS)})


def batches(n: int, batch_size: int, device: torch.device, generator: torch.Generator):
    """Endless index batches of ``min(batch_size, n)`` samples: one seeded permutation per
    pass over the data, its last partial batch dropped (every step sees a full batch)."""
    size = min(batch_size, n)
    while True:
        order = torch.randperm(n, generator=generator).to(device)
        for start in range(0, n - size + 1, size):
            yield order[start:start + size]


def fit(model: nn.Module, specs: list[RunSpec], states: list[dict[str, torch.Tensor]],
        data: list[Split], monitor: list[Split], *, n_outputs: int, device: torch.device,
        precision: str = "fp32", threads: int = 1, compile_forward: bool = False) -> list[TrainedRun]:
    """Train ``specs`` (one, or a group of same-shape specs, vmapped) and return their runs.

    ``model``: the architecture (on the CPU; its own weights are not used). Per member:
    ``states[m]`` is where training starts (theta_0, with any inherited keys); ``data[m]``
    the samples it trains on and ``monitor[m]`` the test samples of its learning curve;
    batches come from its own ``order_seed`` generator; Adam over its parameters (Adam is
    elementwise, so one Adam over stacked parameters is one Adam per member); frozen
    parameters get zero gradients (with zero gradients from the start, Adam's moments and
    update stay 0; weight decay is added to the gradient here, masked the same way); BN
    running statistics are updated per member. The optimiser settings are the first
    spec's (a group shares them). ``threads`` is recorded with the run, not set here.
    """
    first, n = specs[0], len(specs)
    task = first.task
    pnames = [k for k, _ in model.named_parameters()]
    for s in specs:
        unknown = set(s.freeze) - set(pnames)
        if unknown:
            raise ValueError(f"freeze names unknown parameters: {sorted(unknown)[:5]}")
    n_train = len(data[0][0])
    if n == 1:
        model.load_state_dict(states[0])
        model = prepare_model(model, device).train()
        params = dict(model.named_parameters())
        forward = compiled(model, compile_forward)

        def losses(xb, yb):
            return loss(task, forward(xb), yb).unsqueeze(0)
    else:
        model = model.to(device).train()
        params, buffers = stack_states(states, model, device)
        batched = group.batched_loss(model, task)

        def losses(xb, yb):
            return batched(params, buffers, xb, yb)
    leaves = [params[k].requires_grad_(True) for k in pnames]
    shape = [n] if n > 1 else []
    masks = {}
    for m, s in enumerate(specs):
        for name in s.freeze:
            masks.setdefault(name, torch.ones(shape, device=device))[m if n > 1 else ...] = 0.0
    masks = {k: v.view(*v.shape, *[1] * (params[k].dim() - v.dim())) for k, v in masks.items()}
    # fused: one kernel for all parameters, 0.5 instead of 1.2 ms of a 15 ms UNet step on 1 thread
    opt = torch.optim.Adam(leaves, lr=first.lr, weight_decay=0.0, fused=device.type in ("cpu", "cuda"))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, first.steps)
    streams = [batches(n_train, first.batch_size, device, torch.Generator().manual_seed(s.order_seed))
               for s in specs]
    metric = PRIMARY_METRIC[task]
    checkpoints = set(history_steps(first.steps))
    histories: list[list[dict]] = [[] for _ in specs]
    total, count = torch.zeros(n, device=device), 0
    for step in range(1, first.steps + 1):
        idxs = [next(stream) for stream in streams]
        if n == 1:
            xb, yb = data[0][0][idxs[0]], data[0][1][idxs[0]]
        else:
            xb = torch.stack([d[0][i] for d, i in zip(data, idxs)])
            yb = torch.stack([d[1][i] for d, i in zip(data, idxs)])
        with autocast(device, precision):
            batch_losses = losses(xb, yb)
        opt.zero_grad(set_to_none=True)
        batch_losses.sum().backward()
        with torch.no_grad():
            for k in pnames:
                g, p = params[k].grad, params[k]
                if k in masks:
                    g.mul_(masks[k])
                if first.weight_decay:
                    g.add_(p * masks[k] if k in masks else p, alpha=first.weight_decay)
        opt.step()
        sched.step()
        total += batch_losses.detach()
        count += 1
        if step in checkpoints:
            if n == 1:
                scores = [evaluate(model, *monitor[0], task, n_outputs, metrics=(metric,),
                                   precision=precision)[metric]]
                model.train()
            else:
                scores = group.monitor_scores(model, params, buffers, monitor, task, n_outputs, metric,
                                              precision)
            for m in range(n):
                histories[m].append({"step": step, "loss": float(total[m]) / count, metric: scores[m]})
            total, count = torch.zeros(n, device=device), 0
    if n == 1:
        finals = [model.state_dict()]
    else:
        finals = [{k: (params[k] if k in params else buffers[k])[m] for k in model.state_dict()}
                  for m in range(n)]
    return [TrainedRun(s, {k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype)
                           .contiguous().clone() for k, v in final.items()}, h,
                       extra={"group_size": n, "threads": threads, "precision": precision})
            for s, final, h in zip(specs, finals, histories)]
