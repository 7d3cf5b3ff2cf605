"""The batch runner: every notebook through papermill, at one profile (``python -m reuse run``).

Everything is checked before anything runs, and a bad option exits 2 having written nothing:
the profile, device and seeds; which notebooks ``--only`` selects; every
``--set NAME=VALUE`` (a parameter of every selected notebook, valid YAML, of the type the
notebook's annotation names, and of an allowed value as the notebooks' own session checks
it: precision, threads, workers, architectures, tasks, pairs); an explicit ``--data-dir``
(it must hold Fashion-MNIST); the ``--cluster`` address; and that the output folders can be
written (a read-only run cache is allowed: it serves what it holds, with a warning), that
every notebook parameter is UTF-8 text, and every data file (labels in range, 28x28 images).
Then each notebook executes into a hidden partial file of its own
(``.NAME.PID-RANDOM.partial.ipynb``) that replaces the committed notebook only when it ran
through, is cleaned (:mod:`reuse.study.publishing.nbclean`), and the results summary is written. A full
disk ends the run with one line and exit 2, naming what was not written and what was kept;
so does Ctrl-C, with exit 130 (finished training runs stay in the run cache: the same
command again resumes).

Outputs go to ``figures/PROFILE`` and ``results/PROFILE``; the executed notebooks replace
``notebooks/`` only for :data:`SHOWN_PROFILE`, else go to ``results/PROFILE/notebooks``.
Paths are passed to the notebooks only when they differ from those defaults, so committed
notebooks carry no machine's paths. ``--cluster local:N`` starts a Dask ``LocalCluster`` of
N one-thread workers (``tcp://HOST:PORT`` uses a running scheduler); the notebooks then
train their runs on it, into the shared cache under its locks. Without ``--cluster``,
nothing imports Dask.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from reuse.toolkit import files
from reuse.toolkit.gpu import DEVICES

from ..config import PROFILES
from ..training import data as rdata

REPO = Path(__file__).resolve().parents[3]  # reuse/study/publishing/batch.py -> the checkout
SHOWN_PROFILE = "quick"  # the profile whose executed notebooks notebooks/ holds (README, "Scales")
RESERVED = ("profile", "seeds", "device", "figures_dir", "results_dir", "cache_dir", "data_dir",
            "cluster")
_SEEDS = re.compile(r"(0|[1-9][0-9]*)(,(0|[1-9][0-9]*))*")  # no leading zeros: YAML reads 010 as octal
_CLUSTER = re.compile(r"local:[1-9][0-9]*|tcp://[^\s:/]+:[0-9]+")
# the kernel's own log off the console (a cell's output and errors come through papermill): at
# Ctrl-C, ipykernel logs a traceback when its shutdown races the interrupted cell
KERNEL_QUIET = ["--IPKernelApp.log_level=CRITICAL"]
_SOURCES = {"data_dir": "--data-dir", "cache_dir": "$REUSE_CACHE_DIR", "figures_dir": "--output",
            "results_dir": "--output"}  # where a notebook parameter comes from, for messages


class UsageError(ValueError):
    """A bad option: reported with exit status 2 before anything runs."""


@dataclass
class NotebookPlan:
    """The notebooks a ``cnn-reuse run`` executes, with their parameters and folders, fully checked."""

    notebooks: list[Path]
    out_notebooks: Path
    summary_root: Path
    parameters: dict = field(default_factory=dict)  # injected into every notebook
    dirs: list[Path] = field(default_factory=list)  # created before the first notebook
    cluster: str | None = None
    download: bool = False
    data_dir: str | None = None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cnn-reuse run", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Execute the notebooks with papermill at one profile, then write "
                    "results/SUMMARY.md. Defaults in [brackets].",
        epilog="Environment: REUSE_CACHE_DIR, cache of trained models [.cache/runs]; "
               "REUSE_NOTEBOOKS_DIR, folder of the notebooks to run [notebooks/].")
    p.add_argument("--profile", default="quick", choices=list(PROFILES),
                   help="scale: smoke | quick | paper [quick]")
    p.add_argument("--only", action="append", default=[], metavar="PATTERN",
                   help="run only the notebooks whose file name contains PATTERN, or matches it as a "
                        "glob (01, network, '0[12]*'); repeatable [all]")
    p.add_argument("--seeds", metavar="LIST", help="comma-separated seeds, e.g. 0,1,2 [the profile's]")
    p.add_argument("--device", default="auto", choices=list(DEVICES), help="auto | cpu | cuda | mps [auto]")
    p.add_argument("--output", metavar="DIR",
                   help="executed notebooks, figures and results to DIR/notebooks, DIR/figures, "
                        "DIR/results [figures/PROFILE, results/PROFILE; notebooks/ for quick, else "
                        "results/PROFILE/notebooks]")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="another notebook parameter; VALUE is YAML: --set 'architectures=[unet]'; "
                        "repeatable [none]")
    p.add_argument("--data-dir", metavar="DIR",
                   help="folder with the Fashion-MNIST *-ubyte.gz files [$REUSE_DATA_DIR, then "
                        "/usr/share/datasets/fashion-mnist]")
    p.add_argument("--download", action="store_true",
                   help="download Fashion-MNIST with torchvision if it is not found (the only network "
                        "use besides setup) [off]")
    p.add_argument("--cluster", metavar="ADDRESS",
                   help="train on a Dask cluster: local:N (a LocalCluster of N one-thread workers) or "
                        "tcp://HOST:PORT (a running scheduler) [train here]")
    p.add_argument("--setup-only", action="store_true", help="check the options and the data, stop [off]")
    p.add_argument("--dry-run", action="store_true",
                   help="print what each notebook would run with, run nothing [off]")
    return p


# ----------------------------------------------------------------------------- checks
def select_notebooks(folder: Path, patterns: list[str]) -> list[Path]:
    """The notebooks of ``folder`` whose name contains or glob-matches a pattern (all when none)."""
    if not folder.is_dir():
        raise UsageError(f"notebook folder {folder} does not exist")
    available = sorted(folder.glob("*.ipynb"))
    if not available:
        raise UsageError(f"no notebooks (*.ipynb) in {folder}")
    if not patterns:
        return available
    chosen = [p for p in available
              if any(Path(p.name).match(pat) if any(c in pat for c in "*?[") else pat in p.name
                     for pat in patterns)]
    if not chosen:
        raise UsageError(f"--only {' '.join(patterns)} matches no notebook in {folder}; available: "
                         f"{', '.join(p.name for p in available)}")
    return chosen


def parse_seeds(text: str | None) -> list[int] | None:
    if text is None:
        return None
    if not _SEEDS.fullmatch(text):
        raise UsageError(f"bad --seeds {text!r}: give comma-separated non-negative integers, e.g. 0,1,2")
    return [int(s) for s in text.split(",")]


def parse_sets(assignments: list[str], notebooks: list[Path]) -> dict:
    """``--set`` values, checked against every selected notebook's annotated parameters."""
    import papermill as pm
    import yaml

    declared = {nb: pm.inspect_notebook(str(nb)) for nb in notebooks}
    values = {}
    for assignment in assignments:
        name, sep, text = assignment.partition("=")
        if not sep or not name.isidentifier():
            raise UsageError(f"bad --set {assignment!r}: expected NAME=VALUE, NAME a Python identifier")
        if name in RESERVED:
            raise UsageError(f"--set {name}: the runner sets {name!r} itself (see --profile, --seeds, "
                             "--device, --output, --data-dir, --cluster and REUSE_CACHE_DIR)")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise UsageError(f"--set {name}: {text!r} is not valid YAML ({err.problem})") from None
        for nb, params in declared.items():
            if name not in params:
                raise UsageError(f"--set {name}: {nb.name} has no parameter {name!r}; its parameters are: "
                                 f"{', '.join(params)} (use --only to select notebooks that have it)")
            check_type(name, value, expected_type(params[name]), nb.name)
        values[name] = value
    return values


