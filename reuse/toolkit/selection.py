"""Which conv layers to reuse: the one home of the reuse rule.

arXiv 2008.03411 (abstract): reuse works when (a) the network is reusable and (b) the
RMSE between the source- and target-trained kernels of a layer is small enough. One
function decides, :func:`decide`, for one unit (a layer, or a set of layers swapped
together) from whatever evidence it is given:

- condition (a), ``network_reusable`` (E1's verdict, or the user's);
- condition (b), a kernel criterion (RMSE or relative RMSE) under ``threshold``;
- swap evidence: the unit swapped in from the source keeps its per-seed value (reuse score,
  or score / target score) above ``margin`` (:data:`reuse.toolkit.margins.REUSABLE`): a 95% CI
  over seeds, or a point estimate where one seed is all there is;
- the theta_0 baseline: the source beats the same unit reset to its initialisation, paired
  by seed (Zhang, Bengio & Singer 2019's re-initialisation test);
- the controls: the swap discriminates only where a same-task twin's swaps keep the margin
  (positive control) and a model of another initialisation's do not (negative control);
  otherwise the verdict is 'undecided'.

Everything that decides reuse goes through it: :func:`select_layers` (two checkpoints: the
criterion, the swap scans, then the chosen layers swapped *together*, backing off greedily
where that fails, :func:`check_joint`: singles passing does not make their union pass),
:func:`swap_verdicts` (a table of single-layer swaps, as ``cnn-reuse analyze`` writes it), and the
study's experiments (E1, E2, E4, E6, E7).

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
from .verdicts import REUSABLE, conjunction, gated, mean_verdict

__all__ = ["DISTANCE_CRITERIA", "check_joint", "conv_layers", "decide", "select_layers", "swap_verdicts"]

DISTANCE_CRITERIA = ("rmse", "rel_rmse")  # the kernel distances of condition (b): use_relative picks
SWAP_COLUMNS = ["swap_estimate", "swap_ci_low", "swap_ci_high", "swap_n", "swap_basis"]
_STATS = ("estimate", "ci_low", "ci_high", "verdict")


def decide(swap: pd.Series | Sequence[float] | None = None, *, margin: float = REUSABLE,
           reset: pd.Series | None = None, positive: pd.Series | None = None,
           negative: pd.Series | None = None, network_reusable: bool = True,
           criterion: float | None = None, threshold: float | None = None, one_seed: bool = False) -> dict:
    """The reuse rule for one unit (a layer, or layers swapped together) from the evidence given;
    evidence not given (None) is no part of the decision.

    - condition (a): ``network_reusable`` (part ``network``);
    - condition (b): ``criterion <= threshold`` when ``threshold`` is not None (part
      ``below_threshold``; a NaN criterion fails, ``inf`` passes everything);
    - ``swap``: per-seed values of the unit swapped in from the source (NaN ignored): their mean
      above ``margin`` by its 95% Student-t CI (:func:`reuse.toolkit.verdicts.mean_verdict`;
      part ``above_margin``). With a single value there is no CI: 'undecided', unless
      ``one_seed``, where the point estimate decides;
    - ``reset``: per-seed values of the unit reset to theta_0 (a Series indexed by seed, as
      ``swap``): the source minus the reset, paired by seed, above 0 by its CI (part
      ``minus_reset_verdict``; ``reset_estimate`` is the reset's mean);
    - ``positive``, ``negative`` (both or neither): per-seed values of the controls' swaps (a
      same-task twin; a model of another initialisation), each judged against ``margin``.

    The parts are joined by :func:`reuse.toolkit.verdicts.conjunction` (``reusable``) and gated
    by the controls (:func:`reuse.toolkit.verdicts.gated`: ``verdict``, ``controls``, 'n/a'
    without them); the unit is reused (``reuse``) when ``verdict`` is 'holds'.

    Returns a flat dict: network, reusable, verdict, controls, reuse; with ``threshold``
    below_threshold; with ``swap`` estimate, ci_low, ci_high, n, detectable, above_margin, basis;
    with ``reset`` reset_estimate and minus_reset_{estimate, ci_low, ci_high, verdict}; with the
    controls positive_* and negative_* (estimate, ci_low, ci_high, verdict).
    """
    if threshold is not None and not (isinstance(threshold, (int, float)) and threshold >= 0):  # NaN fails
        raise ValueError(f"threshold={threshold!r}; allowed: None (no criterion) or a number >= 0 "
                         "(inf passes every layer)")
    if (positive is None) != (negative is None):
        raise ValueError("positive and negative are the two controls of one gate: give both or neither")
    out: dict = {"network": "holds" if network_reusable else "refuted"}
    parts = [out["network"]]
    if threshold is not None:
        out["below_threshold"] = "holds" if criterion is not None and criterion <= threshold else "refuted"
        parts.append(out["below_threshold"])
    if swap is not None:
        v = mean_verdict(swap, margin)
        n = int(v["n"])  # seeds with a finite value: a NaN seed does not count
        if one_seed and n == 1:
            v["verdict"] = "holds" if v["estimate"] > margin else "refuted"
        out.update({k: v[k] for k in ("estimate", "ci_low", "ci_high", "detectable")}, n=n,
                   above_margin=v["verdict"], basis=f"95% CI over {n} seeds" if n > 1 else
                   f"point estimate ({n} seed)" if one_seed else f"no CI ({n} seed)")
        parts.append(v["verdict"])
    if reset is not None:
        d = mean_verdict((swap - reset).dropna(), 0.0)
        out.update(reset_estimate=float(reset.mean()), **{f"minus_reset_{k}": d[k] for k in _STATS})
        parts.append(d["verdict"])
    out["reusable"] = conjunction(*parts)
    out["verdict"], out["controls"] = out["reusable"], "n/a"
    if positive is not None:
        for name, values in (("positive", positive), ("negative", negative)):
            c = mean_verdict(values, margin)
            out.update({f"{name}_{k}": c[k] for k in _STATS})
        out["verdict"], out["controls"] = gated(out["reusable"], out["positive_verdict"], out["negative_verdict"])
    out["reuse"] = out["verdict"] == "holds"
    return out


def select_layers(source_state: ModelLike, target_state: ModelLike,
                  layers: Iterable[str] | None = None, *, threshold: float | None = None,
                  use_relative: bool = False, noise_floor: pd.DataFrame | None = None,
                  network_reusable: bool = True, scans: pd.DataFrame | Sequence[pd.DataFrame] | None = None,
                  value: str = "reuse_score", score_fn: Callable[[nn.Module], float] | None = None,
                  model: nn.Module | None = None, bn_data: torch.Tensor | None = None,
                  chance: float | None = None, margin: float = REUSABLE, progress: bool = False
                  ) -> tuple[pd.DataFrame, list[str]]:
    """Per-layer decisions of the reuse rule (:func:`decide`) and the layers to reuse.

    ``source_state`` / ``target_state``: modules, state dicts or checkpoint paths of one
    architecture trained on the source and the target. ``layers``: conv layers to judge
    (all when None). A layer is reused when every condition given holds:

    - ``network_reusable`` (condition a);
    - ``threshold`` (not None): its criterion (relative RMSE when ``use_relative``) is
      ``<= threshold`` (condition b; ``inf`` passes every layer);
    - ``scans`` (not None): its single-layer swap keeps ``value`` above ``margin`` (as in
      :func:`swap_verdicts`; the evidence goes into the ``swap_*`` columns).

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
    decide(threshold=threshold)  # a bad threshold is named before any work
    criterion = DISTANCE_CRITERIA[bool(use_relative)]
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
    single = None if scans is None else _single(scans, value, margin)
    decisions = [decide(None if single is None else single[value][single.layer == name], margin=margin,
                        network_reusable=network_reusable, criterion=v, threshold=threshold, one_seed=True)
                 for name, v in zip(layers, table[criterion].to_numpy())]
    table[SWAP_COLUMNS] = pd.DataFrame([_swap_columns(d, single is not None and (single.layer == name).any())
                                        for name, d in zip(layers, decisions)]).to_numpy(dtype=object)
    table["reuse"] = [d["reuse"] for d in decisions]
    table["reason"] = [_reason(criterion, v, threshold, f, d, basis) for v, f, d, basis
                       in zip(table[criterion], table.noise_floor, decisions, table.swap_basis)]
    chosen = [name for name, d in zip(layers, decisions) if d["reuse"]]
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


