"""reuse.toolkit.pairing: layers paired by name and shape after renames, every other one with its reason."""

import pytest
import torch

from reuse.toolkit.pairing import UNMATCHED_COLUMNS, pair_layers, parse_map


def _state(**shapes) -> dict[str, torch.Tensor]:
    return {k.replace("__", "."): torch.zeros(s) for k, s in shapes.items()}


def test_a_new_head_an_extra_block_and_a_bias_are_unmatched_with_their_reason():
    source = _state(conv__weight=(4, 3, 3, 3), bn__weight=(4,), fc__weight=(10, 4), fc__bias=(10,),
                    old__weight=(4, 4, 1, 1), extra__weight=(4, 4, 3, 3))
    target = _state(conv__weight=(4, 3, 3, 3), bn__weight=(4,), fc__weight=(5, 4), fc__bias=(5,),
                    new__weight=(4, 4, 1, 1), extra__weight=(4, 4, 3, 3), extra__bias=(4,))
    p = pair_layers(source, target)
    assert p.layers == ["conv", "bn"] and p.keys == ["conv.weight", "bn.weight"]
    assert list(p.unmatched.columns) == UNMATCHED_COLUMNS
    assert p.unmatched.values.tolist() == [
        ["fc", "fc", "shape differs (source (10, 4) vs target (5, 4))"],
        ["", "new", "only in target"],
        ["extra", "extra", "parameters differ (source ['weight'] vs target ['bias', 'weight'])"],
        ["old", "", "only in source"]]
    assert p.source["conv.weight"] is source["conv.weight"]


def test_renames_move_a_block_and_the_longest_old_wins():
    source = _state(stem__0__weight=(4, 3, 3, 3), stem__1__weight=(4,), body__conv__weight=(4, 4, 3, 3))
    target = _state(conv1__weight=(4, 3, 3, 3), bn1__weight=(4,), body__conv__weight=(4, 4, 3, 3))
    p = pair_layers(source, target, {"stem": "body", "stem.0": "conv1", "stem.1": "bn1"})
    assert p.layers == ["conv1", "bn1", "body.conv"] and p.unmatched.empty
    with pytest.raises(ValueError, match="'nope' is not a layer or block of the source"):
        pair_layers(source, target, {"nope": "conv1"})
    with pytest.raises(ValueError, match="both become 'body.conv.weight'"):
        pair_layers(source, target, {"stem.0": "body.conv"})
    p = pair_layers(source, target, {"stem.0": "bn1"})  # a rename that does not fit: its source name is kept
    assert ["stem.0", "bn1", "shape differs (source (4, 3, 3, 3) vs target (4,))"] in p.unmatched.values.tolist()


@pytest.mark.parametrize("entry", ["conv1", "=conv1", "conv1=", "a=b=c", "a b=c"])
def test_a_malformed_map_entry_is_named(entry):
    with pytest.raises(ValueError, match=f"--map {entry!r}; allowed: OLD=NEW"):
        parse_map([("--map", entry)])


def test_parse_map_refuses_two_news_for_one_old_and_names_the_file_line():
    assert parse_map([("--map", " a = b "), ("--map", "a=b")]) == {"a": "b"}
    with pytest.raises(ValueError, match="map.txt line 2 'a=c': 'a' is already mapped to 'b'"):
        parse_map([("--map", "a=b"), ("--map-file map.txt line 2", "a=c")])
