"""Bits that travel: two runs that touch MKL, trained from an empty cache, give the weights
stored here (SHA-256 of the state dict), on this CPU and, with MKL pinned to its
vendor-independent branch (``reuse``'s ``MKL_CBWR``), on another.

The small-data PSPNet run trains on 12 real Fashion-MNIST images in batches of 3: its 1x1
stride-1 convolutions at a batch below 16 are the ones that reach MKL. The ResNet-18 run
is notebook 06's classifier (a Linear head, 3-channel input), shortened. If a change of
training code alters these weights on purpose, rerun with ``REUSE_PRINT_DIGESTS=1`` and
update the values, saying why in the commit.
"""

import os

import pytest
import torch

from reuse.study.spec import RunSpec, state_digest
from reuse.study.train import Runner

EXPECTED = {
    "pspnet_small_data": "5fe85da693699064fe928a5cc27d822ef0e497b51752f9096da29668e7f335c4",
    "resnet18": "d448d22554b7bb513e9e06a879a6e47c4d990213e55cb7af0199756e685bb4c9",
}
SPECS = {
    "pspnet_small_data": RunSpec("pspnet", "segmentation", "fashion-split", domain="target", n_train=12,
                                 image_size=16, width=8, depth=2, steps=60, batch_size=3, lr=3e-3),
    "resnet18": RunSpec("resnet18", "classification", "fashion-split", domain="target", n_train=64,
                        image_size=16, channels=3, steps=8, batch_size=16, lr=1e-3),
}


def test_importing_reuse_pins_mkl_in_a_fresh_process():
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "MKL_CBWR"}
    code = "import reuse, os, torch; print(os.environ['MKL_CBWR'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "COMPATIBLE"


@pytest.mark.parametrize("name", list(SPECS))
def test_weights_from_an_empty_cache_have_the_stored_digest(name, tmp_path):
    runner = Runner("cpu", cache_dir=tmp_path / "cache", progress=False, threads=1, precision="fp32")
    run = runner.train(SPECS[name])
    assert not run.cached and runner.trained == 1  # trained here, not loaded
    digest = state_digest(run.state)
    if os.environ.get("REUSE_PRINT_DIGESTS"):
        print(f"{name}: {digest}")
    assert digest == EXPECTED[name], (
        f"{name}: weights {digest} differ from the stored {EXPECTED[name]} on "
        f"{torch.__version__}, MKL_CBWR={os.environ.get('MKL_CBWR')}")