def swap_verdicts(scans: pd.DataFrame | Sequence[pd.DataFrame], *, margin: float = REUSABLE,
                  value: str = "reuse_score", positive: pd.Series | None = None,
                  negative: pd.Series | None = None) -> pd.DataFrame:
    """Per conv layer, whether swapping it alone keeps ``value`` above ``margin`` (:func:`decide`).

    ``scans``: :func:`reuse.toolkit.scan.swap_scan` frames, one per seed (a list), or one
    frame with a ``seed`` column; only their ``single`` rows are used. With two or more
    seeds a layer is reusable when the lower end of the 95% Student-t CI of its mean
    exceeds ``margin``. With one seed there is no CI: the point estimate decides
    (``estimate > margin``) and a warning says so. ``positive``, ``negative``: per-seed values
    of the controls (e.g. the mean single-layer score of a twin's and of another
    initialisation's swaps): where they do not behave, no layer is reusable, ``basis`` says
    why and ``raw_reusable`` keeps the swaps' own call.

    Columns: layer, estimate, ci_low, ci_high, n (seeds), reusable, basis (and raw_reusable
    with the controls).
    """
    single = _single(scans, value, margin)
    rows = []
    for layer, group in single.groupby("layer", sort=False):
        d = decide(group[value], margin=margin, positive=positive, negative=negative, one_seed=True)
        failed = d["controls"].startswith("failed")
        rows.append({"layer": layer, **{k: d[k] for k in ("estimate", "ci_low", "ci_high", "n")},
                     "reusable": d["reuse"], "basis": f"undecided: controls failed "
                     f"({d['controls'].removeprefix('failed: ')})" if failed else d["basis"],
                     **({} if positive is None else {"raw_reusable": d["reusable"] == "holds"})})
    return pd.DataFrame(rows)


