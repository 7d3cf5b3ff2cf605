"""Peak memory of the CKA of `cnn-reuse analyze --data` on resnet18, before and after mini-batches.

Goal (issue 20): memory that does not grow with the number of images. Before, analyze held
every layer's activations for all N images of both models, then two ``[L, N, N]`` float64
Gram stacks (``similarity.activations`` + ``similarity.cka_layers``: ``full``); now it
accumulates the HSIC terms over batches of ``similarity.CKA_BATCH`` images
(``similarity.cka_cross``: ``minibatch``, which also gives every layer pair). Each variant runs
in its own process and reports its peak resident set (``ru_maxrss``) and the part above its
start-up (torch, resnet18, two state dicts, the N images ``[N, 3, 32, 32]``), which is what
the CKA adds. Layers: every layer of resnet18 (20 convolutions and the Linear head).

    python benchmarks/bench_cka.py                                  # N = 1000, 2000, 10000
    python benchmarks/bench_cka.py --n 1000 10000 --max-full 2000   # full above 2000 skipped

``--max-full`` (default 2,000) skips the full variant for larger N: its Gram stacks alone take
``2 L N^2 8`` bytes, 34 GB for N = 10,000, more than a 23 GB machine holds.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import subprocess
import sys
import time

import torch
import torchvision

from reuse.toolkit.criteria import find_layers
from reuse.toolkit.similarity import activations, cka_cross, cka_layers, features

VARIANTS = ("full", "minibatch")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _child(variant: str, n: int) -> dict:
    """One variant on n images in this process: peak RSS before and after the CKA (MB)."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    target = copy.deepcopy(model.state_dict())
    source = {k: v + 0.1 * v.std() * torch.randn_like(v) if v.is_floating_point() and v.numel() > 1 else v
              for k, v in target.items()}
    x = torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    layers = find_layers(target)
    base = _peak_mb()
    start = time.perf_counter()
    if variant == "full":  # the former similarity.layer_cka, which analyze called
        acts = []
        for state in (source, target):
            m = copy.deepcopy(model)
            m.load_state_dict(state)
            got = activations(m, x, layers)
            acts.append([features(got[name]) for name in layers])
        value = cka_layers(*acts, debiased=True)
        cka_layers(*acts)
    else:
        cross = cka_cross(model, source, target, x, layers)
        value = cross[cross.source_layer == cross.target_layer].cka_debiased.to_numpy()
    return {"variant": variant, "n": n, "layers": len(layers), "base_mb": round(base),
            "peak_mb": round(_peak_mb()), "seconds": round(time.perf_counter() - start, 1),
            "mean_cka_debiased": round(float(value.mean()), 4)}


def _run(variant: str, n: int, threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run([sys.executable, __file__, "--child", variant, "--n", str(n)], check=True,
                          env=env, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, nargs="+", default=[1000, 2000, 10000], help="numbers of images")
    p.add_argument("--max-full", type=int, default=2000, help="largest N the full variant runs on")
    p.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of each variant")
    p.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
        print(json.dumps(_child(args.child, args.n[0])))
        return 0
    print(f"CKA of cnn-reuse analyze --data, resnet18 3x32x32, every layer, {args.threads} thread(s), "
          f"torch {torch.__version__}; peak RSS in MB (CKA's own share: peak - start-up)")
    print(f"  {'N':>6}  {'full: peak (CKA)':>18} {'s':>6}  {'minibatch: peak (CKA)':>22} {'s':>6}  ratio of CKA")
    for n in args.n:
        rows = {v: _run(v, n, args.threads) for v in VARIANTS if v != "full" or n <= args.max_full}
        cells = []
        for v in VARIANTS:
            r = rows.get(v)
            width = 18 if v == "full" else 22
            cells.append(f"{r['peak_mb']:>{width - 8}} ({r['peak_mb'] - r['base_mb']:>5}) {r['seconds']:>6}"
                         if r else f"{'skipped':>{width}} {'':>6}")
        ratio = (f"x{(rows['full']['peak_mb'] - rows['full']['base_mb']) / max(1, rows['minibatch']['peak_mb'] - rows['minibatch']['base_mb']):.1f}"
                 if "full" in rows else "")
        print(f"  {n:>6}  {cells[0]}  {cells[1]}  {ratio}")
        for r in rows.values():
            print(f"          {r['variant']}: mean debiased CKA {r['mean_cka_debiased']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
