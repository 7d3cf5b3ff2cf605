"""Data: Fashion-MNIST from its IDX files, UCI digits, shifted copies, and the domain pairs.

Entry point: :func:`load_pair` returns the source and target :class:`Domain` of a pair
(docs/protocol.md, section 2). Images are float32 tensors ``[N, 1, S, S]`` in ``[0, 1]``
with ``S = image_size`` (32 by default: Fashion-MNIST's 28 px padded by 2, so that UNet
can halve the size three times; a smaller S resizes the 28 px to ``S * 28 / 32`` first);
class labels are int64 ``[N]``. Task targets (:func:`task_targets`) are derived from the
images themselves: segmentation masks ``[N, S, S]`` (0 = background, ``1 + class index`` =
item) and, for auto-encoding, the clean images, reconstructed from a noisy copy
(denoising: :data:`AE_NOISE`). Everything is small enough to live in memory as tensors.
Notebook 07's targets, small sets shipped inside wheels (:mod:`reuse.study.training.wheel_sets`), are
served here too, as the target side of a pair named after the set.

Run ``python -m reuse.study.training.data check`` to see where Fashion-MNIST is found.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import math
import os
import struct
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import wheel_sets

IMAGE_SIZE = 32  # px, by default; Fashion-MNIST's 28 px padded by 2 on each side
# auto-encoding is denoising: the input is the image plus Gaussian noise of this standard
# deviation, clipped to [0, 1]; the target is the clean image. Through UNet's skips a plain
# reconstruction is an identity map, whose PSNR never plateaus and says nothing about
# features (docs/protocol.md, section 2).
AE_NOISE = 0.3
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
ENV_DATA_DIR = "REUSE_DATA_DIR"
FASHION_FILES = {
    ("train", "images"): "train-images-idx3-ubyte.gz",
    ("train", "labels"): "train-labels-idx1-ubyte.gz",
    ("test", "images"): "t10k-images-idx3-ubyte.gz",
    ("test", "labels"): "t10k-labels-idx1-ubyte.gz",
}
FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
PAIRS = ("fashion-split", "fashion-to-digits", "fashion-shift", "fashion-random-labels",
         "fashion-shifted", "fashion-overlap", "fashion-split-shifted", "digits-to-fashion",
         "fashion-scrambled")
# pairs whose name carries a dose, "<pair>@<s>" with s in [0, 1]: the source's shift strength
# (fashion-shifted, fashion-split-shifted) or the share of the target's classes it has
# (fashion-overlap)
DOSED = ("fashion-shifted", "fashion-overlap", "fashion-split-shifted")
GRADED_SHIFT = "fashion-shifted"  # the target's own classes, shifted: E3's dose series
SHIFTED_SOURCES = ("fashion-shifted", "fashion-split-shifted")  # the dose is a shift strength
# pairs whose target side is another pair's (the same data): their target runs are shared.
# The source ladder (docs/protocol.md, section 3) has one target per task, fashion 5-9.
SAME_TARGET = {"fashion-random-labels": "fashion-split", "fashion-shifted": "fashion-split",
               "fashion-overlap": "fashion-split", "fashion-split-shifted": "fashion-split",
               "digits-to-fashion": "fashion-split", "fashion-scrambled": "fashion-split"}
N_TARGET_CLASSES = 5  # the ladder's target: Fashion-MNIST classes 5-9
# pairs that differ from another only in class labels: for auto-encoding they are that pair
LABELS_ONLY = ("fashion-random-labels",)
SCRAMBLE_SEED = 4242  # fixes the pixel permutation of fashion-scrambled's source targets
DENSE_TASKS = ("segmentation", "autoencoder")  # the dense tasks of the UNet/PSPNet grid
CLASSIFICATION = "classification"  # the torchvision classifier of notebook 06
ALL_TASKS = (*DENSE_TASKS, CLASSIFICATION)
_IDX_TYPES = {0x08: np.uint8}  # the only element type Fashion-MNIST uses


class DataNotFoundError(FileNotFoundError):
    """Fashion-MNIST is in none of the places we look."""


def parse_pair(pair: str) -> tuple[str, float | None]:
    """(name, dose) of a pair: ``"fashion-shifted@0.25"`` -> ("fashion-shifted", 0.25); a pair
    without a dose gives None. ValueError names a bad name or dose and what is allowed."""
    name, at, dose = str(pair).partition("@")
    if name not in PAIRS and name not in wheel_sets.WHEEL_SETS:
        raise ValueError(f"pair={pair!r}; allowed: {', '.join(PAIRS)} ({', '.join(DOSED)} as "
                         "'<pair>@<s>' with a shift strength s in [0, 1]), or a wheel set as a target: "
                         f"{', '.join(wheel_sets.WHEEL_SETS)}")
    if (name in DOSED) != bool(at):
        raise ValueError(f"pair={pair!r}: " + (f"{name} needs a dose, e.g. '{name}@0.25'" if not at
                                               else f"{name} takes no dose"))
    if not at:
        return name, None
    try:
        value = float(dose)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"pair={pair!r}: dose {dose!r}; allowed: a number in [0, 1]")
    if name == "fashion-overlap" and not 1 <= shared_classes(value) < N_TARGET_CLASSES:
        raise ValueError(f"pair={pair!r}: shares {shared_classes(value)} of the target's "
                         f"{N_TARGET_CLASSES} classes; allowed: a share giving 1 to {N_TARGET_CLASSES - 1} "
                         "(e.g. 0.2, 0.6; 0 is fashion-split, 1 fashion-shifted@0)")
    return name, value


def shared_classes(share: float) -> int:
    """How many of the ladder target's classes a ``fashion-overlap@share`` source has."""
    return int(round(share * N_TARGET_CLASSES))


