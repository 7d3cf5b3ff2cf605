import pytest
import torch

from reuse import gpu


def test_resolve_device():
    if not torch.cuda.is_available():
        assert gpu.resolve_device("auto").type in ("cpu", "mps")
        with pytest.raises(ValueError, match="CUDA is not available"):
            gpu.resolve_device("cuda")
    assert gpu.resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="device='tpu'"):
        gpu.resolve_device("tpu")


def test_batches_cover_every_index_once_and_follow_the_seed():
    dev = torch.device("cpu")
    make = lambda: list(gpu.batch_indices(10, 4, dev, torch.Generator().manual_seed(1)))
    batches = make()
    assert [len(b) for b in batches] == [4, 4, 2]
    assert sorted(torch.cat(batches).tolist()) == list(range(10))
    assert all(torch.equal(a, b) for a, b in zip(batches, make()))
    assert [len(b) for b in gpu.batch_indices(10, 4, dev, drop_last=True)] == [4, 4]
    with pytest.raises(ValueError, match="batch_size=0"):
        next(gpu.batch_indices(10, 0, dev))


def test_cpu_paths_are_plain():
    dev = torch.device("cpu")
    with gpu.autocast(dev):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    model = gpu.prepare_model(torch.nn.Conv2d(1, 1, 3), dev)
    assert model.weight.is_contiguous()
    gpu.configure(deterministic=True)
    assert torch.are_deterministic_algorithms_enabled()
