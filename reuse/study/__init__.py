"""This paper's study, built on :mod:`reuse.toolkit` (which never imports it), in four rooms:
``training/`` defines and trains runs (a run is one trained model), ``experiments/`` computes
each experiment's tidy tables from those runs, ``plots/`` draws them, and ``publishing/``
turns the results into the artifact (``reuse run``, the summary, the site). At the root:
``config`` (the profiles every room reads), ``claims`` (the Holm tally the experiments and the
report share) and ``registry`` (each experiment's id, notebook, modules and results prefix).
"""
