"""E6, your own model: the reuse toolkit on a torchvision ResNet-18, as a new user would run it.

The user's question (issue 10): "I have a model trained on task A and one on task B; which
layers' parameters can I reuse, and does the kernel RMSE say so?" Here both are
``torchvision.models.resnet18(weights=None, num_classes=5)``, trained in this module on
this project's data and saved as plain state-dict files, so that the notebook hands
*paths* to the toolkit (:mod:`reuse.toolkit.criteria`, :mod:`reuse.toolkit.scan`) and to ``cnn-reuse analyze``.

Roles per seed (docs/protocol.md, section 3), all but the negative control from one
theta_0 (``init_seed = seed``):

- ``source``: Fashion-MNIST classes 0-4 (labels 0..4);
- ``target``: classes 5-9 relabelled 0..4, training block 0;
- ``twin`` (positive control): the target's task on the disjoint block 1, another batch order;
- ``different_init`` (negative control): the target's data and order, theta_0 of another seed.

Images: Fashion-MNIST at ``image_size`` px (:func:`reuse.study.training.data.load_domain`), grayscale
repeated to the 3 channels ResNet-18 expects: ``[N, 3, S, S]`` in [0, 1]. Training goes
through the study's one path (:class:`reuse.study.training.train.Runner`,
:func:`reuse.study.training.fit.fit`, its run cache): Adam, cosine-annealed learning rate,
cross-entropy, fp32, deterministic kernels and the profile's thread count, so one seed gives
one state dict, bit for bit.
Each checkpoint is also saved as a plain state-dict file (:func:`checkpoints`), which the
toolkit and ``cnn-reuse analyze`` read as a user's file. Sizes: :class:`reuse.study.config.OwnModel`.

Sizes were measured on this project's 2-core CPU (torch 2.14, 2 threads), seed 0, 3,000
training images, batch 64, top-1 accuracy on 1,000 test images (chance 0.2):

=========  =====  ===================================  ==========================
 model      px     accuracy after 100 / 150 steps       a 4x longer run
=========  =====  ===================================  ==========================
 target     16     0.931 / 0.944                        0.958 (600 steps)
 source     16     0.847 / --                           0.879 (400 steps)
 target     32     -- / 0.952                           --
=========  =====  ===================================  ==========================

At 150 steps the target keeps 98% of the longer run's gap above chance (the project's
adequacy margin is 95%); 32 px gains 0.8 points for 1.4x the training and 4x the scoring
time.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from reuse.toolkit import files
from reuse.toolkit.checkpoints import load_state
from reuse.toolkit.criteria import conv_layers, kernel_rmse
from reuse.toolkit.gpu import compute_scope, prepare_model
from reuse.toolkit.scan import chance, swap_scan, task_score_fn
from reuse.toolkit.selection import check_joint, swap_verdicts
from reuse.toolkit.stats import spearman
from reuse.toolkit.verdicts import REUSABLE, correlation_verdict, gated, mean_verdict

from ..config import OwnModel, Profile
from ..training.data import CLASSIFICATION
from ..training.models import build_model
from ..training.spec import RunSpec
from ..training.train import Runner
from .common import CONDITION_DONORS, DIFFERENT_INIT_OFFSET, TWIN_OFFSET  # donors: swapped into theta_T
from .common import verdict_text  # noqa: F401 (notebook 06 prints e6.verdict_text)

PAIR = "fashion-split"  # source = classes 0-4, target = classes 5-9 relabelled 0..4
N_CLASSES = 5
CHECKPOINT_ROLES = ("source", "target", "twin", "different_init")
FACTORY = "torchvision.models:resnet18"  # what `cnn-reuse analyze --model` is given
MODEL_ARGS = {"num_classes": N_CLASSES}  # ... and `--model-args`
CONTROL_SETS = ("single", "all")  # the controls' verdicts need single layers only


def seeds(prof: Profile) -> tuple[int, ...]:
    """The seeds notebook 06 runs: the profile's first ``prof.own.n_seeds``."""
    return tuple(prof.seeds[:prof.own.n_seeds])


