"""The GPU helper: device choice, precision, determinism and on-device batches, in one place.

Datasets here are a few MB, so whole splits live on the training device and batches
are index tensors made there (as in KellerJordan/cifar10-airbench): no DataLoader, no
host-to-device copies per step. Models are channels_last; bf16 autocast is used where a
caller asks for it (``precision``, passed explicitly: nothing here keeps process-wide
state). Everything runs, and is tested, on the CPU too.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator

import torch
from torch import nn

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "bf16", "fp32")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' -> cuda, then mps, then cpu; an explicit name must be available."""
    name = str(device)
    if name.split(":")[0] not in DEVICES:
        raise ValueError(f"device={name!r}; allowed: {', '.join(DEVICES)} (cuda:N too)")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} but CUDA is not available here; use 'cpu' or 'auto'")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device='mps' but MPS is not available here; use 'cpu' or 'auto'")
    return torch.device(name)


def bf16_native(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 convolutions in hardware: CUDA GPUs that support
    bf16, and CPUs with oneDNN's bf16 path (AVX-512). On this project's 2-core AVX-512
    CPU, bf16 autocast + channels_last scored swapped models 1.9x faster than fp32 NCHW
    and trained 1.2x faster (benchmarks/bench.py, sections c and a)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """'bf16' or 'fp32': 'auto' is bf16 where :func:`bf16_native`, else fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}; allowed: {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if bf16_native(device) else "fp32"
    return precision


def autocast(device: torch.device, precision: str = "fp32") -> contextlib.AbstractContextManager:
    """bf16 autocast when ``precision`` (resolved by :func:`resolve_precision`) is 'bf16';
    a no-op for 'fp32'. Precision is always passed in: nothing here is process-wide."""
    if resolve_precision(precision, device) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def compute_scope(deterministic: bool = True, threads: int | None = None) -> Iterator[None]:
    """Within the block: deterministic kernels (or cuDNN autotuning), TF32 matmuls on
    CUDA, and ``threads`` intra-op threads; every setting is restored on exit.

    These are process-wide torch switches, so a :class:`~reuse.study.training.train.Runner` wraps its own
    training and scoring in this scope instead of setting them once for everyone.
    Deterministic mode makes a seed fix a run bit for bit on one machine with one thread
    count; it costs some speed on the GPU.
    """
    if threads is not None and threads < 1:
        raise ValueError(f"threads={threads}; must be >= 1")
    before = (torch.are_deterministic_algorithms_enabled(),
              torch.is_deterministic_algorithms_warn_only_enabled(), torch.backends.cudnn.benchmark,
              torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
              torch.get_num_threads())
    fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    # deterministic mode also fills every new tensor with NaN, a debugging aid against reads
    # of uninitialised memory that determinism does not need: 4-9% of a UNet or PSPNet
    # training step on the CPU, the same weights bit for bit without it (benchmarks/bench.py, j)
    torch.utils.deterministic.fill_uninitialized_memory = False
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    if threads is not None and threads != before[-1]:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.utils.deterministic.fill_uninitialized_memory = fill
        (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32,
         torch.backends.cudnn.allow_tf32) = before[2:5]
        if torch.get_num_threads() != before[-1]:
            torch.set_num_threads(before[-1])


def prepare_model(model: nn.Module, device: torch.device) -> nn.Module:
    """Move a model to ``device``, channels_last: cuDNN and oneDNN both run these convs
    faster that way (with bf16, see :func:`bf16_native`)."""
    return model.to(device, memory_format=torch.channels_last)


def compiled(model: nn.Module, enabled: bool = True) -> Callable:
    """``torch.compile(model)`` when ``enabled``, else ``model``.

    Compilation happens on the first call, so failures show there (or in the first
    backward): callers catch them and fall back to eager, see ``Runner.fit``.
    """
    if not enabled:
        return model
    try:
        return torch.compile(model)
    except Exception as err:  # e.g. an unsupported Python or platform
        warnings.warn(f"torch.compile unavailable ({type(err).__name__}: {err}); running eagerly",
                      stacklevel=2)
        return model


def batch_indices(n: int, batch_size: int, device: torch.device,
                  generator: torch.Generator | None = None, shuffle: bool = True,
                  drop_last: bool = False) -> Iterator[torch.Tensor]:
    """Index batches over ``n`` samples, made on ``device``.

    The permutation is drawn on the CPU from ``generator`` (so the order depends on the
    seed alone, not on the device) and moved once per epoch.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}; must be >= 1")
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    order = order.to(device)
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    for start in range(0, stop, batch_size):
        yield order[start:start + batch_size]


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels (for honest timings)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
