import math

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex
from torchmetrics.functional.image import peak_signal_noise_ratio

from reuse.toolkit import metrics


def test_segmentation_scores_match_torchmetrics():
    pred, target = torch.randint(0, 5, (20, 8, 8)), torch.randint(0, 5, (20, 8, 8))
    target[target == 2] = 0  # a class absent from the truth
    ours = metrics.score_predictions("segmentation", pred, target, 5, batch_size=7)
    assert ours["miou"] == pytest.approx(float(MulticlassJaccardIndex(5, average="macro")(pred, target)), abs=1e-6)
    assert ours["pixel_acc"] == pytest.approx(float(MulticlassAccuracy(5, average="micro")(pred, target)))


def test_psnr_over_the_split():
    target = torch.rand(10, 1, 8, 8)
    pred = (target + 0.1 * torch.randn_like(target)).clamp(0, 1)
    ours = metrics.score_predictions("autoencoder", pred, target, 1, batch_size=3)
    mse = float(((pred - target) ** 2).mean())
    assert ours["psnr"] == pytest.approx(10 * math.log10(1 / mse), rel=1e-5)
    assert ours["psnr"] == pytest.approx(float(peak_signal_noise_ratio(pred, target, data_range=1.0)), rel=1e-5)
    assert 0 < ours["ssim"] <= 1


def test_chance_levels():
    train = torch.zeros(4, 8, 8, dtype=torch.long)
    train[:, :2] = 3  # background is the majority
    test = train.clone()
    chance = metrics.chance_level("segmentation", train, test, 4)
    assert chance["pixel_acc"] == pytest.approx(0.75) and chance["miou"] == pytest.approx(0.75 / 2)
    images = torch.rand(6, 1, 8, 8)
    mean_image = metrics.chance_level("autoencoder", images, images, 1)
    assert mean_image["psnr"] < 30


def test_reuse_score():
    assert metrics.reuse_score(0.5, 0.9, 0.1) == pytest.approx(0.5)
    assert metrics.reuse_score(0.9, 0.9, 0.1) == 1.0
    assert math.isnan(metrics.reuse_score(0.5, 0.1, 0.1))


def test_losses():
    out = torch.zeros(2, 3, 4, 4)
    y = torch.zeros(2, 4, 4, dtype=torch.long)
    assert float(metrics.loss("segmentation", out, y)) == pytest.approx(math.log(3))
    img = torch.full((2, 1, 4, 4), 0.5)
    assert float(metrics.loss("autoencoder", torch.zeros_like(img), img)) == 0.0


def test_classification_matches_sklearn_and_a_hand_count():
    gen = torch.Generator().manual_seed(0)
    logits, y = torch.randn(50, 4, generator=gen), torch.randint(0, 4, (50,), generator=gen)
    model = torch.nn.Identity()  # the inputs are the logits
    ours = metrics.evaluate(model, logits, y, "classification", 4, batch_size=7)
    assert ours == {"accuracy": pytest.approx(accuracy_score(y.numpy(), logits.argmax(1).numpy()))}
    assert metrics.PRIMARY_METRIC["classification"] == "accuracy"
    assert metrics.score_predictions("classification", y, y, 4)["accuracy"] == 1.0
    # cross-entropy against a numpy log-softmax
    z = logits.double().numpy()
    log_p = z - z.max(1, keepdims=True) - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True))
    expected = -log_p[np.arange(50), y.numpy()].mean()
    assert float(metrics.loss("classification", logits, y)) == pytest.approx(expected, rel=1e-6)


def test_classification_chance_is_the_majority_training_class():
    train = torch.tensor([2, 2, 2, 0, 1])  # majority 2
    test = torch.tensor([2, 0, 0, 1])  # 1 of 4 test samples is class 2
    assert metrics.chance_level("classification", train, test, 3) == {"accuracy": 0.25}


def test_unknown_task_is_refused():
    with pytest.raises(ValueError, match="task='detection'; allowed: classification, segmentation"):
        metrics.chance_level("detection", torch.zeros(2), torch.zeros(2), 2)