_TYPES = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,), "list": (list,),
          "dict": (dict,)}


def expected_type(parameter: dict) -> str:
    """A parameter's annotation as papermill reads it, else the type of its literal default."""
    if parameter["inferred_type_name"] != "None":
        return parameter["inferred_type_name"]
    try:
        default = ast.literal_eval(parameter["default"])
    except (ValueError, SyntaxError):
        return "None"
    return "None" if default is None else type(default).__name__


def check_type(name: str, value, annotation: str, notebook: str) -> None:
    """Raise UsageError unless ``value`` fits ``annotation`` ('str', 'Optional[list]', ...);
    an unknown annotation accepts anything."""
    optional = annotation.startswith("Optional[") and annotation.endswith("]")
    base = annotation[len("Optional["):-1] if optional else annotation
    if base not in _TYPES or (optional and value is None):
        return
    ok = isinstance(value, _TYPES[base]) and not (base in ("int", "float") and isinstance(value, bool))
    if not ok:
        raise UsageError(f"--set {name}={value!r}: {notebook} expects {annotation}, got "
                         f"{type(value).__name__}")


def check_text(name: str, value) -> None:
    """Raise UsageError unless notebook parameter ``value`` can be written as UTF-8 text (a
    path of bytes that are not UTF-8 decodes to lone surrogates that no notebook can hold)."""
    try:
        json.dumps(value, ensure_ascii=False, default=str).encode("utf-8")
    except UnicodeEncodeError:
        shown = repr(os.fsencode(value))[1:] if isinstance(value, str) else ascii(value)
        raise UsageError(f"{_SOURCES.get(name, '--set ' + name)} {shown}: not valid UTF-8; allowed: a "
                         "UTF-8 path (rename the folder, or give a link with a UTF-8 name)") from None


