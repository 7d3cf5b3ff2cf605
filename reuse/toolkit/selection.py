"""Which conv layers to reuse: the one home of the reuse rule.

arXiv 2008.03411 (abstract): reuse works when (a) the network is reusable and (b) the
RMSE between the source- and target-trained kernels of a layer is small enough. One
function decides, :func:`select_layers`, from whatever evidence it is given:

- condition (a), ``network_reusable`` (E1's verdict, or the user's);
- condition (b), a kernel criterion (RMSE or relative RMSE) under ``threshold``;
- swap evidence, ``scans`` (:func:`reuse.toolkit.scan.swap_scan` frames): the layer's
  single swap keeps ``value`` above ``margin`` (:func:`swap_verdicts`: a CI over seeds, or
  a point estimate with a warning for one seed);

and, given a ``score_fn``, checks the chosen layers swapped *together*, backing off
greedily where that fails (:func:`check_joint`: singles passing does not make their union
pass).

The RMSE compares weights position by position, which means something only when both
models have the same architecture and started from the same initialisation theta_0
(otherwise hidden units can be permuted and the RMSE measures the permutation).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Sequence

import pandas as pd
import torch
from torch import nn
from tqdm import tqdm  # text bars: tqdm.auto warns in kernels without ipywidgets

from .checkpoints import ModelLike, load_state
from .criteria import check_layers, conv_layers, kernel_keys, kernel_rmse
from .scan import ScoreFn, reuse_or_nan, swapper
from .surgery import check_compatible
from .verdicts import mean_verdict

__all__ = ["CRITERIA", "check_joint", "conv_layers", "select_layers", "swap_verdicts"]

CRITERIA = ("rmse", "rel_rmse")
SWAP_COLUMNS = ["swap_estimate", "swap_ci_low", "swap_ci_high", "swap_n", "swap_basis"]


def select_layers(source_state: ModelLike, target_state: ModelLike,
                  layers: Iterable[str] | None = None, *, threshold: float | None = None,
                  use_relative: bool = False, noise_floor: pd.DataFrame | None = None,
                  network_reusable: bool = True, scans: pd.DataFrame | Sequence[pd.DataFrame] | None = None,
                  value: str = "reuse_score", score_fn: Callable[[nn.Module], float] | None = None,
                  model: nn.Module | None = None, bn_data: torch.Tensor | None = None,
                  chance: float | None = None, margin: float = 0.5, progress: bool = False
                  ) -> tuple[pd.DataFrame, list[str]]:
    """Per-layer decisions of the reuse rule and the layers to reuse.

    ``source_state`` / ``target_state``: modules, state dicts or checkpoint paths of one
    architecture trained on the source and the target. ``layers``: conv layers to judge
    (all when None). A layer is reused when every condition given holds:

    - ``network_reusable`` (condition a);
    - ``threshold`` (not None): its criterion (relative RMSE when ``use_relative``) is
      ``<= threshold`` (condition b; ``inf`` passes every layer);
    - ``scans`` (not None): its single-layer swap keeps ``value`` above ``margin``
      (:func:`swap_verdicts`; the evidence goes into the ``swap_*`` columns).

    ``noise_floor``: optional frame with columns ``layer`` and the criterion, the same
    criterion between two target-only runs, shown beside each layer (it does not change
    the decision). ``score_fn(model) -> float`` (higher is better), when given, checks the
    chosen layers *as a whole* (:func:`check_joint`; ``model``, ``bn_data``, ``chance``
    and ``margin`` are passed on): dropped layers get ``reuse`` False and a reason that
    says so; the check's log is in ``table.attrs["joint_check"]``.

    Returns (table with columns layer, index, n_weights, rmse, rel_rmse, cosine_distance,
    criterion, noise_floor, the ``swap_*`` columns, reuse, reason; the layers to reuse, in
    forward order).
    """
    if model is None and isinstance(target_state, nn.Module):
        model = target_state  # the architecture for the joint check (copied there)
    source_state = load_state(source_state, what="source")
    target_state = load_state(target_state, what="target")
    if threshold is not None and not (isinstance(threshold, (int, float)) and threshold >= 0):  # NaN fails
        raise ValueError(f"threshold={threshold!r}; allowed: None (no criterion) or a number >= 0 "
                         "(inf reuses every layer)")
    criterion = CRITERIA[bool(use_relative)]
    layers = check_layers(target_state, layers)
    if not layers:
        raise ValueError("layers is empty; pass conv layer names or None for all of them")
    try:  # the layers judged must match; another head (other classes) may differ
        check_compatible(target_state, source_state, kernel_keys(target_state, layers))
    except ValueError as err:
        raise ValueError(f"select_layers needs two models of the same architecture: {err}") from None
    table = kernel_rmse(source_state, target_state, layers)
    layers = list(table.layer)
    table["criterion"] = criterion
    table["noise_floor"] = _floor(noise_floor, layers, criterion)
    swaps = _swap_evidence(scans, layers, margin, value)
    table[SWAP_COLUMNS] = swaps[SWAP_COLUMNS].to_numpy(dtype=object)
    values = table[criterion].to_numpy()
    passes = [bool(network_reusable) and (threshold is None or v <= threshold) and s
              for v, s in zip(values, swaps.reusable)]
    table["reuse"] = passes
    table["reason"] = [_reason(criterion, v, threshold, f, network_reusable, row)
                       for v, f, row in zip(values, table.noise_floor, swaps.itertuples())]
    chosen = [name for name, ok in zip(layers, passes) if ok]
    if score_fn is None or not chosen:
        return table, chosen
    kept, log = check_joint(source_state, target_state, chosen, score_fn, model=model,
                            bn_data=bn_data, chance=chance, margin=margin, progress=progress)
    dropped = table.reuse & ~table.layer.isin(kept)
    table.loc[dropped, "reuse"] = False
    table.loc[dropped, "reason"] = ("not reused: passed the rule, but dropped by the joint check ("
                                    "the chosen layers swapped together failed); " + table.reason[dropped])
    table.attrs["joint_check"] = log
    return table, kept


def swap_verdicts(scans: pd.DataFrame | Sequence[pd.DataFrame], *, margin: float = 0.5,
                  value: str = "reuse_score") -> pd.DataFrame:
    """Per conv layer, whether swapping it alone keeps ``value`` above ``margin``.

    ``scans``: :func:`reuse.toolkit.scan.swap_scan` frames, one per seed (a list), or one
    frame with a ``seed`` column; only their ``single`` rows are used. With two or more
    seeds a layer is reusable when the lower end of the 95% Student-t CI of its mean
    exceeds ``margin`` (:func:`reuse.toolkit.verdicts.mean_verdict`). With one seed there is
    no CI: the point estimate decides (``estimate > margin``) and a warning says so.

    Columns: layer, estimate, ci_low, ci_high, n (seeds), reusable, basis.
    """
    frame = _seeded(scans)
    if value not in frame.columns:
        raise ValueError(f"value={value!r} is not a column of the scans; allowed: "
                         f"{', '.join(c for c in ('reuse_score', 'relative', 'score', 'delta') if c in frame)}")
    single = frame[frame["set"] == "single"]
    if single.empty:
        raise ValueError("the scans hold no 'single' rows; run swap_scan with 'single' in sets")
    if single[value].isna().all():
        raise ValueError(f"every {value!r} is NaN (a reuse score needs chance=...); pass "
                         "value='relative' to judge score / target_score instead")
    n_seeds = single["seed"].nunique()
    if n_seeds == 1:
        warnings.warn(f"select: one seed, so each layer is judged by its point estimate of "
                      f"{value} (> {margin}) without a confidence interval; scan more seeds "
                      "for CIs", stacklevel=2)
    rows = []
    for layer, group in single.groupby("layer", sort=False):
        v = mean_verdict(group[value], margin)
        n = int(v["n"])  # seeds with a finite value: a NaN seed does not count
        reusable = v["ci_low"] > margin if n > 1 else v["estimate"] > margin
        rows.append({"layer": layer, "estimate": v["estimate"], "ci_low": v["ci_low"],
                     "ci_high": v["ci_high"], "n": n, "reusable": bool(reusable),
                     "basis": f"95% CI over {n} seeds" if n > 1 else f"point estimate ({n} seed)"})
    return pd.DataFrame(rows)


def check_joint(source: ModelLike, target: ModelLike, layers: Iterable[str], score_fn: ScoreFn, *,
                model: nn.Module | None = None, bn_data: torch.Tensor | None = None,
                chance: float | None = None, margin: float = 0.5, progress: bool = False
                ) -> tuple[list[str], pd.DataFrame]:
    """Score ``layers`` swapped together; while that fails, drop the layer whose removal
    gives the highest score and rescore (greedy backward elimination).

    A set passes when its reuse score (with ``chance``; the target must score above it) or
    else its ``relative`` score (score / target_score) exceeds ``margin``. Costs one score
    when the union passes and at most L(L+1)/2 more otherwise.

    Returns (the layers kept, in the given order; a log with one row per step: step, dropped
    (None at step 0), layers, n_layers, score, target_score, relative, reuse_score, passes).
    When the log has more than one row, the check backed off.
    """
    swap = swapper(source, target, score_fn, model, bn_data)
    current = check_layers(swap.target, layers)
    target_score = swap.score([])
    if chance is not None and math.isnan(reuse_or_nan(target_score, target_score, chance)):
        raise ValueError(f"the target scores {target_score:.4g}, not above chance={chance:.4g}: no "
                         "reuse score; pass chance=None to judge score / target_score instead")

    def row(step: int, dropped: str | None, chosen: list[str], score: float) -> dict:
        relative = score / target_score if target_score else math.nan
        r = reuse_or_nan(score, target_score, chance)
        return {"step": step, "dropped": dropped, "layers": ";".join(chosen), "n_layers": len(chosen),
                "score": score, "target_score": target_score, "relative": relative,
                "reuse_score": r, "passes": bool((r if chance is not None else relative) > margin)}

    log = [row(0, None, current, swap.score(current))]
    bar = tqdm(total=len(current) * (len(current) + 1) // 2, desc="joint check", disable=not progress)
    while not log[-1]["passes"] and current:
        trials = []
        for layer in current:
            rest = [n for n in current if n != layer]
            trials.append((swap.score(rest), layer, rest))
            bar.update()
        score, dropped, current = max(trials, key=lambda t: t[0])  # first of equals: earliest layer
        log.append(row(len(log), dropped, current, score))
    bar.close()
    return current, pd.DataFrame(log)


def _seeded(scans: pd.DataFrame | Sequence[pd.DataFrame]) -> pd.DataFrame:
    if isinstance(scans, pd.DataFrame):
        return scans if "seed" in scans.columns else scans.assign(seed=0)
    if isinstance(scans, (list, tuple)) and scans and all(isinstance(s, pd.DataFrame) for s in scans):
        return pd.concat([s.assign(seed=i) for i, s in enumerate(scans)], ignore_index=True)
    raise TypeError(f"scans is a {type(scans).__name__}; allowed: a swap_scan DataFrame or a "
                    "non-empty list of them (one per seed)")


def _swap_evidence(scans, layers: list[str], margin: float, value: str) -> pd.DataFrame:
    """:func:`swap_verdicts` per layer of ``layers`` (every layer passes without scans)."""
    if scans is None:
        return pd.DataFrame({"layer": layers, "reusable": True, **{c: math.nan for c in SWAP_COLUMNS[:-1]},
                             "swap_basis": ""})
    v = swap_verdicts(scans, margin=margin, value=value).set_index("layer").reindex(layers)
    return pd.DataFrame({"layer": layers, "reusable": v.reusable.fillna(False).astype(bool).to_numpy(),
                         "swap_estimate": v.estimate.to_numpy(), "swap_ci_low": v.ci_low.to_numpy(),
                         "swap_ci_high": v.ci_high.to_numpy(), "swap_n": v.n.to_numpy(),
                         "swap_basis": v.basis.fillna("no single swap of this layer").to_numpy()})


def _floor(noise_floor: pd.DataFrame | None, layers: list[str], criterion: str) -> list[float]:
    if noise_floor is None:
        return [math.nan] * len(layers)
    if not {"layer", criterion} <= set(noise_floor.columns):
        raise ValueError(f"noise_floor needs columns 'layer' and {criterion!r}; got "
                         f"{list(noise_floor.columns)}")
    per_layer = noise_floor.groupby("layer")[criterion].mean()
    return [float(per_layer.get(name, math.nan)) for name in layers]


def _reason(criterion: str, value: float, threshold: float | None, floor: float, network_reusable: bool,
            swap) -> str:
    if not network_reusable:
        return "not reused: the network is not reusable (condition a fails)"
    parts, ok = [], True
    if threshold is not None:
        name = {"rmse": "RMSE", "rel_rmse": "relative RMSE"}[criterion]
        ok = value <= threshold
        text = f"{name} {value:.4g} {'<=' if ok else '>'} threshold {threshold:.4g}"
        if math.isfinite(floor):
            text += f"; noise floor {floor:.4g} ({'within' if value <= floor else 'above'} retraining noise)"
        parts.append(text)
    if swap.swap_basis:
        ok = ok and swap.reusable
        parts.append(f"single swap {swap.swap_estimate:.3g} [{swap.swap_ci_low:.3g}, {swap.swap_ci_high:.3g}]"
                     f" ({swap.swap_basis}) {'passes' if swap.reusable else 'fails'}")
    return ("reused: " if ok else "not reused: ") + ("; ".join(parts) or "no condition given")
