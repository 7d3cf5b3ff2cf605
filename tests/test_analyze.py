"""`cnn-reuse analyze` run in-process on tiny torchvision checkpoints: outputs and error exits."""

import copy
import html
import json
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision
from PIL import Image

from reuse.__main__ import main
from reuse.toolkit import analyze, analyze_report
from reuse.toolkit.metrics import PRIMARY_METRIC

MODEL = ["--model", "torchvision.models:resnet18", "--model-args", '{"num_classes": 3}']

SCORE = """import torch
SOURCE = {}
def score(model):  # 1.0, but 0.1 once conv1 and layer1.0.conv1 are both from the source
    s = model.state_dict()
    both = all(torch.equal(s[n + '.weight'], SOURCE[n + '.weight']) for n in ('conv1', 'layer1.0.conv1'))
    return 0.1 if both else 1.0
"""


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
    torch.save(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(4, 4, 3)).state_dict(),
               d / "other.pt")  # no layer in common with resnet18
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
    report = (tmp_path / "report.md").read_text()
    assert report.startswith("# cnn-reuse analyze") and "--model torchvision.models:resnet18 not built" in report
    assert "**Next**: run again with `--data FOLDER`" in report  # --model was given: not asked for again
    _explained(tmp_path, "siblings")


def test_the_study_findings_come_from_the_study(ckpts, tmp_path, capsys):
    """`cnn-reuse analyze` cites the study's findings (reuse.study.publishing.analyze); the toolkit's command on
    its own knows none and leaves the section out."""
    from reuse.study.publishing.analyze import FINDINGS

    d, _ = ckpts
    pair = [str(d / "source.pt"), str(d / "target.pt"), "--kinds", "conv2d"]
    assert main(["analyze", *pair, "--out", str(tmp_path / "study")]) == 0, capsys.readouterr().err
    assert analyze.main([*pair, "--out", str(tmp_path / "toolkit")]) == 0, capsys.readouterr().err
    study, toolkit = ((tmp_path / name / "report.md").read_text() for name in ("study", "toolkit"))
    assert "## What the study found, for siblings" in study and FINDINGS["siblings"][1] in study
    assert "What the study found" not in toolkit and "J1" not in toolkit and "H3a" not in toolkit
    assert study.replace(study[study.index("## What the study found"):study.index("## Evidence")], "") == toolkit


def test_score_function_runs_the_scan_and_the_joint_check(ckpts, tmp_path, monkeypatch, capsys):
    d, models = ckpts
    source = models["source"].state_dict()
    (tmp_path / "myscore.py").write_text(SCORE)
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
    assert "BACKED OFF: dropped conv1; 20 kept" in printed
    report = (out / "report.md").read_text()
    assert "BACKED OFF" in report and "point estimate" in report
    assert json.loads((out / "analyze.json").read_text())["summary"]["backed_off"] is True