def rung_coordinates(pair: str) -> dict:
    """Where a rung of the source ladder stands: ``label_overlap``, the share of the target's
    classes its source has (1: the target's own labels), and ``shift``, the strength of the
    shift of its images (0: none); ``other_data`` when its images are not Fashion-MNIST's and
    ``scrambled`` when its targets carry no spatial signal (J1 is tabled against both axes)."""
    name, dose = parse_pair(pair)
    overlap = {"fashion-shifted": 1.0, "fashion-overlap": shared_classes(dose or 0) / N_TARGET_CLASSES}
    return {"label_overlap": overlap.get(name, 0.0),
            "shift": dose if name in SHIFTED_SOURCES else 0.0,
            "other_data": name == "digits-to-fashion", "scrambled": name == "fashion-scrambled"}


def target_pair(pair: str) -> str:
    """The pair whose target runs ``pair`` shares (itself when it has its own target)."""
    name, _ = parse_pair(pair)
    return SAME_TARGET.get(name, pair)


# ----------------------------------------------------------------------------- IDX files
def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a uint8 array, validating its header.

    Raises ``ValueError`` naming the file when the magic number, element type or
    size is wrong (a truncated download, say).
    """
    return _parse_idx(path, _read_bytes(Path(path)))


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise ValueError(f"{path}: cannot read IDX file ({err})") from err


def _parse_idx(path: str | Path, data: bytes) -> np.ndarray:
    """The uint8 array of an IDX file's bytes ``data`` (gunzipped first if ``path`` ends in
    ``.gz``), validated as :func:`read_idx` does; ``path`` names the file in errors."""
    path = Path(path)
    try:
        raw = gzip.decompress(data) if path.suffix == ".gz" else data
    except (OSError, EOFError) as err:  # gzip raises these on a truncated stream
        raise ValueError(f"{path}: cannot read IDX file ({err})") from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic number {raw[:4].hex()!r})")
    dtype, ndim = raw[2], raw[3]
    if dtype not in _IDX_TYPES or ndim == 0:
        raise ValueError(f"{path}: unsupported IDX element type {dtype:#04x} or ndim {ndim}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + math.prod(shape)
    if len(raw) != expected:
        raise ValueError(f"{path}: IDX size mismatch: header says {shape} "
                         f"({expected} bytes) but the file has {len(raw)} bytes")
    return np.frombuffer(raw, dtype=_IDX_TYPES[dtype], offset=header).reshape(shape)


def write_idx(path: str | Path, array: np.ndarray, gz: bool = True) -> None:
    """Write a uint8 ``array`` as an IDX file (gzipped by default), the inverse of :func:`read_idx`."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with (gzip.open if gz else open)(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_synthetic_fashion(folder: str | Path, n_train: int, n_test: int, seed: int = 0) -> Path:
    """Fashion-MNIST-shaped IDX files for tests and benchmarks (no real data needed).

    Class c is a bright rectangle whose shape depends on c, on a noisy background.
    """
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 30, size=(n, 28, 28))
        for i, c in enumerate(labels):
            h, w = 6 + c, 16 - c
            top, left = rng.integers(2, 28 - h - 1), rng.integers(2, 28 - w - 1)
            images[i, top:top + h, left:left + w] = 200
        write_idx(folder / FASHION_FILES[(split, "images")], images)
        write_idx(folder / FASHION_FILES[(split, "labels")], labels)
    return folder