def check_values(values: dict) -> None:
    """Raise UsageError unless the notebook parameters in ``values`` (the profile, seeds and
    ``--set`` values) are allowed, as the notebooks' own session checks them
    (:func:`reuse.study.experiments.common.session_profile`, whose arguments are the
    parameters' names): a bad value is refused here, not in a notebook's fourth cell."""
    import inspect

    from ..experiments.common import session_profile  # pandas and scipy: after the cheap checks

    names = inspect.signature(session_profile).parameters
    try:
        session_profile(**{name: value for name, value in values.items() if name in names})
    except ValueError as err:
        raise UsageError(str(err)) from None


def writable(folder: Path) -> bool:
    """Whether ``folder`` can be created (if missing) and written: tried for real, with a
    temporary folder in its nearest existing ancestor that is removed again."""
    ancestor = folder
    while not ancestor.exists():
        if ancestor.parent == ancestor:
            return False
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return False
    try:
        shutil.rmtree(tempfile.mkdtemp(dir=ancestor, prefix=".reuse-write-check-"))
    except OSError:
        return False
    return True


def make_plan(args: argparse.Namespace, environ=os.environ) -> NotebookPlan:
    """Check every option (UsageError on the first bad one) and work out the run."""
    nb_dir = Path(environ.get("REUSE_NOTEBOOKS_DIR") or REPO / "notebooks").resolve()
    notebooks = select_notebooks(nb_dir, args.only)
    seeds = parse_seeds(args.seeds)
    sets = parse_sets(args.set, notebooks)
    if args.cluster is not None and not _CLUSTER.fullmatch(args.cluster):
        raise UsageError(f"bad --cluster {args.cluster!r}: allowed: local:N (N >= 1) or tcp://HOST:PORT")
    data_dir = str(Path(args.data_dir).resolve()) if args.data_dir else None
    if not args.download:
        try:  # every file read and checked (labels in range, 28x28 images): bad data fails here
            rdata.check_fashion(data_dir)
        except (rdata.DataNotFoundError, ValueError) as err:
            raise UsageError(str(err)) from None
    parameters = {"profile": args.profile, "device": args.device}
    if seeds is not None:
        parameters["seeds"] = seeds
    if data_dir:
        parameters["data_dir"] = data_dir
    if environ.get("REUSE_CACHE_DIR"):
        parameters["cache_dir"] = str(Path(environ["REUSE_CACHE_DIR"]).resolve())
    if args.output:
        out = Path(args.output).resolve()
        out_nb, summary_root = out / "notebooks", out / "results"
        parameters.update(figures_dir=str(out / "figures"), results_dir=str(out / "results"))
        dirs = [out_nb, out / "figures", out / "results"]
    else:  # the notebooks' defaults: ../figures/PROFILE, ../results/PROFILE
        out_nb = nb_dir if args.profile == SHOWN_PROFILE else REPO / "results" / args.profile / "notebooks"
        summary_root = REPO / "results"
        dirs = [out_nb, REPO / "figures" / args.profile, REPO / "results" / args.profile]
    for name, value in {**parameters, **sets}.items():
        check_text(name, value)
    check_values({**parameters, **sets})
    for folder in dirs:
        if not writable(folder):
            raise UsageError(f"cannot write to {folder} (an output folder): choose another --output")
    cache = Path(parameters.get("cache_dir") or nb_dir / ".." / ".cache" / "runs").resolve()
    if not writable(cache):
        print(f"cnn-reuse run: warning: the run cache {cache} cannot be written: cached runs are used, "
              "new ones are kept in memory only", file=sys.stderr)
    return NotebookPlan(notebooks, out_nb, summary_root, {**parameters, **sets}, dirs, args.cluster,
                args.download, data_dir)


