"""``cnn-reuse analyze`` as this artifact ships it: the toolkit's command
(:mod:`reuse.toolkit.analyze`), its report citing what the study found for the pair's relation.

The toolkit knows no study (it never imports this package); the findings reach its report
as lines of text (:data:`FINDINGS`: per relation of :data:`reuse.toolkit.relations.RELATIONS`,
a heading line then one line per finding, from results/SUMMARY.md at the quick profile).
``python -m reuse analyze`` and the ``cnn-reuse`` console script run :func:`main`; a toolkit user
calling :func:`reuse.toolkit.analyze.main` gets the same report without that section.
"""

from __future__ import annotations

FINDINGS = {
    "siblings": [
        "Measured by the study for this relation (J1, J2, E3, E5; notebooks 01-03, 05 and 06 at the "
        "quick profile: UNet and PSPNet segmentation at 16 px, ResNet-18 in notebook 06; "
        "results/SUMMARY.md):",
        "J1: a network's kernels survived an all-layer swap from a near source and not from a far "
        "one; the 'all' row of the swaps here is that test for your pair.",
        "J2: single layers mostly kept the margin but did not beat the same layer reset to θ_0; "
        "a passing layer here is not shown to carry more than its initialisation.",
        "J3 and E5: the raw kernel RMSE did not predict reusable layers better than weight-blind "
        "baselines (the layer's size); read the distances as description, the swaps as evidence.",
        "H3a (E4, notebook 04): the rule's selection did not beat reusing every layer, the baseline "
        "the layers listed here have to beat.",
    ],
    "fine-tuned": [
        "Measured by the study for this relation in notebook 07 (E7, quick profile: MTCNN's pretrained "
        "ONet fine-tuned on faces vs non-faces and on MNIST digits, 5 seeds; results/SUMMARY.md): every "
        "conv layer could have stayed frozen one at a time (θ_P's layer swapped back kept the score, "
        "above the same layer reset), the first layers put back together kept the margin too (less "
        "so on the far task), and neither the RMSE nor the relative RMSE ranked the layers beyond "
        "their depth (undecided).",
        "What it measured of fine-tuning from a source (E4, notebook 04; E2's reuse by "
        "initialisation, Y4; quick profile): with 12 or 60 target images, reusing the layers whose "
        "kernel distance stays within retraining noise, where the network is reusable, was not shown "
        "to beat training from scratch after the correction for multiplicity (H1 undecided; in the "
        "fine-tuned regime it did, exploratory); fine-tuning recovered what freezing lost (Y4); and "
        "reusing every layer did better than that selection (H3a, before the correction).",
        "So the verdicts here rest on this pair's own swaps, not on the study's.",
    ],
}


def main(argv: list[str] | None = None) -> int:
    """:func:`reuse.toolkit.analyze.main` with :data:`FINDINGS` in the report."""
    from reuse.toolkit import analyze  # standard library only: --help stays fast

    return analyze.main(argv, findings=FINDINGS)
