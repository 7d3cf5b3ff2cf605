"""reuse.study.report: record -> JSON/Markdown -> summary roundtrip, and the CLI."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from reuse.study.report import _adjusted, _markdown_table, _records, family_adjusted, main, record, summarize


def _headline() -> pd.DataFrame:
    return pd.DataFrame({"architecture": ["unet", "pspnet"],
                         "reuse_score": [np.float32(0.8125), 0.3125],
                         "n_seeds": np.array([3, 3], dtype=np.int64),
                         "verdict": ["reusable", "not reusable"]})


def test_record_writes_json_and_markdown(tmp_path):
    params = {"profile": "quick", "seeds": np.array([0, 1, 2]), "data_dir": tmp_path}
    path = record("01_network", _headline(), params, tmp_path / "results", notes=["n1"])
    assert path == tmp_path / "results" / "01_network.json"
    data = json.loads(path.read_text())
    assert data["headline"][0] == {"architecture": "unet", "reuse_score": 0.8125, "n_seeds": 3,
                                   "verdict": "reusable"}
    assert data["params"] == {"profile": "quick", "seeds": [0, 1, 2], "data_dir": str(tmp_path)}
    assert data["notes"] == ["n1"] and data["provenance"]["commit"]
    markdown = (tmp_path / "results" / "01_network.md").read_text()
    assert "| unet | 0.8125 | 3 | reusable |" in markdown
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == [
        "01_network.json", "01_network.md"]  # no temporary files left


def test_summarize_roundtrip_sorted_by_name(tmp_path):
    record("02_layers", pd.DataFrame({"layer": ["enc1.conv"], "rmse": [0.0421]}),
           {"profile": "smoke", "seeds": [0, 1]}, tmp_path)
    record("01_network", _headline(), {"profile": "smoke", "seeds": [0, 1]}, tmp_path,
           notes=["- BN statistics re-estimated"])
    (tmp_path / "other.json").write_text('{"not": "ours"}')  # ignored
    text = summarize(tmp_path)
    assert text.index("## 01_network") < text.index("## 02_layers")
    for expected in ["| pspnet | 0.3125 | 3 | not reusable |", "| enc1.conv | 0.0421 |",
                     "- BN statistics re-estimated", "Profile `smoke`", "seeds `[0, 1]`",
                     "2 notebook(s)"]:
        assert expected in text
    assert "other" not in text


def test_named_index_levels_become_columns(tmp_path):
    frame = pd.DataFrame({"arch": ["unet", "unet", "pspnet"], "score": [0.5, 0.75, 0.25]})
    data = json.loads(record("x", frame.groupby("arch").mean(), {}, tmp_path).read_text())
    assert data["columns"] == ["arch", "score"]
    assert data["headline"] == [{"arch": "pspnet", "score": 0.25}, {"arch": "unet", "score": 0.625}]
    filtered = json.loads(record("y", frame[frame.score > 0.3], {}, tmp_path).read_text())
    assert filtered["columns"] == ["arch", "score"]


def test_markdown_table_escapes_and_formats():
    rows = [{"a|b": "p|q", "x": 1 / 3}, {"a|b": None, "x": float("nan")}]
    table = _markdown_table(["a|b", "x"], rows)
    assert table.splitlines() == ["| a\\|b | x |", "| --- | --- |", "| p\\|q | 0.3333 |", "|  |  |"]


@pytest.mark.parametrize("name", ["", "../up", "a b", "x/y"])
def test_record_rejects_bad_names(name, tmp_path):
    with pytest.raises(ValueError, match="name"):
        record(name, _headline(), {}, tmp_path)


def test_record_rejects_non_frames(tmp_path):
    with pytest.raises(TypeError, match="DataFrame"):
        record("x", [{"a": 1}], {}, tmp_path)


def test_cli_writes_summary(tmp_path):
    record("01_network", _headline(), {"profile": "quick"}, tmp_path)
    out = tmp_path / "SUMMARY.md"
    assert main(["--results", str(tmp_path), "--out", str(out)]) == 0
    assert "| unet | 0.8125 | 3 | reusable |" in out.read_text()


def test_cli_without_results_exits_1(tmp_path, capsys):
    assert main(["--results", str(tmp_path / "missing")]) == 1
    assert "no results recorded" in capsys.readouterr().err


def _verdicts(verdict="holds"):
    return pd.DataFrame([{"judgment": "J1 unet/seg/p", "verdict": verdict, "estimate": 0.7,
                          "ci_low": 0.6, "ci_high": 0.8, "detectable": 0.05}])


DATA = {"fashion_mnist": "/data/fm", "sha256": {"train-images": "0123456789abcdef"}, "digits": "sk 1"}


def test_summary_tables_every_verdict_at_each_profile(tmp_path):
    record("01_network", _headline(), {"profile": "quick", "seeds": [0]}, tmp_path / "quick",
           verdicts=_verdicts("holds"), settings={"precision": "fp32", "threads": 1, "data": DATA})
    record("01_network", _headline(), {"profile": "smoke", "seeds": [0]}, tmp_path / "smoke",
           verdicts=_verdicts("undecided"))
    data = json.loads((tmp_path / "quick" / "01_network.json").read_text())
    assert data["verdicts"][0]["verdict"] == "holds"
    assert data["provenance"]["settings"] == {"precision": "fp32", "threads": 1, "data": DATA}
    assert isinstance(data["provenance"]["intra_op_threads"], int)
    text = summarize(tmp_path)
    assert "| judgment | smoke | quick |" in text
    assert "| 01 J1 unet/seg/p | undecided (0.7 [0.6, 0.8]; detectable 0.05) | holds (0.7" in text
    assert ("`quick`: 1 hold, 0 refuted, 0 undecided (1 of 1 distinct claims decided, primary ones after Holm); "
            "apart: 0 controls, 0 duplicates, 0 undecidable by design.") in text
    assert text.index("### Primary claims") < text.index("### Exploratory claims") < text.index("### Tally")
    assert "| 01 | J1 unet/seg/p | holds |" in text  # no margin recorded: the raw verdict, unadjusted
    assert "## Profile `quick`" in text and "threads 1" in text
    assert "Fashion-MNIST from `/data/fm` (SHA-256 train-images 0123456789ab); digits from sk 1." in text


def test_record_rejects_bad_verdicts(tmp_path):
    with pytest.raises(ValueError, match="verdicts \\['does not hold'\\]"):
        record("x", _headline(), {}, tmp_path, verdicts=_verdicts("does not hold"))
    with pytest.raises(ValueError, match="lacks columns \\['detectable'\\]"):
        record("x", _headline(), {}, tmp_path, verdicts=_verdicts().drop(columns="detectable"))


def _claim(judgment, estimate, half_width):
    """A verdict row on 5 seeds with margin 0 (so its p comes from its interval)."""
    return {"judgment": judgment, "verdict": "holds" if estimate - half_width > 0 else "undecided",
            "estimate": estimate, "ci_low": estimate - half_width, "ci_high": estimate + half_width,
            "detectable": 0.01, "n": 5, "margin": 0.0, "side": "above"}


def test_family_adjusted_is_what_the_summary_will_say(tmp_path):
    """A notebook that closes the primary family states its claims after Holm over every
    record, its own stale record replaced by its new verdicts, with the summary's numbers."""
    record("01_network", _headline(), {}, tmp_path, verdicts=pd.DataFrame(
        [_claim("J1 a", 0.5, 0.1), _claim("J1 b", 0.05, 0.04)]))
    record("04_small", _headline(), {}, tmp_path, verdicts=pd.DataFrame([_claim("H1 stale", 0.5, 0.1)]))
    record("05_other", _headline(), {}, tmp_path, verdicts=pd.DataFrame([_claim("E5 x", 0.5, 0.1)]))
    new = pd.DataFrame([_claim("H1 new", 0.04, 0.035), _claim("exploratory y", 0.5, 0.1)])
    family = family_adjusted("04_small", new, tmp_path).set_index("judgment")
    assert "H1 stale" not in family.index and {"H1 new", "E5 x", "J1 a"} <= set(family.index)
    assert family.holm["H1 new"] == "Holm over 3 primary claims" and family.notebook["H1 new"] == "04"
    assert family.verdict["H1 new"] == "holds" and family.verdict_holm["H1 new"] == "undecided"
    record("04_small", _headline(), {}, tmp_path, verdicts=new)
    summary = _adjusted(_records(tmp_path)).set_index("judgment")
    pd.testing.assert_series_equal(family.p_holm.sort_index(), summary.p_holm.sort_index())
    alone = family_adjusted("04_small", new, tmp_path / "nothing").set_index("judgment")
    assert alone.holm["H1 new"] == "Holm over 1 primary claims" and alone.verdict_holm["H1 new"] == "holds"
