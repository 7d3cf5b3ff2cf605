
import numpy as np
import pandas as pd
import pytest

from reuse.config import get_profile
from reuse.experiments import network_reusability as e1
from reuse.train import Runner


@pytest.fixture(scope="module")
def e1_frame(fake_fashion_dir, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("REUSE_DATA_DIR", str(fake_fashion_dir))
    runner = Runner("cpu", tmp_path_factory.mktemp("cache"), progress=False)
    frame = e1.run(runner, get_profile("smoke", [0, 1]), ["unet", "pspnet"], ["segmentation"],
                   ["fashion-split"])
    mp.undo()
    return frame


def test_e1_frame_is_tidy_and_complete(e1_frame):
    f = e1_frame
    for col in ["architecture", "task", "pair", "seed", "measure", "init", "bn_reestimated", "k",
                "n_layers", "param_type", "metric", "value", "target_value", "chance", "reuse_score"]:
        assert col in f.columns
    per = f.groupby(["architecture", "seed"]).size()
    assert per.nunique() == 2  # both seeds of an architecture have the same measurements
    unet = f[(f.architecture == "unet") & (f.seed == 0)]
    n = int(unet.n_layers.iloc[0])
    assert sorted(unet[unet.measure == "prefix"].k) == list(range(1, n + 1))
    assert set(unet[unet.measure == "param_type"].param_type) == set(e1.TYPE_SETS)
    # prefix n and suffix n both swap every kernel: the same as all_conv
    full = unet[(unet.measure.isin(["prefix", "suffix"])) & (unet.k == n)].value
    shared = unet[(unet.measure == "all_conv") & (unet.init == "shared") & ~unet.bn_reestimated].value
    assert np.allclose(full, shared.iloc[0])


def _synthetic(scores: dict[str, list[float]]) -> pd.DataFrame:
    rows = []
    for (ptype, values) in scores.items():
        for seed, r in enumerate(values):
            rows.append({"architecture": "unet", "task": "segmentation", "pair": "p", "seed": seed,
                         "measure": "param_type", "param_type": ptype, "reuse_score": r})
    return pd.DataFrame(rows)


def test_companion_rules_on_known_values():
    good = {"conv_weight": [0.1, 0.2, 0.15], "conv_bias": [0.98, 0.99, 0.97],
            "bn_weight": [0.9, 0.95, 0.92], "bn_bias": [0.9, 0.93, 0.91],
            "bn_running_mean": [0.5, 0.6, 0.55], "bn_running_var": [0.6, 0.5, 0.58],
            "bn_affine": [0.95, 0.96, 0.97], "bn_stats": [0.3, 0.35, 0.32]}
    checks = e1.companion_checks(_synthetic(good), 0.8).set_index("claim")
    assert (checks.verdict == "holds").all()
    bad = dict(good, conv_weight=[0.99, 0.98, 0.99], conv_bias=[0.1, 0.5, 0.3],
               bn_affine=[0.2, 0.25, 0.3], bn_stats=[0.9, 0.92, 0.91])
    checks = e1.companion_checks(_synthetic(bad), 0.8).set_index("claim")
    assert (checks.verdict == "does not hold").all()


def test_verdict_rule_uses_the_ci_lower_end():
    rows = [{"architecture": a, "task": "t", "pair": "p", "seed": s, "measure": "all_conv",
             "init": "shared", "bn_reestimated": False, "reuse_score": r}
            for a, values in {"stable": [0.95, 0.96, 0.94], "noisy": [0.99, 0.5, 1.0]}.items()
            for s, r in enumerate(values)]
    v = e1.verdicts(pd.DataFrame(rows), 0.8).set_index("architecture")
    assert bool(v.loc["stable", "reusable"]) and not bool(v.loc["noisy", "reusable"])
    text = e1.verdict_text(v.reset_index(), e1.companion_checks(_synthetic(
        {k: [0.5, 0.6] for k in e1.TYPE_SETS}), 0.8), 0.8)
    assert "stable: reusable in 1 of 1" in text and "noisy: reusable in 0 of 1" in text
