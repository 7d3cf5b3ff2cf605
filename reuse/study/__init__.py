"""This paper's study, built on :mod:`reuse.toolkit` (which never imports it), in four rooms:
``training/`` defines and trains runs (a run is one trained model), ``experiments/`` computes
each experiment's tidy tables from those runs, ``plots/`` draws them, and ``publishing/``
turns the results into the artifact (``cnn-reuse run``, the summary, the site). At the root:
``config`` (the profiles every room reads), ``claims`` (the Holm tally the experiments and the
report share) and ``registry`` (each experiment's id, notebook, modules and results prefix).

The one thing done at import: the CPU code paths are pinned before torch computes anything,
so that the same run gives the same bits on any x86-64 CPU with AVX2, Intel or AMD. Three
libraries otherwise pick their path by the CPU, and the paths differ in the last bits: MKL
by vendor (``COMPATIBLE`` is the branch MKL documents as identical on Intel and non-Intel
CPUs), oneDNN's convolutions and ATen's vectorised kernels (softmax, ...) by instruction set
(AVX-512 where the CPU has it; capped at AVX2, which every such CPU has). The libraries read
them on first use, so importing torch earlier is fine; computing is not. A value the user set
is kept, and every result records the ones in force
(:func:`reuse.toolkit.provenance.cpu_class`). Worker processes and notebook kernels inherit
them through the environment. The study's runner (``cnn-reuse run``), its notebooks and
``cnn-reuse analyze`` (whose report cites the study) import this package; a program that uses
:mod:`reuse.toolkit` alone runs on the CPU's fastest paths (about x1.2-1.3 on AVX-512,
``benchmarks/bench.py``), unless it sets these variables itself.
"""

import os

CPU_PINS = {"MKL_CBWR": "COMPATIBLE", "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
for _name, _value in CPU_PINS.items():
    os.environ.setdefault(_name, _value)
