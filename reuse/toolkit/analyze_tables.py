"""The tables of ``cnn-reuse analyze``, computed from checked inputs (no file IO): per-layer
kernel distances, and with a scorer the swap scan, the per-layer verdicts and the joint check.

Only the paired layers (of ``--kinds``) are analysed (:mod:`reuse.toolkit.pairing`); swaps take the
source's kernels of those layers into the target's own model. Weight matching and the
selection are imported where they are used: the kernels-only path never loads scipy or
scikit-learn (start-up, benchmarks/bench_analyze.py).
"""

from __future__ import annotations

import warnings
from typing import Any

import pandas as pd

from . import scan, similarity
from .analyze_inputs import Inputs
from .criteria import kernel_rmse, rmse_over_floor


def tables(args, inp: Inputs) -> dict[str, Any]:
    """``layers``, with data ``cka_cross`` (every source layer against every target layer), and when scored, ``swaps``, ``selection``, ``joint`` (frames), ``value`` (the
    column that judges a swap), ``chosen`` (layers passing alone) and ``kept`` (after the joint
    check). Notes for the report are appended to ``inp.notes``."""
    names = inp.layers
    out: dict[str, Any] = {"layers": kernel_rmse(inp.source, inp.target, names) if inp.twin is None
                           else rmse_over_floor(inp.source, inp.target, inp.twin, names)}
    if args.align:
        from . import alignment  # scipy: only --align needs it

        paired = set(inp.paired_keys)
        unpaired = [k for k in inp.target if k not in paired]
        al = alignment.aligned_kernel_rmse(inp.model, inp.source, inp.target, names, ignore=unpaired)
        out["layers"] = out["layers"].merge(al[["layer", "permuted", "aligned_rmse", "aligned_rel_rmse"]],
                                            on="layer", how="left")
    if inp.x is not None:
        model = inp.model.to(inp.x.device)
        out["cka_cross"] = similarity.cka_cross(model, inp.source, inp.target, inp.x, names)
        out["layers"] = out["layers"].merge(similarity.same_layers(out["cka_cross"]), on="layer", how="left")
    if inp.score_fn is None:
        return out
    from . import selection  # scipy and scikit-learn (its verdicts): only a scored run needs them

    progress = not args.no_progress
    sets = [s.strip() for s in args.sets.split(",")]
    out["swaps"] = scan.swap_scan(inp.source, inp.target, inp.score_fn, model=inp.model, layers=names,
                                  sets=sets, bn_data=inp.bn_data, chance=inp.chance, progress=progress)
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
    out["freeze"] = freeze_plan(out["swaps"], out["kept"], out["value"], args.margin, inp.model)
    return out


def freeze_plan(swaps: pd.DataFrame, kept: list[str], value: str, margin: float, model) -> dict[str, Any]:
    """What to do with the answer: the longest prefix of layers whose swap (every shorter
    prefix's too) keeps ``value`` above ``margin``, so it can stay frozen, and the layers to
    reuse, each with the names of the model's parameters to pass to ``requires_grad_(False)``.
    A prefix's parameters are all the model's parameters up to its last layer's (the
    normalisation layers between included); a reused layer's, its own. With no prefix scan
    (``--sets`` without ``prefix``) the prefix is None."""
    params = [name for name, _ in model.named_parameters()]

    def own(layer: str) -> list[str]:
        return [p for p in params if p.rsplit(".", 1)[0] == layer]

    plan: dict[str, Any] = {"value": value, "margin": margin, "prefix": None,
                            "reuse": {"layers": list(kept), "parameters": [p for layer in kept for p in own(layer)]}}
    prefixes = swaps[swaps.set == "prefix"].sort_values("k")
    if prefixes.empty:
        return plan
    passing = (prefixes[value] > margin).to_numpy()
    k = int(passing.argmin()) if not passing.all() else len(passing)  # prefixes 1..k all pass
    row = prefixes.iloc[k - 1] if k else None
    layers = [] if row is None else str(row["layers"]).split(";")
    last = max((params.index(p) for p in own(layers[-1])), default=-1) if layers else -1
    plan["prefix"] = {"k": k, "layers": layers, value: None if row is None else float(row[value]),
                      "parameters": params[:last + 1]}
    return plan


def undefined(layers: pd.DataFrame) -> str | None:
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
