"""The margins of every judgment, each named once and fixed before any result was seen
(docs/protocol.md, section 6).

Only the standard library: ``cnn-reuse analyze --help`` shows :data:`REUSABLE` as the default of
``--margin`` without loading numpy. :mod:`reuse.toolkit.verdicts` judges against them (and
is where notebooks read them: ``verdicts.REUSABLE``).
"""

# The reuse score is 1 for a swap that loses nothing and 0 for one that falls to the
# best input-blind predictor. A same-domain twin (the positive control) is expected near 1
# and a model from another initialisation (the negative control) near 0; REUSABLE sits
# midway, so a swap "works" when it keeps at least half of the above-chance performance.
REUSABLE = 0.5  # the reuse rule's swap margin (reuse.toolkit.selection.decide): J1, J2, E3 labels
LITTLE_LOSS = 0.9  # "can be reused directly", "little loss": C2, C4, Y1 (first-layer kernels)
SENSITIVE = 0.5  # "very sensitive": C3 (a swap loses more than half)
USEFUL_ACCURACY = 0.6  # J3: held-out balanced accuracy of a criterion's threshold
# conditions whose target model is not this far above chance are excluded from verdicts
MIN_GAP = {"miou": 0.1, "psnr": 1.0}  # mIoU points; dB
ADEQUATE = 0.95  # training adequacy: a run's last quarter adds less than 1 - ADEQUATE of its gap
