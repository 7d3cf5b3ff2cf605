"""Scoring many variants of one model on the same inputs, without repeating shared work.

E1 and E2 score dozens of states per (source, target) pair, and most differ from
another one only from some layer on: the suffix swaps and single-layer swaps agree
with the target up to their first swapped layer, the prefix swaps agree with the
all-kernels swap up to their last swapped layer. A forward pass is a sequence of
leaf-module calls; two states whose parameters agree on the first j calls give the
same first j outputs. :func:`score_states` sorts the states by their per-call
parameter identities, so each state follows the one it shares the longest prefix with
(a property of lexicographic order), and replays that state's first j call outputs
instead of computing them. Only the previous state's outputs are kept, one batch at a
time, so memory stays at one forward pass's activations.

Exact, not approximate: a replayed output is the tensor the same module computed from
the same input with the same parameters. Modules' ``inplace`` flags are off while
scoring, so a replayed output stays as it was recorded; a model whose forward code
still modifies a module's output in place (``h += 1``) is detected by a trial pass
and gets copies instead. A model whose call order depends on its input is refused.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from torch import nn
from torch.func import functional_call, vmap

from .gpu import autocast
from .metrics import PRIMARY_METRIC, _accumulator, predict


def check_states(model: nn.Module, states: Sequence[dict[str, torch.Tensor]]) -> None:
    """Raise ``ValueError`` naming the model entries some of ``states`` lack."""
    missing = sorted({k for k in model.state_dict() for s in states if k not in s})
    if missing:
        raise ValueError(f"states lack model entries {missing[:5]}")


def _leaves(model: nn.Module) -> dict[str, nn.Module]:
    return {name: m for name, m in model.named_modules() if not list(m.children())}


def _trial(model: nn.Module, leaves: dict[str, nn.Module], x: torch.Tensor) -> tuple[list[str], bool]:
    """One forward pass on ``x`` (outside inference mode, where tensors keep version
    counters): the leaf modules in call order (repeats included), and whether the forward
    code modified any leaf's output in place afterwards."""
    calls: list[str] = []
    outputs: list[tuple[torch.Tensor, int]] = []

    def record(module, args, out, name):
        calls.append(name)
        if isinstance(out, torch.Tensor):
            outputs.append((out, out._version))
    handles = [m.register_forward_hook(lambda mod, a, out, name=name: record(mod, a, out, name))
               for name, m in leaves.items()]
    try:
        with torch.inference_mode(False), torch.no_grad():
            model(x.clone())  # a normal tensor: an inference tensor's input gives inference outputs
    finally:
        for h in handles:
            h.remove()
    return calls, any(out._version != version for out, version in outputs)


def _owned_keys(model: nn.Module, leaves: dict[str, nn.Module]) -> dict[str, list[str]]:
    """State keys per leaf module, and under ``None`` those no leaf owns (a container's own
    parameters): a difference there is not tied to a call, so it rules out sharing."""
    owned = {}
    for name, module in leaves.items():
        prefix = f"{name}." if name else ""
        owned[name] = [prefix + k for k, _ in (*module.named_parameters(recurse=False),
                                               *module.named_buffers(recurse=False))]
    taken = {k for keys in owned.values() for k in keys}
    owned[None] = [k for k in model.state_dict() if k not in taken]
    return owned


def _identities(states: Sequence[dict[str, torch.Tensor]], owned: dict[str | None, list[str]]
                ) -> dict[str | None, list[int]]:
    """Per key group, a small integer per state: equal integers = equal tensors (by value)."""
    out = {}
    for name, keys in owned.items():
        distinct: list[list[torch.Tensor]] = []
        ids = []
        for s in states:
            entry = [s[k] for k in keys]
            match = next((i for i, d in enumerate(distinct)
                          if all(torch.equal(a, b) for a, b in zip(entry, d))), None)
            if match is None:
                distinct.append(entry)
                match = len(distinct) - 1
            ids.append(match)
        out[name] = ids
    return out


def _common_prefix(a: tuple, b: tuple | None) -> int:
    if b is None:
        return 0
    n = 0
    for u, v in zip(a, b):
        if u != v:
            break
        n += 1
    return n


@contextlib.contextmanager
def _inplace_off(leaves: dict[str, nn.Module]):
    """Modules' ``inplace`` flags off (``nn.ReLU(inplace=True)`` would overwrite a recorded output)."""
    flagged = [m for m in leaves.values() if getattr(m, "inplace", False)]
    for m in flagged:
        m.inplace = False
    try:
        yield
    finally:
        for m in flagged:
            m.inplace = True