def find_fashion_mnist(data_dir: str | Path | None = None, download: bool = False) -> Path:
    """The folder holding the four Fashion-MNIST IDX gz files.

    An explicit folder (``data_dir``, else ``$REUSE_DATA_DIR``) is the only place looked
    at: if it lacks the files, that is an error naming it (with ``download=True`` they are
    fetched into it with torchvision). Only when neither is given is Debian's
    ``dataset-fashion-mnist`` location used (``download=True`` then fetches into
    ``~/.cache/reuse``). Never falls back to other data.
    """
    explicit = data_dir or os.environ.get(ENV_DATA_DIR)
    folder = Path(explicit) if explicit else DEBIAN_DIR
    for sub in (folder, folder / "FashionMNIST" / "raw"):
        if all((sub / name).is_file() for name in FASHION_FILES.values()):
            return sub
    if download:
        from torchvision.datasets import FashionMNIST

        root = folder if explicit else Path.home() / ".cache" / "reuse"
        FashionMNIST(root, train=True, download=True)
        FashionMNIST(root, train=False, download=True)
        return find_fashion_mnist(root)
    source = ("--data-dir" if data_dir else f"${ENV_DATA_DIR}") if explicit else "the default location"
    missing = [name for name in FASHION_FILES.values() if not (folder / name).is_file()]
    raise DataNotFoundError(
        f"Fashion-MNIST not found in {folder} ({source}; missing {', '.join(missing)}). Install "
        f"it with `sudo apt-get install dataset-fashion-mnist`, point --data-dir / "
        f"${ENV_DATA_DIR} at a folder holding the four *-ubyte.gz files, or pass --download "
        "to fetch them.")


@dataclass(frozen=True, eq=False)
class Fashion:
    """Fashion-MNIST as read once (:func:`read_fashion`): each split's images ``[N, 28, 28]``
    and labels ``[N]``, and the SHA-256 of the very bytes they were parsed from, so a file
    replaced afterwards changes neither. Pass it as ``data_dir`` to the loaders below: a
    runner trains on exactly the data its cache key names."""

    folder: str
    sha256: dict[str, str]  # file name -> SHA-256 of the file's bytes
    arrays: dict[str, tuple[np.ndarray, np.ndarray]] = field(repr=False)  # split -> (images, labels)


def read_fashion(data_dir: str | Path | None = None) -> Fashion:
    """Fashion-MNIST from :func:`find_fashion_mnist`'s folder: every file read once, hashed
    and parsed from those bytes in memory, and checked (header, size, 28x28 images, labels
    in 0..9: a ValueError names the file, the bad value and what is allowed)."""
    folder = find_fashion_mnist(data_dir)
    raw = {name: _read_bytes(folder / name) for name in FASHION_FILES.values()}
    arrays = {split: _fashion_arrays(folder, split, raw) for split in ("train", "test")}
    return Fashion(str(folder), {name: hashlib.sha256(data).hexdigest() for name, data in raw.items()},
                   arrays)


@lru_cache(maxsize=2)
def _read_folder(folder: str) -> Fashion:
    return read_fashion(folder)


def _fashion(data_dir: str | Path | Fashion | None) -> Fashion:
    """``data_dir`` itself when it is data already read, else the folder's data (read once
    per process and kept: callers that hash nothing)."""
    return data_dir if isinstance(data_dir, Fashion) else _read_folder(str(find_fashion_mnist(data_dir)))


