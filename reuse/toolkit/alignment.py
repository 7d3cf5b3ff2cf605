"""Permutation alignment of two networks' channels before a kernel distance is taken.

Two networks can compute one function with their hidden channels in another order, so a
raw distance between their kernels (:func:`reuse.toolkit.criteria.kernel_rmse`) can be large for
equivalent networks. Weight matching (Ainsworth, Hayase & Srinivasa 2023, "Git Re-Basin:
Merging Models modulo Permutation Symmetries", ICLR, algorithm 1) permutes the SOURCE
model's channels to best match the TARGET's: coordinate descent over permutation groups,
each step a linear assignment (``scipy.optimize.linear_sum_assignment``) maximising
``sum <W_T, P W_S>`` over every weight that the group's permutation touches.

Entry points:

- :func:`permutation_spec`: which channels can be permuted, read from the model graph
  (``torch.fx.symbolic_trace``). A conv/linear output starts a group; per-channel ops
  (BatchNorm, activations, pooling, dropout, interpolation, depthwise convs) carry it to
  the input dim of the consuming conv/linear; a residual ``add``/``mul`` ties the groups
  of its operands into one (union-find, as Git Re-Basin's ResNet spec); a channel ``cat``
  gives the consumer's input dim one block per group; ``flatten(x, 1)`` feeding a Linear
  gives blocks of ``in_features / C`` inputs per channel. Groups that reach the network
  output, the network input or an op not modelled here stay fixed (identity), with the
  reason.
- :func:`weight_matching`: the permutation of every group, ``{group: LongTensor[n]}``. Its
  cost uses learnt parameters only: BN running statistics are permuted along but describe
  the data a model last saw, not what it learnt, and their scale would outweigh the kernels.
- :func:`apply_permutation`: a permuted copy of a state dict (conv/linear weights and
  biases, BN weights, biases and running statistics); the network's function is unchanged.
- :func:`aligned_kernel_rmse`: one row per layer (every kind by default), raw and aligned RMSE.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import fx, nn

from .checkpoints import ModelLike, load_state
from .criteria import kernel_rmse

COLUMNS = ["layer", "permuted", "reason", "rmse", "aligned_rmse", "rel_rmse", "aligned_rel_rmse"]

# Ops that act on each channel alone, so a channel permutation passes through them.
_PASS_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid,
                 nn.Tanh, nn.Hardswish, nn.Hardsigmoid, nn.Identity, nn.Dropout, nn.Dropout2d,
                 nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
                 nn.Upsample, nn.UpsamplingBilinear2d, nn.UpsamplingNearest2d)
_PASS_FUNCTIONS = {F.relu, torch.relu, F.relu6, F.leaky_relu, F.elu, F.gelu, F.silu,
                   F.hardswish, F.hardsigmoid, torch.sigmoid, F.sigmoid, torch.tanh, F.dropout,
                   F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d,
                   F.interpolate}
_PASS_METHODS = {"relu", "relu_", "sigmoid", "tanh", "contiguous", "clone", "detach"}
# Element-wise binary ops: both operands must share one permutation.
_BINARY_FUNCTIONS = {operator.add, operator.iadd, operator.mul, operator.imul, operator.sub,
                     torch.add, torch.mul, torch.sub}
_BINARY_METHODS = {"add", "add_", "mul", "mul_", "sub", "sub_"}
# Reading a tensor's metadata does not depend on its channel order.
_META_ATTRS = {"shape", "dtype", "device", "ndim"}
_META_METHODS = {"size", "dim"}
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
_NORM_KEYS = ("weight", "bias", "running_mean", "running_var")


class Slot(NamedTuple):
    """Where a group's permutation acts: entries ``(offset + c) * inner + r`` (channel
    ``c < size``, ``r < inner``) of dim ``axis`` of state tensor ``key``. ``inner > 1`` for
    a Linear after ``flatten``; ``offset > 0`` for a later block of a channel ``cat``."""
    key: str
    axis: int
    offset: int = 0
    size: int = 0
    inner: int = 1


class LayerStatus(NamedTuple):
    """Whether a conv layer's output channels are permuted; ``group`` names the group
    (empty when fixed) and ``reason`` says why not (empty when permuted)."""
    permuted: bool
    group: str
    reason: str


@dataclass(frozen=True)
class PermutationSpec:
    """``groups``: permutable group -> the slots its permutation acts on; ``sizes``: group
    -> channel count; ``layers``: every conv layer -> :class:`LayerStatus` of its output
    channels (its input channels follow the group of the layer before it); ``buffers``:
    the slots' state keys that are not learnt parameters (BN running statistics), permuted
    along but left out of :func:`weight_matching`'s cost."""
    groups: dict[str, tuple[Slot, ...]]
    sizes: dict[str, int]
    layers: dict[str, LayerStatus]
    buffers: frozenset[str] = frozenset()

    def by_key(self) -> dict[str, list[tuple[str, Slot]]]:
        """State key -> ``(group, slot)`` pairs acting on it."""
        out: dict[str, list[tuple[str, Slot]]] = {}
        for group, slots in self.groups.items():
            for slot in slots:
                out.setdefault(slot.key, []).append((group, slot))
        return out


