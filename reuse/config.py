"""Scales: the ``smoke``, ``quick`` and ``paper`` profiles (PROTOCOL section 7).

Each profile is a small set of data sizes and training settings; every notebook takes
``profile`` plus its own parameters and resolves them here, in one place.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    """Data sizes (samples), model size and training length of one scale."""

    name: str
    n_source: int  # source training samples
    n_target: int  # target training samples (capped at what the domain has: digits 1,297)
    n_test: int  # target test samples every swap is scored on
    epochs: int
    width: int  # channels of the first stage
    depth: int  # down-sampling stages
    batch_size: int
    seeds: tuple[int, ...]
    deterministic: bool  # bit-identical reruns; slower on a GPU


PROFILES = {
    # every code path in seconds: CI and nbval
    "smoke": Profile("smoke", n_source=256, n_target=256, n_test=128, epochs=1, width=4, depth=1,
                     batch_size=32, seeds=(0, 1), deterministic=True),
    # a 2-core CPU: effects visible with 3 seeds, each notebook in minutes
    "quick": Profile("quick", n_source=1500, n_target=1000, n_test=300, epochs=3, width=8, depth=2,
                     batch_size=32, seeds=(0, 1, 2), deterministic=True),
    # one GPU: more data, wider and deeper nets, 5 seeds
    "paper": Profile("paper", n_source=10000, n_target=5000, n_test=2000, epochs=6, width=16,
                     depth=3, batch_size=256, seeds=(0, 1, 2, 3, 4), deterministic=False),
}


def get_profile(name: str, seeds: list[int] | tuple[int, ...] | None = None) -> Profile:
    """The named profile, with ``seeds`` overriding its default seeds when given."""
    if name not in PROFILES:
        raise ValueError(f"profile={name!r}; allowed: {', '.join(PROFILES)}")
    profile = PROFILES[name]
    if seeds is not None:
        seeds = tuple(seeds)
        if not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
            raise ValueError(f"seeds={seeds!r}; expected a non-empty list of integers >= 0")
        profile = dataclasses.replace(profile, seeds=seeds)
    return profile


def check_choices(name: str, values, allowed) -> list:
    """``values`` as a list, each checked to be in ``allowed`` (ValueError naming the bad one)."""
    values = [values] if isinstance(values, str) else list(values)
    bad = [v for v in values if v not in allowed]
    if bad or not values:
        raise ValueError(f"{name}={values!r}; allowed: {', '.join(map(str, allowed))}")
    return values
