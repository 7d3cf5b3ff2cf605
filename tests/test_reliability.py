"""Faults a hostile or unlucky user meets (issue 19, docs/reliability.md): code planted in the
working folder, links in a shared cache, outputs written while another process writes or
the disk fills up, bad data and bad checkpoints, two set-ups at once. Each ends in one line
on stderr (exit 2) or one warning, with nothing half-written."""
from __future__ import annotations

import errno
import fcntl
import fnmatch
import importlib.util
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import fill
from test_run_all import RECORD, _notebook

from reuse.__main__ import main
from reuse.study.publishing import batch
from reuse.study.training import data as rdata
from reuse.study.training.train import Runner, RunSpec
from reuse.toolkit import analyze_inputs, analyze_report
from reuse.toolkit import files

REPO = Path(__file__).resolve().parents[1]
TINY = dict(width=2, depth=1, steps=8, batch_size=16, n_train=48, image_size=16)
TINY_NET = """\
import torch
from torch import nn

def build(classes=3):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, classes))

def score(model):
    return 1.0

def dataset():
    g = torch.Generator().manual_seed(0)
    return torch.rand(8, 3, 12, 12, generator=g), torch.arange(8) % 3

def gray():
    return dataset()[0][:, :1], dataset()[1]

def slow_score(model):
    import time
    open("STARTED", "w").close()  # in the working folder: the test waits for it, then sends Ctrl-C
    time.sleep(120)
    return 1.0
"""
LAUNCHER = "import sys\nfrom reuse.__main__ import main\nsys.exit(main())\n"


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def _listing(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _leftovers(folder: Path) -> list[str]:
    return [p for p in os.listdir(folder) if ".tmp-" in p or ".old-" in p or p.endswith(".tmp")]


# ----------------------------------------------------------------------------- cnn-reuse analyze
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A folder ``code`` with a user module ``tinynet`` (architecture, score, dataset) and
    checkpoints ``source.pt``, ``target.pt``, ``twin.pt`` of it."""
    d = tmp_path_factory.mktemp("tiny")
    (d / "code").mkdir()
    (d / "code" / "tinynet.py").write_text(TINY_NET)
    spec = importlib.util.spec_from_file_location("tinynet_for_tests", d / "code" / "tinynet.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    target = module.build().state_dict()
    for name, scale in (("source", 0.5), ("twin", 0.05)):
        torch.save({k: v + scale * torch.randn_like(v) if v.is_floating_point() else v
                    for k, v in target.items()}, d / f"{name}.pt")
    torch.save(target, d / "target.pt")
    return d


def _tiny_args(d: Path, *extra: str) -> list[str]:
    return ["analyze", str(d / "source.pt"), str(d / "target.pt"), "--model", "tinynet:build",
            "--path", str(d / "code"), "--no-progress", *extra]


def _cli(*args: str, cwd: Path, tmp_path: Path, popen: bool = False):
    """``cnn-reuse ARGS`` as the console script runs it (sys.path[0] is the script's folder, not
    the working folder), in a child process."""
    launcher = tmp_path / "bin" / "reuse_cli.py"
    launcher.parent.mkdir(exist_ok=True)
    launcher.write_text(LAUNCHER)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, str(launcher), *args]
    if popen:
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_analyze_imports_no_code_from_the_working_folder(tiny, tmp_path):
    work = tmp_path / "downloaded"
    (work / "torchvision").mkdir(parents=True)
    marker = tmp_path / "PLANTED_CODE_RAN"
    (work / "torchvision" / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (work / "tinynet.py").write_text(TINY_NET)
    torch.save(torch.nn.Conv2d(3, 4, 3).state_dict(), work / "a.pt")
    result = _cli("analyze", "a.pt", "a.pt", "--model", "torchvision.models:squeezenet1_1", "--align",
                  "--out", str(tmp_path / "out"), cwd=work, tmp_path=tmp_path)
    assert not marker.exists(), "code in the working folder ran"
    assert "does not match the target checkpoint" in result.stderr  # the real torchvision's model
    # a module beside the checkpoints is not found either, unless --path names its folder
    args = ["analyze", str(tiny / "source.pt"), str(tiny / "target.pt"), "--model", "tinynet:build", "--align"]
    result = _cli(*args, "--out", str(tmp_path / "o1"), cwd=work, tmp_path=tmp_path)
    assert result.returncode == 2 and "cannot import module 'tinynet'" in _one_line(result.stderr)
    result = _cli(*args, "--path", str(tiny / "code"), "--out", str(tmp_path / "o2"), cwd=work,
                  tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr


def test_path_is_repeatable_and_must_be_a_folder(tiny, tmp_path, capsys):
    assert main([*_tiny_args(tiny), "--path", str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    assert main([*_tiny_args(tiny), "--path", str(tmp_path / "nope"), "--out", str(tmp_path / "o2")]) == 2
    assert "--path" in _one_line(capsys.readouterr().err)


def test_a_full_out_folder_is_refused_then_replaced_whole_with_force(tiny, tmp_path, capsys):
    out = tmp_path / "out"
    assert main([*_tiny_args(tiny), "--score", "tinynet:score", "--out", str(out)]) == 0
    assert (out / "swaps.csv").exists()
    before = _listing(out)
    assert main([*_tiny_args(tiny), "--out", str(out)]) == 2
    assert "holds files" in _one_line(capsys.readouterr().err)
    assert _listing(out) == before
    assert main([*_tiny_args(tiny), "--out", str(out), "--force"]) == 0
    written = json.loads((out / "analyze.json").read_text())["summary"]["files"]
    assert sorted(os.listdir(out)) == sorted([*written, "analyze.json", files.MARKER])  # no old swaps.csv
    assert not _leftovers(tmp_path)


def test_force_never_removes_an_input_or_a_file_it_did_not_write(tiny, tmp_path, monkeypatch, capsys):
    ckpts = shutil.copytree(tiny, tmp_path / "ckpts")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    monkeypatch.chdir(ckpts)
    pair = ["analyze", "source.pt", "target.pt", "--no-progress", "--force", "--out"]
    for out, why in ((".", "is the working folder"), ("..", "is the working folder or a folder above it"),
                     (str(tmp_path / "mine"), "holds notes.txt, which this command did not write")):
        assert main([*pair, out]) == 2
        assert why in _one_line(capsys.readouterr().err)
    monkeypatch.chdir(tmp_path)
    assert main(["analyze", "ckpts/source.pt", "ckpts/target.pt", "--out", "ckpts", "--force"]) == 2
    assert f"holds the input {ckpts / 'source.pt'}" in _one_line(capsys.readouterr().err)
    assert main([*_tiny_args(ckpts), "--out", "ckpts/report", "--force"]) == 0  # beside its inputs: fine
    assert {p: p.read_bytes() for p in before if p.exists()} == before


def test_out_naming_a_file_is_refused_before_the_analysis(tiny, tmp_path, capsys, monkeypatch):
    (tmp_path / "report").write_text("mine")
    monkeypatch.setattr(analyze_inputs, "read_inputs", lambda *a: pytest.fail("read the inputs first"))
    assert main([*_tiny_args(tiny), "--out", str(tmp_path / "report"), "--force"]) == 2
    assert "is a file" in _one_line(capsys.readouterr().err)
    assert (tmp_path / "report").read_text() == "mine"


class Killed(BaseException):
    """A kill between two files of the report."""


def test_an_interrupted_report_leaves_the_previous_one_whole(tiny, tmp_path, monkeypatch):
    out = tmp_path / "out"
    assert main([*_tiny_args(tiny), "--out", str(out)]) == 0
    before = _listing(out)

    def killed(*args, **kwargs):  # analyze.json is written last: report.md is already new
        raise Killed
    monkeypatch.setattr(analyze_report, "provenance", killed)
    with pytest.raises(Killed):
        main([*_tiny_args(tiny), "--twin", str(tiny / "twin.pt"), "--out", str(out), "--force"])
    assert _listing(out) == before and not _leftovers(tmp_path)


@pytest.mark.parametrize("force", [False, True])
def test_two_concurrent_analyses_into_one_folder_never_mix(tiny, tmp_path, force):
    out = tmp_path / "out"
    runs = {"twin": ["--twin", str(tiny / "twin.pt")], "scored": ["--score", "tinynet:score"]}
    children = [_cli(*_tiny_args(tiny, *extra, "--out", str(out), *(["--force"] if force else [])),
                     cwd=tmp_path, tmp_path=tmp_path, popen=True) for extra in runs.values()]
    codes = [child.wait(timeout=300) for child in children]
    errors = [child.stderr.read() for child in children]
    assert sorted(codes) == ([0, 0] if force else [0, 2]), errors
    meta = json.loads((out / "analyze.json").read_text())
    assert sorted(os.listdir(out)) == sorted([*meta["summary"]["files"], "analyze.json", files.MARKER])
    twin = meta["params"]["twin"] is not None
    assert ("floor_rmse" in pd.read_csv(out / "layers.csv").columns) == twin
    assert (out / "swaps.csv").exists() != twin
    assert not _leftovers(tmp_path)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("data", [[], ["--dataset", "tinynet:dataset"]])
def test_a_checkpoint_with_non_finite_weights_is_refused_at_read(tiny, tmp_path, capsys, bad, data):
    state = torch.load(tiny / "target.pt")
    state["3.weight"][0, 0, 0, 0] = bad
    torch.save(state, tmp_path / "bad.pt")
    args = _tiny_args(tiny, *data, "--out", str(tmp_path / "out"))
    args[2] = str(tmp_path / "bad.pt")
    assert main(args) == 2
    err = _one_line(capsys.readouterr().err)
    assert "target" in err and "'3.weight'" in err and "non-finite" in err
    assert not (tmp_path / "out").exists()


def _images(folder: Path) -> Path:
    """An ImageFolder of two classes, three 16 px RGB PNGs each."""
    from PIL import Image

    for c in range(2):
        (folder / f"class{c}").mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (16, 16), (40 * i, 100 * c, 7)).save(folder / f"class{c}" / f"{i}.png")
    return folder


@pytest.mark.parametrize("data, why", [
    (["--channels", "1"], "--channels 1, --image-size 32) gives inputs of 1 channel(s), shape [1, 32, 32]; "
                          "the model's first layer '0' takes 3; allowed: 3-channel inputs"),
    (["--image-size", "4"], "--image-size 4) gives inputs of shape [3, 4, 4], which the model cannot take: "),
    (["--dataset", "tinynet:gray"], "--dataset tinynet:gray gives inputs of 1 channel(s), shape [1, 12, 12]"),
])
def test_inputs_the_model_cannot_take_are_refused_naming_both(tiny, tmp_path, capsys, data, why):
    if data[0] != "--dataset":
        data = ["--data", str(_images(tmp_path / "imgs")), *data]
    assert main([*_tiny_args(tiny), *data, "--out", str(tmp_path / "out")]) == 2
    assert why in _one_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("damage", ["truncated", "not an image"])
def test_an_image_that_cannot_be_decoded_is_refused_naming_the_file(tiny, tmp_path, capsys, damage):
    bad = _images(tmp_path / "imgs") / "class1" / ("1.png" if damage == "truncated" else "junk.png")
    bad.write_bytes(bad.read_bytes()[:60] if damage == "truncated" else b"not a picture at all")
    assert main([*_tiny_args(tiny), "--data", str(tmp_path / "imgs"), "--out", str(tmp_path / "out")]) == 2
    err = _one_line(capsys.readouterr().err)
    assert f"cannot decode {bad} (" in err and ("truncated" in err if damage == "truncated" else True)
    assert not (tmp_path / "out").exists()


def _interrupt(child: subprocess.Popen, started: Path) -> tuple[int, str]:
    """Ctrl-C (SIGINT) to ``child`` once ``started`` exists: its exit status and stderr."""
    deadline = time.monotonic() + 240
    while not started.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert started.exists(), child.communicate()
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=120)
    return child.returncode, err


def test_ctrl_c_in_analyze_ends_in_one_line_and_writes_nothing(tiny, tmp_path):
    child = _cli(*_tiny_args(tiny, "--score", "tinynet:slow_score", "--out", str(tmp_path / "out")),
                 cwd=tmp_path, tmp_path=tmp_path, popen=True)
    code, err = _interrupt(child, tmp_path / "STARTED")
    assert code == 130, err
    assert "interrupted: nothing written" in _one_line(err) and "run the same command again" in err
    assert not (tmp_path / "out").exists() and not _leftovers(tmp_path)


def test_ctrl_c_in_main_called_from_python_stops_the_caller(tiny, tmp_path, monkeypatch):
    """A notebook calling main(argv) is stopped by Ctrl-C as it asked (its next cells must not
    run), with what the command kept as the message."""
    def interrupted(*args):
        raise KeyboardInterrupt
    monkeypatch.setattr(analyze_inputs, "read_inputs", interrupted)
    with pytest.raises(KeyboardInterrupt, match="nothing written"):
        main([*_tiny_args(tiny), "--out", str(tmp_path / "out")])


@pytest.mark.parametrize("kind", ["int8", "quantized"])
def test_integer_weights_are_refused_and_quantized_ones_dequantised_in_one_line(tiny, tmp_path, capsys, kind):
    state = torch.load(tiny / "target.pt")
    w = state["0.weight"]
    state["0.weight"] = (w * 20).to(torch.int8) if kind == "int8" else torch.quantize_per_tensor(w, 0.01, 0,
                                                                                                 torch.qint8)
    torch.save(state, tmp_path / "t.pt")
    args = ["analyze", str(tiny / "source.pt"), str(tmp_path / "t.pt"), "--out", str(tmp_path / "out")]
    if kind == "int8":
        assert main(args) == 2
        assert "target: tensor '0.weight' is torch.int8" in _one_line(capsys.readouterr().err)
        return
    assert main(args) == 0
    warning = _one_line(capsys.readouterr().err)
    assert warning.startswith("cnn-reuse analyze: warning: target: 1 quantized tensor(s) (0.weight) dequantised")
    assert "dequantised" in (tmp_path / "out" / "report.md").read_text()


def test_an_all_zero_target_layer_warns_and_writes_nan_not_inf(tiny, tmp_path, capsys):
    state = torch.load(tiny / "target.pt")
    state["0.weight"].zero_()
    torch.save(state, tmp_path / "zero.pt")
    args = _tiny_args(tiny, "--twin", str(tmp_path / "zero.pt"), "--out", str(tmp_path / "out"))
    args[2] = str(tmp_path / "zero.pt")
    assert main(args) == 0
    warning = _one_line(capsys.readouterr().err)
    assert "warning" in warning and "'0'" in warning and "rel_rmse" in warning
    text = (tmp_path / "out" / "layers.csv").read_text()
    assert "inf" not in text
    layers = pd.read_csv(tmp_path / "out" / "layers.csv").set_index("layer")
    assert np.isnan(layers.loc[0, "rel_rmse"]) and np.isfinite(layers.loc[3, "rel_rmse"])
    assert np.isnan(layers.loc[0, "rmse_over_floor"])  # the twin is the zero target: floor 0


def test_a_full_output_disk_in_analyze_writes_nothing(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(pd.DataFrame, "to_csv", _enospc)
    assert main([*_tiny_args(tiny), "--out", str(tmp_path / "out")]) == 2
    err = _one_line(capsys.readouterr().err)
    assert "no space left on device" in err and "nothing written" in err
    assert not (tmp_path / "out").exists() and not _leftovers(tmp_path)


def test_a_real_full_disk_in_analyze_writes_nothing(tiny, tiny_disk, capsys):
    fill(tiny_disk, leave=8192)
    assert main([*_tiny_args(tiny), "--out", str(tiny_disk / "out")]) == 2
    assert "no space left on device" in _one_line(capsys.readouterr().err)
    assert sorted(os.listdir(tiny_disk)) == [".filler"]


# ----------------------------------------------------------------------------- the run cache
def _runner(cache: Path) -> Runner:
    return Runner("cpu", cache_dir=cache, progress=False)


def _victim(tmp_path: Path) -> tuple[Path, bytes]:
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"someone else's file\n")
    return victim, victim.read_bytes()


def test_a_symlinked_trained_log_is_refused_and_the_run_goes_on(fake_fashion, tmp_path):
    victim, before = _victim(tmp_path)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "trained.log").symlink_to(victim)
    spec = RunSpec("unet", "segmentation", "fashion-split", **TINY)
    with pytest.warns(UserWarning, match="trained.log is a symbolic link: refused") as caught:
        run = _runner(cache).train(spec)
    assert len(caught) == 1 and "\n" not in str(caught[0].message)
    assert victim.read_bytes() == before and (cache / "trained.log").is_symlink()
    assert not run.cached and len(list(cache.rglob("*.pt"))) == 1  # stored all the same
    assert _runner(cache).train(spec).cached


def test_a_symlinked_lock_file_is_refused_and_its_target_untouched(fake_fashion, tmp_path):
    victim, before = _victim(tmp_path)
    os.chmod(victim, 0o600)
    cache = tmp_path / "cache"
    spec = RunSpec("unet", "segmentation", "fashion-split", **TINY)
    runner = _runner(cache)
    lock = Path(f"{runner.cache.path(spec)}.lock")
    lock.parent.mkdir(parents=True)
    lock.symlink_to(victim)
    with pytest.warns(UserWarning, match=r"\.lock is a symbolic link: refused.*without its lock"):
        runner.train(spec)
    assert victim.read_bytes() == before and stat.S_IMODE(victim.stat().st_mode) == 0o600
    assert len(list(cache.rglob("*.pt"))) == 1


def test_cache_files_follow_the_umask(fake_fashion, tmp_path):
    old = os.umask(0o002)
    try:
        runner = _runner(tmp_path / "cache")
        runner.train(RunSpec("unet", "segmentation", "fashion-split", **TINY))
        runner.memo({"score": 1}, lambda: [0.5])
    finally:
        os.umask(old)
    made = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert {p.suffix for p in made} == {".log", ".lock", ".pt", ".json"}
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in made} == {p.name: 0o664 for p in made}


class _Payload:
    """A pickle that would run code when loaded without ``weights_only``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_cache_entry_carrying_code_is_refused_moved_aside_and_retrained(fake_fashion, tmp_path):
    cache = tmp_path / "cache"
    spec = RunSpec("unet", "segmentation", "fashion-split", **TINY)
    _runner(cache).train(spec)
    (path,) = cache.rglob("*.pt")
    blob = torch.load(path, weights_only=True)
    blob["extra"] = {"payload": _Payload(tmp_path / "CODE_RAN")}
    torch.save(blob, path)
    runner = _runner(cache)
    with pytest.warns(UserWarning, match="(?s)bad cache entry .*Weights only load failed.*moved to"):
        assert not runner.train(spec).cached
    assert not (tmp_path / "CODE_RAN").exists() and path.with_suffix(".bad").exists()


def test_a_full_cache_disk_warns_once_and_keeps_runs_in_memory(fake_fashion, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setattr(files, "_write_all", _enospc)
    runner = _runner(cache)
    spec = RunSpec("unet", "segmentation", "fashion-split", **TINY)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = runner.train(spec)
        assert runner.memo({"score": 1}, lambda: [0.5]) == [0.5]
        assert runner.train(spec) is run and runner.trained == 1  # kept in memory
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "no space left on device" in messages[0], messages
    assert "kept in memory only" in messages[0] and "\n" not in messages[0]
    assert not [p for p in cache.rglob("*") if p.suffix in (".pt", ".json", ".tmp", ".log")]


def test_a_real_full_cache_disk_keeps_every_stored_entry_loadable(fake_fashion, tiny_disk):
    cache = tiny_disk / "cache"
    spec = RunSpec("unet", "segmentation", "fashion-split", **TINY)
    _runner(cache).train(spec)
    fill(tiny_disk, leave=4096)
    with pytest.warns(UserWarning, match="no space left on device.*kept in memory only"):
        assert not _runner(cache).train(spec.replace(init_seed=1)).cached
    assert not [p for p in cache.rglob("*") if p.name.endswith(".tmp") or ".tmp-" in p.name]
    assert _runner(cache).train(spec).cached


# ----------------------------------------------------------------------------- data
def _fake_data(folder: Path) -> Path:
    folder.mkdir(parents=True)
    return rdata.write_synthetic_fashion(folder, n_train=40, n_test=20)


def test_labels_out_of_range_are_refused_at_load_naming_file_and_value(tmp_path):
    folder = _fake_data(tmp_path / "data")
    labels = np.arange(40) % 10
    labels[7] = 12
    rdata.write_idx(folder / rdata.FASHION_FILES[("train", "labels")], labels)
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte.gz: label 12 at index 7; allowed: 0..9"):
        rdata.load_fashion("train", folder)


def test_images_of_the_wrong_size_are_refused_at_load(tmp_path):
    folder = _fake_data(tmp_path / "data")
    rdata.write_idx(folder / rdata.FASHION_FILES[("test", "images")], np.zeros((20, 32, 32), np.uint8))
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte.gz: images of shape \(20, 32, 32\); "
                                         r"allowed: \[N, 28, 28\]"):
        rdata.load_fashion("test", folder)


@pytest.mark.parametrize("damage", ["labels", "size"])
def test_the_runner_checks_the_data_at_setup_only(tmp_path, monkeypatch, capsys, damage):
    folder = _fake_data(tmp_path / "data")
    if damage == "labels":
        rdata.write_idx(folder / rdata.FASHION_FILES[("test", "labels")], np.full(20, 10))
    else:
        rdata.write_idx(folder / rdata.FASHION_FILES[("train", "images")], np.zeros((40, 28, 27), np.uint8))
    monkeypatch.setenv("REUSE_CACHE_DIR", str(tmp_path / "cache"))
    assert batch.main(["--setup-only", "--data-dir", str(folder)]) == 2
    err = _one_line(capsys.readouterr().err)
    assert "label 10 at index 0" in err if damage == "labels" else "(40, 28, 27)" in err


@pytest.mark.parametrize("option", ["--data-dir", "--output"])
def test_a_path_that_is_not_utf8_is_refused_at_setup_only(fake_fashion_dir, tmp_path, monkeypatch, capsys,
                                                         option):
    bad = tmp_path / os.fsdecode(b"caf\xe9")  # Latin-1 bytes: no notebook parameter can carry them
    shutil.copytree(fake_fashion_dir, bad)
    monkeypatch.setenv("REUSE_CACHE_DIR", str(tmp_path / "cache"))
    assert batch.main(["--setup-only", option, str(bad)]) == 2
    err = _one_line(capsys.readouterr().err)
    assert option in err and "caf\\xe9" in err and "UTF-8" in err


# ----------------------------------------------------------------------------- the runner
def test_a_yaml_tag_in_set_is_refused(fake_notebooks, tmp_path, capsys):
    tag = f"reuse_threshold=!!python/object/apply:pathlib.Path.touch [{str(tmp_path / 'CODE_RAN')!r}]"
    assert batch.main(["--dry-run", "--set", tag]) == 2
    assert "is not valid YAML" in _one_line(capsys.readouterr().err)
    assert not (tmp_path / "CODE_RAN").exists()


@pytest.mark.parametrize("args, bad", [
    (["--set", "threads=0"], "threads=0, workers=1; both must be >= 1"),
    (["--set", "workers=0"], "workers=0; both must be >= 1"),
    (["--set", "precision=fp64"], "precision='fp64'; allowed: auto, bf16, fp32"),
    (["--set", "pairs=[no-such-pair]"], "pair='no-such-pair'; allowed: fashion-split"),
    (["--set", "architectures=[resnet50]"], "architectures=['resnet50']; allowed: unet, pspnet, plain"),
    (["--seeds", "0,0"], "seeds=[0, 0]; expected a non-empty list of distinct integers"),
])
def test_a_set_value_not_allowed_is_refused_before_a_kernel_starts(fake_fashion, tmp_path, monkeypatch,
                                                                   capsys, args, bad):
    import papermill

    monkeypatch.setenv("REUSE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(papermill, "execute_notebook", lambda *a, **k: pytest.fail("a kernel started"))
    assert batch.main(["--profile", "smoke", "--only", "01", *args, "--output", str(tmp_path / "out")]) == 2
    assert bad in _one_line(capsys.readouterr().err)
    assert os.listdir(tmp_path) == []  # nothing written: no output folder, no cache


@pytest.fixture
def fake_notebooks(tmp_path, monkeypatch, fake_fashion) -> Path:
    folder = tmp_path / "notebooks"
    folder.mkdir()
    _notebook(folder / "01_fake.ipynb", RECORD)
    _notebook(folder / "02_other.ipynb", RECORD.replace("01_fake", "02_other"))
    monkeypatch.setenv("REUSE_NOTEBOOKS_DIR", str(folder))
    monkeypatch.setenv("REUSE_CACHE_DIR", str(tmp_path / "cache"))
    return folder


def _plan(tmp_path: Path, *args: str) -> batch.NotebookPlan:
    return batch.make_plan(batch.parser().parse_args(["--profile", "smoke", "--output",
                                                        str(tmp_path / "out"), *args]))


def test_partial_notebooks_have_a_name_of_their_own_per_run(fake_notebooks, tmp_path, monkeypatch):
    import papermill

    outputs = []

    def execute_notebook(nb, out, **kwargs):
        outputs.append(Path(out).name)
        shutil.copy(nb, out)
    monkeypatch.setattr(papermill, "execute_notebook", execute_notebook)
    plan = _plan(tmp_path, "--only", "01")
    assert batch.execute(plan) == 0 and batch.execute(plan) == 0
    assert len(set(outputs)) == 2 and all(fnmatch.fnmatch(n, ".*.partial.ipynb") for n in outputs)
    assert outputs[0].startswith(".01_fake.")


def test_a_full_output_disk_while_papermill_writes_leaves_no_partial(fake_notebooks, tmp_path, monkeypatch,
                                                                   capsys):
    import papermill

    def execute_notebook(nb, out, **kwargs):
        if "02_" in nb:
            Path(out).write_text('{"cells": [')  # truncated
            _enospc()
        shutil.copy(nb, out)
    monkeypatch.setattr(papermill, "execute_notebook", execute_notebook)
    assert batch.execute(_plan(tmp_path)) == 2
    err = _one_line(capsys.readouterr().err)
    assert "no space left on device" in err and "02_other.ipynb was not written" in err
    assert "kept: 01_fake.ipynb" in err
    assert os.listdir(tmp_path / "out" / "notebooks") == ["01_fake.ipynb"]


def test_a_full_disk_inside_a_notebook_ends_in_one_line(fake_notebooks, tmp_path):
    _notebook(fake_notebooks / "03_full.ipynb", "import errno, os\n"
              "raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), 'figures/f.svg')")
    env = dict(os.environ, JUPYTER_PREFER_ENV_PATH="1")
    result = subprocess.run([sys.executable, "-m", "reuse", "run", "--profile", "smoke", "--only", "03",
                             "--output", str(tmp_path / "out")], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 2, result.stdout + result.stderr
    err = _one_line(result.stderr)  # the kernel's own log stays off the console (batch.KERNEL_QUIET)
    assert "no space left on device" in err and "03_full.ipynb was not written" in err
    assert os.listdir(tmp_path / "out" / "notebooks") == []


def test_ctrl_c_in_a_run_ends_in_one_line_naming_what_was_kept(fake_notebooks, tmp_path):
    _notebook(fake_notebooks / "03_slow.ipynb", f"open({str(tmp_path / 'STARTED')!r}, 'w').close()\n"
              "import time\ntime.sleep(120)")
    env = dict(os.environ, JUPYTER_PREFER_ENV_PATH="1")
    child = subprocess.Popen([sys.executable, "-m", "reuse", "run", "--profile", "smoke", "--only", "01",
                              "--only", "03", "--output", str(tmp_path / "out")], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
    code, err = _interrupt(child, tmp_path / "STARTED")
    assert code == 130, err
    ours = _one_line(err)  # nor the kernel's log, nor asyncio's about the abandoned cell
    assert "interrupted: 03_slow.ipynb was not written; kept: 01_fake.ipynb" in ours
    assert "run the same command again to resume" in ours
    assert os.listdir(tmp_path / "out" / "notebooks") == ["01_fake.ipynb"]  # no partial notebook


def test_a_figure_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from reuse.study.plots import save_figure

    fig = Figure()
    fig.subplots().plot([0, 1])
    old = save_figure(fig, "f", tmp_path)
    before = _listing(tmp_path)
    monkeypatch.setattr(files, "_write_all", _enospc)
    with pytest.raises(OSError):
        save_figure(fig, "f", tmp_path)
    assert _listing(tmp_path) == before and [p.name for p in old] == ["f.png", "f.svg"]


# ----------------------------------------------------------------------------- run_all.sh
def _run_all_env(notebooks: Path, tmp_path: Path, **extra) -> dict:
    """run_all.sh in the environment running these tests (an active one that imports reuse)."""
    return dict(os.environ, VIRTUAL_ENV=sys.prefix,
                PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                REUSE_NOTEBOOKS_DIR=str(notebooks), REUSE_CACHE_DIR=str(tmp_path / "cache"), **extra)


def test_set_up_waits_for_another_set_up(fake_notebooks, tmp_path):
    fd = files.open_nofollow(REPO / ".venv.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        child = subprocess.Popen([str(REPO / "run_all.sh"), "--setup-only"], stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
                                 env=_run_all_env(fake_notebooks, tmp_path))
        time.sleep(4)
        assert child.poll() is None, child.stdout.read()
    finally:
        os.close(fd)  # releases the lock
    out, _ = child.communicate(timeout=120)
    assert child.returncode == 0, out
    assert "Waiting for another set-up" in out and "Options checked" in out


def test_the_kernel_is_installed_only_when_missing(fake_notebooks, tmp_path):
    env = _run_all_env(fake_notebooks, tmp_path)
    first = subprocess.run([str(REPO / "run_all.sh"), "--setup-only"], capture_output=True, text=True,
                           cwd=tmp_path, env=env, timeout=120)
    assert first.returncode == 0, first.stdout + first.stderr
    spec = json.loads((Path(sys.prefix) / "share/jupyter/kernels/python3/kernel.json").read_text())
    assert spec["argv"][0] == sys.executable
    shadow = tmp_path / "shadow" / "ipykernel"  # an ipykernel whose install leaves a mark
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("")
    (shadow / "__main__.py").write_text(f"open({str(tmp_path / 'INSTALLED')!r}, 'w').close()\n")
    env["PYTHONPATH"] = os.pathsep.join([str(shadow.parent), env.get("PYTHONPATH", "")])
    second = subprocess.run([str(REPO / "run_all.sh"), "--setup-only"], capture_output=True, text=True,
                            cwd=tmp_path, env=env, timeout=120)
    assert second.returncode == 0, second.stdout + second.stderr
    assert not (tmp_path / "INSTALLED").exists()


def test_two_set_ups_at_once_both_succeed(fake_notebooks, tmp_path):
    children = [subprocess.Popen([str(REPO / "run_all.sh"), "--setup-only"], stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
                                 env=_run_all_env(fake_notebooks, tmp_path)) for _ in range(2)]
    for child in children:
        out, _ = child.communicate(timeout=120)
        assert child.returncode == 0, out
    assert not subprocess.run(["git", "status", "--porcelain", "--ignored", ".venv.lock"], cwd=REPO,
                              capture_output=True, text=True).stdout.startswith("??")


def test_python_m_reuse_never_imports_from_the_working_folder(tmp_path):
    """A planted torch/ in the working folder is not run by `python -m reuse analyze`."""
    planted = tmp_path / "torch"
    planted.mkdir()
    (planted / "__init__.py").write_text("raise SystemExit(97)  # planted\n")
    done = subprocess.run([sys.executable, "-m", "reuse", "analyze", "--help"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "usage" in done.stdout


def test_the_console_script_never_imports_from_the_working_folder(tmp_path):
    """An empty PYTHONPATH entry puts the working folder on the console script's sys.path: a
    planted pandas/ there is not run by `cnn-reuse analyze` (as with `python -m reuse`)."""
    planted = tmp_path / "pandas"
    planted.mkdir()
    (planted / "__init__.py").write_text("raise SystemExit(97)  # planted\n")
    torch.save(torch.nn.Conv2d(3, 4, 3).state_dict(), tmp_path / "a.pt")
    script = Path(sys.executable).with_name("cnn-reuse")  # the console script pip installed
    env = dict(os.environ, PYTHONPATH=f"{tmp_path / 'nowhere'}{os.pathsep}")
    done = subprocess.run([str(script), "analyze", "a.pt", "a.pt", "--out", "out"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "layers.csv").exists()
