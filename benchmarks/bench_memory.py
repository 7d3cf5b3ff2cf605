"""Peak memory of `cnn-reuse analyze` on two large checkpoints, against a baseline commit side by side.

Goal (issue 33): a pair of checkpoints analysed in under twice their size. Before, two 1.68 GB
checkpoints took 13.7 GB: each file was read whole into memory (``torch.load`` without
``mmap``), then ``criteria.kernel_rmse`` held float64 copies of every layer of both at once
(four times the float32 weights). Now the files are memory-mapped and the float64 copies made
one layer at a time. Each variant runs ``cnn-reuse analyze SOURCE TARGET --out DIR`` (kernels only)
in a fresh process that reports its resident set after start-up (python, torch, pandas,
matplotlib: before a checkpoint is read) and its peak from then on (``VmHWM``, reset after the
imports; the pages of a mapped file count once they are read). Linux only (``/proc``).
``--baseline REV`` runs that commit's code (``git archive``, as benchmarks/bench_analyze.py
does) on the same files; ``agree`` says whether both wrote the same ``layers.csv``. The
checkpoints: conv layers of 256 x 256 x 3 x 3, the source the target plus noise, ``--mib`` MiB
each.

    python benchmarks/bench_memory.py --mib 1024 --baseline 05cf163
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from bench_analyze import REPO, _baseline_code

LAYER = (256, 256, 3, 3)  # 2.25 MiB of float32 weights
# the child: its imports first, then the peak reset (Linux: "5" to clear_refs resets VmHWM), so
# the peak is the analysis's own high-water mark over what start-up left resident
CHILD = """import json, re, sys
import reuse.toolkit.analyze_inputs, reuse.toolkit.analyze_report, reuse.toolkit.analyze_tables
from reuse.toolkit.analyze import main
def kib(field):
    return int(re.search(field + r":\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))
open("/proc/self/clear_refs", "w").write("5")
start = kib("VmRSS")
code = main(sys.argv[1:])
print(json.dumps({"code": code, "start_kib": start, "peak_kib": kib("VmHWM")}))
"""


def _checkpoints(folder: Path, mib: int) -> int:
    """source.pt and target.pt of ``mib`` MiB each (at least one layer); their size in bytes."""
    gen = torch.Generator().manual_seed(0)
    n = max(1, round(mib * 2**20 / (4 * torch.Size(LAYER).numel())))
    target = {f"layers.{i}.weight": torch.randn(LAYER, generator=gen) for i in range(n)}
    torch.save(target, folder / "target.pt")
    source = {k: v + 0.1 * torch.randn(LAYER, generator=gen) for k, v in target.items()}
    torch.save(source, folder / "source.pt")
    return sum((folder / name).stat().st_size for name in ("source.pt", "target.pt"))


def _run(code: Path, folder: Path, name: str) -> dict:
    """One ``cnn-reuse analyze`` of the pair with the package at ``code``, in a fresh process."""
    out = folder / f"out-{name}"
    args = [str(folder / "source.pt"), str(folder / "target.pt"), "--out", str(out), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(code)}
    done = subprocess.run([sys.executable, "-c", CHILD, *args], check=True, env=env, cwd=folder,
                          capture_output=True, text=True)
    row = json.loads(done.stdout.strip().splitlines()[-1])
    return {**row, "layers": (out / "layers.csv").read_bytes()}


def _line(name: str, row: dict, inputs: int) -> str:
    peak, own = row["peak_kib"] * 1024, (row["peak_kib"] - row["start_kib"]) * 1024
    return (f"  {name:<9} peak {peak / 2**20:8,.0f} MiB (x{peak / inputs:.2f} the inputs); above start-up "
            f"{own / 2**20:8,.0f} MiB (x{own / inputs:.2f})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mib", type=int, default=1024, help="size of each checkpoint in MiB (default 1024)")
    p.add_argument("--baseline", metavar="REV", help="a git revision to measure side by side")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        inputs = _checkpoints(folder, args.mib)
        now = _run(REPO, folder, "now")
        then = None
        if args.baseline:
            (folder / "baseline").mkdir()
            then = _run(_baseline_code(args.baseline, folder / "baseline"), folder, "baseline")
    print(f"cnn-reuse analyze, kernels only, two checkpoints of {inputs / 2 / 2**20:,.0f} MiB (conv layers "
          f"{'x'.join(map(str, LAYER))}), torch {torch.__version__}; peak resident set")
    print(_line("now", now, inputs))
    if then:
        print(_line("baseline", then, inputs))
        ratio = (now["peak_kib"] - now["start_kib"]) / max(1, then["peak_kib"] - then["start_kib"])
        peaks = now["peak_kib"] / then["peak_kib"]
        print(f"  now / baseline above start-up: x{ratio:.2f}; peak x{peaks:.2f}; "
              f"agree (the same layers.csv): {now['layers'] == then['layers']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
