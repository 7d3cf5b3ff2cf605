"""What defines and trains a run of the study. A *run* is one trained model: a
:class:`~reuse.study.training.spec.RunSpec` names it (architecture, task, data pair, seed,
steps, starting weights) and a :class:`~reuse.study.training.spec.TrainedRun` holds its
weights and learning curve. ``data`` and ``wheel_sets`` serve the images, ``models`` and
``pretrained`` the networks and starting weights, ``fit`` (with ``group``, its vmapped form)
is the one training algorithm, ``cache`` keeps trained runs and scores on disk, and
:class:`~reuse.study.training.train.Runner` trains the missing runs of a list of specs
through that cache. Nothing here measures reuse: the experiments do, on these runs.
"""
