"""The benchmark script runs end to end at quick sizes and its paired variants agree."""

import importlib.util
import json
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench.py"


def _load_bench():
    spec = importlib.util.spec_from_file_location("bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_benchmark_completes_and_agrees(tmp_path):
    bench = _load_bench()
    assert bench.main(["--quick", "--device", "cpu", "--out", str(tmp_path)]) == 0
    (path,) = tmp_path.glob("*.json")
    result = json.loads(path.read_text())
    assert result["device"] == "cpu" and result["torch"] and "commit" in result["provenance"]
    sections = [row["section"] for row in result["rows"]]
    assert sections.count("b") == 2 and {"a", "c", "d", "g", "h", "i", "j"} <= set(sections)
    for row in result["rows"]:
        assert row["baseline_s"] > 0 and row["fast_s"] > 0
        if row["section"] == "i":  # the pins change the bits exactly where they cap something
            assert row["agree"] == (bench.native_isa() != "AVX512"), row
        elif row["agree"] is not None:  # batched / grouped results equal the looped ones
            assert row["agree"], row
    assert result["memory"]["cpu_peak_rss_mib"] > 0


def test_cka_memory_benchmark_runs_both_variants_and_they_agree(capsys):
    """benchmarks/bench_cka.py at 8 images: one batch, so the full and the mini-batch CKA are
    the same computation and report the same mean."""
    spec = importlib.util.spec_from_file_location("bench_cka", BENCH.with_name("bench_cka.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--n", "8", "--max-full", "8", "--threads", "1"]) == 0
    out = capsys.readouterr()
    (row,) = [line for line in out.out.splitlines() if line.split()[:1] == ["8"]]
    assert row.split()[-1].startswith("x")  # the ratio of the two CKA memories
    means = [line.split()[-1] for line in out.err.splitlines() if "mean debiased CKA" in line]
    assert len(means) == 2 and means[0] == means[1]


def test_memory_benchmark_measures_both_variants_and_they_agree(capsys, monkeypatch):
    """benchmarks/bench_memory.py on two 4 MiB checkpoints, against the committed code: both
    peaks printed with their share of the inputs, the ratio, and the same layers.csv."""
    monkeypatch.syspath_prepend(str(BENCH.parent))  # as a script: its folder, for bench_analyze
    spec = importlib.util.spec_from_file_location("bench_memory", BENCH.with_name("bench_memory.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--mib", "4", "--baseline", "HEAD"]) == 0
    out = capsys.readouterr().out
    assert out.count(" the inputs); above start-up ") == 2
    assert "now / baseline above start-up: x" in out and "agree (the same layers.csv): True" in out
