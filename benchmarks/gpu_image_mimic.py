"""A local stand-in for the GPU machine's Python image, to test benchmarks/gpu_paper.sh here.

The image holds torch and the scientific stack but no Jupyter (benchmarks/gpu_image_packages.txt).
This makes a fresh venv whose site-packages holds exactly those of the image's packages that
an existing environment here has installed (the project's ``.venv``: torch 2.14.1,
torchvision 0.29.1, ...), as symbolic links to that environment's files, file by file from
each distribution's RECORD: no download, and nothing of papermill, ipykernel or their
dependencies leaks in, so the offline install from the wheelhouse is tested for real.

    python benchmarks/gpu_image_mimic.py --source .venv/bin/python DEST

Then ``PYTHON=DEST/bin/python benchmarks/gpu_paper.sh --local GROUP`` builds its environment
on top of DEST as it would on top of the GPU machine's ``python3``.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import venv
from pathlib import Path

IMAGE_LIST = Path(__file__).with_name("gpu_image_packages.txt")

# Run in the source environment: its distributions, each with the files of its RECORD.
_LIST_FILES = """
import json, sys
from importlib import metadata
out = []
for dist in metadata.distributions():
    files = [str(f) for f in (dist.files or []) if not str(f).startswith("..")]
    out.append({"name": dist.metadata["Name"], "base": str(dist.locate_file("")), "files": files})
json.dump(out, sys.stdout)
"""


def normalize(name: str) -> str:
    """A project name in PEP 503 normal form."""
    return re.sub(r"[-_.]+", "-", name).lower()


def image_packages(path: Path = IMAGE_LIST) -> set[str]:
    """The normalized names listed in ``gpu_image_packages.txt`` (comments skipped)."""
    return {normalize(line.strip()) for line in path.read_text().splitlines()
            if line.strip() and not line.startswith("#")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dest", type=Path, help="the venv to create (must not exist)")
    p.add_argument("--source", required=True,
                   help="python of an environment holding the image's packages (e.g. .venv/bin/python)")
    args = p.parse_args(argv)
    if args.dest.exists():
        p.error(f"{args.dest} exists: give a new folder")
    try:
        listing = subprocess.run([args.source, "-c", _LIST_FILES], capture_output=True, text=True,
                                 check=True).stdout
    except (OSError, subprocess.CalledProcessError) as err:
        p.error(f"--source {args.source} could not list its distributions: {err}")
    wanted = image_packages()
    venv.EnvBuilder(with_pip=False).create(args.dest)
    site = Path(subprocess.run([str(args.dest / "bin" / "python"), "-c",
                                "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    linked, links = [], 0
    for dist in json.loads(listing):
        if normalize(dist["name"]) not in wanted:
            continue
        linked.append(normalize(dist["name"]))
        for rel in dist["files"]:
            src, dst = Path(dist["base"]) / rel, site / rel
            if not src.exists() or dst.exists():
                continue
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.symlink_to(src)
            links += 1
    missing = sorted(wanted - set(linked))
    print(f"{args.dest}: {len(linked)} of the image's {len(wanted)} packages linked from {args.source} "
          f"({links} files); the image's other {len(missing)} are not installed there")
    return 0


if __name__ == "__main__":
    sys.exit(main())
