"""reuse.toolkit.checkpoints.load_state: modules, state dicts, files, checkpoint dicts, wrapper prefixes."""

import pytest
import torch
import torchvision
from torch import nn

from reuse.toolkit.checkpoints import STATE_KEYS, load_state


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.mobilenet_v3_small(weights=None, num_classes=3)


def _same(a: dict, b: dict) -> bool:
    return list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_module_state_and_path_give_the_same_state(model, tmp_path):
    sd = model.state_dict()
    torch.save(sd, tmp_path / "m.pt")
    for obj in (model, sd, tmp_path / "m.pt", str(tmp_path / "m.pt")):
        assert _same(load_state(obj), sd)


@pytest.mark.parametrize("key", STATE_KEYS)
def test_checkpoint_dict_under_a_common_key(model, tmp_path, key):
    torch.save({"epoch": 3, "optimizer": {"lr": 0.1}, key: model.state_dict()}, tmp_path / "c.pt")
    assert _same(load_state(tmp_path / "c.pt"), model.state_dict())


def test_wrapper_prefixes_are_stripped(model, tmp_path):
    sd = model.state_dict()
    parallel = nn.DataParallel(model).state_dict()
    assert all(k.startswith("module.") for k in parallel)
    torch.save({"state_dict": parallel}, tmp_path / "dp.pt")
    assert _same(load_state(tmp_path / "dp.pt"), sd)
    both = {f"_orig_mod.module.{k}": v for k, v in sd.items()}  # torch.compile(DataParallel(m))
    assert _same(load_state(both), sd)
    partly = {("module." + k if i == 0 else k): v for i, (k, v) in enumerate(sd.items())}
    assert list(load_state(partly)) == list(partly)  # a prefix on some keys only is a real name


def test_safetensors_file_gives_the_state(model, tmp_path):
    from safetensors.torch import save_file

    sd = model.state_dict()
    save_file({f"module.{k}": v.contiguous() for k, v in sd.items()}, tmp_path / "m.safetensors")
    read = load_state(tmp_path / "m.safetensors")  # DataParallel's prefix stripped too
    assert _same({k: read[k] for k in sd}, sd) and set(read) == set(sd)  # keys in the file's order
    (tmp_path / "cut.safetensors").write_bytes((tmp_path / "m.safetensors").read_bytes()[:1000])
    with pytest.raises(ValueError, match="target: cannot read .*cut.safetensors as a safetensors file"):
        load_state(tmp_path / "cut.safetensors", what="target")


def test_bad_inputs_name_the_problem(model, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_state(tmp_path / "missing.pt", what="source")
    (tmp_path / "corrupt.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="source: cannot read .*corrupt.pt"):
        load_state(tmp_path / "corrupt.pt", what="source")
    torch.save(model, tmp_path / "whole.pt")  # a pickled module: refused by weights_only
    with pytest.raises(ValueError, match="save model.state_dict"):
        load_state(tmp_path / "whole.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="holds a list"):
        load_state(tmp_path / "list.pt")
    with pytest.raises(TypeError, match="target: got int; allowed: an nn.Module"):
        load_state(3, what="target")
    with pytest.raises(ValueError, match="without tensors"):
        load_state({"epoch": 1, "state_dict": {"lr": 0.1}})
    with pytest.raises(ValueError, match=r"entries \['epoch'\] are not tensors"):
        load_state({"epoch": 1, "w": torch.zeros(1)})
