"""Notebook hygiene: committed notebooks keep their results and lose their noise.

Drops stderr streams (progress lines), papermill's timings and paths, injected
parameters whose value is an absolute path (a machine's folders), and a figure shown twice
in one cell; renumbers execution counts 1..n and sets one kernelspec, so a rerun that
computes the same numbers leaves the same file.
``python -m reuse.study.publishing.nbclean [--check] NOTEBOOK...``; run_all.sh applies it
after each notebook and a test checks the committed ones.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import nbformat

KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}
_MACHINE_PATH = re.compile(r"""^\w+ = ['"](/|[A-Za-z]:\\).*['"]\s*$""")  # name = "/abs/path"
_NOISY_NB_KEYS = ("start_time", "end_time", "duration", "input_path", "output_path",
                  "exception", "environment_variables", "version")


def clean(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The notebook without stderr, timings or paths, renumbered, with our kernelspec."""
    nb = nbformat.from_dict(nb)  # a deep copy
    count = 0
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
        if cell.cell_type != "code":
            continue
        if "injected-parameters" in cell.metadata.get("tags", []):
            cell.source = "\n".join(line for line in cell.source.splitlines()
                                    if not _MACHINE_PATH.match(line))
        outputs, seen = [], set()
        for o in cell.outputs:
            if o.output_type == "stream" and o.get("name") == "stderr":
                continue
            if o.output_type in ("display_data", "execute_result") and "image/png" in o.get("data", {}):
                image = json.dumps(o.data["image/png"])
                if image in seen:  # the same figure shown twice (display() and inline)
                    continue
                seen.add(image)
            outputs.append(o)
        cell.outputs = outputs
        count += 1
        cell.execution_count = count
        for o in cell.outputs:
            if "execution_count" in o:
                o.execution_count = count
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata.get("language_info", {}).pop("version", None)
    for key in _NOISY_NB_KEYS:
        nb.metadata.get("papermill", {}).pop(key, None)
    params = nb.metadata.get("papermill", {}).get("parameters", {})
    for key in [k for k, v in params.items() if isinstance(v, str) and _MACHINE_PATH.match(f'{k} = "{v}"')]:
        del params[key]
    return nb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reuse.study.publishing.nbclean", description=__doc__)
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 naming the notebooks that need cleaning")
    args = parser.parse_args(argv)
    dirty = []
    for path in args.notebooks:
        nb = nbformat.read(path, as_version=4)
        cleaned = clean(nb)
        if cleaned != nb:
            dirty.append(path)
            if not args.check:
                nbformat.write(cleaned, path)
    if args.check and dirty:
        names = " ".join(str(p) for p in dirty)
        print(f"notebooks need cleaning: {names}\nfix: python -m reuse.study.publishing.nbclean {names}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
