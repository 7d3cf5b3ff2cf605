"""Side-by-side speed checks of the project's fast paths against the plain way.

Each section runs both variants in this process on the same model, data and number of
steps, prints both figures and their ratio, and checks the two give the same numbers:

(a) training throughput: ``Runner.fit`` vs a plain ``DataLoader(TensorDataset)`` loop;
(b) N models trained together (``Runner.fit`` on a group, vmapped) vs one after another;
(c) scoring E1's swap variants: ``reuse.toolkit.scoring.score_states`` (shared forward work,
    channels_last, native bf16) vs a plain fp32 NCHW loop of ``reuse.toolkit.metrics.evaluate``,
    vs the same loop on the project's model, and ``reuse.study.training.group.evaluate_states`` (vmap);
(d) ``reuse.toolkit.criteria.kernel_rmse`` (stacked per-layer norms) vs a per-layer Python loop;
(e) peak memory: process RSS and, on CUDA, ``torch.cuda.max_memory_allocated`` per section;
(f) why grouping pays or not on this device: the share of a training step spent in
    convolutions (``torch.profiler``) and one grouped convolution vs N dense ones;
(g) on the CPU, how the quick profile trains: two worker processes of one thread each vs
    one process of two threads (the same runs, bit-identical weights);
(h) on the CPU, a 2-worker Dask LocalCluster (``cnn-reuse run --cluster local:2``) vs serial
    one-thread training (bit-identical weights);
(i) on the CPU, what the code-path pins cost (``reuse.study.CPU_PINS``: oneDNN and ATen capped at
    AVX2, for bits that travel): the same runs trained in fresh processes with the caps lifted
    (the baseline) and kept, alternately; ``agree`` says whether the weights are the same bits
    (on a CPU without AVX-512 they are, and the ratio is noise);
(j) deterministic mode's NaN fill of every new tensor, which ``compute_scope`` switches off
    (the baseline puts it back on inside the trainer's scope): the same runs, alternately,
    one thread; ``agree`` says whether the weights are the same bits (they must be).

Data are synthetic Fashion-MNIST-shaped IDX files (rectangles on noise, written to a
temporary folder), so the script needs no download. Results go to
``benchmarks/results/<device>-<date>.json`` with device, torch version and git commit.

    python benchmarks/bench.py              # full sizes (CPU: about a minute)
    python benchmarks/bench.py --quick      # tiny sizes, seconds; CI runs this
    python benchmarks/bench.py --device cuda --peak-tflops 989 --compile
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import json
import math
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from reuse.study import CPU_PINS
from reuse.study.training.data import write_synthetic_fashion
from reuse.study.experiments.network_reusability import TYPE_SETS
from reuse.study.training import train
from reuse.study.training.models import conv_layer_names
from reuse.study.training.train import Runner, RunSpec
from reuse.toolkit.criteria import kernel_rmse
from reuse.toolkit.gpu import autocast, prepare_model, synchronize
from reuse.toolkit.metrics import PRIMARY_METRIC, evaluate, loss
from reuse.toolkit.provenance import provenance
from reuse.toolkit.scoring import evaluate_states, score_states
from reuse.toolkit.surgery import KERNEL_TYPES, prefix, select_keys, suffix, swap_state

# sizes: images are image_size px square (Fashion-MNIST resized and padded), one channel
SIZES = {
    "quick": dict(width=2, depth=1, batch_size=16, n_train=32, steps=2, group_sizes=(1, 2),
                  n_test=32, rmse_repeats=5, chunks=(16,), image_size=16, worker_runs=2, worker_steps=4),
    "full": dict(width=16, depth=2, batch_size=32, n_train=512, steps=16, group_sizes=(1, 4, 16),
                 n_test=512, rmse_repeats=50, chunks=(4, 16, 64), image_size=16, worker_runs=8,
                 worker_steps=200),
}
CUDA_OVERRIDES = dict(n_train=4096, batch_size=128, width=16, depth=3)  # a GPU idles on less
PEAK_BF16_TFLOPS = 989.0  # H100/H200 SXM dense bf16 (no sparsity)




# ----------------------------------------------------------------------------- timing
def _timed(fn, device: torch.device):
    synchronize(device)
    start = time.perf_counter()
    out = fn()
    synchronize(device)
    return out, time.perf_counter() - start


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def _rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ----------------------------------------------------------------------------- (a)
def plain_loop(runner: Runner, spec: RunSpec) -> torch.nn.Module:
    """What one would write without the project: DataLoader over a CPU TensorDataset,
    batches copied to the device each step, fp32, same model, optimiser and steps."""
    from torch.utils.data import DataLoader, TensorDataset

    x, y = runner.train_split(spec)
    loader = DataLoader(TensorDataset(x.cpu(), y.cpu()), batch_size=spec.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(spec.order_seed), drop_last=True)
    model = runner.build(spec).to(runner.device).train()
    opt = torch.optim.Adam(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, spec.steps)
    done = 0
    while done < spec.steps:
        for xb, yb in loader:
            if done == spec.steps:
                break
            done += 1
            xb, yb = xb.to(runner.device), yb.to(runner.device)
            batch_loss = loss(spec.task, model(xb), yb)
            opt.zero_grad(set_to_none=True)
            batch_loss.backward()
            opt.step()
            sched.step()
    return model


def _train_flops(runner: Runner, spec: RunSpec) -> float:
    """FLOPs of one forward + backward on one batch (FlopCounterMode)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = prepare_model(runner.build(spec), runner.device).train()
    x, y = runner.train_split(spec)
    counter = FlopCounterMode(display=False)
    with counter:
        with autocast(runner.device, runner.precision):
            batch_loss = loss(spec.task, model(x[:spec.batch_size]), y[:spec.batch_size])
        batch_loss.backward()
    return float(counter.get_total_flops())