@dataclass
class _Value:
    """A traced tensor: the groups of its channel blocks, in order; ``flat`` for a 2-D
    ``[N, features]`` tensor, whose ``inner`` features per channel (1 after a Linear,
    None after ``flatten`` until a Linear fixes it)."""
    blocks: tuple[int, ...]
    flat: bool = False
    inner: int | None = 1


class _Groups:
    """Union-find over channel groups, each with a size, slots and a reason to stay fixed."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.names: list[str] = []
        self.sizes: list[int | None] = []
        self.slots: list[list[Slot]] = []
        self.reasons: list[str] = []

    def new(self, name: str, size: int | None, reason: str = "") -> int:
        self.parent.append(len(self.parent))
        self.names.append(name)
        self.sizes.append(size)
        self.slots.append([])
        self.reasons.append(reason)
        return len(self.parent) - 1

    def find(self, g: int) -> int:
        while self.parent[g] != g:
            self.parent[g] = self.parent[self.parent[g]]
            g = self.parent[g]
        return g

    def size(self, g: int) -> int | None:
        return self.sizes[self.find(g)]

    def fix(self, g: int, reason: str) -> None:
        root = self.find(g)
        self.reasons[root] = self.reasons[root] or reason

    def union(self, a: int, b: int, why: str) -> None:
        ra, rb = sorted((self.find(a), self.find(b)))
        if ra == rb:
            return
        if None not in (self.sizes[ra], self.sizes[rb]) and self.sizes[ra] != self.sizes[rb]:
            self.fix(ra, f"{why} with a tensor of another channel count")
            self.fix(rb, f"{why} with a tensor of another channel count")
            return
        self.parent[rb] = ra
        self.sizes[ra] = self.sizes[ra] if self.sizes[ra] is not None else self.sizes[rb]
        self.slots[ra] += self.slots[rb]
        self.reasons[ra] = self.reasons[ra] or self.reasons[rb]


class _Tracer:
    """Walks an fx graph once, building the groups of :func:`permutation_spec`."""

    def __init__(self, model: nn.Module):
        try:
            self.graph = fx.symbolic_trace(model).graph
        except Exception as err:  # fx raises TraceError, TypeError, RuntimeError, ...
            raise ValueError(f"cannot trace {type(model).__name__} with torch.fx.symbolic_trace "
                             f"({type(err).__name__}: {err}); allowed: models without "
                             "data-dependent control flow") from err
        self.modules = dict(model.named_modules())
        self.keys = set(model.state_dict())
        self.groups = _Groups()
        self.values: dict[fx.Node, _Value | None] = {}
        self.layer_groups: dict[str, tuple[int, ...]] = {}

    def run(self) -> None:
        for node in self.graph.nodes:
            self.values[node] = self._visit(node)

    def _inputs(self, node: fx.Node) -> list[_Value]:
        found: list[_Value] = []
        fx.node.map_arg((node.args, node.kwargs),
                        lambda n: found.append(self.values[n]) if self.values[n] else None)
        return found

    def _unknown(self, node: fx.Node, what: str, why: str = "") -> _Value:
        reason = why or f"feeds {what}, not modelled"
        for value in self._inputs(node):
            for g in value.blocks:
                self.groups.fix(g, reason)
        return _Value((self.groups.new(str(node), None, f"comes from {what}, not modelled"),))

    def _slots(self, value: _Value, key: str, axis: int, inner: int = 1) -> None:
        offset = 0
        for g in value.blocks:
            size = self.groups.size(g)
            self.groups.slots[self.groups.find(g)].append(Slot(key, axis, offset, size, inner))
            offset += size

    def _known(self, value: _Value) -> int | None:
        sizes = [self.groups.size(g) for g in value.blocks]
        return None if None in sizes else sum(sizes)

    def _visit(self, node: fx.Node) -> _Value | None:
        if node.op == "placeholder":
            return _Value((self.groups.new("input", None, "tied to the network input"),))
        if node.op == "output":
            for value in self._inputs(node):
                for g in value.blocks:
                    self.groups.fix(g, "reaches the network output")
            return None
        if node.op == "get_attr":
            return None
        first = self.values.get(node.args[0]) if node.args and isinstance(node.args[0], fx.Node) \
            else None
        if node.op == "call_module":
            return self._module(node, self.modules[node.target], first)
        if not self._inputs(node):
            return None                         # arithmetic on shapes or constants
        target = node.target
        if node.op == "call_function" and target is getattr and node.args[1] in _META_ATTRS \
                or node.op == "call_method" and target in _META_METHODS:
            return None
        if target in _PASS_FUNCTIONS or node.op == "call_method" and target in _PASS_METHODS:
            return first
        if target in _BINARY_FUNCTIONS or node.op == "call_method" and target in _BINARY_METHODS:
            return self._binary(node)
        if target is torch.cat:
            return self._cat(node)
        if target is torch.flatten or node.op == "call_method" and target == "flatten":
            start = node.args[1] if len(node.args) > 1 else \
                node.kwargs.get("start_dim", 0)
            end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
            return self._flatten(node, first, start, end)
        name = getattr(target, "__name__", str(target))
        return self._unknown(node, f"{node.op} {name}")

    def _module(self, node: fx.Node, module: nn.Module, value: _Value | None) -> _Value | None:
        name = node.target
        kind = type(module).__name__
        if value is None:
            return self._unknown(node, f"{name} ({kind})")
        if isinstance(module, _PASS_MODULES):
            return value
        if isinstance(module, nn.Flatten):
            return self._flatten(node, value, module.start_dim, module.end_dim)
        if isinstance(module, _NORMS) and (not value.flat or value.inner == 1):
            for key in _NORM_KEYS:
                if f"{name}.{key}" in self.keys:
                    self._slots(value, f"{name}.{key}", 0)
            return value
        is_conv = isinstance(module, (nn.Conv2d, nn.ConvTranspose2d))
        if is_conv and module.groups > 1 and module.groups == module.in_channels \
                == module.out_channels and not value.flat:
            self.layer_groups[name] = value.blocks    # depthwise: one filter per channel
            for key in (f"{name}.weight", f"{name}.bias"):
                if key in self.keys:
                    self._slots(value, key, 0)
            return value
        if not (is_conv and module.groups == 1 or isinstance(module, nn.Linear)):
            return self._unknown(node, f"{name} ({kind})")
        if name in self.layer_groups:
            return self._unknown(node, name, f"feeds {name}, which is called more than once")
        transposed = isinstance(module, nn.ConvTranspose2d)
        n_in = module.in_features if isinstance(module, nn.Linear) else module.in_channels
        total = self._known(value)
        inner = 1 if not value.flat or value.inner else \
            (n_in // total if total and n_in % total == 0 else None)
        if value.flat != isinstance(module, nn.Linear) or total is None or inner is None \
                or total * inner != n_in:
            why = f"feeds {name} ({kind}) with a channel layout not modelled"
            for g in value.blocks:
                self.groups.fix(g, why)
        else:
            self._slots(value, f"{name}.weight", 0 if transposed else 1, inner)
        n_out = module.out_features if isinstance(module, nn.Linear) else module.out_channels
        g = self.groups.new(name, n_out)
        self.layer_groups[name] = (g,)
        out_axis = 1 if transposed else 0
        self.groups.slots[g].append(Slot(f"{name}.weight", out_axis, 0, n_out))
        if f"{name}.bias" in self.keys:
            self.groups.slots[g].append(Slot(f"{name}.bias", 0, 0, n_out))
        return _Value((g,), flat=isinstance(module, nn.Linear))

    def _flatten(self, node: fx.Node, value: _Value | None, start: int, end: int) -> _Value:
        if value is None or start != 1 or end != -1:
            return self._unknown(node, f"flatten(start_dim={start}, end_dim={end})")
        return value if value.flat else _Value(value.blocks, flat=True, inner=None)

    def _binary(self, node: fx.Node) -> _Value:
        operands = [self.values[a] for a in node.args[:2]
                    if isinstance(a, fx.Node) and self.values[a]]
        if len(operands) < 2:
            return operands[0]                        # tensor with a scalar
        a, b = operands
        for small, big in ((a, b), (b, a)):
            if len(small.blocks) == 1 and self.groups.size(small.blocks[0]) == 1 \
                    and small.flat == big.flat:
                return big                            # broadcast over channels
        if a.flat != b.flat or a.inner != b.inner or len(a.blocks) != len(b.blocks):
            return self._unknown(node, f"{node.target} of differently laid out tensors")
        for ga, gb in zip(a.blocks, b.blocks):
            self.groups.union(ga, gb, f"tied by {getattr(node.target, '__name__', node.target)}")
        return a

    def _cat(self, node: fx.Node) -> _Value:
        tensors = node.args[0] if node.args else node.kwargs.get("tensors")
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        values = [self.values.get(t) if isinstance(t, fx.Node) else None for t in tensors]
        if dim != 1 or None in values or any(v.flat and v.inner != 1 for v in values):
            return self._unknown(node, f"cat(dim={dim})")
        return _Value(tuple(g for v in values for g in v.blocks), flat=values[0].flat)


def permutation_spec(model: nn.Module) -> PermutationSpec:
    """The permutation groups of ``model`` (see the module docstring), from one
    ``torch.fx.symbolic_trace``. Raises ValueError if the model cannot be traced."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model is a {type(model).__name__}; allowed: an nn.Module (its graph "
                        "is traced)")
    tracer = _Tracer(model)
    tracer.run()
    groups = tracer.groups
    roots = sorted({groups.find(g) for g in range(len(groups.parent))})
    free = [r for r in roots if not groups.reasons[r] and groups.sizes[r] and groups.slots[r]]
    spec_groups = {groups.names[r]: tuple(groups.slots[r]) for r in free}
    sizes = {groups.names[r]: groups.sizes[r] for r in free}
    layers = {}
    for name, module in tracer.modules.items():
        if not isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            continue
        if name not in tracer.layer_groups:
            layers[name] = LayerStatus(False, "", "not called in forward (or not traceable)")
            continue
        rs = [groups.find(g) for g in tracer.layer_groups[name]]
        reasons = [groups.reasons[r] for r in rs if groups.reasons[r] or r not in free]
        layers[name] = LayerStatus(not reasons, "+".join(groups.names[r] for r in rs),
                                   reasons[0] if reasons else "")
        if reasons:
            layers[name] = layers[name]._replace(group="")
    keys = {slot.key for slots in spec_groups.values() for slot in slots}
    return PermutationSpec(spec_groups, sizes, layers,
                           frozenset(keys - {name for name, _ in model.named_parameters()}))


