"""reuse.toolkit: which layers of a CNN can be reused on a new task, for any CNN.

The public API, by purpose; each name is imported from its module on first use, so that
``import reuse.toolkit.files`` does not load torch. Everything not listed is internal.

Read checkpoints and pair layers
    :func:`load_state` (a module, state dict or file, read once: pass the result on),
    :func:`pair_layers` (the layers two architectures share), :func:`conv_layers`.
Measure kernels
    :func:`kernel_rmse` (RMSE, relative RMSE, cosine distance per layer),
    :func:`rmse_over_floor` (over the noise floor of retraining), :func:`per_kernel_rmse`,
    :func:`weight_matching` and :func:`aligned_kernel_rmse` (models from different inits).
Compare representations and sources
    :func:`linear_cka`, :func:`minibatch_cka`, :func:`svcca`, :func:`pwcca`, :func:`logme`.
Swap and score
    :func:`swap_state`, :func:`reestimate_bn`, :func:`swap_scan`, :func:`score_states`,
    :func:`evaluate`, :func:`reuse_score`.
Decide which layers to reuse
    :func:`decide` (the rule for one layer or set, from the evidence given),
    :func:`select_layers`, :func:`swap_verdicts`, :func:`check_joint`, :data:`REUSABLE`.
Judge over seeds
    :func:`verdict`, :func:`mean_verdict`, :func:`correlation_verdict`,
    :func:`cluster_verdict`, :func:`mean_ci`, :func:`correlation_ci`,
    :func:`seed_jackknife`, :func:`spearman`, :func:`holm`.
Run on a device and record
    :func:`resolve_device`, :func:`prepare_model`, :func:`autocast`, :func:`provenance`.

``cnn-reuse analyze`` (:mod:`reuse.toolkit.analyze`) runs all of it on two checkpoints from the
command line.
"""

from __future__ import annotations

import importlib

# public name -> the module that defines it
_API = {
    "load_state": "checkpoints", "pair_layers": "pairing", "conv_layers": "criteria",
    "kernel_rmse": "criteria", "rmse_over_floor": "criteria", "per_kernel_rmse": "criteria",
    "weight_matching": "alignment", "aligned_kernel_rmse": "alignment",
    "linear_cka": "similarity", "minibatch_cka": "similarity", "svcca": "similarity",
    "pwcca": "similarity", "logme": "similarity",
    "swap_state": "surgery", "reestimate_bn": "surgery", "swap_scan": "scan",
    "score_states": "scoring", "evaluate": "metrics", "reuse_score": "metrics",
    "decide": "selection", "select_layers": "selection", "swap_verdicts": "selection",
    "check_joint": "selection", "REUSABLE": "margins",
    "verdict": "verdicts", "mean_verdict": "verdicts", "correlation_verdict": "verdicts",
    "cluster_verdict": "verdicts", "mean_ci": "stats", "correlation_ci": "stats",
    "seed_jackknife": "stats", "spearman": "stats", "holm": "stats",
    "resolve_device": "gpu", "prepare_model": "gpu", "autocast": "gpu", "provenance": "provenance",
}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