def check_joint(source: ModelLike, target: ModelLike, layers: Iterable[str], score_fn: ScoreFn, *,
                model: nn.Module | None = None, bn_data: torch.Tensor | None = None,
                chance: float | None = None, margin: float = REUSABLE, progress: bool = False
                ) -> tuple[list[str], pd.DataFrame]:
    """Score ``layers`` swapped together; while that fails, drop the layer whose removal
    gives the highest score and rescore (greedy backward elimination).

    A set passes by :func:`decide` on its one value: its reuse score (with ``chance``; the
    target must score above it) or else its ``relative`` score (score / target_score) exceeds
    ``margin``. Costs one score when the union passes and at most L(L+1)/2 more otherwise.

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
        judged = r if chance is not None else relative
        return {"step": step, "dropped": dropped, "layers": ";".join(chosen), "n_layers": len(chosen),
                "score": score, "target_score": target_score, "relative": relative,
                "reuse_score": r, "passes": decide([judged], margin=margin, one_seed=True)["reuse"]}

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


def _single(scans, value: str, margin: float) -> pd.DataFrame:
    """The ``single`` rows of ``scans`` (:func:`_seeded`), checked; a warning with one seed."""
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
    if single["seed"].nunique() == 1:
        warnings.warn(f"select: one seed, so each layer is judged by its point estimate of "
                      f"{value} (> {margin}) without a confidence interval; scan more seeds "
                      "for CIs", stacklevel=3)
    return single


def _swap_columns(d: dict, scanned: bool) -> list:
    """The ``swap_*`` columns of one layer's decision (empty without scans)."""
    if "basis" not in d:
        return [math.nan] * 4 + [""]
    if not scanned:
        return [math.nan] * 4 + ["no single swap of this layer"]
    return [d["estimate"], d["ci_low"], d["ci_high"], d["n"], d["basis"]]


def _floor(noise_floor: pd.DataFrame | None, layers: list[str], criterion: str) -> list[float]:
    if noise_floor is None:
        return [math.nan] * len(layers)
    if not {"layer", criterion} <= set(noise_floor.columns):
        raise ValueError(f"noise_floor needs columns 'layer' and {criterion!r}; got "
                         f"{list(noise_floor.columns)}")
    per_layer = noise_floor.groupby("layer")[criterion].mean()
    return [float(per_layer.get(name, math.nan)) for name in layers]


def _reason(criterion: str, value: float, threshold: float | None, floor: float, d: dict, basis: str) -> str:
    """One sentence: which of :func:`decide`'s parts passed and failed for this layer."""
    if d["network"] != "holds":
        return "not reused: the network is not reusable (condition a fails)"
    parts = []
    if threshold is not None:
        name = {"rmse": "RMSE", "rel_rmse": "relative RMSE"}[criterion]
        ok = d["below_threshold"] == "holds"
        text = f"{name} {value:.4g} {'<=' if ok else '>'} threshold {threshold:.4g}"
        if math.isfinite(floor):
            text += f"; noise floor {floor:.4g} ({'within' if value <= floor else 'above'} retraining noise)"
        parts.append(text)
    if basis:
        parts.append(f"single swap {d['estimate']:.3g} [{d['ci_low']:.3g}, {d['ci_high']:.3g}]"
                     f" ({basis}) {'passes' if d['above_margin'] == 'holds' else 'fails'}")
    return ("reused: " if d["reuse"] else "not reused: ") + ("; ".join(parts) or "no condition given")
