"""The GPU helper: device choice, precision, determinism and on-device batches, in one place.

Datasets here are a few MB, so whole splits live on the training device and batches
are index tensors made there (as in KellerJordan/cifar10-airbench): no DataLoader, no
host-to-device copies per step. Everything runs, and is tested, on the CPU too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

DEVICES = ("auto", "cpu", "cuda", "mps")


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


def configure(deterministic: bool = True) -> None:
    """Global switches: TF32 matmuls on CUDA for speed; deterministic kernels when asked.

    Deterministic mode makes a seed fix a run bit for bit on one machine (tests and the
    smoke profile use it); it costs some speed on the GPU.
    """
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = not deterministic
    torch.use_deterministic_algorithms(deterministic, warn_only=True)


def autocast(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; a no-op elsewhere (CPU bf16 is slower for these small convs)."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def prepare_model(model: nn.Module, device: torch.device) -> nn.Module:
    """Move a model to ``device``; channels_last on CUDA, where cuDNN prefers it."""
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
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