def specs(prof: Profile, seed: int) -> dict[str, RunSpec]:
    """The :class:`~reuse.study.training.spec.RunSpec` of each role (:data:`CHECKPOINT_ROLES`) for
    ``seed``: all but the negative control from theta_0 of ``seed``; the twin on the disjoint block 1
    with another batch order (the offsets of :mod:`reuse.study.experiments.common`)."""
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed={seed!r}; expected an integer >= 0")
    o = prof.own
    target = RunSpec("resnet18", CLASSIFICATION, PAIR, domain="target", init_seed=seed, data_seed=seed,
                     order_seed=seed, n_train=o.n_train, image_size=o.image_size, channels=3,
                     steps=o.steps, batch_size=o.batch_size, lr=o.lr)
    return {"source": target.replace(domain="source"), "target": target,
            "twin": target.replace(block=1, order_seed=seed + TWIN_OFFSET),
            "different_init": target.replace(init_seed=seed + DIFFERENT_INIT_OFFSET)}


def architecture() -> nn.Module:
    """``resnet18(weights=None, num_classes=5)``: the module swaps are scored in (its own
    initial weights are never used; the caller's random state is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        return build_model("resnet18", CLASSIFICATION, 3, N_CLASSES)


def checkpoints(runner: Runner, prof: Profile, folder: str | Path, roles=CHECKPOINT_ROLES) -> pd.DataFrame:
    """Every role's checkpoint for every seed (:func:`seeds`), trained through ``runner``
    (the one fit and run cache) and saved as a plain state-dict file, as a user's own
    checkpoint would be: ``<folder>/own_model/<cache key>.pt`` (written atomically once).

    One row per seed x role: seed, role, path, cached, seconds (training time; 0 if cached).
    """
    unknown = sorted(set(roles) - set(CHECKPOINT_ROLES))
    if unknown:
        raise ValueError(f"roles {unknown}; allowed: {', '.join(CHECKPOINT_ROLES)}")
    todo = [(seed, role, specs(prof, seed)[role]) for seed in seeds(prof) for role in roles]
    runs = runner.train_many([s for _, _, s in todo])
    rows = []
    for (seed, role, spec), run in zip(todo, runs):
        path = Path(folder) / "own_model" / f"{runner.cache.key(spec)}.pt"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            buffer = io.BytesIO()
            torch.save(run.state, buffer)
            files.write_atomic(path, buffer.getbuffer())
        rows.append({"seed": seed, "role": role, "path": str(path), "cached": run.cached,
                     "seconds": 0.0 if run.cached else run.seconds})
    return pd.DataFrame(rows, columns=["seed", "role", "path", "cached", "seconds"])


# ----------------------------------------------------------------------------- analysis
def paths(ckpts: pd.DataFrame, seed: int) -> dict[str, str]:
    """role -> checkpoint path of one seed (rows of :func:`checkpoints`)."""
    rows = ckpts[ckpts.seed == seed]
    if rows.empty:
        raise ValueError(f"seed={seed!r}; the checkpoints have seeds {sorted(ckpts.seed.unique())}")
    return dict(zip(rows.role, rows.path))


def states(ckpts: pd.DataFrame) -> dict[int, dict[str, dict[str, torch.Tensor]]]:
    """seed -> role -> state dict: every checkpoint file of :func:`checkpoints` read once
    (:func:`reuse.toolkit.checkpoints.load_state`, the boundary a user's files cross), for
    the analyses below to share."""
    return {int(seed): {role: load_state(path, what=f"{role} checkpoint of seed {seed}")
                        for role, path in paths(ckpts, int(seed)).items()}
            for seed in sorted(ckpts.seed.unique())}


def kernel_distances(states: dict[int, dict[str, dict]]) -> pd.DataFrame:
    """Per seed x comparison x conv layer: RMSE, relative RMSE and cosine distance between
    theta_T and the source, the twin (the noise floor of retraining) and the
    different-init control (:func:`reuse.toolkit.criteria.kernel_rmse`) in ``states``
    (:func:`states`)."""
    frames = []
    for seed, p in states.items():
        for comparison in CONDITION_DONORS:
            if comparison in p:
                frames.append(kernel_rmse(p[comparison], p["target"], conv_layers(p["target"]))
                              .assign(seed=seed, comparison=comparison))
    out = pd.concat(frames, ignore_index=True)
    return out[["seed", "comparison", *[c for c in out.columns if c not in ("seed", "comparison")]]]


def scorer(runner: Runner, sc: OwnModel, seed: int) -> tuple[Callable[[nn.Module], float], torch.Tensor, float]:
    """(score_fn, bn_data, chance) of one seed, from the images the runner trains on
    (:meth:`reuse.study.training.train.Runner.split`, on its device): top-1 accuracy on ``sc.n_test``
    target test images (:func:`reuse.toolkit.scan.task_score_fn`); the first ``sc.n_bn`` of the
    target's training images ``[n_bn, 3, S, S]``, which BN statistics are re-estimated on after
    a swap; the accuracy of predicting the target's majority training class."""
    def split(name: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return runner.split(PAIR, "target", CLASSIFICATION, name, seed, n=n, image_size=sc.image_size, channels=3)
    (x, y), (train_x, train_y) = split("test", sc.n_test), split("train", sc.n_train)
    return (task_score_fn("classification", x, y, n_outputs=N_CLASSES), train_x[:sc.n_bn],
            chance("classification", train_y, y, N_CLASSES))


def swap_scans(runner: Runner, states: dict[int, dict[str, dict]], sc: OwnModel, progress: bool = False
               ) -> pd.DataFrame:
    """The swap scan (:func:`reuse.toolkit.scan.swap_scan`, BN re-estimated) of every donor into
    theta_T, per seed: the source with the scale's sets (single layers, prefixes, suffixes, all),
    the two controls with single layers and all (``states``: :func:`states`). Columns: seed,
    donor, then the scan's."""
    frames = []
    for seed, p in states.items():
        score_fn, bn_x, chance_value = scorer(runner, sc, seed)
        model = prepare_model(architecture(), runner.device)
        layers = conv_layers(p["target"])[:sc.n_layers]
        for donor in CONDITION_DONORS:
            if donor in p:
                sets = sc.source_sets if donor == "source" else CONTROL_SETS
                with compute_scope(threads=sc.score_threads):
                    scan = swap_scan(p[donor], p["target"], score_fn, model=model, layers=layers, sets=sets,
                                     bn_data=bn_x, chance=chance_value, progress=progress)
                frames.append(scan.assign(seed=seed, donor=donor))
    out = pd.concat(frames, ignore_index=True)
    return out[["seed", "donor", *[c for c in out.columns if c not in ("seed", "donor")]]]


def selection(scans: pd.DataFrame, margin: float = REUSABLE) -> pd.DataFrame:
    """Per conv layer, the source's single-layer reuse score over seeds and whether the
    layer is selected (:func:`reuse.toolkit.selection.swap_verdicts`: a CI over seeds, or a point
    estimate with a warning from one seed, gated by the mean single-swap scores of the twin and
    of the different-init model against the same ``margin``); ``raw_reusable`` is the swaps'
    own call.

    A single swap can only call a layer reusable where single swaps discriminate: unless the
    twin's hold and the different-init model's are refuted, no layer is selected and
    ``basis`` says 'undecided: controls failed (...)'."""
    src = scans[(scans.donor == "source") & (scans.set == "single")]
    if src.reuse_score.isna().all():  # theta_T no better than chance: nothing can be judged
        return pd.DataFrame({"layer": src.layer.unique(), "estimate": float("nan"), "ci_low": float("nan"),
                             "ci_high": float("nan"), "n": 0, "reusable": False,
                             "basis": "none: the target model is no better than chance",
                             "raw_reusable": False})
    return swap_verdicts(src.drop(columns="donor"), margin=margin, positive=_per_seed(scans, "twin", "single"),
                         negative=_per_seed(scans, "different_init", "single"))


def joint_checks(runner: Runner, states: dict[int, dict[str, dict]], sc: OwnModel, layers: list[str],
                 margin: float = REUSABLE) -> pd.DataFrame:
    """Per seed of ``states`` (:func:`states`), the selected ``layers`` swapped *together* from
    theta_S into theta_T (:func:`reuse.toolkit.selection.check_joint`, BN re-estimated). One row per seed: n_selected,
    joint_reuse_score (of the whole selected set), n_kept (after greedy back-off, if the
    union failed) and kept (the layers kept, comma-separated). A seed whose target model is
    no better than chance is not judged (NaN, and ``kept`` says why)."""
    rows = []
    for seed, p in states.items():
        if not layers:
            rows.append({"seed": seed, "n_selected": 0, "joint_reuse_score": float("nan"), "n_kept": 0,
                         "kept": ""})
            continue
        score_fn, bn_x, chance_value = scorer(runner, sc, seed)
        target = prepare_model(architecture(), runner.device)
        target.load_state_dict(p["target"])
        with compute_scope(threads=sc.score_threads):
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
    return m.groupby("seed").apply(lambda g: spearman(g.rel_rmse, g.reuse_score),
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


def controls(scans: pd.DataFrame) -> dict[str, dict]:
    """The four control judgments of :data:`JUDGMENTS` (:func:`reuse.toolkit.verdicts.mean_verdict`
    of per-seed mean reuse scores against :data:`REUSABLE`)."""
    return {
        "single swaps, positive control": mean_verdict(_per_seed(scans, "twin", "single"), REUSABLE),
        "single swaps, negative control": mean_verdict(_per_seed(scans, "different_init", "single"), REUSABLE),
        "joint swap, positive control": mean_verdict(_per_seed(scans, "twin", "all"), REUSABLE),
        "joint swap, negative control": mean_verdict(_per_seed(scans, "different_init", "all"), REUSABLE),
    }


def verdicts(scans: pd.DataFrame, distances: pd.DataFrame, joint: pd.DataFrame) -> pd.DataFrame:
    """One row per judgment of :data:`JUDGMENTS`: estimate, 95% CI over seeds, verdict
    (three-valued, :func:`reuse.toolkit.verdicts.mean_verdict`), detectable effect, n, controls.

    Each claim about the source is gated (:func:`reuse.toolkit.verdicts.gated`) by the controls of
    the measurement it rests on: the selected set's joint swap by the all-layer swaps of
    the twin and the different-init model, the RMSE ranking (whose labels are single-layer
    scores) by their single-layer swaps. A claim stands only where its positive control
    holds and its negative control is refuted; otherwise it is undecided.
    """
    checks = controls(scans)
    rows = [{"judgment": name, **v, "controls": "n/a", "raw_verdict": v["verdict"]} for name, v in checks.items()]
    claims = (("selected set as a whole", mean_verdict(joint.joint_reuse_score, REUSABLE), "joint swap"),
              ("RMSE ranks layers", correlation_verdict(_rank_rho(distances, scans), 0.0, "below"),
               "single swaps"))
    for name, v, basis in claims:
        verdict, gate = gated(v["verdict"], checks[f"{basis}, positive control"]["verdict"],
                              checks[f"{basis}, negative control"]["verdict"])
        rows.append({"judgment": name, **v, "verdict": verdict, "controls": gate, "raw_verdict": v["verdict"]})
    out = pd.DataFrame(rows)
    out["rule"] = out.judgment.map(JUDGMENTS)
    return out[["judgment", "verdict", "estimate", "ci_low", "ci_high", "detectable", "n", "controls",
                "raw_verdict", "rule"]]


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
                     f"{verdict['single swaps, negative control']}). So no layer is called reusable from the "
                     f"source: the {int(chosen.raw_reusable.sum())} of {len(chosen)} layers they would select "
                     "are no evidence of reusability.")
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
    """The verdict rows in :func:`reuse.study.publishing.report.record`'s form."""
    return table[["judgment", "verdict", "estimate", "ci_low", "ci_high", "detectable", "n", "controls"]]


def analyze_argv(role_paths: dict[str, str], out: str | Path) -> list[str]:
    """The ``cnn-reuse analyze`` arguments for one seed's checkpoints (:func:`paths`): source
    vs target, the twin as the noise floor, kernels only, conv layers only (as the study
    compares), report in ``out``, replacing the report a previous run wrote there (``--force``
    replaces only a folder ``cnn-reuse analyze`` wrote)."""
    return ["analyze", str(role_paths["source"]), str(role_paths["target"]), "--model", FACTORY,
            "--model-args", json.dumps(MODEL_ARGS), "--twin", str(role_paths["twin"]), "--kinds", "conv2d",
            "--out", str(out), "--force"]