# ----------------------------------------------------------------------------- running
@contextlib.contextmanager
def cluster_address(spec: str | None):
    """The scheduler address to hand the notebooks (a LocalCluster for ``local:N``)."""
    if spec is None:
        yield None
        return
    if spec.startswith("tcp://"):
        yield spec
        return
    from distributed import (
        LocalCluster,  # only with --cluster: nothing imports Dask otherwise
    )

    n = int(spec.split(":")[1])
    with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None) as c:
        yield c.scheduler_address


class _CellOutput(logging.Filter):
    """papermill's log, less its per-cell bookkeeping (the notebooks' own output stays)."""

    _noise = re.compile(r"(Executing|Ending) Cell \d+-*$|(Input|Output) Notebook: |Working directory: "
                        r"|Executing notebook with kernel: |Black is not installed")

    def filter(self, record: logging.LogRecord) -> bool:
        return not self._noise.match(record.getMessage())


def execute(plan: NotebookPlan) -> int:
    """Run every planned notebook; 0 when all ran through, 1 at the first failure; Ctrl-C
    raises KeyboardInterrupt saying what was kept and how to resume."""
    import papermill as pm

    from . import nbclean, report

    if plan.download:
        rdata.find_fashion_mnist(plan.data_dir, download=True)
    for folder in plan.dirs:
        folder.mkdir(parents=True, exist_ok=True)
    handler = logging.StreamHandler(sys.stdout)
    handler.addFilter(_CellOutput())
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("papermill")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    start_all = time.perf_counter()
    done, partial, running = [], None, "the first notebook"
    try:
        with cluster_address(plan.cluster) as address:
            params = dict(plan.parameters, **({"cluster": address} if address else {}))
            for i, nb in enumerate(plan.notebooks, start=1):
                # a name of its own per run (pid, random): two runs never write one partial file
                partial = plan.out_notebooks / f".{nb.stem}.{os.getpid()}-{secrets.token_hex(3)}.partial.ipynb"
                running = nb.name
                print(f"[{i}/{len(plan.notebooks)}] {nb.name} ...", flush=True)
                start = time.perf_counter()
                try:
                    pm.execute_notebook(str(nb), str(partial), parameters=params, kernel_name="python3",
                                        cwd=str(nb.parent), progress_bar=False, log_output=True,
                                        extra_arguments=KERNEL_QUIET)
                    nbclean.main([str(partial)])
                    os.replace(partial, plan.out_notebooks / nb.name)
                except (pm.PapermillExecutionError, OSError) as err:
                    if _out_of_space(err):
                        return _full_disk(nb, partial, done, plan)
                    if isinstance(err, OSError):
                        raise
                    print(f"[{i}/{len(plan.notebooks)}] {nb.name} ... FAILED "
                          f"({time.perf_counter() - start:.0f} s)", file=sys.stderr)
                    print(f"Error in cell [{err.exec_count}]: {err.ename}: {err.evalue}\n"
                          f"partly executed notebook: {partial}", file=sys.stderr)
                    return 1
                done.append(nb)
                print(f"[{i}/{len(plan.notebooks)}] {nb.name} ... ok ({time.perf_counter() - start:.0f} s)",
                      flush=True)
        summary, running = plan.summary_root / "SUMMARY.md", "SUMMARY.md"
        try:
            report.main(["--results", str(plan.summary_root), "--out", str(summary)])
        except OSError as err:
            if not files.out_of_space(err):
                raise
            print(f"cnn-reuse run: error: {files.describe(err, str(summary))}: the summary was not written; "
                  "kept: every notebook, figure and result of this run", file=sys.stderr)
            return 2
    except KeyboardInterrupt:
        _interrupted(running, partial, done, plan)
    finally:
        logger.removeHandler(handler)
    print(f"Ran {len(plan.notebooks)} notebook(s); total wall time {time.perf_counter() - start_all:.0f} s; "
          f"summary: {summary}")
    return 0