def data_provenance(data_dir: str | Path | Fashion | None = None) -> dict:
    """Where the data came from: the Fashion-MNIST folder and the SHA-256 of each file (of
    the bytes a :class:`Fashion` was parsed from), and the scikit-learn release whose bundled
    digits were used."""
    from importlib.metadata import version

    data = _fashion(data_dir)
    return {"fashion_mnist": data.folder, "sha256": dict(data.sha256),
            "digits": f"scikit-learn {version('scikit-learn')}"}


def _fashion_arrays(folder: Path, split: str, raw: dict[str, bytes]) -> tuple[np.ndarray, np.ndarray]:
    """A split's images ``[N, 28, 28]`` and labels ``[N]`` in 0..9 from the files' bytes
    ``raw`` (by file name), checked: a ValueError names the file, the bad value and what is
    allowed."""
    images_path, labels_path = (folder / FASHION_FILES[(split, kind)] for kind in ("images", "labels"))
    images, labels = (_parse_idx(path, raw[path.name]) for path in (images_path, labels_path))
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(f"{images_path}: images of shape {images.shape}; allowed: [N, 28, 28] "
                         "(Fashion-MNIST's 28x28 px)")
    if labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"{folder}: {split} images {images.shape} and labels "
                         f"{labels.shape} do not match")
    bad = np.flatnonzero(labels >= len(FASHION_CLASSES))
    if len(bad):
        raise ValueError(f"{labels_path}: label {labels[bad[0]]} at index {bad[0]}; allowed: "
                         f"0..{len(FASHION_CLASSES) - 1} (Fashion-MNIST's classes; {len(bad)} labels out of range)")
    return images, labels


def check_fashion(data_dir: str | Path | None = None) -> Path:
    """The Fashion-MNIST folder (:func:`find_fashion_mnist`) with every file read and checked
    (header, size, image shape, label range; about 0.3 s), not kept in memory."""
    return Path(read_fashion(data_dir).folder)


def check_image_size(image_size: int) -> int:
    if not isinstance(image_size, int) or image_size < 8 or image_size % 4:
        raise ValueError(f"image_size={image_size!r}; allowed: a multiple of 4, >= 8")
    return image_size


def _place(x: torch.Tensor, inner: int, image_size: int, mode: str) -> torch.Tensor:
    """Resize ``[N,1,h,w]`` to ``inner`` px (unless it is that size) and pad it to ``image_size``."""
    if x.shape[-1] != inner:
        kwargs = {} if mode == "area" else {"align_corners": False}
        x = F.interpolate(x, size=(inner, inner), mode=mode, **kwargs).clamp(0, 1)
    pad = (image_size - inner) // 2
    return F.pad(x, (pad, image_size - inner - pad, pad, image_size - inner - pad))


def _to_tensor(images: np.ndarray, image_size: int = IMAGE_SIZE) -> torch.Tensor:
    """uint8 ``[N, 28, 28]`` -> float ``[N, 1, S, S]`` in [0, 1]: the 28 px resized (area
    averaging) to ``S * 28 / 32`` and padded, so items keep their margin at every size."""
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    return _place(x, round(image_size * 28 / 32), image_size, "area")


def load_fashion(split: str, data_dir: str | Path | Fashion | None = None,
                 image_size: int = IMAGE_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST ``split`` ('train' or 'test') as (images ``[N,1,S,S]``, labels ``[N]``)."""
    if split not in ("train", "test"):
        raise ValueError(f"split={split!r}; allowed: 'train', 'test'")
    return _fashion_tensors(_fashion(data_dir), split, check_image_size(image_size))


@lru_cache(maxsize=4)
def _fashion_tensors(data: Fashion, split: str, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = data.arrays[split]
    return _to_tensor(images, image_size), torch.from_numpy(labels.astype(np.int64))


@lru_cache(maxsize=2)
def load_digits(image_size: int = IMAGE_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's bundled UCI digits (8x8, 0..16) as MNIST-like ``[N,1,S,S]`` images.

    As in MNIST, a digit fills 20 of 28 px: here ``S * 20 / 32`` px (bilinear), centred.
    """
    from sklearn.datasets import load_digits as _sk_digits

    bunch = _sk_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)
    inner = 2 * round(check_image_size(image_size) * 10 / 32)
    return _place(x, inner, image_size, "bilinear"), torch.from_numpy(bunch.target.astype(np.int64))


