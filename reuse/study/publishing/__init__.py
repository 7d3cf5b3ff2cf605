"""What turns the experiments' results into the artifact: ``batch`` executes the notebooks
(``cnn-reuse run``), ``report`` records each notebook's results with provenance and writes
``results/SUMMARY.md``, ``nbclean`` keeps the committed notebooks clean, ``site`` builds the
static HTML site from them, and ``analyze`` is ``cnn-reuse analyze`` as shipped: the toolkit's
command with the study's findings cited in its report. Nothing here trains or measures.
"""
