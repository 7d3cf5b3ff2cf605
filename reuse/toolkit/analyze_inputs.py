"""The inputs of ``cnn-reuse analyze``, read and checked: checkpoints paired layer by layer, the
model, the data and the scorer (:mod:`reuse.toolkit.analyze` documents their formats).

Loaded after the command line is parsed, so ``cnn-reuse analyze --help`` never imports torch.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from . import scan
from .checkpoints import check_finite, load_state
from .criteria import KINDS, check_kinds, find_layers
from .metrics import PRIMARY_METRIC
from .pairing import pair_layers, parse_map
from .surgery import check_compatible


class InputError(Exception):
    """Bad user input: reported on stderr with exit code 2."""


@dataclass
class Inputs:
    """Everything ``analyze`` reads, checked."""

    source: dict[str, torch.Tensor]  # the target's state with every paired entry from the source
    target: dict[str, torch.Tensor]
    layers: list[str]  # the paired layers of --kinds, forward order: the ones analysed
    paired_keys: list[str]  # state keys taken from the source (every entry of the paired layers)
    unmatched: pd.DataFrame  # layers that did not pair, with the reason (pairing.UNMATCHED_COLUMNS)
    twin: dict[str, torch.Tensor] | None = None
    model: nn.Module | None = None
    score_fn: Callable[[nn.Module], float] | None = None
    bn_data: torch.Tensor | None = None
    chance: float | None = None
    x: torch.Tensor | None = None  # the scored inputs (--data / --dataset): activation criteria
    notes: list[str] = field(default_factory=list)


def _import(spec: str, what: str, paths: list[str] | None = None) -> Any:
    """The object named by ``MODULE:NAME``, imported from the folders ``paths`` (``--path``)
    first, then the installed packages: never from the working folder unless ``paths``
    names it (``python -m`` and ``python -c`` put it on ``sys.path``; it is left out here)."""
    module_name, name = _spec(spec, what)
    saved, cwd = sys.path[:], os.getcwd()
    sys.path[:] = [*(os.path.abspath(p) for p in paths or []), *(p for p in saved if p not in ("", cwd))]
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise InputError(f"{what}: cannot import module {module_name!r}: {err}") from None
    finally:
        sys.path[:] = saved
    obj = module
    for part in name.split("."):
        if not hasattr(obj, part):
            raise InputError(f"{what}: module {module_name!r} has no {name!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise InputError(f"{what}: {spec} is a {type(obj).__name__}, not a callable")
    return obj


def _spec(spec: str, what: str) -> tuple[str, str]:
    module_name, sep, name = spec.partition(":")
    if not sep or not module_name or not name:
        raise InputError(f"{what}={spec!r}; allowed: MODULE:NAME, e.g. torchvision.models:resnet18")
    return module_name, name


def _model_args(args) -> dict:
    """``--model-args`` as keyword arguments, ``--model`` checked in form (nothing imported)."""
    _spec(args.model, "--model")
    try:
        kwargs = json.loads(args.model_args)
    except json.JSONDecodeError as err:
        raise InputError(f"--model-args={args.model_args!r} is not valid JSON: {err}") from None
    if not isinstance(kwargs, dict):
        raise InputError(f"--model-args={args.model_args!r}; allowed: a JSON object of keyword arguments")
    return kwargs


def _model(args, kwargs: dict) -> nn.Module:
    factory = _import(args.model, "--model", args.path)
    try:
        model = factory(**kwargs)
    except TypeError as err:
        raise InputError(f"--model {args.model} with --model-args {kwargs}: {err}") from None
    if not isinstance(model, nn.Module):
        raise InputError(f"--model {args.model} returned a {type(model).__name__}, not an nn.Module")
    return model.to(args.device).eval()


def _folder(args) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    from torchvision import datasets, transforms  # a second of imports only --data needs

    if not Path(args.data).is_dir():
        raise InputError(f"--data {args.data}: no such folder")
    steps = [transforms.Grayscale(1)] if args.channels == 1 else []
    transform = transforms.Compose([*steps, transforms.Resize(args.image_size),
                                    transforms.CenterCrop(args.image_size), transforms.ToTensor()])
    try:
        folder = datasets.ImageFolder(args.data, transform=transform)
    except (FileNotFoundError, OSError) as err:
        raise InputError(f"--data {args.data}: {err}") from None
    order = torch.randperm(len(folder), generator=torch.Generator().manual_seed(args.seed))
    take = order[:args.n_images + args.bn_images].tolist()
    images = [_decoded(folder, i, args.data) for i in take]  # every image used, before any work
    x = torch.stack([im for im, _ in images])
    y = torch.tensor([label for _, label in images])
    n = min(args.n_images, len(x))
    return x[:n], y[:n], x[n:] if args.bn_images else None


def _decoded(folder, i: int, data: str) -> tuple[torch.Tensor, int]:
    """Image ``i`` of an ImageFolder and its label; a file that cannot be decoded is refused,
    naming it."""
    try:
        return folder[i]
    except Exception as err:  # PIL: OSError (truncated), UnidentifiedImageError, SyntaxError, ValueError
        raise InputError(f"--data {data}: cannot decode {folder.samples[i][0]} ({type(err).__name__}: "
                         f"{err}); allowed: image files that PIL reads whole") from None


def _outputs(model: nn.Module, x: torch.Tensor, what: str) -> torch.Tensor:
    """The model's outputs for the first two inputs of ``x``: inputs of other channels than
    the model's first layer takes, or of a size it cannot take, are refused here, naming
    both, before any work."""
    first = next(((name, m.in_channels) for name, m in model.named_modules()
                  if isinstance(getattr(m, "in_channels", None), int)), None)
    if first is not None and x.ndim > 1 and x.shape[1] != first[1]:
        raise InputError(f"{what} gives inputs of {x.shape[1]} channel(s), shape {list(x.shape[1:])}; the "
                         f"model's first layer {first[0]!r} takes {first[1]}; "
                         f"allowed: {first[1]}-channel inputs")
    try:
        with torch.no_grad():
            return model(x[:2])
    except RuntimeError as err:
        raise InputError(f"{what} gives inputs of shape {list(x.shape[1:])}, which the model cannot take: "
                         f"{str(err).splitlines()[0]}") from None


def _dataset(args) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    out = _import(args.dataset, "--dataset", args.path)()
    if not (isinstance(out, (tuple, list)) and len(out) in (2, 3)
            and all(isinstance(t, torch.Tensor) for t in out)):
        raise InputError(f"--dataset {args.dataset} returned {type(out).__name__}; allowed: a tuple "
                         "(x, y) or (x, y, x_bn) of tensors")
    x, y = out[0][:args.n_images], out[1][:args.n_images]
    x_bn = out[2][:args.bn_images] if len(out) == 3 and args.bn_images else None
    return x, y, x_bn


def _renames(args) -> dict[str, str]:
    """``{OLD: NEW}`` from ``--map`` and the lines of ``--map-file`` (blank lines and ``#``
    comments skipped)."""
    entries = [("--map", e) for e in args.map]
    if args.map_file is not None:
        try:
            lines = Path(args.map_file).read_text().splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise InputError(f"--map-file {args.map_file}: cannot read it ({err}); allowed: a text file "
                             "of OLD=NEW lines") from None
        entries += [(f"--map-file {args.map_file} line {i}", line.split("#")[0])
                    for i, line in enumerate(lines, 1) if line.split("#")[0].strip()]
    return parse_map(entries)


def _paired(args, source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]
            ) -> tuple[dict[str, torch.Tensor], list[str], list[str], pd.DataFrame]:
    """The target's state with the source's paired entries, the paired layers of ``--kinds``,
    the paired keys and the unmatched layers; the refusal that names every difference where no
    such layer pairs."""
    try:
        kinds = KINDS if args.kinds is None else check_kinds(k.strip() for k in args.kinds.split(","))
    except ValueError as err:
        raise InputError(f"--kinds {args.kinds}: {err}") from None
    pairing = pair_layers(source, target, _renames(args))
    paired = set(pairing.layers)
    layers = [name for name in find_layers(target, kinds) if name in paired]
    if not layers:
        check_compatible(target, pairing.source)  # raises, naming the differences
    return {**target, **{k: pairing.source[k] for k in pairing.keys}}, layers, pairing.keys, pairing.unmatched


def _head_fix(built: dict, target: dict, kwargs: dict) -> str:
    """The ``--model-args`` that would fix a head built for another number of classes (the
    usual cause: a factory's default ``num_classes``), or ''."""
    for key, value in built.items():
        have = target.get(key)
        if (have is not None and value.dim() == 2 and have.dim() == 2 and value.shape[1] == have.shape[1]
                and value.shape[0] != have.shape[0] and "num_classes" not in kwargs):
            fixed = json.dumps({**kwargs, "num_classes": int(have.shape[0])})
            return (f". The head {key} has {value.shape[0]} outputs, the checkpoint's {have.shape[0]}: "
                    f"try --model-args '{fixed}'")
    return ""


def read_inputs(args) -> Inputs:
    """Load and check every input; raise :class:`InputError` (or the toolkit's
    FileNotFoundError / ValueError / TypeError) on bad input."""
    if args.task not in PRIMARY_METRIC:
        raise InputError(f"--task {args.task!r}; allowed: {', '.join(PRIMARY_METRIC)}")
    scored = args.data or args.dataset or args.score
    if args.model is None and args.align:
        raise InputError("--align needs --model MODULE:FACTORY (weight matching traces the architecture)")
    if args.model is None and scored:
        raise InputError("--data, --dataset and --score need --model MODULE:FACTORY to build the architecture")
    kwargs = None if args.model is None else _model_args(args)
    source, target = load_state(args.source, what="source"), load_state(args.target, what="target")
    check_finite(source, f"source {args.source}")
    check_finite(target, f"target {args.target}")
    hybrid, layers, keys, unmatched = _paired(args, source, target)
    inp = Inputs(hybrid, target, layers, keys, unmatched)
    if args.twin is not None:
        inp.twin = load_state(args.twin, what="twin")
        check_finite(inp.twin, f"twin {args.twin}")
        check_compatible(inp.target, inp.twin)
    # the model is built only where it is used: its import alone (torchvision: torch._dynamo)
    # doubles a kernels-only start-up
    build = kwargs is not None and bool(scored or args.align)
    by_name = Path(args.target).suffix == ".safetensors"  # the format stores keys sorted by name
    if by_name and not build:
        inp.notes.append("layers in the .safetensors file's order (by name): with --model and --align, "
                         "--data, --dataset or --score they are put in forward order")
    if kwargs is not None and not build:
        inp.notes.append(f"--model {args.model} not built: kernel distances need no model (it is built "
                         "and checked against the target with --align, --data, --dataset or --score)")
    if not build:
        return inp
    inp.model = _model(args, kwargs)
    built = inp.model.state_dict()
    try:
        check_compatible(inp.target, built, names=("target checkpoint", f"--model {args.model}"))
    except ValueError as err:
        raise ValueError(f"--model {args.model} does not match the target checkpoint: {err}"
                         + _head_fix(built, inp.target, kwargs)) from None
    if by_name:  # forward order, as the model declares its parameters (the same keys, checked above)
        order = list(inp.model.state_dict())
        inp.target, inp.source = ({k: state[k] for k in order} for state in (inp.target, inp.source))
        inp.layers = sorted(inp.layers, key=lambda name: order.index(f"{name}.weight"))
    if not scored:
        return inp
    x = y = out = None
    if args.data or args.dataset:
        x, y, inp.bn_data = _folder(args) if args.data else _dataset(args)
        x, y = x.to(args.device), y.to(args.device)
        what = (f"--data {args.data} (--channels {args.channels}, --image-size {args.image_size})"
                if args.data else f"--dataset {args.dataset}")
        out = _outputs(inp.model, x, what)
        inp.x = x
        if inp.bn_data is not None:
            inp.bn_data = inp.bn_data.to(args.device)
        if args.bn_images and (inp.bn_data is None or len(inp.bn_data) < 2):
            raise InputError(f"--bn-images {args.bn_images}: the data gave "
                             f"{0 if inp.bn_data is None else len(inp.bn_data)} BN images; at least 2 needed")
    if args.score:
        inp.score_fn = _import(args.score, "--score", args.path)
        inp.notes.append(f"scores from {args.score} (no chance level: swaps judged by score / target score)")
        return inp
    n_outputs = int(out.shape[1]) if args.task == "segmentation" else None
    inp.score_fn = scan.task_score_fn(args.task, x, y, n_outputs, args.batch_size, args.precision)
    inp.chance = scan.chance(args.task, y, y, n_outputs or 1)
    inp.notes.append(f"{len(x)} test images, task {args.task} ({PRIMARY_METRIC[args.task]}), chance level "
                     f"{inp.chance:.4g} (best input-blind predictor on the scored targets)")
    if inp.bn_data is not None:
        inp.notes.append(f"BN statistics re-estimated on {len(inp.bn_data)} images after each swap")
    return inp
