"""``cnn-reuse analyze``: which layers of *your* CNN can be reused, from two checkpoints.

Usage::

    cnn-reuse analyze SOURCE.pt TARGET.pt --model torchvision.models:resnet18 \\
        --model-args '{"num_classes": 10}' [--twin TWIN.pt] \\
        [--data FOLDER | --dataset MODULE:FN] [--score MODULE:FN] [--out DIR] \\
        [--relation siblings|fine-tuned] [--map OLD=NEW ...] [--map-file FILE] \\
        [--name-source NAME] [--name-target NAME]

SOURCE/TARGET (and TWIN): files written by ``torch.save`` holding a state dict, or a
checkpoint dict holding one under ``state_dict``/``model_state_dict``/``model``/``net``/
``weights``; ``module.`` (DataParallel) and ``_orig_mod.`` (torch.compile) prefixes are
stripped (:mod:`reuse.toolkit.checkpoints`); or ``.safetensors`` files. Layers: those of
``--kinds`` (default all: Linear, Conv1d, Conv2d, Conv3d; :func:`reuse.toolkit.criteria.find_layers`).
For the RMSE to mean anything they must share
an initialisation: ``--relation siblings`` (the default: one θ_0, trained apart, as in the
study's notebooks) or ``--relation fine-tuned`` (the target started from the source; the
distance is then how far fine-tuning moved a layer, and a swap puts the source's layer back:
could it have stayed frozen?). The relation is recorded in ``analyze.json`` and sets the
report's wording (:mod:`reuse.toolkit.relations`); :func:`main`'s ``findings`` (what a study found
for each relation, as lines of text) adds a section citing them (``cnn-reuse analyze`` as the
artifact ships it cites the study's: :mod:`reuse.study.publishing.analyze`).

Layers are paired by name and shape (:mod:`reuse.toolkit.pairing`): those that do not pair
(a head with another number of classes, an extra block) are listed in the report and in
``unmatched.csv`` (source_layer, target_layer, reason: only in source, only in target, shape
differs (source S vs target T)), and the analysis goes on with the rest. ``--map OLD=NEW``
(repeatable; OLD a layer or block of the source, NEW its name in the target) and
``--map-file FILE`` (one ``OLD=NEW`` a line, ``#`` comments) pair renamed layers. Where no
layer pairs, the run is refused, naming the differences. ``--model`` builds the
target's architecture; swaps take the source's paired layers only.

- Kernels only (no data, no score): ``layers.csv``, one row per layer: layer, index,
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
  backing off greedily when that fails); ``freeze.json``
  (:func:`reuse.toolkit.analyze_tables.freeze_plan`: the prefix that can stay frozen and the
  layers to reuse, as parameter names for ``requires_grad_(False)``).
- Always ``unmatched.csv``, ``report.md`` (figures as PNG files beside it), a self-contained
  ``report.html`` (figures embedded) and ``analyze.json`` (parameters, relation, results
  summary, provenance). The report opens with the answer (the layers to reuse, with their
  interval or a warning where one pair gives a point estimate, the joint check, the unmatched
  layers, what to do next), then the evidence, each column explained in one line; source and
  target are named by their file names or ``--name-source``/``--name-target``.

``--out DIR`` is written whole or not at all (:func:`reuse.toolkit.files.atomic_folder`): into a
hidden folder beside DIR, renamed into place, with a marker file (``.reuse-written``) naming
what it wrote. A DIR that holds files is refused unless ``--force``, which replaces it whole
where the marker names everything in it (an earlier report), never a folder holding anything
else; a DIR that is a file, the working folder or a folder above it, or a folder that holds an
input (a checkpoint, ``--map-file``, ``--data``, a ``--path`` folder) is refused before
anything is read. ``--model``, ``--dataset`` and ``--score`` modules are imported from the ``--path``
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

Bad input (missing or corrupt file, a checkpoint with NaN or inf weights or integer weights
(quantized ones are dequantised, with a warning), architectures with
no layer in common, a bad ``--map`` entry, an unknown factory or function, bad JSON, an
--out that is a file or holds files, an image of ``--data`` that cannot be decoded, inputs
whose channels or size the model cannot take: every image used is decoded, and two inputs go
through the model, before any work)
prints one line on stderr and exits with code 2; so does a full disk while writing the report
(nothing is written). Layers whose ratios are undefined (an all-zero target kernel: rel_rmse)
get NaN in layers.csv and a one-line warning.

Start-up: this module imports only the standard library, so ``--help`` answers without
loading torch; the kernels-only path loads neither scipy nor scikit-learn, and does not
build ``--model`` (checked in form only: importing torchvision alone costs as much as the
rest of the start-up), which is built and checked against the target where it is used
(benchmarks/bench_analyze.py).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

from . import files
from .margins import REUSABLE
from .relations import RELATIONS

PROG = "cnn-reuse analyze"
TASK_HELP = "classification (default), segmentation or autoencoder"  # the keys of metrics.PRIMARY_METRIC


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Which layers of a source-trained CNN "
                                "can be reused in a target-trained one (kernel RMSE, swap scan, "
                                "selection). See `pydoc reuse.toolkit.analyze` for file and data formats.")
    p.add_argument("source", help="checkpoint of the model trained on the source task")
    p.add_argument("target", help="checkpoint of the model trained on the target task")
    p.add_argument("--relation", default="siblings", choices=list(RELATIONS),
                   help="siblings (default): one initialisation, trained apart; fine-tuned: the target "
                        "started from the source (distances read as how far fine-tuning moved a layer)")
    p.add_argument("--map", action="append", default=[], metavar="OLD=NEW",
                   help="pair the source's layer or block OLD with the target's NEW; repeatable")
    p.add_argument("--map-file", metavar="FILE", help="a text file of OLD=NEW lines (# comments)")
    p.add_argument("--name-source", metavar="NAME", help="the source's name in the report (default: its file name)")
    p.add_argument("--name-target", metavar="NAME", help="the target's name in the report (default: its file name)")
    p.add_argument("--model", metavar="MODULE:FACTORY",
                   help="callable building the target's architecture, e.g. torchvision.models:resnet18 "
                        "(built for --align, --data, --dataset and --score, and checked against the target)")
    p.add_argument("--model-args", default="{}", metavar="JSON", help="keyword arguments of FACTORY")
    p.add_argument("--twin", help="a second checkpoint of the target task: the RMSE noise floor")
    data = p.add_mutually_exclusive_group()
    data.add_argument("--data", metavar="FOLDER", help="an ImageFolder of target test images")
    data.add_argument("--dataset", metavar="MODULE:FN", help="FN() -> (x, y) or (x, y, x_bn) tensors")
    p.add_argument("--score", metavar="MODULE:FN", help="FN(model) -> float, higher is better")
    p.add_argument("--path", action="append", default=[], metavar="DIR",
                   help="a folder to import the modules of --model, --dataset and --score from, searched "
                        "before the installed packages; repeatable (the working folder is not searched)")
    p.add_argument("--task", default="classification", help=f"the built-in scorer's task: {TASK_HELP}")
    p.add_argument("--n-images", type=int, default=1000, help="test images scored (default 1000)")
    p.add_argument("--bn-images", type=int, default=0,
                   help="images to re-estimate BN statistics on after each swap (default 0: off)")
    p.add_argument("--image-size", type=int, default=32, help="--data: square side in px")
    p.add_argument("--channels", type=int, default=3, choices=(1, 3), help="--data: 3 RGB, 1 grayscale")
    p.add_argument("--sets", default="single,prefix,suffix,all", help="comma-separated swap sets")
    p.add_argument("--kinds", default=None, metavar="KIND,...",
                   help="layer kinds measured and swapped, comma-separated (default all: linear, conv1d, "
                        "conv2d, conv3d; reuse.toolkit.criteria.KINDS)")
    p.add_argument("--align", action="store_true",
                   help="also the RMSE after weight matching (needs --model; seconds per resnet18)")
    p.add_argument("--margin", type=float, default=REUSABLE,
                   help=f"a swap keeps the layer when its reuse score (or relative score) exceeds this "
                        f"(default {REUSABLE}: half of the target's above-chance score)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "auto"),
                   help="built-in scorer's precision (default fp32; auto: bf16 where native)")
    p.add_argument("--seed", type=int, default=0, help="--data: shuffling seed")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--out", default="reuse_analyze",
                   help="output folder, new or empty (default ./reuse_analyze), neither the working folder "
                        "nor one above it nor one holding an input; written whole or not at all")
    p.add_argument("--force", action="store_true",
                   help="replace an --out folder that an earlier cnn-reuse analyze wrote, whole (never one "
                        "holding other files)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _inputs(args: argparse.Namespace) -> list[str]:
    """Every file and folder the command reads: ``--out`` may hold none of them."""
    return [p for p in (args.source, args.target, args.twin, args.map_file, args.data, *args.path) if p]


def main(argv: list[str] | None = None, findings: dict[str, list[str]] | None = None) -> int:
    """Entry point of ``cnn-reuse analyze`` / ``python -m reuse analyze``: 0 on success, 2 on
    bad input (one line on stderr). Ctrl-C raises KeyboardInterrupt saying what is true of
    ``--out`` (:func:`reuse.__main__.main` prints it as one line). ``findings``: per relation,
    what a study found for it (a heading line, then one line per finding), cited in the report
    after the answer; None: no such section."""
    try:
        args = parser().parse_args(argv)
    except SystemExit as stop:  # argparse has printed its message
        return int(stop.code or 0)
    try:
        code, lines = _analyze(args, (findings or {}).get(args.relation))
    except KeyboardInterrupt:  # before the report was renamed into place: nothing of it is there
        raise KeyboardInterrupt(f"nothing written ({args.out} unchanged: the report is written whole or "
                                "not at all); run the same command again to analyse") from None
    for line in lines:
        print(line)
    return code


def _analyze(args: argparse.Namespace, findings: list[str] | None) -> tuple[int, list[str]]:
    """The analysis, its report written (citing ``findings``): the exit code and the lines to
    print (once the report is in place)."""
    from . import analyze_inputs, analyze_report, analyze_tables, scan  # torch: after parsing, not for --help

    start = time.perf_counter()

    InputError = analyze_inputs.InputError
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
        try:  # before anything is read: a file, a folder holding an input, or one --force may not replace
            files.check_folder(args.out, args.force, _inputs(args))
        except files.FolderExistsError as err:
            raise InputError(f"--out {err}") from None
        with warnings.catch_warnings(record=True) as caught:  # e.g. quantized weights dequantised
            warnings.simplefilter("always")
            inp = analyze_inputs.read_inputs(args)
    except (InputError, FileNotFoundError, ValueError, TypeError) as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2, []
    for warning in caught:  # one line each, and in the report
        print(f"{PROG}: warning: {warning.message}", file=sys.stderr)
        inp.notes.append(str(warning.message))
    unpaired = [r.target_layer or r.source_layer for r in inp.unmatched.itertuples()]
    if unpaired:
        print(f"{PROG}: warning: {len(unpaired)} layers did not pair and are not analysed "
              f"({', '.join(unpaired[:5])}{', ...' if len(unpaired) > 5 else ''}); see unmatched.csv",
              file=sys.stderr)
    res = analyze_tables.tables(args, inp)
    undefined = analyze_tables.undefined(res["layers"])
    if undefined:
        print(f"{PROG}: warning: {undefined}", file=sys.stderr)
        inp.notes.append(undefined)
    try:  # into a hidden folder beside --out, renamed into place: whole or not at all
        with files.atomic_folder(args.out, args.force, _inputs(args)) as folder:
            analyze_report.write(folder, args, inp, res, time.perf_counter() - start, findings)
    except files.FolderExistsError as err:
        print(f"{PROG}: error: --out {err} (another analysis wrote it meanwhile); this analysis was "
              "not written", file=sys.stderr)
        return 2, []
    except OSError as err:
        print(f"{PROG}: error: {files.describe(err, args.out)}: nothing written ({args.out} unchanged)",
              file=sys.stderr)
        return 2, []
    return 0, [*analyze_report.answer_lines(args, inp, res),
               f"wrote {args.out}/report.html ({time.perf_counter() - start:.1f} s)"]
