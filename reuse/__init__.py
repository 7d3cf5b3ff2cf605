"""reuse: which layers of a CNN can be reused on a new task, and why (arXiv 2008.03411).

Two packages, one wall: :mod:`reuse.toolkit` works on any CNN (checkpoints, surgery,
criteria, scoring, selection, statistics, ``reuse analyze``) and never imports
:mod:`reuse.study`, this paper's experiments built on it.

The one thing done at import: the CPU code paths are pinned before torch loads, so that
the same run gives the same bits on any x86-64 CPU with AVX2, Intel or AMD. Three
libraries otherwise pick their path by the CPU, and the paths differ in the last bits:
MKL by vendor (``COMPATIBLE`` is the branch MKL documents as identical on Intel and
non-Intel CPUs), oneDNN's convolutions and ATen's vectorised kernels (softmax, ...) by
instruction set (AVX-512 where the CPU has it; capped at AVX2, which every such CPU has).
A value the user set is kept, and every result records the ones in force
(:func:`reuse.toolkit.provenance.cpu_class`). Worker processes and notebook kernels
inherit them through the environment.
"""

import os

CPU_PINS = {"MKL_CBWR": "COMPATIBLE", "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
for _name, _value in CPU_PINS.items():
    os.environ.setdefault(_name, _value)
