"""``reuse analyze``: which conv layers of *your* CNN can be reused, from two checkpoints.

Usage::

    reuse analyze SOURCE.pt TARGET.pt --model torchvision.models:resnet18 \\
        --model-args '{"num_classes": 10}' [--twin TWIN.pt] \\
        [--data FOLDER | --dataset MODULE:FN] [--score MODULE:FN] [--out DIR]

SOURCE/TARGET (and TWIN): files written by ``torch.save`` holding a state dict, or a
checkpoint dict holding one under ``state_dict``/``model_state_dict``/``model``/``net``/
``weights``; ``module.`` (DataParallel) and ``_orig_mod.`` (torch.compile) prefixes are
stripped (:mod:`reuse.toolkit.checkpoints`); or ``.safetensors`` files. Both must come from one
architecture and, for the RMSE to mean anything, one initialisation. Layers: those of
``--kinds`` (default all: Linear, Conv1d, Conv2d, Conv3d; :func:`reuse.toolkit.criteria.find_layers`).

- Kernels only (no data, no score): ``layers.csv``, one row per conv layer: layer, index,
  n_weights, rmse, rel_rmse, cosine_distance and, with ``--twin`` (a second checkpoint of
  the target's task: its RMSE to the target is the retraining noise floor), floor_rmse and
  rmse_over_floor; with ``--align`` (and ``--model``) permuted, aligned_rmse and
  aligned_rel_rmse (weight matching, :mod:`reuse.toolkit.alignment`); with ``--data`` or
  ``--dataset`` cka and cka_debiased (the layer's outputs in source and target on the test
  images, in mini-batches: :func:`reuse.toolkit.similarity.cka_cross`), and ``cka_cross.csv``
  with its heatmap: every source layer against every target layer.
- With data or ``--score``: also ``swaps.csv`` (:func:`reuse.toolkit.scan.swap_scan`),
  ``selection.csv`` (:func:`reuse.toolkit.selection.swap_verdicts`, one seed: point estimates) and
  ``joint.csv`` (:func:`reuse.toolkit.selection.check_joint`: the chosen layers swapped together,
  backing off greedily when that fails).
- Always ``report.md`` (figures as PNG files beside it), a self-contained ``report.html``
  (figures embedded) and ``analyze.json`` (parameters, results summary, provenance).

``--out DIR`` is written whole or not at all (:func:`reuse.toolkit.files.atomic_folder`): into a
hidden folder beside DIR, renamed into place. A DIR that holds files is refused unless
``--force``, which replaces it whole; a DIR that is a file is refused before anything is
read. ``--model``, ``--dataset`` and ``--score`` modules are imported from the ``--path``
folders and the installed packages, never from the working folder.

Data:

- ``--data FOLDER``: a ``torchvision.datasets.ImageFolder`` (one sub-folder per class,
  sorted names = labels 0..C-1). Each image is converted to RGB (or grayscale with
  ``--channels 1``), resized so its short side is ``--image-size`` and centre-cropped to
  ``--image-size`` square, as a float tensor in [0, 1] (no normalisation: a model trained
  on normalised inputs needs ``--dataset``). The images are shuffled with ``--seed``; the
  first ``--n-images`` are scored, the next ``--bn-images`` re-estimate BN statistics.
- ``--dataset MODULE:FN``: ``FN()`` returns ``(x, y)`` or ``(x, y, x_bn)``: tensors
  ``x [N, C, H, W]`` as the model takes them, ``y`` the targets of ``--task`` (``[N]``
  class indices for classification), ``x_bn`` inputs for BN re-estimation.
- ``--score MODULE:FN``: ``FN(model) -> float`` (higher is better) replaces the built-in
  scorer; with it, no chance level is known, so swaps are judged by score / target score.

The chance level of a built-in task is that of the best input-blind predictor in hindsight
(:func:`reuse.toolkit.scan.chance` fitted on the scored targets themselves, e.g. the majority
class); the reuse score is (score - chance) / (target score - chance).

Bad input (missing or corrupt file, a checkpoint with NaN or inf weights, architectures that
differ, an unknown factory or function, bad JSON, an --out that is a file or holds files)
prints one line on stderr and exits with code 2; so does a full disk while writing the report
(nothing is written). Layers whose ratios are undefined (an all-zero target kernel: rel_rmse)
get NaN in layers.csv and a one-line warning.
"""