# ----------------------------------------------------------------------------- transforms
def shift_images(images: torch.Tensor, strength: float, seed: int) -> torch.Tensor:
    """The P3 domain shift of strength ``s`` in [0, 1], applied to ``[N,1,H,W]`` images.

    Rotation by ``45 s`` degrees, a contrast-inversion blend ``x <- (1-a) x + a (1-x)``
    with ``a = 0.35 s`` (kept below 0.5 so the item stays visible), and Gaussian noise of
    standard deviation ``0.2 s``; clipped to [0, 1]. ``s = 0`` is the identity.
    """
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"shift strength={strength}; allowed: 0 <= s <= 1")
    x = rotate(images, 45.0 * strength)
    a = 0.35 * strength
    x = (1 - a) * x + a * (1 - x)
    gen = torch.Generator().manual_seed(seed)
    x = x + 0.2 * strength * torch.randn(x.shape, generator=gen)
    return x.clamp(0, 1)


def rotate(images: torch.Tensor, degrees: float) -> torch.Tensor:
    """Rotate ``[N,C,H,W]`` images about their centre (bilinear, zero fill).

    The sampling grid is ``F.affine_grid``'s (pixel centres, ``align_corners=False``), built
    with elementwise float64 products instead of its batched matrix product, which reaches
    MKL and so differs in the last bits between CPU vendors.
    """
    if degrees == 0 or len(images) == 0:
        return images
    n, _, h, w = images.shape
    t = math.radians(degrees)
    cos, sin = math.cos(t), math.sin(t)
    xs = (2 * torch.arange(w, dtype=torch.float64) + 1) / w - 1  # pixel centres in [-1, 1]
    ys = (2 * torch.arange(h, dtype=torch.float64) + 1) / h - 1
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    grid = torch.stack([cos * x - sin * y, sin * x + cos * y], dim=-1).to(images.dtype)
    return F.grid_sample(images, grid.expand(n, h, w, 2), align_corners=False)


def segmentation_masks(images: torch.Tensor, class_index: torch.Tensor,
                       threshold: float = 0.2) -> torch.Tensor:
    """Per-pixel labels ``[N,H,W]``: ``1 + class_index`` where intensity > threshold, else 0."""
    fg = images[:, 0] > threshold
    return torch.where(fg, class_index.view(-1, 1, 1) + 1, torch.zeros_like(class_index).view(-1, 1, 1))


# ----------------------------------------------------------------------------- domains
@dataclass(frozen=True)
class Domain:
    """One side of a domain pair: train/test images, class indices, and the masks' truth.

    ``mask_*`` are the images the segmentation labels are derived from (the clean,
    un-noised image for shifted domains, so the labels stay the geometric truth).
    ``seed`` seeds the auto-encoding input noise (with the split, see :func:`task_targets`).
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    n_classes: int
    mask_train: torch.Tensor
    mask_test: torch.Tensor
    seed: int = 0
    scrambled: bool = False  # task targets pixel-permuted (:data:`SCRAMBLE_SEED`): fashion-scrambled


def _subset(n_total: int, n: int | None, seed: int, block: int = 0) -> torch.Tensor:
    """Rows ``block * n .. (block + 1) * n`` of a seeded permutation of ``n_total`` rows
    (all of them when n is None).

    Blocks are disjoint, and block 0 is a prefix: a smaller ``n`` gives a subset of a
    larger one.
    """
    if n is None:
        if block:
            raise ValueError(f"block={block} needs a sample count n")
        n = n_total
    if block < 0 or (block + 1) * n > n_total:
        raise ValueError(f"asked for block {block} of n={n} samples but only {n_total} are "
                         f"available (at most {n_total // max(n, 1)} disjoint blocks)")
    perm = torch.randperm(n_total, generator=torch.Generator().manual_seed(seed))
    return perm[block * n:(block + 1) * n]


RANDOM_LABEL_SEED = 777  # fixes fashion-random-labels' shuffled source labels


_TARGET_CLASSES = tuple(range(10 - N_TARGET_CLASSES, 10))  # the ladder's target: classes 5-9


def _source_classes(pair: str, dose: float | None) -> tuple[int, ...]:
    """The Fashion-MNIST classes of a pair's source side, in label order: the target's own
    (fashion-shifted), none of them (classes 0-4), or the first ``shared_classes(dose)`` of
    the target's followed by the first of classes 0-4 (fashion-overlap), so that a shared
    class keeps the target's label."""
    if pair == "fashion-shifted":
        return _TARGET_CLASSES
    m = shared_classes(dose) if pair == "fashion-overlap" else 0
    return (*_TARGET_CLASSES[:m], *range(N_TARGET_CLASSES - m))


