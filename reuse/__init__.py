"""reuse: which layers of a CNN can be reused on a new task, and why (arXiv 2008.03411).

Two packages, one wall: :mod:`reuse.toolkit` works on any CNN (checkpoints, surgery,
criteria, scoring, selection, statistics, ``cnn-reuse analyze``) and never imports
:mod:`reuse.study`, this paper's experiments built on it.

Importing :mod:`reuse` or :mod:`reuse.toolkit` changes nothing process-wide. The study pins
the CPU's code paths for reproducible bits when it is imported (:data:`reuse.study.CPU_PINS`).
"""
