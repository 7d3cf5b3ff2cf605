"""Parameter surgery: a target model with a parameter set P taken from a source model.

P is a set of ``state_dict`` keys, chosen by layer (module) names, by prefix/suffix of
the conv-layer order, and by parameter type (:data:`PARAM_TYPES`). Nothing here
mutates its inputs: every function returns a new state or a new model.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

PARAM_TYPES = ("conv_weight", "conv_bias", "bn_weight", "bn_bias", "bn_running_mean",
               "bn_running_var")
KERNEL_TYPES = ("conv_weight", "conv_bias")  # what "reusing a conv layer" swaps by default
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_SUFFIX_TYPE = {
    ("conv", "weight"): "conv_weight", ("conv", "bias"): "conv_bias",
    ("bn", "weight"): "bn_weight", ("bn", "bias"): "bn_bias",
    ("bn", "running_mean"): "bn_running_mean", ("bn", "running_var"): "bn_running_var",
}


def parameter_types(model: nn.Module) -> dict[str, tuple[str, str]]:
    """state key -> (module name, parameter type) for every conv and BN entry.

    BN's ``num_batches_tracked`` counter has no type: it is never swapped.
    """
    out = {}
    for name, module in model.named_modules():
        kind = "conv" if isinstance(module, _CONV) else "bn" if isinstance(module, _BN) else None
        if kind is None:
            continue
        for attr, _ in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
            ptype = _SUFFIX_TYPE.get((kind, attr))
            if ptype is not None:
                out[f"{name}.{attr}" if name else attr] = (name, ptype)
    return out


def check_compatible(target: dict[str, torch.Tensor] | nn.Module,
                     source: dict[str, torch.Tensor] | nn.Module, keys: Iterable[str] | None = None,
                     names: tuple[str, str] = ("target", "source")) -> None:
    """Raise ``ValueError`` listing the first mismatched names or shapes of two models. Names
    must match everywhere; shapes only on ``keys`` when given (a source whose head has
    another number of classes can still give every other layer). ``names``: what the
    message calls ``target`` and ``source``."""
    t, s = (_state(m) for m in (target, source))
    tn, sn = names
    shaped = set(t) if keys is None else set(_names("keys", keys))
    problems = [f"only in {tn}: {k}" for k in t if k not in s]
    problems += [f"only in {sn}: {k}" for k in s if k not in t]
    problems += [f"shape of {k}: {tn} {tuple(t[k].shape)} vs {sn} {tuple(s[k].shape)}"
                 for k in t if k in s and k in shaped and t[k].shape != s[k].shape]
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise ValueError(f"{sn} and {tn} architectures differ: " + "; ".join(problems[:5]) + more)


def _names(name: str, values) -> list | None:
    """``values`` as a list of names; a plain string (which would be split into characters)
    is refused."""
    if values is None:
        return None
    if isinstance(values, (str, bytes)):
        raise ValueError(f"{name}={values!r}: a single string; pass a list such as [{values!r}]")
    return list(values)


def select_keys(model: nn.Module, layers: Iterable[str] | None = None,
                types: Iterable[str] | None = None) -> list[str]:
    """State keys of the given modules (all conv/BN modules when None), of the given types
    (all of :data:`PARAM_TYPES` when None), in state-dict order."""
    layers = _names("layers", layers)
    types = tuple(PARAM_TYPES if types is None else _names("types", types))
    bad = [t for t in types if t not in PARAM_TYPES]
    if bad:
        raise ValueError(f"unknown parameter types {bad}; allowed: {', '.join(PARAM_TYPES)}")
    table = parameter_types(model)
    if layers is not None:
        layers = list(layers)
        known = {module for module, _ in table.values()}
        unknown = [name for name in layers if name not in known]
        if unknown:
            raise ValueError(f"unknown layers {unknown[:5]}; known conv/BN modules include "
                             f"{sorted(known)[:5]}")
        layers = set(layers)
    return [k for k, (module, ptype) in table.items()
            if ptype in types and (layers is None or module in layers)]


def _count(k, layers: list[str]) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k <= len(layers):
        raise ValueError(f"k={k!r}; allowed: an integer 0..{len(layers)}")
    return int(k)


def prefix(layers: list[str], k: int) -> list[str]:
    """The first ``k`` layers (0 <= k <= len)."""
    return layers[:_count(k, layers)]


def suffix(layers: list[str], k: int) -> list[str]:
    """The last ``k`` layers (0 <= k <= len)."""
    return layers[len(layers) - _count(k, layers):]


def swap_state(target: dict[str, torch.Tensor], source: dict[str, torch.Tensor],
               keys: Iterable[str]) -> dict[str, torch.Tensor]:
    """A new state: ``target`` with the entries ``keys`` taken from ``source``.

    Only the taken entries must match in name and shape (the source's head may have another
    number of classes). Non-finite values in a taken entry are an error; an entry of another
    floating dtype (a half-precision checkpoint, say) is cast to the target's, with a warning.
    """
    keys = _names("keys", keys)
    check_compatible(target, source, keys)
    unknown = [k for k in keys if k not in target]
    if unknown:
        raise ValueError(f"keys not in the model: {unknown[:5]}")
    bad = [k for k in keys if source[k].is_floating_point() and not torch.isfinite(source[k]).all()]
    if bad:
        raise ValueError(f"source entries with NaN or inf values: {bad[:5]}")
    cast = sorted({f"{source[k].dtype} -> {target[k].dtype}" for k in keys
                   if source[k].dtype != target[k].dtype and source[k].is_floating_point()})
    if cast:
        warnings.warn(f"source entries cast to the target's dtype: {', '.join(cast)}", stacklevel=2)
    out = {k: v.clone() for k, v in target.items()}
    for k in keys:
        out[k] = source[k].detach().clone().to(out[k].device, out[k].dtype)
    return out


def swap(target: nn.Module, source: nn.Module, keys: Iterable[str]) -> nn.Module:
    """A copy of ``target`` with the parameters/buffers ``keys`` taken from ``source``."""
    new = copy.deepcopy(target)
    new.load_state_dict(swap_state(target.state_dict(), source.state_dict(), keys))
    return new


@torch.no_grad()
def reestimate_bn(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> nn.Module:
    """A copy of ``model`` whose BN running statistics are recomputed on inputs ``x``.

    Cumulative averages (momentum None) over one pass, as in SWA's ``update_bn``. ``x``
    must hold at least 2 samples (BatchNorm's batch statistics need them).
    """
    if x is None or len(x) < 2:
        raise ValueError(f"reestimate_bn needs at least 2 input samples; got {0 if x is None else len(x)}")
    new = copy.deepcopy(model)
    bns = [m for m in new.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    new.train()
    for i in range(0, len(x), batch_size):
        new(x[i:i + batch_size])
    for m, orig in zip(bns, (m for m in model.modules()
                             if isinstance(m, nn.modules.batchnorm._BatchNorm))):
        m.momentum = orig.momentum
    return new.eval()


def _state(m: dict[str, torch.Tensor] | nn.Module) -> dict[str, torch.Tensor]:
    return m.state_dict() if isinstance(m, nn.Module) else m
