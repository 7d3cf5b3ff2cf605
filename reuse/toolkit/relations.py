"""How the two checkpoints of ``reuse analyze`` are related, and what that changes in reading it.

The same numbers answer different questions. Between *siblings* (one θ_0, trained apart on
the source and the target, as in the study's notebooks) a layer's kernel distance is how far
two trainings took it apart, and a swap asks whether the source's layer serves the target.
Between a source and its *fine-tuned* copy (the target started from the source) the distance
is how far fine-tuning moved the layer, and swapping the source's layer back asks whether it
could have stayed frozen. Notebooks 01-06 measured the first relation; for the second they
measured small-data fine-tuning from the source (E4, and E2's reuse by initialisation), and
notebook 07 (E7) a layer's distance and swap-back between a pretrained network (MTCNN's ONet)
and its fine-tuned copies. Each entry of
:data:`RELATIONS` says so in the words the report uses (docs/protocol.md, "Regimes").
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
                "target; reusing every layer of a near source is the baseline to beat (the study's "
                "H3a: its rule's selection did not beat reuse-all)",
        "findings": [
            "Measured by the study for this relation (J1, J2, E3, E5; notebooks 01-03, 05 and 06 at the "
            "quick profile: UNet and PSPNet segmentation at 16 px, ResNet-18 in notebook 06; "
            "results/SUMMARY.md):",
            "J1: a network's kernels survived an all-layer swap from a near source and not from a far "
            "one; the 'all' row of the swaps here is that test for your pair.",
            "J2: single layers mostly kept the margin but did not beat the same layer reset to θ_0; "
            "a passing layer here is not shown to carry more than its initialisation.",
            "J3 and E5: the raw kernel RMSE did not predict reusable layers better than weight-blind "
            "baselines (the layer's size); read the distances as description, the swaps as evidence.",
        ],
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
        "findings": [
            "Measured by the study for this relation in notebook 07 (E7, quick profile: MTCNN's pretrained "
            "ONet fine-tuned on faces vs non-faces and on MNIST digits, 5 seeds; results/SUMMARY.md): every "
            "conv layer could have stayed frozen one at a time (θ_P's layer swapped back kept the score, "
            "above the same layer reset), not all together on the far task, and neither the RMSE nor the "
            "relative RMSE ranked the layers beyond their depth (undecided).",
            "What it measured of fine-tuning from a source (E4, notebook 04; E2's reuse by "
            "initialisation, Y4; quick profile): with 12 or 60 target images, reusing the source's "
            "kernels where the network is reusable and their RMSE small beat training from scratch "
            "(H1), fine-tuning recovered what freezing lost "
            "(Y4), and the RMSE rule's layer selection did not beat reusing every layer (H3a, H3b).",
            "So the verdicts here rest on this pair's own swaps, not on the study's.",
        ],
    },
}
