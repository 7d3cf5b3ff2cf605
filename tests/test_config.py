from pathlib import Path

import pytest

from reuse.study.config import PROFILES, Grid, check_choices, get_profile


def test_profiles_and_overrides():
    assert set(PROFILES) == {"smoke", "quick", "paper"}
    assert get_profile("quick", [4, 5]).seeds == (4, 5)
    assert len(get_profile("quick").seeds) >= 5 and len(get_profile("paper").seeds) >= 10
    assert get_profile("paper").steps >= get_profile("quick").steps  # paper trains at least as long
    assert get_profile("quick").precision == "fp32" and get_profile("quick").threads == 1
    assert get_profile("quick", threads=None).threads == 1  # None keeps the profile's value
    assert get_profile("quick", workers=3).workers == 3
    assert get_profile("quick", [7]).order_twins == 1  # never more twins than seeds
    with pytest.raises(ValueError, match="profile='huge'"):
        get_profile("huge")
    with pytest.raises(ValueError, match="seeds="):
        get_profile("quick", [-1])
    with pytest.raises(ValueError, match="seeds="):
        get_profile("quick", [1, 1])
    with pytest.raises(ValueError, match="unknown profile fields \\['bogus'\\]"):
        get_profile("quick", bogus=1)


def test_widths_feed_every_head_alike():
    prof = get_profile("paper")
    assert prof.width("unet") == 2 * prof.width("pspnet")
    # quick narrows UNet for time, never below the width at which every seed converged
    assert get_profile("quick").width("unet") >= 12
    with pytest.raises(ValueError, match="architecture='resnet'"):
        prof.width("resnet")
    assert prof.as_dict()["grid"]["architectures"] == list(prof.grid.architectures) or \
        tuple(prof.as_dict()["grid"]["architectures"]) == prof.grid.architectures


def test_bad_profile_fields():
    with pytest.raises(ValueError, match="image_size=18"):
        get_profile("quick", image_size=18)
    with pytest.raises(ValueError, match="order_twins=4 > 2 seeds"):
        get_profile("quick", [0, 1], order_twins=4)
    assert isinstance(get_profile("smoke").grid, Grid)


def test_check_choices():
    assert check_choices("tasks", "autoencoder", ["autoencoder"]) == ["autoencoder"]
    with pytest.raises(ValueError, match="tasks=\\['x'\\]; allowed: a, b"):
        check_choices("tasks", ["x"], ["a", "b"])


def _number(text: str) -> int:
    return int(text.replace(",", ""))


def test_the_protocol_scale_table_matches_the_profiles():
    """docs/protocol.md section 7 restates each profile's sizes; a number changed in one
    place only (as quick's test images once were) fails here."""
    text = (Path(__file__).parents[1] / "docs" / "protocol.md").read_text()
    rows = {cells[0].strip("` "): [c.strip() for c in cells[1:6]]
            for line in text.splitlines() if line.startswith("| `")
            for cells in [line.strip("|").split("|")] if cells[0].strip("` ") in PROFILES}
    assert set(rows) == set(PROFILES)
    for name, (px, data, widths, steps, seeds) in rows.items():
        p = PROFILES[name]
        assert _number(px.removesuffix(" px")) == p.image_size, name
        assert [_number(n) for n in data.split("/")] == [p.n_source, p.n_target, p.n_test], name
        assert [_number(n) for n in widths.split(",")] == [p.width("unet"), p.width("pspnet")], name
        assert (_number(steps), _number(seeds)) == (p.steps, len(p.seeds)), name
