"""reuse.study.publishing.report: record -> JSON/Markdown -> summary roundtrip, and the CLI."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from reuse.study.publishing.report import _adjusted, _records, family_adjusted, main, record, summarize


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
                          "ci_low": 0.6, "ci_high": 0.8, "detectable": 0.05, "n": 5}])


DATA = {"fashion_mnist": "/data/fm", "sha256": {"train-images": "0123456789abcdef"}, "digits": "sk 1"}


def test_summary_tables_every_verdict_at_each_profile(tmp_path):
    record("01_network", _headline(), {"profile": "quick", "seeds": [0]}, tmp_path / "quick",
           verdicts=_verdicts("holds"), settings={"precision": "fp32", "threads": 1, "data": DATA})
    record("01_network", _headline(), {"profile": "smoke", "seeds": [0]}, tmp_path / "smoke",
           verdicts=_verdicts("undecided").assign(n=2))
    data = json.loads((tmp_path / "quick" / "01_network.json").read_text())
    assert data["verdicts"][0]["verdict"] == "holds"
    assert data["provenance"]["settings"] == {"precision": "fp32", "threads": 1, "data": DATA}
    assert isinstance(data["provenance"]["intra_op_threads"], int)
    text = summarize(tmp_path)
    assert "| judgment | smoke | quick |" in text
    # no margin recorded: the raw verdict, said to be unadjusted
    assert ("| 01 J1 unet/seg/p | undecided (raw, unadjusted: no margin recorded) (0.7 [0.6, 0.8]; n = 2 seeds; "
            "detectable 0.05 (0.1108 at Holm's level)) | holds (raw, unadjusted: no margin recorded) (0.7 [0.6, 0.8]; "
            "n = 5 seeds; ") in text
    assert ("`quick`: 1 distinct claims (1 primary, after Holm; the rest exploratory): 1 hold, 0 refuted, "
            "0 undecided (1 of 1 decided). Apart, not claims: 0 controls, 0 duplicates (0 exact, 0 near), "
            "0 undecidable by design (a control failed).") in text
    assert (text.index("### Primary claims") < text.index("### Exploratory claims")
            < text.index("### Set apart, not claims") < text.index("### Tally"))
    assert "| 01 | J1 unet/seg/p | holds |" in text
    assert "## Profile `quick`" in text and "threads 1" in text
    assert "Fashion-MNIST from `/data/fm` (SHA-256 train-images 0123456789ab); digits from sk 1." in text


def _claim(judgment, estimate, half_width, **extra):
    """A verdict row on 5 seeds with margin 0 (so its p comes from its interval)."""
    return {"judgment": judgment, "verdict": "holds" if estimate - half_width > 0 else "undecided",
            "estimate": estimate, "ci_low": estimate - half_width, "ci_high": estimate + half_width,
            "detectable": 0.01, "n": 5, "margin": 0.0, "side": "above", **extra}


def test_summary_states_primary_claims_after_holm_and_sets_repeats_apart(tmp_path):
    """The overview's first table: a primary claim after Holm with its raw verdict beside and
    labelled; a duplicate names the claim it repeats and states its verdict after Holm (never its
    own raw 'refuted'); a row whose control failed is marked; every cell has its n; no empty
    clause where a number is missing."""
    h3b = _claim("H3b beats random", -0.05, 0.045)
    h3b["verdict"] = "refuted"
    verdicts = pd.DataFrame([
        _claim("H1 beats scratch", 0.04, 0.035), h3b, {**h3b, "judgment": "rmse_only - random (all rungs)"},
        {**_claim("J2 layer 1", 0.6, 0.05, controls="failed: negative control holds"), "verdict": "undecided"},
        {**_claim("strangers swap", 0.5, 0.1), "detectable": np.nan},
        {**_claim("E5 best", -0.4, 0.1), "ci_low": np.nan, "ci_high": np.nan},
        _claim("E5 debiased", 0.31, 0.02, alias_of="strangers swap"),
        {**_claim("selected set", 0.0, 0.0), "estimate": np.nan, "ci_low": np.nan, "ci_high": np.nan, "n": 0}])
    record("04_small", _headline(), {"profile": "quick"}, tmp_path / "quick", verdicts=verdicts)
    text = summarize(tmp_path)
    overview = text[:text.index("## Profile")]
    assert ("Primary claims (`reuse.study.claims.PRIMARY_CLAIMS`) show their verdict **after Holm's "
            "correction**") in overview
    assert ("| 04 H1 beats scratch | undecided after Holm (raw: holds; Holm p 0.068) (0.04 [0.005, 0.075]; "
            "n = 5 seeds; detectable 0.01 (0.05593 at Holm's level)) |") in overview
    assert ("| 04 rmse_only - random (all rungs) | exact duplicate of 04 H3b beats random: undecided after Holm "
            "(raw: refuted; Holm p") in overview
    assert "| 04 J2 layer 1 | undecidable by design (controls failed: negative control holds): undecided (" in overview
    assert "| 04 E5 debiased | near-duplicate of 04 strangers swap: holds (0.31 [0.29, 0.33]; n = 5 seeds" in overview
    assert "| 04 strangers swap | holds (0.5 [0.4, 0.6]; n = 5 seeds) |" in overview
    assert "| 04 E5 best | undecided (-0.4, no interval; n = 5 seeds; detectable 0.01) |" in overview
    assert "| 04 selected set | undecided (no estimate; n = 0 seeds; detectable 0.01) |" in overview
    assert "detectable )" not in text and "[, ]" not in text and "nan" not in overview
    for row in overview.splitlines():
        if row.startswith("| 04 "):
            assert "n = " in row and "refuted" not in row.split("(raw:")[0], row
    assert ("5 distinct claims (2 primary, after Holm; the rest exploratory): 1 hold, 0 refuted, 4 undecided "
            "(1 of 5 decided). Apart, not claims: 0 controls, 2 duplicates (1 exact, 1 near), 1 undecidable by "
            "design (a control failed).") in text
    assert ("| notebook | judgment | verdict | estimate | ci_low | ci_high | n | margin | p | p_holm | verdict_holm | "
            "detectable | detectable_holm | aliases | holm |") in text
    assert "| 04 | H3b beats random | refuted |" in text and "| rmse_only - random (all rungs) | Holm over 2" in text


def test_record_rejects_bad_verdicts(tmp_path):
    with pytest.raises(ValueError, match="verdicts \\['does not hold'\\]"):
        record("x", _headline(), {}, tmp_path, verdicts=_verdicts("does not hold"))
    with pytest.raises(ValueError, match="lacks columns \\['detectable'\\]"):
        record("x", _headline(), {}, tmp_path, verdicts=_verdicts().drop(columns="detectable"))


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
