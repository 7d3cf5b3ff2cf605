"""Times `reuse analyze` on two resnet18 checkpoints (3 x 32 x 32 inputs, 10 classes).

Goals (issue 10): kernels only under 5 s on the CPU; with 1,000 test images and every
single-layer swap (plus the selection's joint check) under 2 min on 2 cores. Each case runs
as a user runs it, ``python -m reuse analyze ...`` in a fresh process (so the wall time
includes starting Python and importing torch), and prints the wall time and the command's
own time (``seconds`` in analyze.json). Checkpoints share one init, the source nudged; the
images are random (a dataset function, ``--dataset``), which costs as much as real ones.

    python benchmarks/bench_analyze.py                # 2 threads, 1,000 images
    python benchmarks/bench_analyze.py --threads 1 --n-images 200
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torchvision

DATASET = '''import torch
def load():
    gen = torch.Generator().manual_seed(0)
    n = {n}
    return torch.rand(n, 3, 32, 32, generator=gen), torch.randint(0, 10, (n,), generator=gen)
'''


def _checkpoints(folder: Path) -> None:
    torch.manual_seed(0)
    target = torchvision.models.resnet18(weights=None, num_classes=10)
    source = copy.deepcopy(target)
    with torch.no_grad():
        for p in source.parameters():
            p.add_(0.1 * p.std() * torch.randn_like(p) if p.numel() > 1 else 0)
    torch.save(source.state_dict(), folder / "source.pt")
    torch.save(target.state_dict(), folder / "target.pt")


def _run(folder: Path, name: str, extra: list[str], threads: int) -> dict:
    out = folder / name
    cmd = [sys.executable, "-m", "reuse", "analyze", str(folder / "source.pt"), str(folder / "target.pt"),
           "--model", "torchvision.models:resnet18", "--model-args", '{"num_classes": 10}',
           "--out", str(out), "--no-progress", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": f"{folder}{os.pathsep}"
           + os.environ.get("PYTHONPATH", "")}
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, cwd=folder, capture_output=True)
    wall = time.perf_counter() - start
    inner = json.loads((out / "analyze.json").read_text())["summary"]["seconds"]
    return {"case": name, "wall_s": round(wall, 2), "analyze_s": inner}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of the timed command")
    p.add_argument("--n-images", type=int, default=1000)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        _checkpoints(folder)
        (folder / "bench_data.py").write_text(DATASET.format(n=args.n_images))
        rows = [_run(folder, "kernels_only", [], args.threads),
                _run(folder, f"single_swaps_{args.n_images}_images",
                     ["--dataset", "bench_data:load", "--n-images", str(args.n_images), "--sets", "single"],
                     args.threads)]
    print(f"reuse analyze, resnet18 3x32x32, 10 classes, {args.threads} thread(s), torch {torch.__version__}")
    for row in rows:
        print(f"  {row['case']:<28} wall {row['wall_s']:7.2f} s   (analyze itself {row['analyze_s']:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
