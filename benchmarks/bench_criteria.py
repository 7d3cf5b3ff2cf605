"""Side-by-side speed of the alignment and CKA criteria against a per-layer Python loop.

(a) ``reuse.toolkit.alignment.weight_matching`` on two resnet18-sized models (random init, seeds 0
    and 1) vs the plain way of Git Re-Basin's reference code: every cost matrix summed slot
    by slot, each slot's weight re-permuted from the original on every other axis at every
    step. Both visit the groups in the same seeded order, so they must return the same
    permutations (checked).
(b) ``reuse.toolkit.similarity.cka_layers`` on 20 layers of activations of 1000 samples vs a loop
    of ``linear_cka`` (biased and debiased; checked equal).

Both variants run in this process on the same inputs, interleaved; each figure is the
best of ``--repeat`` runs (the CI machine is shared, so single runs are noisy). CPU threads: torch's default unless ``--threads``.

    python benchmarks/bench_criteria.py            # full sizes
    python benchmarks/bench_criteria.py --quick    # small sizes, seconds
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch
import torchvision
from scipy.optimize import linear_sum_assignment

from reuse.toolkit.alignment import (  # the baseline loops over the same row view
    PermutationSpec,
    _rows,
    permutation_spec,
    weight_matching,
)
from reuse.toolkit.similarity import cka_layers, linear_cka


def _compare(fast: Callable[[], object], loop: Callable[[], object], repeat: int
             ) -> tuple[float, float, object, object]:
    """Best time of each variant over ``repeat`` interleaved runs (fast, loop, fast, ...),
    so that load from other processes hits both alike; and each one's last result."""
    times: dict[int, list[float]] = {0: [], 1: []}
    out = [None, None]
    for _ in range(repeat):
        for i, fn in enumerate((fast, loop)):
            start = time.perf_counter()
            out[i] = fn()
            times[i].append(time.perf_counter() - start)
    return min(times[0]), min(times[1]), out[0], out[1]


def loop_weight_matching(spec: PermutationSpec, source: dict, target: dict, max_iter: int = 100,
                         seed: int = 0) -> dict[str, torch.Tensor]:
    """Weight matching written as a plain per-slot loop (the baseline of section (a))."""
    by_key = spec.by_key()
    perms = {g: torch.arange(n) for g, n in spec.sizes.items()}

    def permuted_except(key, skip_group, skip_axis):
        w = source[key].double()
        for group, slot in by_key[key]:
            if group == skip_group and slot.axis == skip_axis:
                continue
            index = torch.arange(w.shape[slot.axis])
            block = (slot.offset + perms[group])[:, None] * slot.inner + torch.arange(slot.inner)
            index[slot.offset * slot.inner:(slot.offset + slot.size) * slot.inner] = block.flatten()
            w = w.index_select(slot.axis, index)
        return w

    names = list(spec.groups)
    rng = np.random.default_rng(seed)
    for _ in range(max_iter):
        changed = False
        for g in (names[i] for i in rng.permutation(len(names))):
            n = spec.sizes[g]
            cost = torch.zeros(n, n, dtype=torch.float64)
            for slot in spec.groups[g]:
                cost += _rows(target[slot.key].double(), slot) @ \
                    _rows(permuted_except(slot.key, g, slot.axis), slot).T
            cost = cost.numpy()
            _, best = linear_sum_assignment(cost, maximize=True)
            old, new = cost[np.arange(n), perms[g].numpy()].sum(), cost[np.arange(n), best].sum()
            if new - old > 1e-12 * max(abs(old), 1.0):
                perms[g] = torch.from_numpy(best).long()
                changed = True
        if not changed:
            break
    return perms


def bench_alignment(repeat: int, quick: bool) -> None:
    def build(seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        if quick:                                    # resnet10: one block per stage
            return torchvision.models.ResNet(torchvision.models.resnet.BasicBlock, [1, 1, 1, 1],
                                             num_classes=10)
        return torchvision.models.resnet18(weights=None, num_classes=10)

    a, b = build(0), build(1)
    spec = permutation_spec(a)
    sa, sb = a.state_dict(), b.state_dict()
    n_params = sum(v.numel() for k, v in sa.items() if k.endswith("weight"))
    t_fast, t_loop, fast, loop = _compare(lambda: weight_matching(spec, sa, sb),
                                          lambda: loop_weight_matching(spec, sa, sb), repeat)
    same = all(torch.equal(fast[g], loop[g]) for g in spec.groups)
    print(f"(a) weight_matching, {len(spec.groups)} groups, {n_params / 1e6:.1f} M weights: "
          f"vectorised {t_fast:.2f} s, per-slot loop {t_loop:.2f} s, "
          f"ratio {t_loop / t_fast:.2f}x, same permutations: {same}")


def bench_cka(repeat: int, quick: bool) -> None:
    n, widths = (200, [64] * 20) if quick else (1000, [256, 512, 1024, 2048] * 5)
    generator = torch.Generator().manual_seed(0)
    xs = [torch.randn(n, p, generator=generator) for p in widths]
    ys = [x[:, : p // 2].repeat(1, 2) + torch.randn(n, p, generator=generator)
          for x, p in zip(xs, widths)]
    for debiased in (False, True):
        t_fast, t_loop, fast, loop = _compare(
            lambda: cka_layers(xs, ys, debiased),
            lambda: [linear_cka(x, y, debiased) for x, y in zip(xs, ys)], repeat)
        print(f"(b) CKA{' debiased' if debiased else ''}, {len(xs)} layers x {n} samples: "
              f"cka_layers {t_fast:.3f} s, loop of linear_cka {t_loop:.3f} s, "
              f"ratio {t_loop / t_fast:.2f}x, equal: {np.allclose(fast, loop, rtol=1e-12)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (seconds)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per variant; best is kept")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)  # this script's own process only
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    bench_alignment(args.repeat, args.quick)
    bench_cka(args.repeat, args.quick)


if __name__ == "__main__":
    main()
