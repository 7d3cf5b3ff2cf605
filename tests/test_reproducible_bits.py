"""Bits that travel: two runs, trained from an empty cache, give the weights stored here
(SHA-256 of the state dict) on any x86-64 CPU with AVX2, because ``import reuse.study`` pins the
code paths that otherwise follow the CPU (``reuse.study.CPU_PINS``: MKL's vendor-independent
branch, oneDNN and ATen capped at AVX2). Shown on an AMD EPYC with AVX2 only, on CI's
machine and on an Intel Xeon with AVX-512 and AMX, where lifting the oneDNN cap
(``ONEDNN_MAX_CPU_ISA=ALL``) changes both digests.

The small-data PSPNet run trains on 12 real Fashion-MNIST images in batches of 3: its 1x1
stride-1 convolutions at a batch below 16 are the ones that reach MKL. The ResNet-18 run
is notebook 06's classifier (a Linear head, 3-channel input), shortened. If a change of
training code alters these weights on purpose, rerun with ``REUSE_PRINT_DIGESTS=1`` and
update the values, saying why in the commit.
"""

import os

import pytest
import torch

from reuse.study.training.spec import RunSpec, state_digest
from reuse.study.training.train import Runner
from reuse.toolkit.provenance import cpu_class

EXPECTED = {
    "pspnet_small_data": "2036b11994819f56bd862d08eb466730e3b08b8a47de973d002ff6bbdebbdeb7",
    "resnet18": "930466dbee605f1a3c62fc760f77b5faf070ce95274ad3d103051e06099e6c71",
}
SPECS = {
    "pspnet_small_data": RunSpec("pspnet", "segmentation", "fashion-split", domain="target", n_train=12,
                                 image_size=16, width=8, depth=2, steps=60, batch_size=3, lr=3e-3),
    "resnet18": RunSpec("resnet18", "classification", "fashion-split", domain="target", n_train=64,
                        image_size=16, channels=3, steps=8, batch_size=16, lr=1e-3),
}


def test_importing_the_study_pins_the_cpu_paths_and_the_toolkit_does_not():
    import subprocess
    import sys

    from reuse.study import CPU_PINS

    env = {k: v for k, v in os.environ.items() if k not in CPU_PINS}
    show = "print(*(os.environ.get(k, '-') for k in ('MKL_CBWR', 'ONEDNN_MAX_CPU_ISA', 'ATEN_CPU_CAPABILITY')))"
    for imports, expected in [("import reuse.study", ["COMPATIBLE", "AVX2", "avx2"]),
                              ("import reuse.toolkit, reuse.toolkit.analyze, reuse.toolkit.scan", ["-"] * 3)]:
        code = f"import os, torch; {imports}; {show}"
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        assert out.stdout.split() == expected, imports


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