# ----------------------------------------------------------------------------- (c)
def swap_variants(model: torch.nn.Module, target: dict, source: dict) -> list[dict]:
    """The states E1 scores for one condition (all conv, prefix k, suffix k, parameter types)."""
    layers = conv_layer_names(model)
    key_sets = [select_keys(model, layers, KERNEL_TYPES)]
    for k in range(1, len(layers) + 1):
        key_sets += [select_keys(model, prefix(layers, k), KERNEL_TYPES),
                     select_keys(model, suffix(layers, k), KERNEL_TYPES)]
    key_sets += [select_keys(model, None, types) for types in TYPE_SETS.values()]
    return [swap_state(target, source, keys) for keys in key_sets]


def _per_layer_rmse(source: dict, target: dict, layers: list[str]) -> pd.DataFrame:
    rows = []
    for i, name in enumerate(layers):
        a, b = source[f"{name}.weight"].double(), target[f"{name}.weight"].double()
        rmse = float(((a - b) ** 2).mean().sqrt())
        rows.append({"layer": name, "index": i, "n_weights": b.numel(), "rmse": rmse,
                     "rel_rmse": rmse / float((b ** 2).mean().sqrt())})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- (f)
def grouped_vs_dense_conv(dev: torch.device, n: int, channels: int, batch: int, size: int,
                          repeats: int, precision: str) -> tuple[float, float]:
    """Seconds for one grouped convolution over ``n`` models (what vmap makes of N models'
    conv) and for ``n`` dense convolutions of one model each, same data, same layout."""
    import torch.nn.functional as F

    fmt = torch.channels_last
    x = torch.randn(batch, n * channels, size, size, device=dev).contiguous(memory_format=fmt)
    w = torch.randn(n * channels, channels, 3, 3, device=dev).contiguous(memory_format=fmt)
    xs = [x[:, i * channels:(i + 1) * channels].contiguous(memory_format=fmt) for i in range(n)]
    ws = [w[i * channels:(i + 1) * channels].contiguous(memory_format=fmt) for i in range(n)]
    with torch.inference_mode(), autocast(dev, precision):
        grouped = lambda: [F.conv2d(x, w, padding=1, groups=n) for _ in range(repeats)]
        dense = lambda: [[F.conv2d(a, b, padding=1) for a, b in zip(xs, ws)] for _ in range(repeats)]
        grouped(), dense()
        return _timed(dense, dev)[1], _timed(grouped, dev)[1]


