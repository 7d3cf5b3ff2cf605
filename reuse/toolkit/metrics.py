"""Task losses, metrics, chance levels and the reuse score (M1: docs/protocol.md, section 4).

Classification is scored by top-1 accuracy; segmentation by mIoU (primary) and pixel
accuracy; auto-encoding by PSNR (primary, dB, data range 1) and SSIM, all accumulated over
the whole test split.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .gpu import autocast

PRIMARY_METRIC = {"classification": "accuracy", "segmentation": "miou", "autoencoder": "psnr"}
_LABELS = ("classification", "segmentation")  # tasks whose targets are class indices


def loss(task: str, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over classes (classification ``[N,C]`` vs ``[N]``, or per pixel for
    segmentation ``[N,C,H,W]`` vs ``[N,H,W]``) or MSE of the sigmoid output (auto-encoding)."""
    _check_task(task)
    if task in _LABELS:
        return F.cross_entropy(output.float(), target)
    return F.mse_loss(torch.sigmoid(output.float()), target)


def predict(task: str, output: torch.Tensor) -> torch.Tensor:
    """Model output -> prediction: class ``[N]``, class map ``[N,H,W]`` or image
    ``[N,1,H,W]`` in [0, 1]."""
    if task in _LABELS:
        return output.max(1).indices  # same as argmax(1), measured 8x faster on the CPU
    return torch.sigmoid(output.float())


class _Confusion:
    """Pixel confusion matrix accumulated with one ``bincount`` per batch.

    mIoU and pixel accuracy both come from it. Written here rather than with
    torchmetrics' MulticlassJaccardIndex/MulticlassAccuracy because those built a
    one-hot copy per batch and made scoring swapped models 5x slower (profiled);
    tests check both give the same numbers.
    """

    def __init__(self, n_outputs: int, device: torch.device):
        self.n = n_outputs
        self.matrix = torch.zeros(n_outputs * n_outputs, dtype=torch.int64, device=device)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        self.matrix += torch.bincount((target * self.n + pred).flatten(), minlength=self.n ** 2)

    def compute(self) -> dict[str, float]:
        m = self.matrix.view(self.n, self.n).double()  # rows: truth, columns: prediction
        tp = m.diag()
        union = m.sum(0) + m.sum(1) - tp
        present = union > 0  # classes absent from truth and prediction are left out
        return {"miou": float((tp[present] / union[present]).mean()),
                "pixel_acc": float(tp.sum() / m.sum())}


class _ImageMetrics:
    """PSNR over the whole split (one MSE) and, when asked, mean SSIM (torchmetrics)."""

    def __init__(self, names: tuple[str, ...], device: torch.device):
        # imported here: torchmetrics adds ~1.3 s to importing this module, which
        # classification and `cnn-reuse analyze` (goal: under 5 s) do not need
        from torchmetrics.image import (
            PeakSignalNoiseRatio,
            StructuralSimilarityIndexMeasure,
        )

        self.metrics = {"psnr": PeakSignalNoiseRatio(data_range=1.0),
                        "ssim": StructuralSimilarityIndexMeasure(data_range=1.0)}
        self.metrics = {k: m.to(device) for k, m in self.metrics.items() if k in names}

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        for m in self.metrics.values():
            m.update(pred, target)

    def compute(self) -> dict[str, float]:
        return {k: float(m.compute()) for k, m in self.metrics.items()}


class _Accuracy:
    """Top-1 accuracy: correct predictions over all, counted on the device."""

    def __init__(self, device: torch.device):
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self.total = 0

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        self.correct += (pred == target).sum()
        self.total += target.numel()

    def compute(self) -> dict[str, float]:
        return {"accuracy": float(self.correct) / self.total if self.total else math.nan}


METRICS = {"classification": ("accuracy",), "segmentation": ("miou", "pixel_acc"),
           "autoencoder": ("psnr", "ssim")}


def _check_task(task: str) -> None:
    if task not in METRICS:
        raise ValueError(f"task={task!r}; allowed: {', '.join(METRICS)}")


def _accumulator(task: str, n_outputs: int, device: torch.device, names: tuple[str, ...] | None):
    _check_task(task)
    if task == "classification":
        return _Accuracy(device)
    if task == "segmentation":
        return _Confusion(n_outputs, device)
    return _ImageMetrics(METRICS[task] if names is None else names, device)


def score_predictions(task: str, preds: torch.Tensor, targets: torch.Tensor,
                      n_outputs: int, batch_size: int = 1024) -> dict[str, float]:
    """Metrics of ready-made predictions (used for chance levels and tests)."""
    acc = _accumulator(task, n_outputs, preds.device, None)
    for i in range(0, len(preds), batch_size):
        acc.update(preds[i:i + batch_size], targets[i:i + batch_size])
    return acc.compute()


@torch.inference_mode()  # measured 2-3x faster than no_grad for these small CPU convs
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, task: str, n_outputs: int,
             batch_size: int = 512, metrics: tuple[str, ...] | None = None,
             precision: str = "fp32") -> dict[str, float]:
    """Metrics of ``model`` (in eval mode) on inputs ``x`` and targets ``y`` (same device).

    ``metrics`` limits the image metrics computed (SSIM costs as much as the model);
    ``precision`` is 'fp32' unless asked ('bf16' or 'auto', see :mod:`reuse.toolkit.gpu`).
    """
    was_training = model.training
    model.eval()
    acc = _accumulator(task, n_outputs, x.device, metrics)
    for i in range(0, len(x), batch_size):
        with autocast(x.device, precision):
            out = model(x[i:i + batch_size])
        acc.update(predict(task, out), y[i:i + batch_size])
    model.train(was_training)
    return acc.compute()


def chance_level(task: str, train_targets: torch.Tensor, test_targets: torch.Tensor,
                 n_outputs: int) -> dict[str, float]:
    """Metrics of the best input-blind predictor fitted on the training targets.

    Classification: the most frequent training class for every sample; segmentation: the
    same at every pixel. Auto-encoding: the mean training image. This is the 0 of the reuse
    score.
    """
    _check_task(task)
    if task in _LABELS:
        majority = torch.bincount(train_targets.flatten(), minlength=n_outputs).argmax()
        preds = torch.full_like(test_targets, int(majority))
    else:
        preds = train_targets.float().mean(0, keepdim=True).expand_as(test_targets)
    return score_predictions(task, preds, test_targets, n_outputs)


def reuse_score(swapped: float, target: float, chance: float) -> float:
    """r = (m_swapped - m_chance) / (m_target - m_chance): 1 = no loss, 0 = chance.

    NaN when the target model itself is no better than chance (nothing to lose).
    """
    gap = target - chance
    if not math.isfinite(gap) or gap <= 1e-9:
        return math.nan
    return (swapped - chance) / gap
