"""`reuse analyze` run in-process on tiny torchvision checkpoints: outputs and error exits."""

import copy
import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision
from PIL import Image

from reuse.__main__ import main

MODEL = ["--model", "torchvision.models:resnet18", "--model-args", '{"num_classes": 3}']


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """source (DataParallel keys under "state_dict"), target and twin of one resnet18 init."""
    d = tmp_path_factory.mktemp("ckpts")
    torch.manual_seed(0)
    target = torchvision.models.resnet18(weights=None, num_classes=3)
    models = {"target": target}
    for name, scale in (("source", 0.5), ("twin", 0.05)):
        models[name] = copy.deepcopy(target)
        with torch.no_grad():
            for p in models[name].parameters():
                p.add_(scale * p.std() * torch.randn_like(p) if p.numel() > 1 else 0)
    torch.save({"epoch": 9, "state_dict": torch.nn.DataParallel(models["source"]).state_dict()}, d / "source.pt")
    torch.save(target.state_dict(), d / "target.pt")
    torch.save(models["twin"].state_dict(), d / "twin.pt")
    (d / "corrupt.pt").write_bytes(b"\x00garbage")
    torch.save(torchvision.models.resnet34(num_classes=3).state_dict(), d / "resnet34.pt")
    return d, {k: m.eval() for k, m in models.items()}


def _numpy_rmse(a: torch.nn.Module, b: torch.nn.Module, layer: str) -> float:
    wa, wb = (m.get_submodule(layer).weight.detach().double().numpy() for m in (a, b))
    return float(np.sqrt(np.mean((wa - wb) ** 2)))


def test_kernels_only_with_twin(ckpts, tmp_path, capsys):
    d, models = ckpts
    rc = main(["analyze", str(d / "source.pt"), str(d / "target.pt"), "--twin", str(d / "twin.pt"),
               *MODEL, "--out", str(tmp_path)])
    assert rc == 0, capsys.readouterr().err
    layers = pd.read_csv(tmp_path / "layers.csv")
    assert list(layers.columns) == ["layer", "index", "n_weights", "rmse", "rel_rmse", "cosine_distance",
                                    "floor_rmse", "rmse_over_floor"]
    assert len(layers) == 21 and layers.layer[0] == "conv1" and layers.layer[20] == "fc"  # every kind
    for row in layers.itertuples():
        rmse = _numpy_rmse(models["source"], models["target"], row.layer)
        floor = _numpy_rmse(models["twin"], models["target"], row.layer)
        assert (row.rmse, row.floor_rmse) == pytest.approx((rmse, floor), rel=1e-9)
        assert row.rmse_over_floor == pytest.approx(rmse / floor, rel=1e-9)
    assert not (tmp_path / "swaps.csv").exists()
    html = (tmp_path / "report.html").read_text()
    assert "data:image/png;base64," in html and "<table" in html and "src=\"layers.png" not in html
    meta = json.loads((tmp_path / "analyze.json").read_text())
    assert meta["params"]["twin"] == str(d / "twin.pt") and "commit" in meta
    assert (tmp_path / "report.md").read_text().startswith("# reuse analyze")