from __future__ import annotations

import argparse
import base64
import html
import importlib
import io
import json
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from . import alignment, files, scan, selection, similarity
from .analyze_plots import plot_cka_cross, plot_layers, plot_swaps
from .checkpoints import check_finite, load_state
from .criteria import KINDS, check_kinds, find_layers, kernel_rmse
from .metrics import PRIMARY
from .provenance import provenance
from .surgery import check_compatible

PROG = "reuse analyze"


class InputError(Exception):
    """Bad user input: reported on stderr with exit code 2."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Which conv layers of a source-trained CNN "
                                "can be reused in a target-trained one (kernel RMSE, swap scan, "
                                "selection). See `pydoc reuse.toolkit.analyze` for file and data formats.")
    p.add_argument("source", help="checkpoint of the model trained on the source task")
    p.add_argument("target", help="checkpoint of the model trained on the target task")
    p.add_argument("--model", metavar="MODULE:FACTORY",
                   help="callable building the architecture, e.g. torchvision.models:resnet18 "
                        "(needed for swaps; checks the architecture otherwise)")
    p.add_argument("--model-args", default="{}", metavar="JSON", help="keyword arguments of FACTORY")
    p.add_argument("--twin", help="a second checkpoint of the target task: the RMSE noise floor")
    data = p.add_mutually_exclusive_group()
    data.add_argument("--data", metavar="FOLDER", help="an ImageFolder of target test images")
    data.add_argument("--dataset", metavar="MODULE:FN", help="FN() -> (x, y) or (x, y, x_bn) tensors")
    p.add_argument("--score", metavar="MODULE:FN", help="FN(model) -> float, higher is better")
    p.add_argument("--path", action="append", default=[], metavar="DIR",
                   help="a folder to import the modules of --model, --dataset and --score from, searched "
                        "before the installed packages; repeatable (the working folder is not searched)")
    p.add_argument("--task", default="classification", choices=list(PRIMARY))
    p.add_argument("--n-images", type=int, default=1000, help="test images scored (default 1000)")
    p.add_argument("--bn-images", type=int, default=0,
                   help="images to re-estimate BN statistics on after each swap (default 0: off)")
    p.add_argument("--image-size", type=int, default=32, help="--data: square side in px")
    p.add_argument("--channels", type=int, default=3, choices=(1, 3), help="--data: 3 RGB, 1 grayscale")
    p.add_argument("--sets", default="single,prefix,suffix,all", help="comma-separated swap sets")
    p.add_argument("--kinds", default=",".join(KINDS), type=_kinds,
                   help=f"comma-separated layer kinds measured and swapped (default all: {','.join(KINDS)})")
    p.add_argument("--align", action="store_true",
                   help="also the RMSE after weight matching (needs --model; seconds per resnet18)")
    p.add_argument("--margin", type=float, default=0.5,
                   help="a swap keeps the layer when its reuse score (or relative score) exceeds this")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "auto"),
                   help="built-in scorer's precision (default fp32; auto: bf16 where native)")
    p.add_argument("--seed", type=int, default=0, help="--data: shuffling seed")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--out", default="reuse_analyze",
                   help="output folder, new or empty (default ./reuse_analyze); written whole or not at all")
    p.add_argument("--force", action="store_true", help="replace an --out folder that holds files, whole")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


@dataclass
class Inputs:
    """Everything ``analyze`` reads, checked."""

    source: dict[str, torch.Tensor]
    target: dict[str, torch.Tensor]
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
    module_name, sep, name = spec.partition(":")
    if not sep or not module_name or not name:
        raise InputError(f"{what}={spec!r}; allowed: MODULE:NAME, e.g. torchvision.models:resnet18")
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


def _kinds(text: str) -> tuple[str, ...]:
    try:
        return check_kinds([k.strip() for k in text.split(",")])
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _model(args) -> nn.Module | None:
    if args.model is None:
        return None
    try:
        kwargs = json.loads(args.model_args)
    except json.JSONDecodeError as err:
        raise InputError(f"--model-args={args.model_args!r} is not valid JSON: {err}") from None
    if not isinstance(kwargs, dict):
        raise InputError(f"--model-args={args.model_args!r}; allowed: a JSON object of keyword arguments")
    factory = _import(args.model, "--model", args.path)
    try:
        model = factory(**kwargs)
    except TypeError as err:
        raise InputError(f"--model {args.model} with --model-args {kwargs}: {err}") from None
    if not isinstance(model, nn.Module):
        raise InputError(f"--model {args.model} returned a {type(model).__name__}, not an nn.Module")
    return model.to(args.device).eval()


def _folder(args) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    from torchvision import datasets, transforms

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
    images = [folder[i] for i in take]
    x = torch.stack([im for im, _ in images])
    y = torch.tensor([label for _, label in images])
    n = min(args.n_images, len(x))
    return x[:n], y[:n], x[n:] if args.bn_images else None


def _dataset(args) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    out = _import(args.dataset, "--dataset", args.path)()
    if not (isinstance(out, (tuple, list)) and len(out) in (2, 3)
            and all(isinstance(t, torch.Tensor) for t in out)):
        raise InputError(f"--dataset {args.dataset} returned {type(out).__name__}; allowed: a tuple "
                         "(x, y) or (x, y, x_bn) of tensors")
    x, y = out[0][:args.n_images], out[1][:args.n_images]
    x_bn = out[2][:args.bn_images] if len(out) == 3 and args.bn_images else None
    return x, y, x_bn


def read_inputs(args) -> Inputs:
    """Load and check every input; raise :class:`InputError` (or the toolkit's
    FileNotFoundError / ValueError / TypeError) on bad input."""
    inp = Inputs(load_state(args.source, what="source"), load_state(args.target, what="target"))
    check_finite(inp.source, f"source {args.source}")
    check_finite(inp.target, f"target {args.target}")
    check_compatible(inp.target, inp.source)
    if args.twin is not None:
        inp.twin = load_state(args.twin, what="twin")
        check_finite(inp.twin, f"twin {args.twin}")
        check_compatible(inp.target, inp.twin)
    inp.model = _model(args)
    if inp.model is not None:
        try:
            check_compatible(inp.model.state_dict(), inp.target)
        except ValueError as err:
            raise ValueError(f"--model {args.model} does not match the checkpoints: {err}") from None
        inp.target = {k: inp.target[k] for k in inp.model.state_dict()}  # forward order (.safetensors sorts)
    elif Path(args.target).suffix == ".safetensors":
        inp.notes.append("layers in the .safetensors file's order (by name): give --model for forward order")
    if args.align and inp.model is None:
        raise InputError("--align needs --model MODULE:FACTORY (weight matching traces the architecture)")
    scored = args.data or args.dataset or args.score
    if not scored:
        return inp
    if inp.model is None:
        raise InputError("--data, --dataset and --score need --model MODULE:FACTORY to build the architecture")
    x = y = None
    if args.data or args.dataset:
        x, y, inp.bn_data = _folder(args) if args.data else _dataset(args)
        x, y = x.to(args.device), y.to(args.device)
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
    n_outputs = None
    if args.task == "segmentation":
        with torch.no_grad():
            n_outputs = int(inp.model(x[:2]).shape[1])
    inp.score_fn = scan.task_score_fn(args.task, x, y, n_outputs, args.batch_size, args.precision)
    inp.chance = scan.chance(args.task, y, y, n_outputs or 1)
    inp.notes.append(f"{len(x)} test images, task {args.task} ({PRIMARY[args.task]}), chance level "
                     f"{inp.chance:.4g} (best input-blind predictor on the scored targets)")
    if inp.bn_data is not None:
        inp.notes.append(f"BN statistics re-estimated on {len(inp.bn_data)} images after each swap")
    return inp


def analyze(args, inp: Inputs) -> dict[str, Any]:
    """Compute the tables (no file IO): layers, and when scored swaps, selection, joint."""
    names = find_layers(inp.target, args.kinds)
    out: dict[str, Any] = {"layers": kernel_rmse(inp.source, inp.target, names)}
    if inp.twin is not None:
        floor = kernel_rmse(inp.twin, inp.target, names).rmse.to_numpy()
        ratio = out["layers"].rmse / pd.Series(floor).where(floor > 0)  # NaN, not inf, for a zero floor
        out["layers"] = out["layers"].assign(floor_rmse=floor, rmse_over_floor=ratio)
    if args.align:
        al = alignment.aligned_kernel_rmse(inp.model, inp.source, inp.target, names)
        out["layers"] = out["layers"].merge(al[["layer", "permuted", "aligned_rmse", "aligned_rel_rmse"]],
                                            on="layer", how="left")
    if inp.x is not None:
        model = inp.model.to(inp.x.device)
        out["cka_cross"] = similarity.cka_cross(model, inp.source, inp.target, inp.x, names)
        out["layers"] = out["layers"].merge(similarity.same_layers(out["cka_cross"]), on="layer", how="left")
    if inp.score_fn is None:
        return out
    progress = not args.no_progress
    sets = [s.strip() for s in args.sets.split(",")]
    out["swaps"] = scan.swap_scan(inp.source, inp.target, inp.score_fn, model=inp.model, layers=names, sets=sets,
                                  bn_data=inp.bn_data, chance=inp.chance, progress=progress)
    if inp.chance is not None and out["swaps"].reuse_score.isna().all():
        inp.notes.append(f"the target model scores {out['swaps'].target_score[0]:.4g}, not above chance "
                         f"{inp.chance:.4g}: no reuse score; swaps judged by score / target score")
        inp.chance = None
    out["value"] = "reuse_score" if inp.chance is not None else "relative"
    if "single" not in sets:
        return out
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out["selection"] = selection.swap_verdicts(out["swaps"], margin=args.margin, value=out["value"])
    inp.notes += [str(w.message) for w in caught]
    chosen = out["selection"].layer[out["selection"].reusable].tolist()
    if chosen:
        out["kept"], out["joint"] = selection.check_joint(
            inp.source, inp.target, chosen, inp.score_fn, model=inp.model, bn_data=inp.bn_data,
            chance=inp.chance, margin=args.margin, progress=progress)
    else:
        out["kept"], out["joint"] = [], None
    out["chosen"] = chosen
    return out


def _undefined(layers: pd.DataFrame) -> str | None:
    """One line naming the layers whose ratios are undefined (NaN in layers.csv), if any."""
    parts = []
    zero = layers.layer[layers.rel_rmse.isna()].tolist()
    if zero:
        parts.append(f"the target's kernels of layers {zero} are all zero: their rel_rmse and "
                     "cosine_distance are undefined (NaN)")
    if "rmse_over_floor" in layers:
        same = layers.layer[layers.floor_rmse == 0].tolist()
        if same:
            parts.append(f"the twin equals the target in layers {same}: rmse_over_floor undefined (NaN)")
    return "; ".join(parts) or None


def _md_table(frame: pd.DataFrame) -> str:
    def cell(v) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def _summary(args, res: dict[str, Any]) -> list[str]:
    lines = []
    if "joint" in res:
        chosen, kept = res["chosen"], res["kept"]
        lines.append(f"{len(chosen)} of {len(res['layers'])} conv layers pass alone "
                     f"({res['value']} > {args.margin}).")
        if res["joint"] is not None and len(res["joint"]) > 1:
            dropped = ", ".join(res["joint"].dropped[1:])
            lines.append(f"Swapped together they fail, so the joint check BACKED OFF: dropped "
                         f"{dropped}; {len(kept)} layers kept.")
        elif chosen:
            lines.append("Swapped together they pass the joint check.")
        lines.append(f"Layers to reuse: {', '.join(kept) if kept else 'none'}.")
    return lines


def write(out_dir: Path, args, inp: Inputs, res: dict[str, Any], seconds: float) -> None:
    """layers.csv, swaps.csv / selection.csv / joint.csv when scored, figures, report.md,
    report.html and analyze.json in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tables = {name: res[name] for name in ("layers", "swaps", "selection", "joint")
              if res.get(name) is not None}
    for name, frame in tables.items():
        frame.to_csv(out_dir / f"{name}.csv", index=False)
    figures = {"layers": plot_layers(res["layers"])}
    if "cka_cross" in res:  # every layer pair: a heatmap and a CSV, no table in the report
        res["cka_cross"].to_csv(out_dir / "cka_cross.csv", index=False)
        figures["cka_cross"] = plot_cka_cross(res["cka_cross"])
    if "swaps" in res:
        figures["swaps"] = plot_swaps(res["swaps"], res["layers"], res["value"], args.margin)
    png = {}
    for name, fig in figures.items():
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110)
        png[name] = buf.getvalue()
        (out_dir / f"{name}.png").write_bytes(png[name])
    title = f"reuse analyze: {Path(args.source).name} -> {Path(args.target).name}"
    intro = [f"source `{args.source}`, target `{args.target}`" + (f", twin `{args.twin}`" if args.twin else ""),
             *inp.notes, *_summary(args, res)]
    md = [f"# {title}", "", *[f"- {line}" for line in intro], ""]
    for name, frame in tables.items():
        md += [f"## {name}", "", f"![{name}]({name}.png)" if name in png else "", "", _md_table(frame), ""]
    (out_dir / "report.md").write_text("\n".join(md))
    body = [f"<h1>{html.escape(title)}</h1><ul>"]
    body += [f"<li>{html.escape(line)}</li>" for line in intro] + ["</ul>"]
    for name, frame in tables.items():
        body.append(f"<h2>{name}</h2>")
        if name in png:
            body.append(f'<img alt="{name}" src="data:image/png;base64,'
                        f'{base64.b64encode(png[name]).decode()}">')
        body.append(frame.to_html(index=False, float_format="{:.4g}".format, na_rep=""))
    (out_dir / "report.html").write_text(
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:12px}"
        "td,th{border:1px solid #ccc;padding:2px 6px}img{max-width:100%}</style></head><body>"
        + "\n".join(body) + "</body></html>")
    summary = {"layers_to_reuse": res.get("kept"), "passed_alone": res.get("chosen"),
               "backed_off": res.get("joint") is not None and len(res["joint"]) > 1,
               "notes": inp.notes, "seconds": round(seconds, 3), "files": sorted(
                   [f"{n}.csv" for n in [*tables, *(["cka_cross"] if "cka_cross" in res else [])]]
                   + [f"{n}.png" for n in png] + ["report.md", "report.html"])}
    (out_dir / "analyze.json").write_text(json.dumps(
        {**provenance(vars(args)), "summary": summary}, indent=2, default=str))


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``reuse analyze`` / ``python -m reuse analyze``: 0 on success, 2 on
    bad input (one line on stderr)."""
    try:
        args = parser().parse_args(argv)
    except SystemExit as stop:  # argparse has printed its message
        return int(stop.code or 0)
    start = time.perf_counter()
    try:
        if args.n_images < 1 or args.bn_images < 0 or args.image_size < 1 or args.batch_size < 1:
            raise InputError("--n-images, --image-size and --batch-size must be >= 1 and --bn-images >= 0")
        bad = [s for s in args.sets.split(",") if s.strip() not in scan.SETS]
        if bad:
            raise InputError(f"--sets {args.sets!r}: unknown {bad}; allowed: a comma-separated "
                             f"list of {', '.join(scan.SETS)}")
        for folder in args.path:
            if not Path(folder).is_dir():
                raise InputError(f"--path {folder}: no such folder; allowed: a folder holding the "
                                 "modules of --model, --dataset or --score")
        try:  # before anything is read: a file, or a full folder without --force, is refused
            files.check_folder(args.out, args.force)
        except files.FolderExistsError as err:
            raise InputError(f"--out {err}") from None
        inp = read_inputs(args)
    except (InputError, FileNotFoundError, ValueError, TypeError) as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    res = analyze(args, inp)
    undefined = _undefined(res["layers"])
    if undefined:
        print(f"{PROG}: warning: {undefined}", file=sys.stderr)
        inp.notes.append(undefined)
    try:  # into a hidden folder beside --out, renamed into place: whole or not at all
        with files.atomic_folder(args.out, args.force) as folder:
            write(folder, args, inp, res, time.perf_counter() - start)
    except files.FolderExistsError as err:
        print(f"{PROG}: error: --out {err} (another analysis wrote it meanwhile); this analysis was "
              "not written", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"{PROG}: error: {files.describe(err, args.out)}: nothing written ({args.out} unchanged)",
              file=sys.stderr)
        return 2
    for line in _summary(args, res):
        print(line)
    print(f"wrote {args.out}/report.html ({time.perf_counter() - start:.1f} s)")
    return 0
