"""reuse: which layers of a CNN can be reused on a new task, and why (arXiv 2008.03411).

Two packages, one wall: :mod:`reuse.toolkit` works on any CNN (checkpoints, surgery,
criteria, scoring, selection, statistics, ``reuse analyze``) and never imports
:mod:`reuse.study`, this paper's experiments built on it.

The one thing done at import: MKL's code path is pinned before torch loads, so that the
same run gives the same bits on Intel and AMD CPUs (MKL otherwise picks its path by CPU
vendor, and ops that reach it differ in the last bits). ``COMPATIBLE`` is the branch MKL
documents as identical on Intel and non-Intel CPUs; a value the user set is kept, and
every result records the one in force (:func:`reuse.toolkit.provenance.cpu_class`).
Worker processes and notebook kernels inherit it through the environment.
"""

import os

MKL_BRANCH = "COMPATIBLE"
os.environ.setdefault("MKL_CBWR", MKL_BRANCH)
