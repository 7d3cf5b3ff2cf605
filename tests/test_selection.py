"""select_layers, select_for_target and small_spec; the rule's no-peeking guarantee."""

import math

import pytest
import torch

from reuse.experiments import small_data
from reuse.models import build_model
from reuse.selection import conv_layers, kernel_keys, select_for_target, select_layers, small_spec
from reuse.train import RunSpec, TrainedRun


def _state(arch: str = "unet", seed: int = 0, width: int = 4) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return build_model(arch, "segmentation", 1, 6, width, 1).state_dict()


def _perturbed(state: dict[str, torch.Tensor], scale: float, seed: int = 1) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {k: v + scale * torch.randn(v.shape, generator=gen) if v.is_floating_point() else v.clone()
            for k, v in state.items()}


@pytest.mark.parametrize("arch", ["unet", "pspnet", "plain"])
def test_model_against_itself_reuses_every_layer_with_rmse_zero(arch):
    s = _state(arch)
    table, layers = select_layers(s, s, threshold=0.0)
    assert layers == conv_layers(s) and len(layers) > 3
    assert (table.rmse == 0).all() and (table.rel_rmse == 0).all() and table.reuse.all()
    assert table.reason.str.startswith("reused").all()


def test_threshold_and_criterion_decide():
    s = _state()
    t = _perturbed(s, 0.01)
    t["head.weight"] = t["head.weight"] + 10.0  # one layer far from its source
    table, layers = select_layers(s, t, threshold=0.5, use_relative=True)
    assert "head" not in layers and len(layers) == len(table) - 1
    assert (table.criterion == "rel_rmse").all()
    reason = table.set_index("layer").loc["head", "reason"]
    assert reason.startswith("not reused: relative RMSE") and "> threshold 0.5" in reason


def test_not_reusable_network_reuses_nothing_and_says_why():
    s = _state()
    table, layers = select_layers(s, s, threshold=1.0, network_reusable=False)
    assert layers == [] and not table.reuse.any()
    assert table.reason.str.contains("network is not reusable").all()


def test_noise_floor_is_shown_per_layer():
    s = _state()
    t = _perturbed(s, 0.05)
    floor = select_layers(s, _perturbed(s, 0.01, seed=3), threshold=1.0)[0][["layer", "rmse"]]
    table, _ = select_layers(s, t, noise_floor=floor, threshold=1.0)
    assert table.noise_floor.notna().all() and (table.noise_floor < table.rmse).all()
    assert table.reason.str.contains("above retraining noise").all()
    with pytest.raises(ValueError, match="noise_floor needs columns"):
        select_layers(s, t, noise_floor=floor.rename(columns={"rmse": "x"}), threshold=1.0)


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match="same architecture trained from a shared initialisation"):
        select_layers(_state("unet"), _state("pspnet"), threshold=1.0)
    with pytest.raises(ValueError, match="threshold=-1"):
        select_layers(_state(), _state(), threshold=-1)
    with pytest.raises(ValueError, match="threshold=nan"):
        select_layers(_state(), _state(), threshold=math.nan)


def test_small_spec_keeps_the_full_run_and_adds_steps_for_tiny_sets():
    target = RunSpec("unet", "segmentation", "fashion-split", domain="target", n_train=1000,
                     epochs=3, batch_size=32)
    assert small_spec(target, 1000) is target
    tiny = small_spec(target, 10, min_steps=40)
    assert (tiny.n_train, tiny.batch_size, tiny.epochs) == (10, 2, 8)  # 5 steps/epoch x 8
    assert small_spec(target, 500, min_steps=40).epochs == 3  # 16 steps/epoch x 3 >= 40
    assert all(n % small_spec(target, n).batch_size != 1 for n in range(2, 200))
    with pytest.raises(ValueError, match="n=2000"):
        small_spec(target, 2000)


class _GuardedRunner:
    """A Runner stand-in that trains by perturbing theta_0 and raises on any read of target
    data beyond ``n_allowed`` training samples, and on any test data."""

    def __init__(self, n_allowed: int):
        self.n_allowed = n_allowed
        self.reads = []

    def split(self, pair, domain, task, split, data_seed=0, shift=0.0, n=None):
        self.reads.append((domain, split, n))
        if domain == "target" and (split != "train" or n is None or n > self.n_allowed):
            raise AssertionError(f"peeked: {domain} {split} n={n}")
        return torch.zeros(n or 1, 1, 32, 32), torch.zeros(n or 1, 32, 32, dtype=torch.long)

    def train_many(self, specs):
        out = []
        for spec in specs:
            self.split(spec.pair, spec.domain, spec.task, "train", spec.data_seed, spec.shift, spec.n_train)
            theta_0 = _state(spec.architecture, spec.init_seed, spec.width)
            state = _perturbed(theta_0, 0.01, seed=1 if spec.domain == "source" else 2 + spec.n_train)
            out.append(TrainedRun(spec, state, []))
        return out


def test_rule_reads_only_the_small_target_training_set():
    base = RunSpec("unet", "segmentation", "fashion-split", width=4, depth=1, init_seed=0)
    source = base.replace(domain="source", n_train=256)
    target = base.replace(domain="target", n_train=256)
    small = small_spec(target, 12)
    assert small.n_train == 12
    runner = _GuardedRunner(n_allowed=12)
    spec, layers = small_data.rule_spec(runner, source, small, threshold=math.inf, use_relative=False,
                                        network_reusable=True)
    assert layers == conv_layers(_state(width=4)) and spec.n_train == 12
    assert spec.init_keys == tuple(kernel_keys(_state(width=4), layers)) and spec.init_from == source
    assert ("target", "train", 12) in runner.reads
    assert not any(d == "target" and (s != "train" or n != 12) for d, s, n in runner.reads)
    with pytest.raises(AssertionError, match="peeked"):  # the guard itself works
        select_for_target(runner, source, target, threshold=1.0)


def test_select_for_target_rejects_unshared_initialisation():
    base = RunSpec("unet", "segmentation", "fashion-split", width=4, depth=1)
    with pytest.raises(ValueError, match="init_seed: 0 vs 5"):
        select_for_target(_GuardedRunner(10), base.replace(domain="source", n_train=10),
                          base.replace(domain="target", n_train=10, init_seed=5), threshold=1.0)
