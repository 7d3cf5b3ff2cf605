"""The study's experiments: E1-E7 and notebook 01's training adequacy, one module each
(listed with their notebooks and results in :mod:`reuse.study.registry`), each computing
tidy pandas DataFrames from a runner and a profile; :mod:`.common` holds what they share."""