def _select(pair: str, side: str, split: str, data_dir, image_size: int = IMAGE_SIZE,
            dose: float | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Un-subsetted (images, class indices, number of classes) of one side and split."""
    if (pair, side) in (("fashion-to-digits", "target"), ("digits-to-fashion", "source")):
        x, y = load_digits(image_size)
        perm = _subset(len(x), None, 12345)  # a fixed 1,297 / 500 train/test split
        idx = perm[500:] if split == "train" else perm[:500]
        return x[idx], y[idx], 10
    x, y = load_fashion(split, data_dir, image_size)
    if pair in ("fashion-to-digits", "fashion-shift"):
        return x, y, 10
    keep = torch.tensor(_source_classes(pair, dose) if side == "source" else _TARGET_CLASSES)
    label = torch.full((10,), -1, dtype=y.dtype)
    label[keep] = torch.arange(len(keep), dtype=y.dtype)  # class keep[i] is label i
    sel = torch.isin(y, keep)
    x, y = x[sel], label[y[sel]]
    if pair == "fashion-random-labels" and side == "source":
        gen = torch.Generator().manual_seed(RANDOM_LABEL_SEED + (split == "test"))
        y = y[torch.randperm(len(y), generator=gen)]  # labels shuffled across images
    return x, y, 5


def domain_size(pair: str, side: str, split: str, data_dir: str | Path | Fashion | None = None) -> int:
    """Samples available on one side and split of a pair (from the labels alone; a wheel set,
    split per seed, has all its images available to either split)."""
    pair, dose = parse_pair(pair)
    if pair in wheel_sets.WHEEL_SETS:
        return len(wheel_sets.arrays(pair)[1])
    if (pair, side) in (("fashion-to-digits", "target"), ("digits-to-fashion", "source")):
        return len(load_digits(8)[1]) - 500 if split == "train" else 500
    labels = _fashion(data_dir).arrays[split][1]
    if pair in ("fashion-to-digits", "fashion-shift"):
        return len(labels)
    return int(np.isin(labels, _source_classes(pair, dose) if side == "source" else _TARGET_CLASSES).sum())


def _overlap_rows(labels: torch.Tensor, shared: int, n: int, seed: int) -> torch.Tensor:
    """Rows (of the whole split) of a fashion-overlap source's ``n`` training images: about
    ``shared`` fifths from the target's classes, taken from the *end* of the target's own
    permutation (seed + 10, as the target draws it), so they stay disjoint from the
    target's and the twin's blocks, and the rest from the first of classes 0-4."""
    pool = torch.nonzero(torch.isin(labels, torch.tensor(_TARGET_CLASSES))).flatten()
    tail = pool[_subset(len(pool), None, seed + 10)].flip(0)
    n_shared = round(n * shared / N_TARGET_CLASSES)
    mine = tail[torch.isin(labels[tail], torch.tensor(_TARGET_CLASSES[:shared]))][:n_shared]
    others = torch.nonzero(torch.isin(labels, torch.arange(N_TARGET_CLASSES - shared))).flatten()
    rest = others[_subset(len(others), None, seed)][:n - len(mine)]
    if len(mine) + len(rest) < n:
        raise ValueError(f"fashion-overlap: {n} training images asked for, {len(mine) + len(rest)} available")
    return torch.cat([mine, rest])


def load_domain(pair: str, side: str, n_train: int | None, n_test: int | None, seed: int = 0,
                shift: float = 0.5, data_dir: str | Path | Fashion | None = None,
                image_size: int = IMAGE_SIZE, block: int = 0) -> Domain:
    """One side ('source' or 'target') of ``pair`` (docs/protocol.md, section 2).

    - ``fashion-split``: source = Fashion-MNIST classes 0-4, target = classes 5-9.
    - ``fashion-to-digits``: source = Fashion-MNIST, target = UCI digits (1,297 train /
      500 test, a fixed split).
    - ``fashion-shift``: source = Fashion-MNIST, target = the same images with
      :func:`shift_images` of strength ``shift`` (masks from the rotated clean image).
    - ``fashion-random-labels``: fashion-split with the source's class labels shuffled
      across images (masks keep each item's shape, but its class is noise).

    The source ladder, one target (fashion-split's, classes 5-9) for every rung:

    - ``fashion-shifted@s``: source = classes 5-9 (the target's labels) shifted with
      strength ``s``; its training images are the *last* rows of the target's permutation,
      disjoint from the target's and the twin's blocks whenever 2 n_T + n_S <= 30,000;
    - ``fashion-overlap@o``: source = ``round(5 o)`` of the target's classes (with their
      labels; training images from the end of the target's permutation, as above) and the
      rest from classes 0-4: a partial label overlap;
    - ``fashion-split-shifted@s``: fashion-split's source (disjoint labels) shifted with
      strength ``s``;
    - ``digits-to-fashion``: source = UCI digits (1,297 training images at most);
    - ``fashion-scrambled``: source = classes 0-4 whose task targets (masks, clean images)
      are pixel-permuted by one fixed permutation: its kernels learn a non-local mapping
      no target shares, the true negative-transfer source.

    A wheel set (:data:`reuse.study.training.wheel_sets.WHEEL_SETS`) is a target alone: its seed's
    stratified split (:func:`reuse.study.training.wheel_sets.split`), whose test split is drawn before
    the training blocks, so ``n_test`` decides which images a block holds.

    ``n_*`` are sample counts (None = all) drawn from a permutation fixed by ``seed``
    (source and target sides draw different permutations); ``block`` picks which disjoint
    run of ``n_train`` training samples (0: the first; the same-domain twin uses 1).
    """
    if side not in ("source", "target"):
        raise ValueError(f"side={side!r}; allowed: 'source', 'target'")
    name, dose = parse_pair(pair)
    if name in wheel_sets.WHEEL_SETS:
        if side != "target":
            raise ValueError(f"pair={pair!r}, side='source': a wheel set is a target only (its source "
                             "is a pretrained network's own data)")
        (tx, ty), (sx, sy) = wheel_sets.split(name, seed, n_train, n_test, block,
                                              check_image_size(image_size))
        return Domain(name, tx, ty, sx, sy, wheel_sets.n_classes(name), tx, sx, seed=seed)
    shift = shift if name not in SHIFTED_SOURCES else dose
    shifted_source = name in SHIFTED_SOURCES and side == "source"
    seed = seed + (10 if side == "target" else 0)
    parts = {}
    for k, (split, n) in enumerate((("train", n_train), ("test", n_test))):
        x, y, n_classes = _select(name, side, split, data_dir, image_size, dose)
        if name == "fashion-shifted" and side == "source" and split == "train":
            perm = _subset(len(x), None, seed + 10)  # the tail of the target's permutation
            idx = perm[len(x) - (len(x) if n is None else n):]
        elif name == "fashion-overlap" and side == "source" and split == "train":
            labels = torch.from_numpy(_fashion(data_dir).arrays[split][1].astype(np.int64))
            chosen = torch.isin(labels, torch.tensor(_source_classes(name, dose)))
            row = torch.cumsum(chosen, 0) - 1  # a row of the whole split -> its row in x
            idx = row[_overlap_rows(labels, shared_classes(dose), len(x) if n is None else n, seed)]
        else:
            idx = _subset(len(x), n, seed + k, block if split == "train" else 0)
        x, y, mask = x[idx], y[idx], x[idx]
        if (name == "fashion-shift" and side == "target") or shifted_source:
            mask = rotate(x, 45.0 * shift)
            x = shift_images(x, shift, seed + k)
        parts[split] = (x, y, mask)
    shared = shared_classes(dose) if name == "fashion-overlap" else 0
    names = {"fashion-split": ("fashion 0-4", "fashion 5-9"), "fashion-to-digits": ("fashion", "digits"),
             "fashion-shift": ("fashion", f"fashion shift {shift:g}"),
             "fashion-random-labels": ("fashion 0-4, labels shuffled", "fashion 5-9"),
             "fashion-shifted": (f"fashion 5-9 shift {shift:g}", "fashion 5-9"),
             "fashion-overlap": (f"fashion {shared} of 5-9 and {N_TARGET_CLASSES - shared} of 0-4", "fashion 5-9"),
             "fashion-split-shifted": (f"fashion 0-4 shift {shift:g}", "fashion 5-9"),
             "digits-to-fashion": ("digits", "fashion 5-9"),
             "fashion-scrambled": ("fashion 0-4, targets scrambled", "fashion 5-9")}
    (tx, ty, tm), (sx, sy, sm) = parts["train"], parts["test"]
    return Domain(names[name][side == "target"], tx, ty, sx, sy, n_classes, tm, sm,
                  seed=seed + 100 * block, scrambled=name == "fashion-scrambled" and side == "source")


def load_pair(pair: str, n_source: int | None, n_target: int | None, n_test: int | None,
              seed: int = 0, shift: float = 0.5, data_dir: str | Path | Fashion | None = None,
              image_size: int = IMAGE_SIZE) -> tuple[Domain, Domain]:
    """Source and target :class:`Domain` of ``pair`` (see :func:`load_domain`)."""
    return (load_domain(pair, "source", n_source, n_test, seed, shift, data_dir, image_size),
            load_domain(pair, "target", n_target, n_test, seed, shift, data_dir, image_size))


def task_targets(domain: Domain, task: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) of ``domain`` for ``task`` on ``split`` ('train' or 'test').

    Segmentation: the images and their masks. Auto-encoding (denoising): the images plus
    Gaussian noise of standard deviation :data:`AE_NOISE`, clipped to [0, 1], drawn from
    the domain's seed and the split (so a split always gets the same noise), and the
    clean images. Classification: the images and their class labels.
    """
    if task not in ALL_TASKS:
        raise ValueError(f"task={task!r}; allowed: {', '.join(ALL_TASKS)}")
    x, y, m = ((domain.train_x, domain.train_y, domain.mask_train) if split == "train"
               else (domain.test_x, domain.test_y, domain.mask_test))
    if task == CLASSIFICATION:
        return x, y
    if task == "segmentation":
        return x, _scramble(segmentation_masks(m, y), domain.scrambled)
    gen = torch.Generator().manual_seed(1_000_003 * domain.seed + (split == "test"))
    noisy = (x + AE_NOISE * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    return noisy, _scramble(x, domain.scrambled)


def _scramble(targets: torch.Tensor, scrambled: bool) -> torch.Tensor:
    """``targets`` ``[N, ..., H, W]`` with their pixels permuted by one fixed permutation
    (the same for every image and split) when ``scrambled``."""
    if not scrambled:
        return targets
    h, w = targets.shape[-2:]
    perm = torch.randperm(h * w, generator=torch.Generator().manual_seed(SCRAMBLE_SEED))
    return targets.flatten(-2)[..., perm].reshape(targets.shape)


def n_outputs(task: str, n_classes: int) -> int:
    """Output channels a model needs: classes + background, one image channel, or the classes."""
    return {"segmentation": n_classes + 1, CLASSIFICATION: n_classes}.get(task, 1)


# ----------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reuse.study.training.data")
    parser.add_argument("command", choices=["check"])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--download", action="store_true")
    args = parser.parse_args(argv)
    try:
        folder = check_fashion(find_fashion_mnist(args.data_dir, download=args.download))
    except (DataNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"Fashion-MNIST found in {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
