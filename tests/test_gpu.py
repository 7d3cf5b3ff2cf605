import pytest
import torch

from reuse.toolkit import gpu


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


def test_precision_is_an_argument_not_a_setting():
    dev = torch.device("cpu")
    with gpu.autocast(dev, "fp32"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    with gpu.autocast(dev, "bf16"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with gpu.autocast(dev):  # fp32 unless asked
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    assert gpu.resolve_precision("auto", dev) == ("bf16" if gpu.bf16_native(dev) else "fp32")
    with pytest.raises(ValueError, match="precision='fp16'; allowed: auto, bf16, fp32"):
        gpu.resolve_precision("fp16", dev)


def test_compute_scope_restores_every_setting():
    def settings():
        return (torch.are_deterministic_algorithms_enabled(), torch.get_num_threads(),
                torch.backends.cudnn.benchmark, torch.utils.deterministic.fill_uninitialized_memory)
    before = settings()
    with gpu.compute_scope(deterministic=not before[0], threads=1):
        assert torch.are_deterministic_algorithms_enabled() == (not before[0])
        assert torch.get_num_threads() == 1
        # deterministic kernels without NaN-filling every new tensor (a debugging aid, slow)
        assert torch.utils.deterministic.fill_uninitialized_memory is False
    assert settings() == before
    with pytest.raises(ValueError, match="threads=0"):
        with gpu.compute_scope(threads=0):
            pass


def test_prepare_model_is_channels_last():
    model = gpu.prepare_model(torch.nn.Conv2d(2, 4, 3), torch.device("cpu"))
    assert model.weight.is_contiguous(memory_format=torch.channels_last)
    assert not model.weight.is_contiguous()


def test_compiled_off_is_the_model_and_a_failing_compile_falls_back(monkeypatch):
    model = torch.nn.Conv2d(1, 1, 3)
    assert gpu.compiled(model, enabled=False) is model

    def broken(_model):
        raise RuntimeError("no compiler here")
    monkeypatch.setattr(torch, "compile", broken)
    with pytest.warns(UserWarning, match="torch.compile unavailable .*no compiler here"):
        assert gpu.compiled(model) is model
