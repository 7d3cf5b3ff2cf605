"""E6, your own model: the reuse toolkit on a torchvision ResNet-18, as a new user would run it.

The user's question (issue 10): "I have a model trained on task A and one on task B; which
layers' parameters can I reuse, and does the kernel RMSE say so?" Here both are
``torchvision.models.resnet18(weights=None, num_classes=5)``, trained in this module on
this project's data and saved as plain state-dict files, so that the notebook hands
*paths* to the toolkit (:mod:`reuse.criteria`, :mod:`reuse.scan`) and to ``reuse analyze``.

Roles per seed (docs/protocol.md, section 3), all but the negative control from one
theta_0 (``init_seed = seed``):

- ``source``: Fashion-MNIST classes 0-4 (labels 0..4);
- ``target``: classes 5-9 relabelled 0..4, training block 0;
- ``twin`` (positive control): the target's task on the disjoint block 1, another batch order;
- ``different_init`` (negative control): the target's data and order, theta_0 of another seed.

Images: Fashion-MNIST at ``image_size`` px (:func:`reuse.data.load_domain`), grayscale
repeated to the 3 channels ResNet-18 expects: ``[N, 3, S, S]`` in [0, 1]. Training: Adam,
cosine-annealed learning rate, cross-entropy, fp32, deterministic kernels and a fixed
thread count (:func:`reuse.gpu.compute_scope`), so one seed gives one state dict, bit for
bit, on one machine. Checkpoints are cached as ``<cache_dir>/own_model/<key>.pt``, ``key``
the SHA-256 of every training setting (:meth:`RunSettings.key`).

Sizes (:data:`SCALES`) were measured on this project's 2-core CPU (torch 2.14, 2 threads),
seed 0, 3,000 training images, batch 64, top-1 accuracy on 1,000 test images (chance 0.2):

=========  =====  ===================================  ==========================
 model      px     accuracy after 100 / 150 steps       a 4x longer run
=========  =====  ===================================  ==========================
 target     16     0.931 / 0.944                        0.958 (600 steps)
 source     16     0.847 / --                           0.879 (400 steps)
 target     32     -- / 0.952                           --
=========  =====  ===================================  ==========================

At 150 steps the target keeps 98% of the longer run's gap above chance (the project's
adequacy margin is 95%); 32 px gains 0.8 points for 1.4x the training and 4x the scoring
time. One 150-step model takes about 10 s on the idle machine.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
import torchvision
from scipy import stats
from torch import nn

from ..config import PROFILES
from ..checkpoints import load_state
from ..criteria import conv_layers, kernel_rmse
from ..data import load_domain
from ..gpu import batch_indices, compute_scope, prepare_model, resolve_device
from ..scan import chance, check_joint, select, swap_scan, task_score_fn
from ..verdicts import REUSABLE, gated, mean_verdict
from .common import DIFFERENT_INIT_OFFSET, TWIN_OFFSET

PAIR = "fashion-split"  # source = classes 0-4, target = classes 5-9 relabelled 0..4
N_CLASSES = 5
ROLES = ("source", "target", "twin", "different_init")
FACTORY = "torchvision.models:resnet18"  # what `reuse analyze --model` is given
MODEL_ARGS = {"num_classes": N_CLASSES}  # ... and `--model-args`
DONORS = ("source", "twin", "different_init")  # swapped into / compared with theta_T
CONTROL_SETS = ("single", "all")  # the controls' verdicts need single layers only
TRAINER_VERSION = "1"  # bump when a change to training alters the weights it produces


@dataclass(frozen=True)
class Scale:
    """This notebook's sizes at one profile (the project's profiles size UNet/PSPNet runs,
    not a ResNet-18, so it keeps its own)."""

    image_size: int  # px (Fashion-MNIST's 28 px resized to image_size * 28 / 32, padded)
    n_train: int  # training images per model (the target's at most half its domain: the twin)
    n_test: int  # target test images every swap is scored on
    n_bn: int  # target training images BN statistics are re-estimated on after a swap
    steps: int  # optimiser steps
    batch_size: int
    lr: float  # Adam, cosine-annealed to 0
    seeds: tuple[int, ...]
    source_sets: tuple[str, ...] = ("single", "prefix", "suffix", "all")  # the source's swap sets
    n_layers: int | None = None  # scan only the first n conv layers (None: all 20)
    threads: int | None = None  # intra-op threads while training and scoring; None: torch's default

    def __post_init__(self):
        if not (self.steps >= 1 and self.batch_size >= 2 and self.lr > 0 and self.n_train >= 2
                and self.n_test >= 1 and self.n_bn >= 2):
            raise ValueError(f"{self}: steps, n_test >= 1, batch_size, n_train, n_bn >= 2 and lr > 0 needed")
        if not self.seeds:
            raise ValueError("seeds=(); at least one seed is needed")


SCALES = {
    # every code path in seconds (CI and nbval); the numbers mean nothing. Each swap of a
    # ResNet-18 costs about 0.3 s on a busy 2-core CPU, mostly copying its 11M parameters,
    # so smoke scans 4 layers. One thread: CI runs it beside other work, and two OpenMP
    # threads on two busy cores made a training step 20x slower (1.2 s instead of 60 ms)
    "smoke": Scale(image_size=16, n_train=64, n_test=64, n_bn=32, steps=20, batch_size=16, lr=1e-3,
                   seeds=(0, 1), source_sets=("single", "all"), n_layers=4, threads=1),
    # the whole notebook in about 4 minutes on 2 CPU cores: 16 px and 150 steps, near the
    # plateau (module docstring); three seeds, the fewest with a usable Student-t CI
    "quick": Scale(image_size=16, n_train=3000, n_test=500, n_bn=256, steps=150, batch_size=64, lr=1e-3,
                   seeds=(0, 1, 2)),
    # one GPU: 32 px, more data, longer training, more seeds
    "paper": Scale(image_size=32, n_train=12000, n_test=2000, n_bn=512, steps=2000, batch_size=128,
                   lr=1e-3, seeds=tuple(range(5))),
}


def scale(profile: str, seeds: list[int] | tuple[int, ...] | None = None, **overrides) -> Scale:
    """The notebook's :class:`Scale` at ``profile`` (a name of :data:`reuse.config.PROFILES`),
    with ``seeds`` and any field in ``overrides`` replaced (None values are ignored)."""
    if profile not in PROFILES or profile not in SCALES:
        raise ValueError(f"profile={profile!r}; allowed: {', '.join(SCALES)}")
    if seeds is not None:
        seeds = tuple(seeds)
        if not seeds or len(set(seeds)) != len(seeds) or not all(
                isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
            raise ValueError(f"seeds={list(seeds)!r}; expected a non-empty list of distinct integers >= 0")
        overrides["seeds"] = seeds
    fields = {f.name for f in dataclasses.fields(Scale)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown scale fields {unknown}; allowed: {', '.join(sorted(fields))}")
    return dataclasses.replace(SCALES[profile], **{k: v for k, v in overrides.items() if v is not None})


@dataclass(frozen=True)
class RunSettings:
    """Everything that fixes one checkpoint's weights (its cache key)."""

    role: str
    seed: int
    side: str  # 'source' or 'target' side of the pair
    init_seed: int
    data_seed: int
    order_seed: int
    block: int  # disjoint block of n_train training images (the twin: 1)
    image_size: int
    n_train: int
    steps: int
    batch_size: int
    lr: float
    device_type: str  # with `threads`, fixes the rounding
    threads: int

    @property
    def key(self) -> str:
        """SHA-256 of every setting, the factory and the trainer version."""
        blob = json.dumps({"settings": dataclasses.asdict(self), "factory": FACTORY, "model_args": MODEL_ARGS,
                           "trainer": TRAINER_VERSION}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()


def run_settings(sc: Scale, seed: int, role: str, device: str | torch.device = "cpu") -> RunSettings:
    """The :class:`RunSettings` of ``role`` (one of :data:`ROLES`) for ``seed`` at scale ``sc``."""
    if role not in ROLES:
        raise ValueError(f"role={role!r}; allowed: {', '.join(ROLES)}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed={seed!r}; expected an integer >= 0")
    dev = resolve_device(device)
    init = seed + DIFFERENT_INIT_OFFSET if role == "different_init" else seed
    order = seed + TWIN_OFFSET if role == "twin" else seed
    return RunSettings(role, seed, "source" if role == "source" else "target", init, seed, order,
                       int(role == "twin"), sc.image_size, sc.n_train, sc.steps, sc.batch_size, sc.lr,
                       dev.type, sc.threads or torch.get_num_threads())


def build_model(init_seed: int) -> nn.Module:
    """theta_0: ``resnet18(weights=None, num_classes=5)`` initialised from ``init_seed``
    (torch's global generator is forked, so the caller's random state is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        return torchvision.models.resnet18(weights=None, **MODEL_ARGS)


def _rgb(x: torch.Tensor) -> torch.Tensor:
    """``[N, 1, S, S]`` -> ``[N, 3, S, S]``: grayscale repeated to ResNet's three channels."""
    return x.expand(-1, 3, -1, -1).contiguous()


def images(side: str, split: str, n: int, seed: int = 0, image_size: int = 16,
           data_dir: str | Path | None = None, block: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(images ``[n, 3, S, S]`` in [0, 1], labels ``[n]`` in 0..4) of one side of the pair.

    ``side='source'`` is Fashion-MNIST classes 0-4, ``'target'`` classes 5-9 relabelled
    0..4; ``split`` 'train' or 'test'; ``block`` picks which disjoint run of ``n`` training
    images (the twin's: 1). Which images is fixed by ``seed``.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split={split!r}; allowed: 'train', 'test'")
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n={n!r}; expected an integer >= 1")
    train = split == "train"
    d = load_domain(PAIR, side, n if train else 1, 1 if train else n, seed=seed, data_dir=data_dir,
                    image_size=image_size, block=block if train else 0)
    x, y = (d.train_x, d.train_y) if train else (d.test_x, d.test_y)
    return _rgb(x), y


def train(settings: RunSettings, data_dir: str | Path | None = None) -> dict[str, torch.Tensor]:
    """Train one checkpoint (no cache): its state dict, CPU fp32 tensors.

    Every step sees ``batch_size`` images drawn without replacement from a permutation
    seeded by ``order_seed`` (a new one per pass over the data, its partial tail dropped).
    """
    s = settings
    device = torch.device(s.device_type)
    x, y = images(s.side, "train", s.n_train, s.data_seed, s.image_size, data_dir, s.block)
    x, y = x.to(device, memory_format=torch.channels_last), y.to(device)
    with compute_scope(deterministic=True, threads=s.threads):
        model = prepare_model(build_model(s.init_seed), device).train()
        # fused: one kernel for all 11M parameters; unfused Adam took 13x longer per step in
        # deterministic mode on the CPU (754 vs 56 ms at batch 64, 16 px, 2 threads)
        opt = torch.optim.Adam(model.parameters(), lr=s.lr, fused=device.type in ("cpu", "cuda"))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, s.steps)
        order = torch.Generator().manual_seed(s.order_seed)
        step = 0
        while step < s.steps:
            for idx in batch_indices(len(x), min(s.batch_size, len(x)), device, order, drop_last=True):
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(model(x[idx]), y[idx]).backward()
                opt.step()
                sched.step()
                step += 1
                if step == s.steps:
                    break
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


def checkpoint(settings: RunSettings, cache_dir: str | Path = ".cache",
               data_dir: str | Path | None = None) -> tuple[Path, bool, float]:
    """(path, cached, seconds): the checkpoint file of ``settings``, trained and written
    (atomically: a temporary file, then ``os.replace``) unless it is already there."""
    path = Path(cache_dir) / "own_model" / f"{settings.key}.pt"
    if path.is_file():
        return path, True, 0.0
    start = time.perf_counter()
    state = train(settings, data_dir)
    seconds = time.perf_counter() - start
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path, False, seconds


def checkpoints(sc: Scale, device: str = "auto", cache_dir: str | Path = ".cache",
                data_dir: str | Path | None = None, roles=ROLES) -> pd.DataFrame:
    """Every role's checkpoint for every seed of ``sc``, trained or loaded from the cache.

    One row per seed x role: seed, role, path, cached, seconds (training time; 0 if cached).
    """
    unknown = sorted(set(roles) - set(ROLES))
    if unknown:
        raise ValueError(f"roles {unknown}; allowed: {', '.join(ROLES)}")
    rows = []
    for seed in sc.seeds:
        for role in roles:
            path, cached, seconds = checkpoint(run_settings(sc, seed, role, device), cache_dir, data_dir)
            rows.append({"seed": seed, "role": role, "path": str(path), "cached": cached, "seconds": seconds})
    return pd.DataFrame(rows, columns=["seed", "role", "path", "cached", "seconds"])


# ----------------------------------------------------------------------------- analysis
def paths(ckpts: pd.DataFrame, seed: int) -> dict[str, str]:
    """role -> checkpoint path of one seed (rows of :func:`checkpoints`)."""
    rows = ckpts[ckpts.seed == seed]
    if rows.empty:
        raise ValueError(f"seed={seed!r}; the checkpoints have seeds {sorted(ckpts.seed.unique())}")
    return dict(zip(rows.role, rows.path))


def kernel_distances(ckpts: pd.DataFrame) -> pd.DataFrame:
    """Per seed x comparison x conv layer: RMSE, relative RMSE and cosine distance between
    theta_T and the source, the twin (the noise floor of retraining) and the
    different-init control (:func:`reuse.criteria.kernel_rmse` on the checkpoint paths)."""
    frames = []
    for seed in map(int, sorted(ckpts.seed.unique())):
        p = paths(ckpts, seed)
        for comparison in DONORS:
            if comparison in p:
                frames.append(kernel_rmse(p[comparison], p["target"]).assign(seed=seed, comparison=comparison))
    out = pd.concat(frames, ignore_index=True)
    return out[["seed", "comparison", *[c for c in out.columns if c not in ("seed", "comparison")]]]


def scorer(sc: Scale, seed: int, device: str = "auto", data_dir: str | Path | None = None
           ) -> tuple[Callable[[nn.Module], float], torch.Tensor, float]:
    """(score_fn, bn_data, chance) of one seed: top-1 accuracy on ``sc.n_test`` target test
    images (:func:`reuse.scan.task_score_fn`); the first ``sc.n_bn`` of the target's
    training images ``[n_bn, 3, S, S]``, which BN statistics are re-estimated on after a
    swap; the accuracy of predicting the target's majority training class."""
    x, y = images("target", "test", sc.n_test, seed, sc.image_size, data_dir)
    train_x, train_y = images("target", "train", sc.n_train, seed, sc.image_size, data_dir)
    dev = resolve_device(device)
    return (task_score_fn("classification", x.to(dev), y.to(dev), n_outputs=N_CLASSES),
            train_x[:sc.n_bn].to(dev), chance("classification", train_y, y, N_CLASSES))


def swap_scans(ckpts: pd.DataFrame, sc: Scale, device: str = "auto", data_dir: str | Path | None = None,
               progress: bool = False) -> pd.DataFrame:
    """The swap scan (:func:`reuse.scan.swap_scan`, BN re-estimated) of every donor into
    theta_T, per seed: the source with the scale's sets (single layers, prefixes, suffixes, all),
    the two controls with single layers and all. Columns: seed, donor, then the scan's."""
    frames = []
    dev = resolve_device(device)
    for seed in map(int, sorted(ckpts.seed.unique())):
        p = paths(ckpts, seed)
        score_fn, bn_x, chance_value = scorer(sc, seed, device, data_dir)
        model = prepare_model(build_model(seed), dev)
        layers = conv_layers(p["target"])[:sc.n_layers]
        for donor in DONORS:
            if donor in p:
                sets = sc.source_sets if donor == "source" else CONTROL_SETS
                with compute_scope(threads=sc.threads):
                    scan = swap_scan(p[donor], p["target"], score_fn, model=model, layers=layers, sets=sets,
                                     bn_data=bn_x, chance=chance_value, progress=progress)
                frames.append(scan.assign(seed=seed, donor=donor))
    out = pd.concat(frames, ignore_index=True)
    return out[["seed", "donor", *[c for c in out.columns if c not in ("seed", "donor")]]]


def selection(scans: pd.DataFrame, margin: float = REUSABLE) -> pd.DataFrame:
    """Per conv layer, the source's single-layer reuse score over seeds and whether the
    layer is selected (:func:`reuse.scan.select`: a CI over seeds, or a point estimate
    with a warning from one seed)."""
    src = scans[(scans.donor == "source") & (scans.set == "single")]
    if src.reuse_score.isna().all():  # theta_T no better than chance: nothing can be judged
        return pd.DataFrame({"layer": src.layer.unique(), "estimate": float("nan"), "ci_low": float("nan"),
                             "ci_high": float("nan"), "n": 0, "reusable": False,
                             "basis": "none: the target model is no better than chance"})
    return select(src.drop(columns="donor"), margin=margin)


def joint_checks(ckpts: pd.DataFrame, sc: Scale, layers: list[str], device: str = "auto",
                 data_dir: str | Path | None = None, margin: float = REUSABLE) -> pd.DataFrame:
    """Per seed, the selected ``layers`` swapped *together* from theta_S into theta_T
    (:func:`reuse.scan.check_joint`, BN re-estimated). One row per seed: n_selected,
    joint_reuse_score (of the whole selected set), n_kept (after greedy back-off, if the
    union failed) and kept (the layers kept, comma-separated). A seed whose target model is
    no better than chance is not judged (NaN, and ``kept`` says why)."""
    rows, dev = [], resolve_device(device)
    for seed in map(int, sorted(ckpts.seed.unique())):
        p = paths(ckpts, seed)
        if not layers:
            rows.append({"seed": seed, "n_selected": 0, "joint_reuse_score": float("nan"), "n_kept": 0,
                         "kept": ""})
            continue
        score_fn, bn_x, chance_value = scorer(sc, seed, device, data_dir)
        target = prepare_model(build_model(seed), dev)
        target.load_state_dict(load_state(p["target"]))
        with compute_scope(threads=sc.threads):
            if not score_fn(target) > chance_value:  # as in selection: nothing to lose, not judged
                rows.append({"seed": seed, "n_selected": 0, "joint_reuse_score": float("nan"), "n_kept": 0,
                             "kept": "(excluded: the target model is no better than chance)"})
                continue
            kept, steps = check_joint(p["source"], p["target"], layers, score_fn, model=target,
                                      bn_data=bn_x, chance=chance_value, margin=margin)
        rows.append({"seed": seed, "n_selected": len(layers), "joint_reuse_score": float(steps.reuse_score.iloc[0]),
                     "n_kept": len(kept), "kept": ",".join(kept)})
    return pd.DataFrame(rows, columns=["seed", "n_selected", "joint_reuse_score", "n_kept", "kept"])


def _per_seed(scans: pd.DataFrame, donor: str, set_name: str) -> pd.Series:
    """Per seed, the mean reuse score of ``donor``'s swaps of set ``set_name``."""
    rows = scans[(scans.donor == donor) & (scans.set == set_name)]
    return rows.groupby("seed").reuse_score.mean()


def _rank_rho(distances: pd.DataFrame, scans: pd.DataFrame) -> pd.Series:
    """Per seed, Spearman's rho between the source's relative RMSE and its single-layer
    reuse score over the conv layers (negative: a larger distance, a worse swap)."""
    d = distances[distances.comparison == "source"][["seed", "layer", "rel_rmse"]]
    s = scans[(scans.donor == "source") & (scans.set == "single")][["seed", "layer", "reuse_score"]]
    m = d.merge(s, on=["seed", "layer"], validate="one_to_one")
    return m.groupby("seed").apply(lambda g: stats.spearmanr(g.rel_rmse, g.reuse_score).statistic,
                                   include_groups=False)


JUDGMENTS = {
    "single swaps, positive control": f"the twin's single-layer swaps keep on average at least {REUSABLE} "
                                      "of theta_T's above-chance accuracy (expected: holds)",
    "single swaps, negative control": "the different-init model's single-layer swaps keep on average at "
                                      f"least {REUSABLE} (expected: refuted)",
    "joint swap, positive control": f"the twin's conv kernels, all swapped at once, keep at least {REUSABLE} "
                                    "(expected: holds)",
    "joint swap, negative control": f"the different-init model's conv kernels, all swapped at once, keep at "
                                    f"least {REUSABLE} (expected: refuted)",
    "selected set as a whole": f"the layers selected one by one, swapped together from theta_S, keep at least "
                               f"{REUSABLE} (gated by the joint-swap controls)",
    "RMSE ranks layers": "the source's relative kernel RMSE and its single-layer reuse score are negatively "
                         "correlated, Spearman rho < 0 (gated by the single-swap controls)",
}


def verdicts(scans: pd.DataFrame, distances: pd.DataFrame, joint: pd.DataFrame) -> pd.DataFrame:
    """One row per judgment of :data:`JUDGMENTS`: estimate, 95% CI over seeds, verdict
    (three-valued, :func:`reuse.verdicts.mean_verdict`), detectable effect, n, controls.

    Each claim about the source is gated (:func:`reuse.verdicts.gated`) by the controls of
    the measurement it rests on: the selected set's joint swap by the all-layer swaps of
    the twin and the different-init model, the RMSE ranking (whose labels are single-layer
    scores) by their single-layer swaps. A claim stands only where its positive control
    holds and its negative control is refuted; otherwise it is undecided.
    """
    controls = {
        "single swaps, positive control": mean_verdict(_per_seed(scans, "twin", "single"), REUSABLE),
        "single swaps, negative control": mean_verdict(_per_seed(scans, "different_init", "single"), REUSABLE),
        "joint swap, positive control": mean_verdict(_per_seed(scans, "twin", "all"), REUSABLE),
        "joint swap, negative control": mean_verdict(_per_seed(scans, "different_init", "all"), REUSABLE),
    }
    rows = [{"judgment": name, **v, "controls": "n/a", "raw_verdict": v["verdict"]} for name, v in controls.items()]
    claims = (("selected set as a whole", mean_verdict(joint.joint_reuse_score, REUSABLE), "joint swap"),
              ("RMSE ranks layers", mean_verdict(_rank_rho(distances, scans), 0.0, "below"), "single swaps"))
    for name, v, basis in claims:
        verdict, gate = gated(v["verdict"], controls[f"{basis}, positive control"]["verdict"],
                              controls[f"{basis}, negative control"]["verdict"])
        rows.append({"judgment": name, **v, "verdict": verdict, "controls": gate, "raw_verdict": v["verdict"]})
    out = pd.DataFrame(rows)
    out["rule"] = out.judgment.map(JUDGMENTS)
    return out[["judgment", "verdict", "estimate", "ci_low", "ci_high", "detectable", "n", "controls",
                "raw_verdict", "rule"]]


def verdict_text(table: pd.DataFrame) -> str:
    """One Markdown line per verdict."""
    return "\n".join(f"- {r.judgment}: **{r.verdict}** ({r.estimate:.3g} [{r.ci_low:.3g}, {r.ci_high:.3g}], "
                     f"n = {int(r.n)} seeds, smallest detectable effect {r.detectable:.2g}; controls "
                     f"{r.controls}). Rule: {r.rule}." for r in table.itertuples())


def findings(table: pd.DataFrame, chosen: pd.DataFrame, joint: pd.DataFrame, distances: pd.DataFrame) -> str:
    """What the verdicts say for the user's question, computed from them."""
    v = table.set_index("judgment")
    verdict = v.verdict.to_dict()
    layers = list(chosen.layer[chosen.reusable])
    lines = []
    single_ok = (verdict["single swaps, positive control"] == "holds"
                 and verdict["single swaps, negative control"] == "refuted")
    if single_ok:
        lines.append(f"- Single-layer swaps discriminate: the twin's layers pass, the different-init model's "
                     f"fail. By them, {len(layers)} of {len(chosen)} conv layers are reusable"
                     + (f" ({', '.join(layers)})." if layers else "."))
    else:
        verb = ("do not discriminate here" if verdict["single swaps, negative control"] == "holds"
                or verdict["single swaps, positive control"] == "refuted" else "cannot be shown to discriminate")
        lines.append(f"- Single-layer swaps {verb}: the twin's keep "
                     f"{v.estimate['single swaps, positive control']:.2f} and the different-init model's "
                     f"{v.estimate['single swaps, negative control']:.2f} of theta_T's above-chance accuracy "
                     f"(positive control {verdict['single swaps, positive control']}, negative control "
                     f"{verdict['single swaps, negative control']}). The {len(layers)} of {len(chosen)} layers "
                     "they select are therefore no evidence of reusability.")
    if len(joint) and joint.n_selected.max() > 0:
        backed_off = (joint.n_kept < joint.n_selected).any()
        lines.append(f"- Swapped together, the selected set keeps {v.estimate['selected set as a whole']:.2f} "
                     f"of theta_T's above-chance accuracy (twin, all layers: "
                     f"{v.estimate['joint swap, positive control']:.2f}; different init: "
                     f"{v.estimate['joint swap, negative control']:.2f}): "
                     f"{verdict['selected set as a whole']}."
                     + (f" The greedy back-off had to drop layers, keeping {joint.n_kept.min()}-"
                        f"{joint.n_kept.max()} of {joint.n_selected.max()}." if backed_off else ""))
    else:
        lines.append("- No layer was selected, so there is no set to check as a whole.")
    ratio = _floor_ratio(distances)
    lines.append(f"- Kernel RMSE: the source's kernels lie {ratio:.2f}x as far from theta_T as the twin's "
                 f"(the noise floor of retraining), and its ranking of the layers: "
                 f"{verdict['RMSE ranks layers']} (rho {v.estimate['RMSE ranks layers']:.2f}).")
    return "\n".join(lines)


def _floor_ratio(distances: pd.DataFrame) -> float:
    """Mean over seeds and layers of RMSE(source, theta_T) / RMSE(twin, theta_T)."""
    d = distances.pivot_table(index=["seed", "layer"], columns="comparison", values="rmse")
    return float((d["source"] / d["twin"]).mean()) if {"source", "twin"} <= set(d.columns) else float("nan")


def records(table: pd.DataFrame) -> pd.DataFrame:
    """The verdict rows in :func:`reuse.report.record`'s form."""
    return table[["judgment", "verdict", "estimate", "ci_low", "ci_high", "detectable", "n", "controls"]]


def analyze_argv(role_paths: dict[str, str], out: str | Path) -> list[str]:
    """The ``reuse analyze`` arguments for one seed's checkpoints (:func:`paths`): source
    vs target, the twin as the noise floor, kernels only, report in ``out``."""
    return ["analyze", str(role_paths["source"]), str(role_paths["target"]), "--model", FACTORY,
            "--model-args", json.dumps(MODEL_ARGS), "--twin", str(role_paths["twin"]), "--out", str(out)]