def test_score_function_runs_the_scan_and_the_joint_check(ckpts, tmp_path, monkeypatch, capsys):
    d, models = ckpts
    source = models["source"].state_dict()
    (tmp_path / "myscore.py").write_text(
        "import torch\n"
        "SOURCE = {}\n"
        "def score(model):  # 1.0, but 0.1 once conv1 and layer1.0.conv1 are both from the source\n"
        "    s = model.state_dict()\n"
        "    both = all(torch.equal(s[n + '.weight'], SOURCE[n + '.weight']) for n in ('conv1', 'layer1.0.conv1'))\n"
        "    return 0.1 if both else 1.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import myscore
    myscore.SOURCE.update(source)
    out = tmp_path / "out"
    rc = main(["analyze", str(d / "source.pt"), str(d / "target.pt"), *MODEL, "--score", "myscore:score",
               "--sets", "single,all", "--out", str(out), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    swaps = pd.read_csv(out / "swaps.csv")
    assert list(swaps.set) == ["single"] * 21 + ["all"] and swaps.score.tolist() == [1.0] * 21 + [0.1]
    assert swaps.layer[20] == "fc"  # the Linear head is swapped too
    selection = pd.read_csv(out / "selection.csv")
    assert selection.reusable.all() and (selection.basis == "point estimate (1 seed)").all()
    joint = pd.read_csv(out / "joint.csv")
    assert joint.passes.tolist() == [False, True] and joint.dropped[1] == "conv1"
    printed = capsys.readouterr().out
    assert "BACKED OFF: dropped conv1; 20 layers kept" in printed
    report = (out / "report.md").read_text()
    assert "BACKED OFF" in report and "point estimate" in report
    assert json.loads((out / "analyze.json").read_text())["summary"]["backed_off"] is True


def test_image_folder_scores_accuracy(ckpts, tmp_path, capsys):
    d, models = ckpts
    gen = np.random.default_rng(0)
    for label in ("a", "b", "c"):
        (tmp_path / "imgs" / label).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(gen.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(tmp_path / "imgs" / label / f"{i}.png")
    out = tmp_path / "out"
    rc = main(["analyze", str(d / "source.pt"), str(d / "target.pt"), *MODEL, "--data", str(tmp_path / "imgs"),
               "--n-images", "6", "--bn-images", "3", "--sets", "all", "--out", str(out), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    swaps = pd.read_csv(out / "swaps.csv")
    assert len(swaps) == 1 and swaps.score[0] in {k / 6 for k in range(7)}  # accuracy on 6 images
    assert "6 test images" in (out / "report.md").read_text()
    layers = pd.read_csv(out / "layers.csv")
    assert layers[["cka", "cka_debiased"]].notna().all().all() and layers.cka.between(0, 1 + 1e-9).all()
    cross = pd.read_csv(out / "cka_cross.csv")  # every source layer against every target layer
    assert len(cross) == len(layers) ** 2 and list(cross.columns[:2]) == ["source_layer", "target_layer"]
    assert {"cka_cross.csv", "cka_cross.png"} <= set(json.loads((out / "analyze.json").read_text())["summary"]["files"])
    assert (out / "cka_cross.png").stat().st_size > 0
    # the target against itself: every layer's outputs are identical, CKA 1
    same = tmp_path / "same"
    rc = main(["analyze", str(d / "target.pt"), str(d / "target.pt"), *MODEL, "--data", str(tmp_path / "imgs"),
               "--n-images", "6", "--sets", "all", "--out", str(same), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    assert pd.read_csv(same / "layers.csv").cka.to_numpy() == pytest.approx(1.0, abs=1e-9)


def test_align_undoes_a_channel_permutation(ckpts, tmp_path, capsys):
    from reuse.toolkit import alignment

    d, models = ckpts
    spec = alignment.permutation_spec(models["target"])
    gen = torch.Generator().manual_seed(0)
    perms = {g: torch.randperm(n, generator=gen) for g, n in spec.sizes.items()}
    torch.save(alignment.apply_permutation(spec, perms, models["target"].state_dict()), tmp_path / "perm.pt")
    rc = main(["analyze", str(tmp_path / "perm.pt"), str(d / "target.pt"), *MODEL, "--align",
               "--out", str(tmp_path / "out")])
    assert rc == 0, capsys.readouterr().err
    layers = pd.read_csv(tmp_path / "out" / "layers.csv")
    assert layers.permuted[:20].all() and not layers.permuted[20] and (layers.rmse > 0).any()  # fc: classes
    assert layers.aligned_rmse.max() < 1e-9


@pytest.mark.parametrize("args, message", [
    (["missing.pt", "target.pt"], "source: no such file: .*missing.pt"),
    (["corrupt.pt", "target.pt"], "source: cannot read .*corrupt.pt"),
    (["resnet34.pt", "target.pt"], "architectures differ"),
    (["source.pt", "target.pt", "--model", "torchvision.models:resnet34"], "does not match the checkpoints"),
    (["source.pt", "target.pt", "--model", "torchvision.models:no_such_net"], "has no 'no_such_net'"),
    (["source.pt", "target.pt", "--model", "no_such_module_xyz:f"], "cannot import module 'no_such_module_xyz'"),
    (["source.pt", "target.pt", "--model", "resnet18"], "allowed: MODULE:NAME"),
    (["source.pt", "target.pt", *MODEL[:2], "--model-args", "{num_classes: 3}"], "not valid JSON"),
    (["source.pt", "target.pt", "--score", "json:dumps"], "need --model"),
    (["source.pt", "target.pt", *MODEL, "--sets", "single,middle"], "unknown \\['middle'\\]"),
    (["source.pt", "target.pt", "--task", "ranking"], "invalid choice: 'ranking'"),
    (["source.pt", "target.pt", "--align"], "--align needs --model"),
    (["source.pt", "target.pt", "--kinds", "conv2d,conv4d"], "kinds=\\['conv2d', 'conv4d'\\]; allowed: a non-empty list"),
])
def test_bad_input_exits_2_with_a_message(ckpts, tmp_path, capsys, args, message):
    d, _ = ckpts
    args = [str(d / a) if a.endswith(".pt") else a for a in args]
    assert main(["analyze", *args, "--out", str(tmp_path)]) == 2
    assert re.search(message, capsys.readouterr().err)


def test_safetensors_pair_gives_the_torch_save_results(ckpts, tmp_path, capsys):
    """A .safetensors pair is read as its torch.save twin (conv layers only with --kinds); a
    corrupt one exits 2 with one line naming the file."""
    from safetensors.torch import save_file

    d, models = ckpts
    for name in ("source", "target"):
        save_file({k: v.contiguous() for k, v in models[name].state_dict().items()}, tmp_path / f"{name}.safetensors")
    runs = {"pt": [str(d / "source.pt"), str(d / "target.pt")],
            "st": [str(tmp_path / "source.safetensors"), str(tmp_path / "target.safetensors")]}
    for name, pair in runs.items():  # --model puts the .safetensors layers in forward order
        assert main(["analyze", *pair, *MODEL, "--kinds", "conv2d", "--out", str(tmp_path / name)]) == 0
    pt, st = (pd.read_csv(tmp_path / name / "layers.csv") for name in runs)
    pd.testing.assert_frame_equal(pt, st)
    assert len(st) == 20 and "fc" not in set(st.layer)
    (tmp_path / "bad.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    capsys.readouterr()
    assert main(["analyze", str(tmp_path / "bad.safetensors"), runs["st"][1], "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(r"source: cannot read .*bad\.safetensors as a safetensors file", err)
