"""reuse.toolkit.checkpoints.load_state: modules, state dicts, files, checkpoint dicts, wrapper prefixes,
memory-mapped files, integer and quantized weights."""

import os

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


def _mapped_file(t: torch.Tensor) -> str | None:
    """The file whose memory mapping holds ``t``'s data, from /proc/self/maps (None: anonymous)."""
    ptr = t.data_ptr()
    for line in open("/proc/self/maps"):
        fields = line.split()
        low, high = (int(x, 16) for x in fields[0].split("-"))
        if low <= ptr < high:
            return fields[5] if len(fields) > 5 and fields[5].startswith("/") else None
    return None


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs Linux's /proc")
def test_a_torch_save_file_is_memory_mapped_and_a_legacy_one_read(model, tmp_path):
    sd = model.state_dict()
    torch.save(sd, tmp_path / "zip.pt")
    torch.save(sd, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)  # cannot be mapped
    mapped, read = load_state(tmp_path / "zip.pt"), load_state(tmp_path / "legacy.pt")
    assert _same(mapped, sd) and _same(read, sd)
    assert _mapped_file(mapped["features.0.0.weight"]) == str(tmp_path / "zip.pt")
    assert _mapped_file(read["features.0.0.weight"]) is None


def test_integer_weights_are_refused_and_quantized_ones_dequantised_with_a_warning(tmp_path):
    w = torch.randn(4, 3, 3, 3, generator=torch.Generator().manual_seed(0))
    counts = {"bn.num_batches_tracked": torch.tensor(7)}  # an integer buffer, not a weight: kept
    with pytest.raises(ValueError, match=r"source: tensor 'conv.weight' is torch.int8 .*allowed: floating"):
        load_state({"conv.weight": (w * 20).to(torch.int8), **counts}, what="source")
    q = torch.quantize_per_tensor(w, 0.05, 0, torch.qint8)
    torch.save({"conv.weight": q, "conv.bias": torch.zeros(4), **counts}, tmp_path / "q.pt")
    with pytest.warns(UserWarning, match=r"target: 1 quantized tensor\(s\) \(conv.weight\) dequantised"):
        state = load_state(tmp_path / "q.pt", what="target")
    assert state["conv.weight"].dtype == torch.float32 and torch.equal(state["conv.weight"], q.dequantize())
    assert state["bn.num_batches_tracked"] == 7
