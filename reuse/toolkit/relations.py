"""How the two checkpoints of ``cnn-reuse analyze`` are related, and what that changes in reading it.

The same numbers answer different questions. Between *siblings* (one θ_0, trained apart on
the source and the target) a layer's kernel distance is how far two trainings took it apart,
and a swap asks whether the source's layer serves the target. Between a source and its
*fine-tuned* copy (the target started from the source) the distance is how far fine-tuning
moved the layer, and swapping the source's layer back asks whether it could have stayed
frozen. Each entry of :data:`RELATIONS` says so in the words the report uses
(docs/protocol.md, "Regimes"). What a study found for a relation is not the toolkit's to
say: ``cnn-reuse analyze`` cites it only where it is given such lines
(:func:`reuse.toolkit.analyze.main`'s ``findings``; the study's: :mod:`reuse.study.publishing.analyze`).
"""

from __future__ import annotations

RELATIONS = {
    "siblings": {
        "meaning": "shared initialisation θ_0, trained apart on the source and the target task",
        "distance": "how far the two trainings took this layer apart",
        "swap": "does the source's layer serve the target in place of its own?",
        "verdict": "can be reused",
        "short": "reuse",
        "reuse": "the target keeps its score with the source's kernels in place",
        "next": "initialise the layers listed from the source (or freeze them) when training on the "
                "target; reusing every layer of a near source is the baseline to beat",
    },
    "fine-tuned": {
        "meaning": "the target started from the source and was fine-tuned on the target task",
        "distance": "how far fine-tuning moved this layer from the source",
        "swap": "could this layer have stayed frozen? (the source's layer swapped back in)",
        "verdict": "could have stayed frozen",
        "short": "freeze",
        "reuse": "the fine-tuned model keeps its score with these layers swapped back to the source's",
        "next": "freeze the layers listed when you next fine-tune, and train the rest (less to train, less "
                "to overfit on small data); confirm with one such run against your fine-tuned model",
    },
}
