"""Many same-architecture models at once: grouped training and batched scoring.

Small CNNs leave a device (and a 2-core CPU) mostly idle: each step is dozens of tiny
kernels. Here the parameters of N models are stacked along a new leading dimension and
one forward runs all of them with ``torch.func.vmap`` over ``functional_call``
(PyTorch turns a vmapped convolution into one grouped convolution), so N models cost
one set of kernel launches.

- :func:`train_group`: the specs of one :func:`group_key` trained together; each member
  gets exactly what ``Runner._fit`` would give it (its own theta_0, batch order, Adam
  state, freeze mask, BN running statistics and history), up to float rounding.
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

from .gpu import autocast, batch_indices
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
                   max_images: int | None = None) -> list[dict[str, float]]:
    """Metrics of each stacked member on the same ``x``, ``y`` (model in eval mode)."""
    n = next(iter(params.values())).shape[0]
    batch = max(1, _max_images(x.device, max_images) // n)
    was_training = model.training
    model.eval()
    accs = [_accumulator(task, n_outputs, x.device, metrics) for _ in range(n)]
    try:
        for i in range(0, len(x), batch):
            with autocast(x.device):
                out = _forward(model, params, buffers, x[i:i + batch], shared_x=True)
            for m, acc in enumerate(accs):
                acc.update(predict(task, out[m]), y[i:i + batch])
    finally:
        model.train(was_training)
    return [acc.compute() for acc in accs]


def evaluate_states(model: nn.Module, states: Sequence[dict[str, torch.Tensor]], x: torch.Tensor,
                    y: torch.Tensor, task: str, n_outputs: int, metric: str | None = None,
                    chunk: int = 16, max_images: int | None = None) -> list[float]:
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
    pnames, bnames = _split_names(model)
    check_states(model, states)
    ref = model.state_dict()
    dtypes = {k: ref[k].dtype for k in (*pnames, *bnames)}
    device = x.device
    out: list[float] = []
    for start in range(0, len(states), chunk):
        part = states[start:start + chunk]
        params = _stack(part, pnames, device, dtypes)
        buffers = _stack(part, bnames, device, dtypes)
        scores = _score_stacked(model, params, buffers, x, y, task, n_outputs, (metric,), max_images)
        out += [s[metric] for s in scores]
    return out


def bn_cancelled_keys(model: nn.Module) -> list[str]:
    """State keys whose training trajectory is float rounding: the bias of every conv
    directly followed by BatchNorm, and that BN's ``running_mean``.

    BN subtracts the batch mean, so such a bias has a true gradient of 0; Adam divides
    its rounding-level gradient by its own rounding-level scale and moves it by up to
    ``lr`` per step in a direction set by rounding. Two implementations that agree to
    1e-6 elsewhere differ there (and in the running mean that tracks the bias), which
    changes nothing downstream in training mode. Comparisons leave these keys out.
    """
    out = []
    for name, module in model.named_modules():
        children = list(module.named_children())
        for (n1, a), (n2, b) in zip(children, children[1:]):
            if (isinstance(a, (nn.Conv2d, nn.ConvTranspose2d)) and a.bias is not None
                    and isinstance(b, nn.modules.batchnorm._BatchNorm)):
                prefix = f"{name}." if name else ""
                out += [f"{prefix}{n1}.bias", f"{prefix}{n2}.running_mean"]
    return out


# ----------------------------------------------------------------------------- training
def group_key(spec, runner) -> tuple:
    """Specs with equal keys can be trained together by :func:`train_group`.

    The same architecture, task, width, depth, optimiser settings, epochs and batch size,
    and data of the same shape (training-set size, input and target shapes, number of
    outputs, resolved through ``runner``); pair, domain, seeds, ``init_from`` and
    ``freeze`` may differ.
    """
    x, y = runner.split(spec.pair, spec.domain, spec.task, "train", spec.data_seed, spec.shift,
                        spec.n_train)
    return (spec.architecture, spec.task, spec.width, spec.depth, spec.epochs, spec.batch_size,
            spec.lr, spec.weight_decay, len(x), tuple(x.shape[1:]), tuple(y.shape[1:]),
            str(y.dtype), runner.n_outputs(spec))


def train_group(runner, specs: Sequence) -> list:
    """Train ``specs`` (one :func:`group_key`) together; one ``TrainedRun`` each, in order.

    Per member, the same as ``runner._fit(spec)``: theta_0 from ``runner.initial_state``;
    batches from its own ``order_seed`` generator (the same index sequence); one Adam over
    the stacked parameters, which is elementwise and so the same as one Adam per member;
    frozen entries get zero gradients (weight decay is applied here, not by Adam, so it
    never moves them; with zero gradients Adam's moments stay 0 and its update is 0);
    BN running statistics are stacked buffers updated per member. Does not use the cache.
    """
    from .train import MONITOR_SIZE, TrainedRun  # train imports this module

    specs = list(specs)
    if not specs:
        return []
    keys = {group_key(s, runner) for s in specs}
    if len(keys) > 1:
        raise ValueError(f"specs of different groups cannot train together: {sorted(map(str, keys))[:2]}")
    device, first, n = runner.device, specs[0], len(specs)
    model = runner.build(first).to(device).train()
    pnames, bnames = _split_names(model)
    dtypes = {k: v.dtype for k, v in model.state_dict().items()}
    states = [runner.initial_state(s) for s in specs]
    params = _stack(states, pnames, device, dtypes)
    buffers = _stack(states, bnames, device, dtypes)

    # freeze masks: 1 = trained, 0 = frozen for that member
    masks = {}
    for m, s in enumerate(specs):
        unknown = set(s.freeze) - set(pnames)
        if unknown:
            raise ValueError(f"freeze names unknown parameters: {sorted(unknown)[:5]}")
        for name in s.freeze:
            masks.setdefault(name, torch.ones(n, device=device))[m] = 0.0
    masks = {k: v.view(-1, *[1] * (params[k].dim() - 1)).to(params[k].dtype) for k, v in masks.items()}
    leaves = [params[k].requires_grad_(True) for k in pnames]

    data = [runner.split(s.pair, s.domain, s.task, "train", s.data_seed, s.shift, s.n_train)
            for s in specs]
    shared = all(d[0] is data[0][0] for d in data)
    n_train = len(data[0][0])
    steps = first.epochs * math.ceil(n_train / first.batch_size)
    opt = torch.optim.Adam(leaves, lr=first.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    gens = [torch.Generator().manual_seed(s.order_seed) for s in specs]

    monitor = []  # per member: its monitor split (shared objects where the split is the same)
    for s in specs:
        n_mon = min(MONITOR_SIZE, runner.available(s.pair, s.domain, "test"))
        monitor.append(runner.split(s.pair, s.domain, s.task, "test", s.data_seed, s.shift, n_mon))
    metric, n_out = PRIMARY[first.task], runner.n_outputs(first)

    def member_loss(p, b, xb, yb):
        return loss(first.task, functional_call(model, (p, b), (xb,), tie_weights=False), yb)

    batched_loss = vmap(member_loss, in_dims=(0, 0, 0, 0))
    histories: list[list[dict]] = [[] for _ in specs]
    for epoch in range(first.epochs):
        total = torch.zeros(n, device=device)
        orders = [batch_indices(n_train, first.batch_size, device, g) for g in gens]
        for idxs in zip(*orders):
            if shared:
                x, y = data[0]
                idx = torch.stack(idxs)
                xb, yb = x[idx], y[idx]
            else:
                xb = torch.stack([d[0][i] for d, i in zip(data, idxs)])
                yb = torch.stack([d[1][i] for d, i in zip(data, idxs)])
            with autocast(device):
                losses = batched_loss(params, buffers, xb, yb)
            opt.zero_grad(set_to_none=True)
            losses.sum().backward()
            with torch.no_grad():
                for k in pnames:
                    g, p = params[k].grad, params[k]
                    if k in masks:
                        g.mul_(masks[k])
                    if first.weight_decay:
                        g.add_(p * masks[k] if k in masks else p, alpha=first.weight_decay)
            opt.step()
            sched.step()
            total += losses.detach() * len(idxs[0])
        scores = _history_scores(model, params, buffers, monitor, first.task, n_out, metric)
        for m in range(n):
            histories[m].append({"epoch": epoch + 1, "loss": float(total[m]) / n_train,
                                 metric: scores[m]})
    model.train()
    out = []
    for m, s in enumerate(specs):
        state = {k: (params[k] if k in params else buffers[k])[m].detach()
                 .to("cpu", torch.float32 if dtypes[k].is_floating_point else dtypes[k])
                 .contiguous().clone() for k in model.state_dict()}
        out.append(TrainedRun(s, state, histories[m], extra={"group_size": n}))
    return out


def _history_scores(model, params, buffers, monitor, task, n_out, metric) -> list[float]:
    """The primary metric of each member on its own monitor split (members sharing a
    split are scored in one batched pass)."""
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
            for m, s in zip(members, _score_stacked(model, p, b, mx, my, task, n_out, (metric,))):
                scores[m] = s[metric]
    return scores