def _index(length: int, slots: Iterable[tuple[Slot, torch.Tensor]]) -> torch.Tensor:
    """Gather index ``[length]`` for one dim: each slot's entries reordered by its perm."""
    index = torch.arange(length)
    for slot, perm in slots:
        block = (slot.offset + perm)[:, None] * slot.inner + torch.arange(slot.inner)
        start = slot.offset * slot.inner
        index[start:start + slot.size * slot.inner] = block.flatten()
    return index


def _permute(tensor: torch.Tensor, entries: list[tuple[str, Slot]],
             perms: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``tensor`` with every slot in ``entries`` permuted by its group's perm (a new tensor)."""
    for axis in sorted({slot.axis for _, slot in entries}):
        slots = [(slot, perms[g]) for g, slot in entries if slot.axis == axis and g in perms]
        index = _index(tensor.shape[axis], slots).to(tensor.device)
        tensor = tensor.index_select(axis, index)
    return tensor


def _check_state(spec: PermutationSpec, state: Mapping[str, torch.Tensor], what: str) -> None:
    for key, entries in spec.by_key().items():
        if key not in state:
            raise ValueError(f"{what}: key {key!r} of the permutation spec is missing; allowed: "
                             "a state of the traced architecture")
        for _, slot in entries:
            need = (slot.offset + slot.size) * slot.inner
            if state[key].ndim <= slot.axis or state[key].shape[slot.axis] < need:
                raise ValueError(f"{what}: {key} has shape {tuple(state[key].shape)}; the spec "
                                 f"needs >= {need} entries on dim {slot.axis}")


def apply_permutation(spec: PermutationSpec, perms: Mapping[str, torch.Tensor],
                      state: ModelLike) -> dict[str, torch.Tensor]:
    """A new state dict with each group's channels reordered by ``perms[group]``
    (``LongTensor[n]``: new channel ``i`` is old channel ``perms[group][i]``) in every slot of
    the group: conv/linear weights (output and input dims), biases, BN weights, biases and
    running statistics. Groups missing from ``perms`` stay as they are; unchanged tensors
    are shared with ``state``, which is not modified. The network's function is unchanged.
    """
    state = load_state(state, what="state")
    _check_state(spec, state, "state")
    checked = {}
    for group, perm in perms.items():
        if group not in spec.groups:
            raise ValueError(f"perms: unknown group {group!r}; allowed: {list(spec.groups)[:5]}")
        perm = torch.as_tensor(perm)
        n = spec.sizes[group]
        if perm.shape != (n,) or not torch.equal(perm.sort().values.cpu(), torch.arange(n)):
            raise ValueError(f"perms[{group!r}] is not a permutation of range({n}): "
                             f"{perm.tolist()[:10]}")
        checked[group] = perm.long().cpu()
    new = dict(state)
    for key, entries in spec.by_key().items():
        if any(g in checked for g, _ in entries):
            new[key] = _permute(state[key], entries, checked)
    return new


def _rows(tensor: torch.Tensor, slot: Slot) -> torch.Tensor:
    """The slot's channels as rows ``[size, rest]`` (every other entry of the tensor that
    multiplies that channel)."""
    block = tensor.narrow(slot.axis, slot.offset * slot.inner, slot.size * slot.inner)
    return block.unflatten(slot.axis, (slot.size, slot.inner)).movedim(slot.axis, 0) \
        .reshape(slot.size, -1)


def weight_matching(spec: PermutationSpec, source_state: ModelLike, target_state: ModelLike,
                    max_iter: int = 100, seed: int = 0, ignore: Iterable[str] = ()) -> dict[str, torch.Tensor]:
    """Permutations ``{group: LongTensor[n]}`` that align the source's channels to the
    target's (Ainsworth et al. 2023, algorithm 1), for :func:`apply_permutation` on the
    source.

    Coordinate descent from the identity: in each sweep the groups are visited in a
    random order (numpy generator seeded by ``seed``); a group's cost matrix
    ``C[i, j] = sum over its slots <W_T[i], W_S'[j]>`` (``W_S'``: the source with every
    other group's current perm applied) is one matmul of the concatenated slot rows
    ``[n, sum rest]``, float64, and ``linear_sum_assignment`` maximises ``trace``. Only
    learnt parameters enter the cost (not ``spec.buffers``). A perm is replaced only if it
    raises the objective; stops after a sweep without change or ``max_iter`` sweeps.

    Coordinate descent is a heuristic, and its objective also counts BN and linear
    parameters: if the result leaves the conv kernels farther from the target's (summed
    squared distance) than the identity does, the identity is returned, so that alignment
    never makes two networks look less alike than they are (e.g. two runs from one theta_0).
    Keys in ``ignore`` (e.g. a head whose classes differ between the two) enter neither the
    cost nor that check, and may differ in shape along the axes that are not permuted.
    Computed on the target's device; perms are CPU tensors.
    """
    if max_iter < 1:
        raise ValueError(f"max_iter={max_iter}; allowed: >= 1")
    source, target = load_state(source_state, what="source"), load_state(target_state, what="target")
    _check_state(spec, source, "source")
    _check_state(spec, target, "target")
    by_key, ignore = spec.by_key(), set(ignore)
    for key in set(by_key) - ignore:
        if source[key].shape != target[key].shape:
            raise ValueError(f"{key}: source {tuple(source[key].shape)} vs target "
                             f"{tuple(target[key].shape)}; allowed: one architecture")
    original = {key: source[key].detach().to(target[key].device, torch.float64) for key in by_key}
    current = dict(original)            # source with every current perm applied
    costed = {g: [s for s in slots if s.key not in spec.buffers and s.key not in ignore]
              for g, slots in spec.groups.items()}
    costed = {g: slots for g, slots in costed.items() if slots}  # a group of ignored keys only stays put
    rows_t = {g: torch.cat([_rows(target[s.key].detach().to(torch.float64), s) for s in slots], 1)
              for g, slots in costed.items()}
    perms = {g: torch.arange(n) for g, n in spec.sizes.items()}
    names = list(costed)
    rng = np.random.default_rng(seed)
    for _ in range(max_iter):
        changed = False
        for g in (names[i] for i in rng.permutation(len(names))):
            rows_s = torch.cat([_rows(current[s.key], s) for s in costed[g]], 1)
            # columns of rows_s are in the current order: undo it to index source channels
            cost = (rows_t[g] @ rows_s.T).cpu()[:, torch.argsort(perms[g])].numpy()
            _, best = linear_sum_assignment(cost, maximize=True)
            rows = np.arange(len(best))
            old, new = cost[rows, perms[g].numpy()].sum(), cost[rows, best].sum()
            if new - old > 1e-12 * max(abs(old), 1.0):
                perms[g] = torch.from_numpy(best).long()
                changed = True
                for key in {s.key for s in spec.groups[g]}:
                    current[key] = _permute(original[key], by_key[key], perms)
        if not changed:
            break
    kernels = [key for key in (f"{name}.weight" for name in spec.layers) if key in by_key and key not in ignore]
    target64 = {key: target[key].detach().to(torch.float64) for key in kernels}
    if _distance(current, target64, kernels) > _distance(original, target64, kernels):
        return {g: torch.arange(n) for g, n in spec.sizes.items()}
    return perms


def mismatched(source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]) -> list[str]:
    """Keys of both states whose shapes differ (a head with another number of classes): the
    ``ignore`` of :func:`weight_matching` for such a pair."""
    return [k for k, v in target.items() if k in source and source[k].shape != v.shape]


