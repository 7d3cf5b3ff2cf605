"""``python -m reuse COMMAND`` (also the ``reuse`` console script).

Commands: ``run`` executes the notebooks (:mod:`reuse.study.batch`); ``analyze`` compares two
checkpoints of any CNN and finds the conv layers that can be reused (:mod:`reuse.toolkit.analyze`).
"""

from __future__ import annotations

import os
import sys

COMMANDS = {"run": "reuse.study.batch", "analyze": "reuse.toolkit.analyze"}


def _drop_working_folder() -> None:
    """Take the working folder off ``sys.path`` (``''``, or its path: ``python -m`` puts it first,
    an empty ``PYTHONPATH`` entry adds it for the console script too), so a ``torch/`` or
    ``pandas/`` folder there (say, inside a downloaded checkpoint folder) is never imported.
    ``reuse analyze --path DIR`` adds folders on purpose."""
    cwd = os.path.realpath(os.getcwd())
    sys.path[:] = [p for p in sys.path if os.path.realpath(p or ".") != cwd]


def main(argv: list[str] | None = None) -> int:
    """The program: ``reuse COMMAND ...`` (the console script and ``python -m reuse`` call it
    without ``argv``, which also drops the working folder from ``sys.path`` before a command is
    imported); called from Python with ``argv`` (a notebook), ``sys.path`` is left as it is."""
    if argv is None:
        _drop_working_folder()
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: reuse COMMAND [options]\n\ncommands:\n  run      execute the notebooks with "
              "papermill at one profile (reuse run --help)\n  analyze  which conv layers of two "
              "checkpoints of your CNN can be reused (reuse analyze --help)")
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        print(f"reuse: error: unknown command {argv[0]!r}; allowed: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    from importlib import import_module

    return import_module(COMMANDS[argv[0]]).main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
