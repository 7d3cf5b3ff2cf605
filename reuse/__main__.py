"""``python -m reuse COMMAND`` (also the ``cnn-reuse`` console script: on PyPI ``reuse`` is
another project's distribution and command, the REUSE licence tool).

Commands: ``run`` executes the notebooks (:mod:`reuse.study.publishing.batch`); ``analyze`` compares two
checkpoints of any CNN and finds the conv layers that can be reused (:mod:`reuse.toolkit.analyze`,
its report citing the study's findings: :mod:`reuse.study.publishing.analyze`).
"""

from __future__ import annotations

import os
import sys

COMMANDS = {"run": "reuse.study.publishing.batch", "analyze": "reuse.study.publishing.analyze"}
INTERRUPTED = 130  # the exit status of Ctrl-C (128 + SIGINT), as a shell reports it


def _drop_working_folder() -> None:
    """Take the working folder off ``sys.path`` (``''``, or its path: ``python -m`` puts it first,
    an empty ``PYTHONPATH`` entry adds it for the console script too), so a ``torch/`` or
    ``pandas/`` folder there (say, inside a downloaded checkpoint folder) is never imported.
    ``cnn-reuse analyze --path DIR`` adds folders on purpose."""
    cwd = os.path.realpath(os.getcwd())
    sys.path[:] = [p for p in sys.path if os.path.realpath(p or ".") != cwd]


def main(argv: list[str] | None = None) -> int:
    """The program: ``cnn-reuse COMMAND ...``. The console script and ``python -m reuse`` call it
    without ``argv``: then the working folder comes off ``sys.path`` before a command is
    imported, and Ctrl-C ends in one line (what the command kept, how to resume) and exit
    status 130. Called from Python with ``argv`` (a notebook), ``sys.path`` is left as it is
    and Ctrl-C raises KeyboardInterrupt, so the caller stops as asked."""
    program = argv is None
    if program:
        _drop_working_folder()
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: cnn-reuse COMMAND [options]\n\ncommands:\n  run      execute the notebooks with "
              "papermill at one profile (cnn-reuse run --help)\n  analyze  which conv layers of two "
              "checkpoints of your CNN can be reused (cnn-reuse analyze --help)")
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        print(f"cnn-reuse: error: unknown command {argv[0]!r}; allowed: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    from importlib import import_module

    try:
        return import_module(COMMANDS[argv[0]]).main(argv[1:])
    except KeyboardInterrupt as stop:  # the command's message says what it kept
        if not program:
            raise
        said = f": {stop}" if str(stop) else ""
        print(f"reuse {argv[0]}: interrupted{said}", file=sys.stderr)
        return INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
