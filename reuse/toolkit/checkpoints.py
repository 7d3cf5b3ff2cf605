"""Reading a model's parameters from whatever a user has: a module, a state dict or a file.

Entry point: :func:`load_state`. Every toolkit function (:mod:`reuse.toolkit.criteria`,
:mod:`reuse.toolkit.selection`, :mod:`reuse.toolkit.scan`) passes its model arguments through it, so each
accepts

- an ``nn.Module`` (its ``state_dict()``),
- a state dict (``{name: Tensor}``),
- a path to a file written by ``torch.save`` holding either, or a training checkpoint
  dict holding the state under a common key (:data:`STATE_KEYS`: ``state_dict``,
  ``model_state_dict``, ``model``, ``net``, ``weights``),
- a path to a ``.safetensors`` file (Hugging Face's format: tensors only, no pickle), whose
  keys come in the file's order (by dtype, then name), not the modules' registration order.

Files are read onto the CPU without running code from them (``torch.load`` with
``weights_only=True``; ``safetensors.torch.load_file``); a ``torch.save`` file of the zip
format (every torch since 1.6) is memory-mapped (``mmap=True``), so its tensors are pages of
the file, read as they are used and reclaimable, not a second copy in memory. Quantized
tensors (``torch.qint8``, ...) are dequantised to float32 with a warning; integer weights
(a ``.weight`` or ``.bias`` of an integer dtype, whose scale is not in the state) are
refused: as raw integers, no distance or swap means anything. Key
prefixes added by wrappers are stripped (:data:`WRAPPER_PREFIXES`: ``module.`` from
``DataParallel`` / ``DistributedDataParallel``, ``_orig_mod.`` from ``torch.compile``), so a
wrapped model's checkpoint matches its bare architecture.
"""

from __future__ import annotations

import os
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present

STATE_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights")
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
ModelLike = nn.Module | Mapping | str | os.PathLike
_ALLOWED = ("an nn.Module, a state dict {name: Tensor}, or a path to a torch.save file holding one "
            "or to a .safetensors file")


def load_state(obj: ModelLike, *, what: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The state dict ``{key: Tensor}`` of ``obj`` (see the module docstring), with wrapper
    prefixes stripped. ``what`` names the argument in error messages ("source", ...).

    Tensors are those of ``obj`` (not copies, but for dequantised ones): callers must not
    modify them in place. Raises FileNotFoundError for a missing file, ValueError for an
    unreadable file, a dict without tensors or integer weights, TypeError for any other type.
    """
    if isinstance(obj, nn.Module):
        state: Mapping = obj.state_dict()
    elif isinstance(obj, (str, os.PathLike)):
        state = _read(Path(obj), what)
    elif isinstance(obj, Mapping):
        state = obj
    else:
        raise TypeError(f"{what}: got {type(obj).__name__}; allowed: {_ALLOWED}")
    return _float_weights(_strip(_unwrap(state, what)), what)


def check_finite(state: Mapping[str, torch.Tensor], what: str = "checkpoint") -> None:
    """Raise ValueError naming the first floating-point tensor of ``state`` that holds NaN
    or inf (a diverged training run, a corrupt file): no criterion or swap means anything
    with it."""
    for key, value in state.items():
        if value.is_floating_point() and not torch.isfinite(value).all():
            bad = int((~torch.isfinite(value)).sum())
            raise ValueError(f"{what}: tensor {key!r} has {bad} non-finite value(s) (NaN or inf) among "
                             f"{value.numel()}; allowed: finite weights")


def _read(path: Path, what: str) -> Mapping:
    if not path.is_file():
        raise FileNotFoundError(f"{what}: no such file: {path}")
    if path.suffix == ".safetensors":
        try:
            return load_file(path, device="cpu")
        except Exception as err:  # safetensors raises its SafetensorError, OSError, ...
            raise ValueError(f"{what}: cannot read {path} as a safetensors file (corrupt or "
                             f"truncated): {type(err).__name__}: {str(err)[:200]}") from None
    try:  # the legacy format (torch < 1.6, or _use_new_zipfile_serialization=False) cannot be mapped
        with warnings.catch_warnings():  # torch's note on its own internals, met reading quantized tensors
            warnings.filterwarnings("ignore", "TypedStorage is deprecated")
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as err:  # torch raises pickle, zip, EOF and Runtime errors here
        raise ValueError(f"{what}: cannot read {path} as a torch.save file of tensors "
                         f"(corrupt, or a whole pickled model: save model.state_dict() "
                         f"instead): {type(err).__name__}: {str(err)[:200]}") from None
    if not isinstance(obj, Mapping):
        raise ValueError(f"{what}: {path} holds a {type(obj).__name__}; allowed: {_ALLOWED}")
    return obj


def _unwrap(state: Mapping, what: str) -> Mapping:
    """The state itself, or the one a checkpoint dict holds under a :data:`STATE_KEYS` key."""
    for key in STATE_KEYS:
        inner = state.get(key)
        if isinstance(inner, Mapping) and any(isinstance(v, torch.Tensor) for v in inner.values()):
            return inner
    if not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{what}: a dict without tensors (keys {list(state)[:8]}); allowed: a "
                         f"state dict, or a dict holding one under one of {list(STATE_KEYS)}")
    other = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if other:
        raise ValueError(f"{what}: entries {other[:5]} are not tensors and no state is found "
                         f"under {list(STATE_KEYS)}; pass the model's state dict")
    return state


def _float_weights(state: dict[str, torch.Tensor], what: str) -> dict[str, torch.Tensor]:
    """``state`` with its quantized tensors dequantised (one warning names them); a ``.weight``
    or ``.bias`` of an integer dtype is refused (ValueError naming it)."""
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    quantized = [k for k, v in tensors.items() if v.is_quantized]
    if quantized:
        warnings.warn(f"{what}: {len(quantized)} quantized tensor(s) ({', '.join(quantized[:3])}"
                      f"{', ...' if len(quantized) > 3 else ''}) dequantised to float32 with their scale and "
                      "zero point; distances and swaps use the dequantised weights", stacklevel=3)
        state = {k: v.dequantize() if k in quantized else v for k, v in state.items()}
    raw = [k for k, v in tensors.items() if k.endswith((".weight", ".bias")) and not v.is_quantized
           and not (v.is_floating_point() or v.is_complex())]
    if raw:
        raise ValueError(f"{what}: tensor {raw[0]!r} is {tensors[raw[0]].dtype} ({len(raw)} integer weight "
                         "tensor(s)), with no scale to dequantise it by; allowed: floating-point weights, or "
                         "torch's quantized tensors (dequantised)")
    return state


def _strip(state: Mapping) -> dict[str, torch.Tensor]:
    out = OrderedDict(state)
    stripped = True
    while stripped:  # both, in either order: torch.compile of a DataParallel model
        stripped = False
        for p in WRAPPER_PREFIXES:
            if out and all(k.startswith(p) for k in out):
                consume_prefix_in_state_dict_if_present(out, p)
                stripped = True
    return dict(out)