def _out_of_space(err: BaseException) -> bool:
    """A full disk, met by papermill writing the notebook or by a notebook's own cell."""
    if files.out_of_space(err):
        return True
    evalue = str(getattr(err, "evalue", ""))
    return any(f"[Errno {code}]" in evalue for code in files.OUT_OF_SPACE)


def _full_disk(nb: Path, partial: Path, done: list[Path], plan: NotebookPlan) -> int:
    """One line for a full disk while ``nb`` ran: what was not written, what was kept; exit 2."""
    partial.unlink(missing_ok=True)  # possibly truncated
    print(f"cnn-reuse run: error: no space left on device while running {nb.name}: {nb.name} was not written "
          f"(its partial notebook removed; a figure or result it was writing was not replaced); kept: "
          f"{_kept(done, plan)}, and the run cache", file=sys.stderr)
    return 2


def _interrupted(running: str, partial: Path | None, done: list[Path], plan: NotebookPlan) -> NoReturn:
    """Ctrl-C: the partial notebook removed, and KeyboardInterrupt raised again saying what was
    not written, what was kept and how to resume (:func:`reuse.__main__.main` prints it)."""
    if partial is not None:
        partial.unlink(missing_ok=True)  # the notebook that was running, part-executed
    # the interrupted cell's task is left unread in papermill's event loop: asyncio would log
    # it at exit as "Task exception was never retrieved", with the cell's whole traceback
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    raise KeyboardInterrupt(f"{running} was not written; kept: {_kept(done, plan)}, and every training "
                            "run that finished (the run cache); run the same command again to resume "
                            "(finished runs load from the cache)") from None


def _kept(done: list[Path], plan: NotebookPlan) -> str:
    return f"{', '.join(p.name for p in done) or 'no notebook'} in {plan.out_notebooks}"


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        plan = make_plan(args)
    except UsageError as err:
        print(f"cnn-reuse run: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        raise KeyboardInterrupt("while checking the options: nothing was run or written") from None
    if args.setup_only:
        print(f"Options checked; Fashion-MNIST found in {rdata.find_fashion_mnist(plan.data_dir)}"
              if not args.download else "Options checked")
        return 0
    if args.dry_run:
        for nb in plan.notebooks:
            print(f"{nb.name}: parameters {plan.parameters} -> {plan.out_notebooks / nb.name}"
                  + (f"; cluster {plan.cluster}" if plan.cluster else ""))
        return 0
    return execute(plan)