def test_the_answer_names_the_prefix_to_freeze_and_the_parameters(ckpts, tmp_path, monkeypatch, capsys):
    d, models = ckpts
    (tmp_path / "myscore2.py").write_text(SCORE)
    monkeypatch.syspath_prepend(str(tmp_path))
    import myscore2
    myscore2.SOURCE.update(models["source"].state_dict())
    out = tmp_path / "out"
    rc = main(["analyze", str(d / "source.pt"), str(d / "target.pt"), *MODEL, "--score", "myscore2:score",
               "--sets", "single,prefix", "--out", str(out), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    plan = json.loads((out / "freeze.json").read_text())
    # prefix 1 (conv1) keeps the score, prefix 2 (conv1 + layer1.0.conv1) does not
    assert plan["prefix"]["k"] == 1 and plan["prefix"]["layers"] == ["conv1"]
    assert plan["prefix"]["parameters"] == ["conv1.weight"]
    assert "conv1" not in plan["reuse"]["layers"] and len(plan["reuse"]["layers"]) == 20
    model = copy.deepcopy(models["target"])
    named = dict(model.named_parameters())
    for name in plan["reuse"]["parameters"]:  # ready for requires_grad_(False)
        named[name].requires_grad_(False)
    assert {n for n, p in named.items() if not p.requires_grad} == {*plan["reuse"]["parameters"]}
    assert "fc.bias" in plan["reuse"]["parameters"] and "bn1.weight" not in plan["reuse"]["parameters"]
    assert "Freeze the first layer (conv1; swapped relative 1): 1 parameter tensor(s); reuse 20 layer(s) " \
           "(21 parameter tensors)" in capsys.readouterr().out
    assert "freeze.json" in json.loads((out / "analyze.json").read_text())["summary"]["files"]


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
    _explained(out, "siblings")
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
    _explained(tmp_path / "out", "siblings")


@pytest.mark.parametrize("args, message", [
    (["missing.pt", "target.pt"], "source: no such file: .*missing.pt"),
    (["corrupt.pt", "target.pt"], "source: cannot read .*corrupt.pt"),
    (["other.pt", "target.pt"], "architectures differ: only in target: conv1.weight.*and 121 more"),
    (["source.pt", "target.pt", "--model", "torchvision.models:resnet34", "--align"], "does not match the target checkpoint"),
    (["source.pt", "target.pt", "--model", "torchvision.models:resnet18", "--align"],
     "--model torchvision.models:resnet18 does not match the target checkpoint: .*shape of fc.weight: target "
     "checkpoint \\(3, 512\\) vs --model torchvision.models:resnet18 \\(1000, 512\\).*"
     "try --model-args '\\{\"num_classes\": 3\\}'"),
    (["source.pt", "target.pt", "--model", "torchvision.models:no_such_net", "--align"], "has no 'no_such_net'"),
    (["source.pt", "target.pt", "--model", "no_such_module_xyz:f", "--align"], "cannot import module 'no_such_module_xyz'"),
    (["source.pt", "target.pt", "--model", "resnet18"], "allowed: MODULE:NAME"),
    (["source.pt", "target.pt", *MODEL[:2], "--model-args", "{num_classes: 3}"], "not valid JSON"),
    (["source.pt", "target.pt", "--score", "json:dumps"], "need --model"),
    (["source.pt", "target.pt", *MODEL, "--sets", "single,middle"], "unknown \\['middle'\\]"),
    (["source.pt", "target.pt", "--task", "ranking"], "--task 'ranking'; allowed: classification"),
    (["source.pt", "target.pt", "--relation", "cousins"], "invalid choice: 'cousins'"),
    (["source.pt", "target.pt", "--map", "conv1"], "--map 'conv1'; allowed: OLD=NEW"),
    (["source.pt", "target.pt", "--map", "conv1=a=b"], "--map 'conv1=a=b'; allowed: OLD=NEW"),
    (["source.pt", "target.pt", "--map", "stem=conv1"], "--map stem=conv1: 'stem' is not a layer or block of the source"),
    (["source.pt", "target.pt", "--map", "conv1=stem"], "--map conv1=stem: 'stem' is not a layer or block of the target"),
    (["source.pt", "target.pt", "--map", "conv1=fc", "--map", "conv1=bn1"], "'conv1' is already mapped"),
    (["source.pt", "target.pt", "--map-file", "missing.txt"], "--map-file .*missing.txt: cannot read it"),
    (["source.pt", "target.pt", "--align"], "--align needs --model"),
    (["source.pt", "target.pt", "--kinds", "conv2d,conv4d"], "kinds=\\['conv2d', 'conv4d'\\]; allowed: a non-empty list"),
])
def test_bad_input_exits_2_with_a_message(ckpts, tmp_path, capsys, args, message):
    d, _ = ckpts
    args = [str(d / a) if a.endswith((".pt", ".txt")) else a for a in args]
    assert main(["analyze", *args, "--out", str(tmp_path)]) == 2
    assert re.search(message, capsys.readouterr().err)


def _explained(out, relation: str) -> None:
    """Every column of every table written has its line in the report's glossary."""
    glossary = analyze_report.columns(relation)
    for name in analyze_report.TABLES:
        if (out / f"{name}.csv").exists():
            missing = set(pd.read_csv(out / f"{name}.csv").columns) - set(glossary[name])
            assert not missing, f"{name}.csv: columns without a line in the report: {missing}"


@pytest.fixture(scope="module")
def heads(tmp_path_factory):
    """A resnet18 source with 10 classes, fine-tuned into a 5-class target (a new head), and a
    score module that knows the source's kernels."""
    d = tmp_path_factory.mktemp("heads")
    torch.manual_seed(1)
    source = torchvision.models.resnet18(weights=None, num_classes=10)
    target = torchvision.models.resnet18(weights=None, num_classes=5)
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("fc.")}
    target.load_state_dict(state, strict=False)
    with torch.no_grad():
        for name, p in target.named_parameters():
            if not name.startswith("fc."):
                p.add_(0.2 * p.std() * torch.randn_like(p) if p.numel() > 1 else 0)
    torch.save(source.state_dict(), d / "imagenet10.pt")
    torch.save(target.state_dict(), d / "flowers5.pt")
    (d / "headscore.py").write_text(SCORE)
    return d, source.eval(), target.eval()


def _heads_scored(heads, monkeypatch, out, *extra: str) -> int:
    """``cnn-reuse analyze`` of the heads pair with the score module, the 5-class model and ``extra``."""
    d, source, _ = heads
    monkeypatch.syspath_prepend(str(d))
    import headscore
    headscore.SOURCE.update(source.state_dict())
    return main(["analyze", str(d / "imagenet10.pt"), str(d / "flowers5.pt"), "--model",
                 "torchvision.models:resnet18", "--model-args", '{"num_classes": 5}', "--score",
                 "headscore:score", "--out", str(out), "--no-progress", *extra])


def test_a_new_head_is_listed_unmatched_and_the_rest_analysed(heads, tmp_path, monkeypatch, capsys):
    _, source, target = heads
    out = tmp_path / "out"
    rc = _heads_scored(heads, monkeypatch, out, "--relation", "fine-tuned", "--sets", "single,all")
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "1 layers did not pair and are not analysed (fc); see unmatched.csv" in err
    unmatched = pd.read_csv(out / "unmatched.csv", keep_default_na=False)
    assert unmatched.to_dict("records") == [
        {"source_layer": "fc", "target_layer": "fc", "reason": "shape differs (source (10, 512) vs target (5, 512))"}]
    layers = pd.read_csv(out / "layers.csv")
    assert len(layers) == 20 and "fc" not in set(layers.layer)
    for row in layers.itertuples():
        assert row.rmse == pytest.approx(_numpy_rmse(source, target, row.layer), rel=1e-9)
    swaps = pd.read_csv(out / "swaps.csv")
    assert list(swaps.set) == ["single"] * 20 + ["all"] and swaps.n_layers.iloc[-1] == 20
    meta = json.loads((out / "analyze.json").read_text())
    assert meta["params"]["relation"] == "fine-tuned" and meta["summary"]["relation"] == "fine-tuned"
    assert meta["summary"]["source_name"] == "imagenet10.pt" and meta["summary"]["unmatched"][0]["target_layer"] == "fc"
    assert len(meta["summary"]["layers_to_reuse"]) == 19
    report = (out / "report.md").read_text()
    answer = report[report.index("## Answer"):report.index("## What the study found")]
    assert "**19 of 20 paired layers could have stayed frozen**" in answer
    assert "BACKED OFF: dropped conv1" in answer and "One pair of checkpoints" in answer
    assert "**Unmatched layers** (not analysed; `unmatched.csv`): fc (shape differs" in answer
    assert "in notebook 07 (E7" in report  # the fine-tuned relation as the study measured it
    assert "how far fine-tuning moved this layer" in report
    assert "imagenet10.pt \u2192 flowers5.pt" in report.splitlines()[0]
    _explained(out, "fine-tuned")


def _renamed(state: dict, old: str, new: str) -> dict:
    return {(new + k[len(old):] if k.startswith(old + ".") else k): v for k, v in state.items()}


def test_map_pairs_renamed_layers(ckpts, tmp_path, capsys):
    d, models = ckpts
    torch.save(_renamed(models["source"].state_dict(), "layer1", "stage1"), tmp_path / "renamed.pt")
    args = ["analyze", str(tmp_path / "renamed.pt"), str(d / "target.pt"), *MODEL, "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "plain")]) == 0, capsys.readouterr().err
    unmatched = pd.read_csv(tmp_path / "plain" / "unmatched.csv", keep_default_na=False)
    assert set(unmatched.reason) == {"only in source", "only in target"} and len(unmatched) == 2 * 8  # 2 blocks of conv1, bn1, conv2, bn2
    assert "stage1.0.conv1" in set(unmatched.source_layer) and "layer1.0.conv1" in set(unmatched.target_layer)
    assert len(pd.read_csv(tmp_path / "plain" / "layers.csv")) == 21 - 4  # 20 convs and the fc head
    (tmp_path / "map.txt").write_text("# the source calls its first stage stage1\nstage1 = layer1  # a block\n\n")
    for how in (["--map", "stage1=layer1"], ["--map-file", str(tmp_path / "map.txt")]):
        out = tmp_path / how[0].strip("-")
        assert main([*args, *how, "--name-source", "my source", "--out", str(out)]) == 0, capsys.readouterr().err
        assert pd.read_csv(out / "unmatched.csv").empty
        layers = pd.read_csv(out / "layers.csv")
        assert len(layers) == 21
        for row in layers.itertuples():
            assert row.rmse == pytest.approx(_numpy_rmse(models["source"], models["target"], row.layer), rel=1e-9)
        assert "my source \u2192 target.pt" in (out / "report.md").read_text().splitlines()[0]


# After the load event (images decoded): what a person sees, as JSON in a <pre>.
_PROBE = """<script>
window.addEventListener("load", () => {
  const imgs = [...document.images];
  const answer = document.querySelector("#answer");
  const pre = document.createElement("pre");
  pre.id = "reuse-probe";
  pre.textContent = JSON.stringify({
    title: document.querySelector("h1").textContent,
    headings: [...document.querySelectorAll("h2")].map(h => h.textContent),
    answer: answer ? answer.innerText : "",
    images: imgs.length,
    loaded: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
    explained: [...document.querySelectorAll("dl.columns dd")].filter(dd => dd.textContent.trim()).length,
    columns: [...document.querySelectorAll("table:not(#answer table) th")].length,
  });
  document.body.appendChild(pre);
});
</script>"""


def test_report_in_chromium_opens_with_the_answer(heads, tmp_path, monkeypatch, capsys):
    from _chromium import dump_dom

    out = tmp_path / "out"
    rc = _heads_scored(heads, monkeypatch, out, "--name-source", "ImageNet-10", "--name-target", "Flowers-5",
                       "--sets", "single,prefix,all")
    assert rc == 0, capsys.readouterr().err
    page = out / "probe.html"
    page.write_text((out / "report.html").read_text() + _PROBE)
    dom = dump_dom(page.as_uri())
    found = re.search(r'<pre id="reuse-probe">(.*?)</pre>', dom, re.S)
    assert found, "the probe did not run (no load event?)"
    seen = json.loads(html.unescape(found.group(1)))
    assert seen["title"] == "cnn-reuse analyze: ImageNet-10 \u2192 Flowers-5 (siblings)"
    assert seen["headings"][:3] == ["Answer", "What the study found, for siblings", "Evidence"]
    assert "19 of 20 paired layers can be reused" in seen["answer"]
    assert "Joint check" in seen["answer"] and "BACKED OFF" in seen["answer"]
    assert "Unmatched layers" in seen["answer"] and "fc (shape differs" in seen["answer"]
    assert "Warning: One pair of checkpoints" in seen["answer"] and "Next:" in seen["answer"]
    assert seen["images"] == 2 and seen["loaded"] == 2  # the two figures, none broken
    assert seen["explained"] == seen["columns"] > 0  # a line for every column of the evidence


def test_help_lists_the_tasks_without_importing_torch():
    text = analyze.parser().format_help()
    assert all(task in text for task in PRIMARY_METRIC)
    code = "import sys; from reuse.toolkit import analyze; analyze.parser(); print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'pandas', 'numpy')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"

def test_safetensors_pair_gives_the_torch_save_results(ckpts, tmp_path, capsys):
    """A .safetensors pair is read as its torch.save twin (conv layers only with --kinds); a
    corrupt one exits 2 with one line naming the file."""
    from safetensors.torch import save_file

    d, models = ckpts
    for name in ("source", "target"):
        save_file({k: v.contiguous() for k, v in models[name].state_dict().items()}, tmp_path / f"{name}.safetensors")
    runs = {"pt": [str(d / "source.pt"), str(d / "target.pt")],
            "st": [str(tmp_path / "source.safetensors"), str(tmp_path / "target.safetensors")]}
    for name, pair in runs.items():  # kernels only: --model not built, the file's order
        assert main(["analyze", *pair, *MODEL, "--kinds", "conv2d", "--out", str(tmp_path / name)]) == 0
    pt, st = (pd.read_csv(tmp_path / name / "layers.csv") for name in runs)
    pd.testing.assert_frame_equal(pt, st)  # resnet18's conv layers sort by name in forward order
    assert len(st) == 20 and "fc" not in set(st.layer)
    assert "layers in the .safetensors file's order" in (tmp_path / "st" / "report.md").read_text()
    # every kind: by name fc would come second; the built model (--align) puts it last, as torch.save has it
    for name, pair in runs.items():
        assert main(["analyze", *pair, *MODEL, "--align", "--out", str(tmp_path / f"{name}-all")]) == 0
    pt, st = (pd.read_csv(tmp_path / f"{name}-all" / "layers.csv") for name in runs)
    pd.testing.assert_frame_equal(pt, st)
    assert st.layer.iloc[-1] == "fc" and len(st) == 21
    (tmp_path / "bad.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    capsys.readouterr()
    assert main(["analyze", str(tmp_path / "bad.safetensors"), runs["st"][1], "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(r"source: cannot read .*bad\.safetensors as a safetensors file", err)