def _distance(source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor],
              keys: Iterable[str]) -> float:
    """Summed squared distance of the tensors ``keys`` of two states."""
    return sum(float((source[k] - target[k]).square().sum()) for k in keys)


def aligned_kernel_rmse(model: nn.Module, source: ModelLike, target: ModelLike,
                        layers: Iterable[str] | None = None, max_iter: int = 100,
                        seed: int = 0, ignore: Iterable[str] = ()) -> pd.DataFrame:
    """One row per layer (``layers=None``: every kind, :func:`reuse.toolkit.criteria.find_layers`): ``layer``, ``permuted`` (its output
    channels take part in the alignment), ``reason`` (why not), ``rmse``, ``aligned_rmse``,
    ``rel_rmse``, ``aligned_rel_rmse`` (float64; :func:`reuse.toolkit.criteria.kernel_rmse` before
    and after :func:`weight_matching` permutes the source). ``model`` (any instance of the
    architecture) gives the graph. A layer that is not permuted can still change when its
    input channels are. ``ignore``: keys left out of the matching besides those whose shapes
    differ (:func:`mismatched`), e.g. a source's layers that did not pair, filled from the target.
    """
    spec = permutation_spec(model)
    source_state, target = load_state(source, what="source"), load_state(target, what="target")
    perms = weight_matching(spec, source_state, target, max_iter=max_iter, seed=seed,
                            ignore=[*mismatched(source_state, target), *ignore])
    raw = kernel_rmse(source_state, target, layers)
    aligned = kernel_rmse(apply_permutation(spec, perms, source_state), target, raw["layer"])
    status = [spec.layers.get(name, LayerStatus(False, "", "not a traced conv layer"))
              for name in raw["layer"]]
    return pd.DataFrame({
        "layer": raw["layer"], "permuted": [s.permuted for s in status],
        "reason": [s.reason for s in status], "rmse": raw["rmse"],
        "aligned_rmse": aligned["rmse"].to_numpy(), "rel_rmse": raw["rel_rmse"],
        "aligned_rel_rmse": aligned["rel_rmse"].to_numpy()}, columns=COLUMNS)