def conv_share(runner: Runner, spec: RunSpec) -> float:
    """Share of a training step's operator time spent in convolutions (forward and
    backward), from ``torch.profiler``: near 1 means the step is bound by conv arithmetic."""
    from torch.profiler import ProfilerActivity, profile

    model = prepare_model(runner.build(spec), runner.device).train()
    x, y = runner.train_split(spec)
    xb, yb = x[:spec.batch_size], y[:spec.batch_size]
    activities = [ProfilerActivity.CUDA if runner.device.type == "cuda" else ProfilerActivity.CPU]
    with profile(activities=activities) as prof:
        for _ in range(5):
            with autocast(runner.device, runner.precision):
                batch_loss = loss(spec.task, model(xb), yb)
            batch_loss.backward()
        synchronize(runner.device)
    attr = "self_device_time_total" if runner.device.type == "cuda" else "self_cpu_time_total"
    times = {e.key: getattr(e, attr) for e in prof.key_averages()}
    total = sum(times.values())
    return sum(t for k, t in times.items() if "conv" in k.lower()) / total if total else math.nan


# ----------------------------------------------------------------------------- (g), (h)
def _race(baseline: Runner, fast: Runner, specs: list[RunSpec], device: torch.device):
    """(baseline runs, seconds, fast runs, seconds) of training ``specs`` both ways; ``fast``
    first trains two short runs, so that starting its workers is not timed."""
    fast.train_many([s.replace(steps=2) for s in specs[:2]])
    base_runs, t_base = _timed(lambda: baseline.train_many(specs), device)
    fast_runs, t_fast = _timed(lambda: fast.train_many(specs), device)
    return base_runs, t_base, fast_runs, t_fast


# ----------------------------------------------------------------------------- (i)
# The pins are environment variables each library reads once per process, so the two sides
# run in fresh processes (not in this one, as every other section does), alternately.
_TRAIN_IN_FRESH_PROCESS = """
import json, sys, time
from reuse.study.training.spec import state_digest
from reuse.study.training.train import Runner, RunSpec
a = json.loads(sys.argv[1])
runner = Runner("cpu", cache_dir=None, data_dir=a["folder"], progress=False, threads=1, precision="fp32")
specs = [RunSpec(**s) for s in a["specs"]]
runner.train_many([specs[0].replace(steps=2)])  # warm-up, not timed
start = time.perf_counter()
runs = runner.train_many(specs)
print(json.dumps({"seconds": time.perf_counter() - start, "digests": [state_digest(r.state) for r in runs]}))
"""


