"""Which layers of two checkpoints correspond: paired by name and shape, after renaming.

A source pretrained on 1,000 classes and a target with 5 share every layer but the head; a
target may add a block, or name a layer differently. :func:`pair_layers` pairs the layers
(state keys grouped by their module name) that have the same name, the same parameters and
the same shapes, and lists every other layer with the reason, so an analysis can go on with
what pairs instead of refusing the whole state. :func:`parse_map` reads the renames
(``OLD=NEW``: a source layer or block name, and the target's name for it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import pandas as pd
import torch

UNMATCHED_COLUMNS = ["source_layer", "target_layer", "reason"]
_MAP_FORM = "OLD=NEW (a layer or block name of the source = its name in the target, e.g. features.0=conv1)"


@dataclass
class Pairing:
    """The outcome of :func:`pair_layers`."""

    source: dict[str, torch.Tensor]  # the source's state, renamed: every entry, under the target's names
    keys: list[str]                  # state keys of the paired layers, in the target's order
    layers: list[str]                # paired layers (target names), in the target's order
    unmatched: pd.DataFrame          # one row per layer that does not pair: UNMATCHED_COLUMNS


def parse_map(entries: Iterable[tuple[str, str]]) -> dict[str, str]:
    """``{OLD: NEW}`` from ``(where, "OLD=NEW")`` pairs (``where`` names the entry's origin in
    errors, e.g. ``--map`` or ``--map-file F line 3``); ValueError naming a malformed entry or
    an OLD given twice."""
    out: dict[str, str] = {}
    for where, entry in entries:
        old, sep, new = (part.strip() for part in entry.partition("="))
        if not sep or not old or not new or "=" in new or " " in old + new:
            raise ValueError(f"{where} {entry.strip()!r}; allowed: {_MAP_FORM}")
        if out.get(old, new) != new:
            raise ValueError(f"{where} {entry.strip()!r}: {old!r} is already mapped to {out[old]!r}; "
                             "allowed: one NEW per OLD")
        out[old] = new
    return out


def _layer(key: str) -> str:
    """The layer (module name) a state key belongs to: ``layer1.0.conv1.weight`` -> ``layer1.0.conv1``."""
    return key.rpartition(".")[0] or key


def _rename(state: Mapping[str, torch.Tensor], renames: Mapping[str, str], target_keys: Iterable[str]
            ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``state`` with every key under a layer or block ``OLD`` moved under ``NEW`` (the longest
    OLD that applies), and each new key's original. ValueError when an OLD is not a layer of
    ``state``, a NEW is not one of the target, or two keys end up with one name."""
    target_keys = list(target_keys)
    for old, new in renames.items():
        for name, keys, side in ((old, state, "source"), (new, target_keys, "target")):
            if not any(_under(k, name) for k in keys):
                examples = sorted({_layer(k) for k in keys})[:4]
                raise ValueError(f"--map {old}={new}: {name!r} is not a layer or block of the {side}; "
                                 f"allowed: {_MAP_FORM}, with names such as {examples}")
    by_length = sorted(renames, key=len, reverse=True)
    out: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    for key, value in state.items():
        old = next((o for o in by_length if _under(key, o)), None)
        new_key = key if old is None else renames[old] + key[len(old):]
        if new_key in out:
            raise ValueError(f"--map: source keys {origin[new_key]!r} and {key!r} both become {new_key!r}; "
                             "allowed: renames that keep every name distinct")
        out[new_key], origin[new_key] = value, key
    return out, origin


def pair_layers(source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor],
                renames: Mapping[str, str] | None = None) -> Pairing:
    """Pair the layers of two states by name (after ``renames``: every key under a source layer or
    block OLD moves under NEW, the longest OLD first) and shape.

    A layer pairs when both states hold it with the same parameter names and shapes. Every
    other layer gets one row in ``unmatched``: ``only in source``, ``only in target``,
    ``shape differs (source S vs target T)`` (the first entry that differs) or ``parameters
    differ (...)``; ``source_layer`` is its name in the source before renaming.
    """
    renamed, origin = _rename(source, renames or {}, target)
    groups_s, groups_t = _groups(renamed), _groups(target)
    rows, layers = [], []
    for layer, keys_t in groups_t.items():
        keys_s = groups_s.get(layer)
        reason = "only in target" if keys_s is None else _difference(layer, keys_s, keys_t, renamed, target)
        if reason is None:
            layers.append(layer)
        else:
            rows.append({"source_layer": "" if keys_s is None else _layer(origin[keys_s[0]]),
                         "target_layer": layer, "reason": reason})
    rows += [{"source_layer": _layer(origin[keys[0]]), "target_layer": "", "reason": "only in source"}
             for layer, keys in groups_s.items() if layer not in groups_t]
    paired = set(layers)
    keys = [k for k in target if _layer(k) in paired]
    return Pairing(renamed, keys, layers, pd.DataFrame(rows, columns=UNMATCHED_COLUMNS))


def _under(key: str, name: str) -> bool:
    return key == name or key.startswith(name + ".")


def _groups(state: Mapping[str, torch.Tensor]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key in state:
        out.setdefault(_layer(key), []).append(key)
    return out


def _difference(layer: str, keys_s: list[str], keys_t: list[str], source: Mapping[str, torch.Tensor],
                target: Mapping[str, torch.Tensor]) -> str | None:
    if set(keys_s) != set(keys_t):
        names = [sorted(k[len(layer) + 1:] for k in keys) for keys in (keys_s, keys_t)]
        return f"parameters differ (source {names[0]} vs target {names[1]})"
    for k in keys_t:
        if source[k].shape != target[k].shape:
            return f"shape differs (source {tuple(source[k].shape)} vs target {tuple(target[k].shape)})"
    return None