class _Replay:
    """Patches each leaf module's ``forward`` to count calls, record their outputs and,
    for the first ``upto`` calls, return the recorded output of the previous pass
    (copies of it when ``copy``, for models that modify outputs in place)."""

    def __init__(self, leaves: dict[str, nn.Module], calls: list[str], copy: bool):
        self.leaves, self.calls, self.copy = leaves, calls, copy
        self.previous: list[torch.Tensor] = []
        self.current: list[torch.Tensor] = []
        self.upto = 0

    def __enter__(self):
        for name, module in self.leaves.items():
            module.forward = self._wrap(name, module.forward)  # instance attribute, removed on exit
        return self

    def __exit__(self, *exc):
        for module in self.leaves.values():
            del module.forward

    def start(self, upto: int) -> None:
        self.previous, self.current, self.upto = self.current, [], upto

    def _wrap(self, name: str, forward):
        def replaying(*args, **kwargs):
            e = len(self.current)
            if e >= len(self.calls) or self.calls[e] != name:
                raise RuntimeError(f"call {e} went to {name!r}, not {self.calls[e:e + 1]}: the "
                                   "model's call order depends on its input, so calls cannot be "
                                   "replayed; score states one at a time with metrics.evaluate")
            kept = self.previous[e] if e < self.upto else forward(*args, **kwargs)
            self.current.append(kept)
            return kept.clone() if self.copy else kept
        return replaying


@torch.inference_mode()
def score_states(model: nn.Module, states: Sequence[dict[str, torch.Tensor]], x: torch.Tensor,
                 y: torch.Tensor, task: str, n_outputs: int, metrics: tuple[str, ...] | None = None,
                 batch_size: int = 512, precision: str = "fp32") -> list[dict[str, float]]:
    """Metrics of ``model`` with each of ``states`` loaded, on ``x``, ``y`` (eval mode).

    The same numbers as ``[evaluate(model_with(s), x, y, ...) for s in states]``: each
    state's forward replays the leaf-module outputs it shares with the state scored
    before it (see the module docstring). ``model`` gives the architecture and device and
    gets its own state back at the end; ``states`` may live on any device; ``precision`` is
    fp32 unless asked, as in :func:`reuse.toolkit.metrics.evaluate`.
    """
    if not states:
        return []
    check_states(model, states)
    own = {k: v.clone() for k, v in model.state_dict().items()}
    was_training = model.training
    model.eval()
    leaves = _leaves(model)
    accs = [_accumulator(task, n_outputs, x.device, metrics) for _ in states]
    try:
        with _inplace_off(leaves):
            calls, modifies_outputs = _trial(model, leaves, x[:2])
            ids = _identities(states, _owned_keys(model, leaves))
            # first element: the entries no leaf owns; then one per call
            signature = [(ids[None][i], *(ids[name][i] for name in calls))
                         for i in range(len(states))]
            order = sorted(range(len(states)), key=signature.__getitem__)
            on_device = [{k: v.to(x.device) for k, v in s.items()} for s in states]  # moved once
            with _Replay(leaves, calls, copy=modifies_outputs) as replay:
                for start in range(0, len(x), batch_size):
                    xb, yb = x[start:start + batch_size], y[start:start + batch_size]
                    previous = None
                    for i in order:
                        model.load_state_dict(on_device[i])
                        replay.start(max(_common_prefix(signature[i], previous) - 1, 0))
                        with autocast(x.device, precision):
                            out = model(xb)
                        accs[i].update(predict(task, out), yb)
                        previous = signature[i]
    finally:
        model.load_state_dict(own)
        model.train(was_training)
    return [acc.compute() for acc in accs]


# ----------------------------------------------------------------------------- vmapped scoring
# member-images per batched forward when scoring: bounds activation memory. 512 on the CPU
# (as evaluate's batch; 4096 there thrashed memory and ran 7x slower), 4096 on a GPU
EVAL_IMAGES = {"cpu": 512, "cuda": 4096}


def _max_images(device: torch.device, max_images: int | None) -> int:
    return max_images if max_images is not None else EVAL_IMAGES.get(device.type, 512)


def stack_states(states: Sequence[dict[str, torch.Tensor]], model: nn.Module, device: torch.device
          ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(parameters, buffers) of ``states`` stacked ``[N, *shape]`` on ``device``, in the
    dtypes of ``model``'s entries."""
    pnames, bnames = _split_names(model)
    dtypes = {k: v.dtype for k, v in model.state_dict().items()}
    return _stack(states, pnames, device, dtypes), _stack(states, bnames, device, dtypes)


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
def score_stacked(model: nn.Module, params: dict, buffers: dict, x: torch.Tensor,
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
    metric = PRIMARY_METRIC[task] if metric is None else metric
    check_states(model, states)
    out: list[float] = []
    for start in range(0, len(states), chunk):
        params, buffers = stack_states(states[start:start + chunk], model, x.device)
        scores = score_stacked(model, params, buffers, x, y, task, n_outputs, (metric,), max_images,
                                precision)
        out += [s[metric] for s in scores]
    return out