def native_isa() -> str:
    """The instruction set ATen picks on this CPU when nothing caps it."""
    env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
    code = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def train_fresh(specs: list[RunSpec], folder: Path, caps: dict[str, str]) -> dict:
    """Seconds and weight digests of ``specs`` trained in a fresh one-thread process with the
    environment's ISA ``caps`` (``ONEDNN_MAX_CPU_ISA``, ``ATEN_CPU_CAPABILITY``) set."""
    env = {**os.environ, **caps}
    arg = json.dumps({"folder": str(folder), "specs": [dataclasses.asdict(s) for s in specs]})
    out = subprocess.run([sys.executable, "-c", _TRAIN_IN_FRESH_PROCESS, arg], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _runs(spec: RunSpec, first_seed: int, n: int, steps: int) -> list[RunSpec]:
    """``n`` runs of ``steps`` steps like ``spec``, initialised from ``first_seed`` on (each
    section trains its own seeds, so no section reads another's runs)."""
    return [spec.replace(init_seed=first_seed + i, steps=steps) for i in range(n)]


def _images(specs: list[RunSpec]) -> int:
    """Training images the runs ``specs`` see, the unit of every section's img/s."""
    return sum(s.steps * s.batch_size for s in specs)


def _same_weights(a: list, b: list) -> bool:
    """Whether paired runs have bit-identical weights."""
    return all(torch.equal(x.state[k], y.state[k]) for x, y in zip(a, b) for k in x.state)


# ----------------------------------------------------------------------------- (j)
@contextlib.contextmanager
def nan_fill(on: bool):
    """Within the block, the trainer runs with deterministic mode's NaN fill of new tensors
    set to ``on`` inside its own ``compute_scope`` (which switches it off), all else alike."""
    original = train.compute_scope

    @contextlib.contextmanager
    def scope(*args, **kwargs):
        with original(*args, **kwargs):
            torch.utils.deterministic.fill_uninitialized_memory = on
            yield

    train.compute_scope = scope
    try:
        yield
    finally:
        train.compute_scope = original


# ----------------------------------------------------------------------------- main
class Bench:
    """What every section shares: the device, sizes, synthetic data, the project's runner and
    its run, and the rows recorded so far. (A plain class: the tests load this file without
    registering it as a module, which a dataclass needs.)"""

    def __init__(self, dev: torch.device, sizes: dict, folder: Path, runner: Runner, spec: RunSpec,
                 architecture: str, quick: bool):
        self.dev, self.sizes, self.folder, self.runner, self.spec = dev, sizes, folder, runner, spec
        self.architecture, self.quick = architecture, quick
        self.rows: list[dict] = []

    @property
    def prec(self) -> str:
        return self.runner.precision

    @property
    def images(self) -> int:
        return self.spec.steps * self.spec.batch_size

    @property
    def tolerances(self) -> tuple[float, float]:
        """(loss, metric) agreement tolerances: fp32 rounds at ~7 digits; bf16 autocast at ~3,
        and grouped convolutions round differently, which Adam amplifies over the steps."""
        return (1e-2, 1e-4) if self.prec == "fp32" else (5e-2, 1e-2)

    def record(self, section, what, baseline_s, fast_s, n_items, unit, agree, peak=None, **extra):
        row = {"section": section, "what": what, "baseline_s": baseline_s, "fast_s": fast_s,
               f"baseline_{unit}": n_items / baseline_s, f"fast_{unit}": n_items / fast_s,
               "speedup": baseline_s / fast_s, "agree": agree, "cuda_peak_mib": peak, **extra}
        self.rows.append(row)
        print(f"({section}) {what}: baseline {n_items / baseline_s:,.1f} {unit}, fast "
              f"{n_items / fast_s:,.1f} {unit}, speedup x{row['speedup']:.2f}"
              f"{'' if agree is None else f', agree={agree}'}", flush=True)

    def cpu_runner(self, **settings) -> Runner:
        return Runner("cpu", cache_dir=None, data_dir=self.folder, progress=False, precision=self.prec,
                      **settings)


def trainer(b: Bench, compile: bool, precision: str) -> None:
    """(a) the project's trainer vs a plain DataLoader loop (and torch.compile when asked)."""
    runner, spec, dev = b.runner, b.spec, b.dev
    _reset_peak(dev)
    _, t_plain = _timed(lambda: plain_loop(runner, spec), dev)
    (fitted,), t_fit = _timed(lambda: runner.fit([spec]), dev)
    mx, my = runner.monitor_split(spec)
    mon_model = runner.model(fitted)
    _, t_mon = _timed(lambda: [evaluate(mon_model, mx, my, spec.task, runner.n_outputs(spec),
                                        metrics=(PRIMARY_METRIC[spec.task],), precision=b.prec)
                               for _ in fitted.history], dev)
    what = (f"trainer vs DataLoader loop, {b.architecture} w{spec.width} d{spec.depth} bs{spec.batch_size} "
            f"{spec.image_size} px")
    b.record("a", what, t_plain, t_fit, b.images, "img/s", None, _peak_mib(dev),
             note=f"trainer time includes scoring {len(mx)} monitor images {len(fitted.history)} times")
    b.record("a", what + ", trainer less its monitor scoring", t_plain, max(t_fit - t_mon, 1e-9), b.images,
             "img/s", None, None, monitor_s=t_mon)
    if compile:  # the same trainer with torch.compile: its first run includes compiling
        compiling = Runner(str(dev), cache_dir=None, data_dir=b.folder, progress=False,
                           deterministic=dev.type != "cuda", compile=True, precision=precision,
                           threads=runner.threads)
        _, t_first = _timed(lambda: compiling.fit([spec]), dev)
        _, t_again = _timed(lambda: compiling.fit([spec.replace(init_seed=1)]), dev)
        ok = compiling.compile  # False when compilation failed and it fell back to eager
        b.record("a", f"trainer eager vs torch.compile, first run (compiles){'' if ok else ', FELL BACK'}",
                 t_fit, t_first, b.images, "img/s", None, None)
        b.record("a", f"trainer eager vs torch.compile, second run{'' if ok else ', FELL BACK'}",
                 t_fit, t_again, b.images, "img/s", None, None)


def grouped(b: Bench, peak_tflops: float) -> None:
    """(b) N models trained together vs one after another."""
    runner, spec, dev = b.runner, b.spec, b.dev
    loss_tol, _ = b.tolerances
    flops_step = _train_flops(runner, spec)
    steps = spec.steps
    for n in b.sizes["group_sizes"]:
        specs = [spec.replace(init_seed=i, order_seed=i) for i in range(n)]
        if dev.type == "cuda":  # let cuDNN pick its kernels for this group size first
            runner.fit([s.replace(steps=2) for s in specs])
        _reset_peak(dev)
        loop, t_loop = _timed(lambda: [runner.fit([s])[0] for s in specs], dev)
        peak_loop = _peak_mib(dev)
        _reset_peak(dev)
        group, t_group = _timed(lambda: runner.fit(specs), dev)
        diffs = {(m, k): float((x.state[k].double() - y.state[k].double()).abs().max())
                 for m, (x, y) in enumerate(zip(group, loop)) for k in x.state}
        worst = max(diffs, key=diffs.get)
        err = diffs[worst]
        scale = float(loop[worst[0]].state[worst[1]].double().abs().max())
        # Adam turns rounding into a step of +-lr wherever a gradient is near 0, so weights
        # drift apart by a few lr; the losses must still agree
        loss_diff = max(abs(x.history[-1]["loss"] - y.history[-1]["loss"]) / abs(y.history[-1]["loss"])
                        for x, y in zip(group, loop))
        achieved = flops_step * steps * n / t_group / 1e12
        b.record("b", f"{n} models together vs one after another", t_loop, t_group, n * b.images,
                 "img/s", loss_diff < loss_tol, _peak_mib(dev), max_weight_diff=err, worst_key=worst[1],
                 worst_key_scale=scale, final_loss_rel_diff=loss_diff, cuda_peak_loop_mib=peak_loop,
                 train_tflops_fast=achieved, train_tflops_baseline=flops_step * steps * n / t_loop / 1e12)
    if dev.type == "cuda":
        last = b.rows[-1]
        last["fraction_of_bf16_peak"] = last["train_tflops_fast"] / peak_tflops
        print(f"    largest group: {last['train_tflops_fast']:.2f} TFLOP/s = "
              f"{100 * last['fraction_of_bf16_peak']:.3f}% of {peak_tflops:g} TFLOP/s bf16 peak "
              f"(loop: {last['train_tflops_baseline']:.2f} TFLOP/s)", flush=True)


def scoring(b: Bench) -> tuple:
    """(c) scoring E1's swap variants: the project's scorer vs loops over variants. Returns
    the model and the two runs, which (d) and (f) reuse."""
    runner, spec, dev, prec = b.runner, b.spec, b.dev, b.prec
    _, metric_tol = b.tolerances
    target, source = runner.fit([spec])[0], runner.fit([spec.replace(domain="target", order_seed=1)])[0]
    model = runner.model(target)  # channels_last, as the experiments use it
    plain = runner.build(spec).to(dev).eval()  # NCHW, as built
    n_test = b.sizes["n_test"]
    tx, ty = runner.split(spec.pair, "target", spec.task, "test", 0, 0.0, n_test)
    states = swap_variants(model, target.state, source.state)
    n_out, metric = runner.n_outputs(spec), PRIMARY_METRIC[spec.task]
    what = f"{len(states)} swap variants x {n_test} test images"

    def looped(m, precision=prec):
        out = []
        for s in states:
            m.load_state_dict(s)
            out.append(evaluate(m, tx, ty, spec.task, n_out, metrics=(metric,), precision=precision)[metric])
        return out

    def plain_fp32():
        return looped(plain, "fp32")

    def shared():
        return [r[metric] for r in score_states(model, states, tx, ty, spec.task, n_out, (metric,),
                                                precision=prec)]

    for fn in (plain_fp32, lambda: looped(model), shared):  # warm-up: kernel choice per shape
        fn()
    _reset_peak(dev)
    plain_ref, t_plain = _timed(plain_fp32, dev)
    ref, t_loop = _timed(lambda: looped(model), dev)
    _reset_peak(dev)
    fast, t_fast = _timed(shared, dev)
    peak = _peak_mib(dev)
    err = max(abs(x - y) for x, y in zip(plain_ref, fast))
    b.record("c", f"{what}: plain loop (NCHW, fp32) vs the project's scorer (channels_last, {prec}, "
             "shared prefixes)", t_plain, t_fast, len(states), "states/s", err <= metric_tol, peak,
             max_metric_diff=err)
    err = max(abs(x - y) for x, y in zip(ref, fast))
    b.record("c", f"{what}: loop vs shared prefixes, same model and precision ({prec})", t_loop,
             t_fast, len(states), "states/s", err <= metric_tol, peak, max_metric_diff=err)
    for chunk in b.sizes["chunks"]:
        def batched():
            return evaluate_states(model, states, tx, ty, spec.task, n_out, metric, chunk=chunk,
                                   precision=prec)
        batched()
        _reset_peak(dev)
        vm, t_vm = _timed(batched, dev)
        err = max(abs(x - y) for x, y in zip(ref, vm))
        b.record("c", f"{what}: loop vs vmap over stacked states, chunk {chunk} ({prec})", t_loop,
                 t_vm, len(states), "states/s", err <= metric_tol, _peak_mib(dev), max_metric_diff=err)
    return model, target, source


def rmse(b: Bench, model, target, source) -> None:
    """(d) bulk kernel RMSE vs a per-layer loop."""
    layers = conv_layer_names(model)
    reps = b.sizes["rmse_repeats"]
    bulk = kernel_rmse(source.state, target.state, layers)
    per = _per_layer_rmse(source.state, target.state, layers)
    err = float(np.abs(bulk[["rmse", "rel_rmse"]].to_numpy() - per[["rmse", "rel_rmse"]].to_numpy()).max())
    _, t_loop = _timed(lambda: [_per_layer_rmse(source.state, target.state, layers) for _ in range(reps)], b.dev)
    _, t_bulk = _timed(lambda: [kernel_rmse(source.state, target.state, layers) for _ in range(reps)], b.dev)
    b.record("d", f"kernel RMSE over {len(layers)} layers", t_loop, t_bulk, reps, "pairs/s",
             err < 1e-12, None, max_rmse_diff=err)


def conv_arithmetic(b: Bench) -> None:
    """(f) why grouping pays or not here: the arithmetic share, and grouped vs dense convs."""
    spec = b.spec
    share = conv_share(b.runner, spec)
    n_models = b.sizes["group_sizes"][-1]
    t_dense, t_grouped = grouped_vs_dense_conv(b.dev, n_models, spec.width * 2, spec.batch_size,
                                               16, 5 if b.quick else 20, b.prec)
    b.record("f", f"{n_models} dense convs vs one grouped conv ({n_models} groups of {spec.width * 2} "
             f"channels, 16 px, batch {spec.batch_size})", t_dense, t_grouped, n_models, "convs/s",
             None, None, conv_share_of_training_step=share)
    print(f"    convolutions take {100 * share:.0f}% of a training step's operator time", flush=True)


def workers(b: Bench) -> None:
    """(g) two one-thread worker processes vs one two-thread process (the quick profile's way);
    agreement: the workers' weights equal, bit for bit, one-thread training in this process."""
    specs = _runs(b.spec, 100, b.sizes["worker_runs"], b.sizes["worker_steps"])
    one, two = b.cpu_runner(threads=2), b.cpu_runner(threads=1, workers=2)
    _, t_one, parallel, t_two = _race(one, two, specs, b.dev)
    two.close()
    alone = b.cpu_runner(threads=1).train_many(specs[:2])
    b.record("g", f"{len(specs)} runs of {specs[0].steps} steps: one process of 2 threads vs 2 workers "
             "of 1 thread", t_one, t_two, _images(specs), "img/s", _same_weights(alone, parallel), None)


def dask_cluster(b: Bench) -> None:
    """(h) a 2-worker Dask LocalCluster (``--cluster local:2``) vs serial one-thread training;
    agreement: the cluster's weights equal the serial ones bit for bit."""
    from distributed import Client, LocalCluster

    specs = _runs(b.spec, 200, b.sizes["worker_runs"], b.sizes["worker_steps"])
    serial = b.cpu_runner(threads=1)
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        dask = b.cpu_runner(threads=1, cluster=client.get_executor())
        alone, t_serial, spread, t_dask = _race(serial, dask, specs, b.dev)
    b.record("h", f"{len(specs)} runs of {specs[0].steps} steps: serial (1 thread) vs a Dask "
             "LocalCluster of 2 one-thread workers", t_serial, t_dask,
             _images(specs), "img/s", _same_weights(alone, spread), None)


def pins(b: Bench) -> None:
    """(i) the code-path pins (oneDNN and ATen capped at AVX2) vs the CPU's own best paths:
    fresh processes, alternately, the faster of two tries each."""
    specs = _runs(b.spec, 300, b.sizes["worker_runs"] // 2, b.sizes["worker_steps"])
    native = native_isa()  # one subprocess: the same for every try
    caps = {"free": {"ONEDNN_MAX_CPU_ISA": "ALL", "ATEN_CPU_CAPABILITY": native.lower()},
            "pins": {k: CPU_PINS[k] for k in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")}}
    tries = {side: [] for side in caps}
    for _ in range(2):
        for side, env in caps.items():
            tries[side].append(train_fresh(specs, b.folder, env))
    free, kept = tries["free"], tries["pins"]
    b.record("i", f"{len(specs)} runs of {specs[0].steps} steps, 1 thread: the CPU's own paths "
             f"(ATen {native}, oneDNN all) vs the pins (AVX2)", min(t["seconds"] for t in free),
             min(t["seconds"] for t in kept), _images(specs), "img/s",
             free[0]["digests"] == kept[0]["digests"], None)


def nan_fill_cost(b: Bench) -> None:
    """(j) deterministic mode's NaN fill on (torch's default) vs off (compute_scope's), one
    thread as the quick profile trains, alternately, the faster of two tries each."""
    specs = _runs(b.spec, 400, b.sizes["worker_runs"] // 2, b.sizes["worker_steps"])
    single = Runner(str(b.dev), cache_dir=None, data_dir=b.folder, progress=False, threads=1, precision=b.prec)
    tries = {on: [] for on in (True, False)}
    for _ in range(2):
        for on, done in tries.items():
            with nan_fill(on):
                done.append(_timed(lambda: [single.fit([s])[0] for s in specs], b.dev))
    b.record("j", f"{len(specs)} runs of {specs[0].steps} steps, 1 thread: new tensors NaN-filled "
             "(deterministic mode's default) vs not (compute_scope's)",
             min(t for _, t in tries[True]), min(t for _, t in tries[False]),
             _images(specs), "img/s", _same_weights(tries[True][0][0], tries[False][0][0]), None)


def memory(b: Bench) -> dict:
    """(e) peak memory: process RSS and, on CUDA, the peak of each section."""
    cuda = b.dev.type == "cuda"
    out = {"cpu_peak_rss_mib": _rss_mib(),
           "cuda_peak_mib_by_section": {r["what"]: r["cuda_peak_mib"] for r in b.rows} if cuda else None}
    print(f"(e) peak CPU RSS {out['cpu_peak_rss_mib']:.0f} MiB" +
          ("" if not cuda else
           "; CUDA peak per section (MiB): " +
           ", ".join(f"{r['section']}:{r['cuda_peak_mib']:.0f}" for r in b.rows
                     if r["cuda_peak_mib"] is not None)), flush=True)
    return out


def _write(result: dict, out_dir: str | Path, dev: torch.device, name: str, architecture: str,
           quick: bool) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M")
    slug = re.sub(r"[^A-Za-z0-9]+", "-", f"{dev.type}-{name}").strip("-").lower()
    path = out / f"{slug}-{stamp}-{architecture}{'-quick' if quick else ''}.json"
    path.write_text(json.dumps(result, indent=1, default=str))
    print(f"wrote {path}")
    return path


def run(quick: bool = False, device: str = "auto", peak_tflops: float = PEAK_BF16_TFLOPS,
        out_dir: str | Path | None = None, architecture: str = "unet", compile: bool = False,
        precision: str = "auto") -> dict:
    """All sections; returns the result record (also written as JSON unless ``out_dir`` is None)."""
    runner_device = torch.device(device) if device != "auto" else None
    sizes = dict(SIZES["quick" if quick else "full"])
    probe = Runner(device if runner_device is None else str(runner_device), cache_dir=None,
                   progress=False)
    dev = probe.device
    if dev.type == "cuda" and not quick:
        sizes.update(CUDA_OVERRIDES)
    tmp = tempfile.TemporaryDirectory()
    folder = write_synthetic_fashion(Path(tmp.name), n_train=2 * sizes["n_train"] + 20,
                                     n_test=2 * sizes["n_test"] + 20)  # each pair side gets half
    runner = Runner(str(dev), cache_dir=None, data_dir=folder, progress=False,
                    deterministic=dev.type != "cuda", precision=precision, threads=torch.get_num_threads())
    spec = RunSpec(architecture, "segmentation", "fashion-split", width=sizes["width"],
                   depth=sizes["depth"], steps=sizes["steps"], batch_size=sizes["batch_size"],
                   n_train=sizes["n_train"], image_size=sizes["image_size"])
    runner.train_split(spec)  # warm
    b = Bench(dev, sizes, folder, runner, spec, architecture, quick)
    # warm-up (kernel selection, allocator) outside the timings
    runner.fit([spec.replace(steps=1)])
    runner.fit([spec, spec.replace(init_seed=1)])

    trainer(b, compile, precision)
    grouped(b, peak_tflops)
    model, target, source = scoring(b)
    rmse(b, model, target, source)
    conv_arithmetic(b)
    if dev.type == "cpu":
        workers(b)
        if importlib.util.find_spec("distributed") is not None:
            dask_cluster(b)
        pins(b)
    if runner.deterministic:
        nan_fill_cost(b)
    mem = memory(b)

    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else (platform.processor() or "cpu")
    result = {"device": str(dev), "device_name": name, "torch": torch.__version__,
              "threads": torch.get_num_threads(), "quick": quick, "sizes": sizes,
              "architecture": architecture, "peak_bf16_tflops": peak_tflops,
              "provenance": provenance({"quick": quick, "device": str(dev)}),
              "rows": b.rows, "memory": mem}
    tmp.cleanup()
    if out_dir is not None:
        result["path"] = str(_write(result, out_dir, dev, name, architecture, quick))
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/bench.py", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes (seconds), for CI")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--peak-tflops", type=float, default=PEAK_BF16_TFLOPS,
                   help="dense bf16 peak of the GPU, TFLOP/s (H100/H200 SXM: 989)")
    p.add_argument("--architecture", default="unet", choices=("unet", "pspnet", "plain"))
    p.add_argument("--compile", action="store_true", help="also time the trainer with torch.compile")
    p.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"),
                   help="autocast precision of the project's paths (the plain baselines are fp32)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results"),
                   help="folder for the JSON record ('' to skip writing)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    run(args.quick, args.device, args.peak_tflops, args.out or None, args.architecture, args.compile,
        args.precision)
    return 0


if __name__ == "__main__":
    sys.exit(main())
