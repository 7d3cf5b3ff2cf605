"""Times `cnn-reuse analyze` on two resnet18 checkpoints (3 x 32 x 32 inputs, 10 classes), against a
baseline commit side by side.

Goals: issue 10, kernels only under 5 s and, with 1,000 test images, every single-layer swap
(plus the selection's joint check) under 2 min on 2 cores; issue 20, start-up: kernels only
under 3 s wall, interpreter included, and ``cnn-reuse analyze --help`` under 1 s. Each case runs
as a user runs it, ``python -m reuse analyze ...`` in a fresh process (so the wall time
includes starting Python and importing torch), ``--repeat`` times; the median wall time is
printed with the process's CPU time (user + system: what other work on the machine inflates
least) and the command's own time (``seconds`` in analyze.json). With ``--baseline REV``
the same cases run on that commit's code (``git archive`` into a temporary folder) and the
ratio now / baseline is printed beside them. Checkpoints share one init, the source nudged;
the images are random (a dataset function, ``--dataset``), which costs as much as real ones.

    python benchmarks/bench_analyze.py --baseline d137b28        # 2 threads, 1,000 images
    python benchmarks/bench_analyze.py --cases help,kernels_only --repeat 5
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torchvision

REPO = Path(__file__).resolve().parents[1]
DATASET = '''import torch
def load():
    gen = torch.Generator().manual_seed(0)
    n = {n}
    return torch.rand(n, 3, 32, 32, generator=gen), torch.randint(0, 10, (n,), generator=gen)
'''
MODEL = ["--model", "torchvision.models:resnet18", "--model-args", '{"num_classes": 10}']


def _checkpoints(folder: Path) -> None:
    torch.manual_seed(0)
    target = torchvision.models.resnet18(weights=None, num_classes=10)
    source = copy.deepcopy(target)
    with torch.no_grad():
        for p in source.parameters():
            p.add_(0.1 * p.std() * torch.randn_like(p) if p.numel() > 1 else 0)
    torch.save(source.state_dict(), folder / "source.pt")
    torch.save(target.state_dict(), folder / "target.pt")


def _cases(n_images: int) -> dict[str, list[str]]:
    """Case name -> the arguments after ``cnn-reuse analyze`` (checkpoints and --out are added)."""
    return {"help": ["--help"], "kernels_only": MODEL, "kernels_only_no_model": [],
            f"single_swaps_{n_images}_images": [*MODEL, "--dataset", "bench_data:load", "--path", ".", "--n-images",
                                                str(n_images), "--sets", "single"]}


def _run(code: Path, folder: Path, name: str, extra: list[str], threads: int, repeat: int) -> dict:
    """Median wall and CPU time of ``repeat`` fresh processes, and the command's own time."""
    out = folder / f"out-{name}"
    cmd = [sys.executable, "-m", "reuse", "analyze", *extra]
    if extra != ["--help"]:
        cmd[4:4] = [str(folder / "source.pt"), str(folder / "target.pt")]
        cmd += ["--out", str(out), "--force", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": f"{code}{os.pathsep}{folder}"}
    walls, cpus, inner = [], [], []
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(cmd, check=True, env=env, cwd=folder, capture_output=True)
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        if out.exists():
            inner.append(json.loads((out / "analyze.json").read_text())["summary"]["seconds"])
    return {"wall_s": statistics.median(walls), "cpu_s": statistics.median(cpus),
            "analyze_s": statistics.median(inner) if inner else None}


def _baseline_code(rev: str, into: Path) -> Path:
    """The package at ``rev``, unpacked from git into ``into``."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "reuse"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of the timed command")
    p.add_argument("--n-images", type=int, default=1000)
    p.add_argument("--repeat", type=int, default=3, help="runs per case; the median is printed")
    p.add_argument("--cases", help="comma-separated cases (default all): " + ", ".join(_cases(1000)))
    p.add_argument("--baseline", metavar="REV", help="a git revision to time side by side")
    args = p.parse_args(argv)
    cases = _cases(args.n_images)
    chosen = list(cases) if args.cases is None else [c.strip() for c in args.cases.split(",")]
    unknown = [c for c in chosen if c not in cases]
    if unknown:
        p.error(f"--cases: unknown {unknown}; allowed: {', '.join(cases)}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        _checkpoints(folder)
        (folder / "bench_data.py").write_text(DATASET.format(n=args.n_images))
        base = None
        if args.baseline:
            (folder / "baseline").mkdir()
            base = _baseline_code(args.baseline, folder / "baseline")
        rows = []
        for name in chosen:
            now = _run(REPO, folder, name, cases[name], args.threads, args.repeat)
            then = _run(base, folder, name, cases[name], args.threads, args.repeat) if base else None
            rows.append((name, now, then))
    print(f"cnn-reuse analyze, resnet18 3x32x32, 10 classes, {args.threads} thread(s), torch {torch.__version__}, "
          f"median of {args.repeat}" + (f"; baseline {args.baseline}" if args.baseline else ""))
    for name, now, then in rows:
        line = f"  {name:<28} wall {now['wall_s']:6.2f} s  cpu {now['cpu_s']:6.2f} s"
        line += f" (analyze itself {now['analyze_s']:5.2f} s)" if now["analyze_s"] is not None else " " * 26
        if then:
            line += (f"   baseline wall {then['wall_s']:6.2f} s  cpu {then['cpu_s']:6.2f} s   "
                     f"x{now['wall_s'] / then['wall_s']:.2f} wall, x{now['cpu_s'] / then['cpu_s']:.2f} cpu")
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
