"""Headline results of each notebook, stored with their provenance, and one summary.

Entry points:

- ``record(name, headline, params, results_dir, notes, verdicts)`` at the end of a notebook
  writes ``results_dir/<name>.json`` (data) and ``results_dir/<name>.md`` (to read);
- ``summarize(results_dir)`` joins every recorded notebook into one Markdown text; when
  ``results_dir`` holds one folder per profile (``results/quick``, ``results/paper``),
  it opens with every verdict tabled side by side per profile (primary claims after Holm,
  the raw verdict beside and labelled; each with its number of seeds). Each profile then
  lists its claims (:mod:`reuse.study.claims`): the declared primary family with raw and
  Holm-adjusted verdicts and detectable effects at both levels first, then the exploratory
  claims, then the duplicates and undecidable-by-design rows set apart, then a tally of
  distinct claims with the controls, duplicates (exact / near) and undecidable rows counted apart;
- ``python -m reuse.study.publishing.report --results DIR --out FILE`` writes that summary
  (run_all.sh calls it after the notebooks).
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reuse.toolkit import files, markdown
from reuse.toolkit.provenance import provenance

from .. import claims

# Marks our files, so other JSON a notebook leaves in results_dir is not summarised.
FORMAT = "reuse.study.publishing.report/1"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


VERDICT_COLUMNS = ("judgment", "verdict", "estimate", "ci_low", "ci_high", "detectable")
PROFILE_ORDER = ("smoke", "quick", "paper")


def record(name: str, headline: pd.DataFrame, params: dict[str, Any],
           results_dir: str | Path, notes: list[str] | None = None,
           verdicts: pd.DataFrame | None = None, settings: dict | None = None) -> Path:
    """Store a notebook's headline table with its parameters and provenance.

    ``name`` is a file stem (letters, digits, ``_.-``), e.g. the notebook's name;
    ``headline`` one row per headline number, every factor a column (named index
    levels, as a groupby leaves them, become columns; an unnamed index is dropped);
    ``notes`` Markdown lines (a verdict text's bullets), written as they are;
    ``verdicts`` one row per judgment with at least :data:`VERDICT_COLUMNS` (the summary
    tables them across profiles); ``settings`` what fixed the rounding (a runner's
    ``settings()``: device, precision, threads), stored with the provenance beside the
    intra-op thread count in use. Writes ``<name>.json`` and ``<name>.md`` in
    ``results_dir`` (created if missing), each atomically, and returns the JSON path.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"name must be a file stem of letters, digits and _.- ; got {name!r}")
    if not isinstance(headline, pd.DataFrame):
        raise TypeError(f"headline must be a pandas DataFrame, got {type(headline).__name__}")
    if any(level is not None for level in headline.index.names):
        headline = headline.reset_index()
    verdicts = pd.DataFrame(columns=VERDICT_COLUMNS) if verdicts is None else verdicts
    missing = [c for c in VERDICT_COLUMNS if c not in verdicts.columns]
    if missing:
        raise ValueError(f"verdicts lacks columns {missing}; needs {', '.join(VERDICT_COLUMNS)}")
    bad = sorted(set(verdicts.verdict) - {"holds", "refuted", "undecided"})
    if bad:
        raise ValueError(f"verdicts {bad}; allowed: holds, refuted, undecided")
    data = {
        "format": FORMAT,
        "name": name,
        "columns": [str(c) for c in headline.columns],
        # to_json turns numpy scalars, NaN and timestamps into plain JSON values
        "headline": json.loads(headline.to_json(orient="records", date_format="iso")),
        "params": dict(params),
        "notes": list(notes or []),
        "verdicts": json.loads(verdicts.to_json(orient="records")),
        "provenance": {**provenance(), "settings": dict(settings or {}),
                       "intra_op_threads": _threads()},
    }
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{name}.json"
    files.write_atomic(path, json.dumps(data, indent=2, default=_jsonable) + "\n")
    files.write_atomic(results_dir / f"{name}.md", _section(data, level=1))
    return path


def summarize(results_dir: str | Path) -> str:
    """One Markdown document with every recorded notebook in ``results_dir``, by name.

    When ``results_dir`` holds one folder per profile, the document opens with a table of
    every verdict at each profile that has run, and how many verdicts are decided. Raises
    ``FileNotFoundError`` when nothing was recorded there and ``ValueError`` naming the
    file when a record cannot be read.
    """
    results_dir = Path(results_dir)
    groups = {p: _records(results_dir / p) for p in PROFILE_ORDER if (results_dir / p).is_dir()}
    groups = {p: r for p, r in groups.items() if r}
    if not groups:
        groups = {None: _records(results_dir)}
    if not any(groups.values()):
        raise FileNotFoundError(f"no results recorded in {results_dir} (no *.json written by "
                                "reuse.study.publishing.report.record): run the notebooks first, "
                                "e.g. ./run_all.sh")
    adjusted = {p: _adjusted(records) for p, records in groups.items()}
    parts = ["# Results summary\n"]
    if None not in groups:
        parts += _verdict_overview(adjusted)
    for profile, records in groups.items():
        where = results_dir / profile if profile else results_dir
        if profile:
            parts.append(f"## Profile `{profile}`\n")
        parts.append(f"{len(records)} notebook(s) recorded in `{where.name}`.\n")
        parts += _claims_section(adjusted[profile], level=3 if profile else 2)
        parts += [_section(data, level=3 if profile else 2) for data in records]
    return "\n".join(parts)


def family_adjusted(name: str, verdicts: pd.DataFrame, results_dir: str | Path) -> pd.DataFrame:
    """Every verdict row of ``results_dir``'s records, with ``verdicts`` (notebook ``name``'s,
    not yet recorded) in place of ``name``'s own record, adjusted as the summary adjusts
    them (:func:`reuse.study.claims.adjust`): a notebook that closes the primary family can
    state its claims after Holm, as ``SUMMARY.md`` will, before it records them. The rows
    pass through JSON as :func:`record` stores them, so the p-values are the summary's."""
    others = [data for data in _records(Path(results_dir)) if data["name"] != name]
    mine = {"name": name, "verdicts": json.loads(verdicts.to_json(orient="records"))}
    return _adjusted([*others, mine])


def _records(folder: Path) -> list[dict[str, Any]]:
    return [data for data in map(_load, sorted(folder.glob("*.json"))) if data]


def _adjusted(records: list[dict]) -> pd.DataFrame:
    """A profile's verdict rows, one per judgment, with the notebook's number and the
    claim classes and Holm columns of :func:`reuse.study.claims.adjust`."""
    rows = [{"notebook": data["name"][:2], **v} for data in records for v in data.get("verdicts", [])]
    return claims.adjust(pd.DataFrame(rows, columns=None if rows else ["notebook", *VERDICT_COLUMNS]))


def _claims_section(adjusted: pd.DataFrame, level: int) -> list[str]:
    """Primary family (raw and Holm), exploratory claims, the rows set apart, and the tally
    of distinct claims."""
    if adjusted.empty:
        return []
    rows = adjusted.to_dict("records")
    head = "#" * level
    primary = [r for r in rows if r["family"] == "primary"]
    alpha = f"{claims.ALPHA:.2g}"
    lines = [f"{head} Primary claims\n",
             ("Declared before the results (`reuse.study.claims.PRIMARY_CLAIMS`); Holm's step-down "
              f"correction over the family (family-wise error {alpha}): a claim whose adjusted p is not "
              f"below {alpha} is undecided. `detectable` is the smallest effect decided with 80% power at "
              f"the raw level, `detectable_holm` at Holm's strictest level ({alpha} / {len(primary)}); "
              "`n` counts seeds.\n"),
             _markdown_table(["notebook", "judgment", "verdict", "estimate", "ci_low", "ci_high", "n",
                              "margin", "p", "p_holm", "verdict_holm", "detectable", "detectable_holm",
                              "aliases", "holm"], primary), "",
             f"{head} Exploratory claims\n",
             "*Exploratory*: raw verdicts, no correction for multiplicity; `n` counts seeds.\n",
             _markdown_table(["notebook", "judgment", "verdict", "estimate", "ci_low", "ci_high", "n",
                              "detectable", "aliases"],
                             [r for r in rows if r["family"] == "exploratory"]), "",
             f"{head} Set apart, not claims\n",
             ("*Duplicates* repeat a claim above: exactly (the same estimate, CI and n to "
              f"{claims.DIGITS} significant digits) or nearly (declared by the notebook: two criteria whose "
              f"|Spearman rho| over the same points exceeds {claims.NEAR}); each shows the verdict of the "
              "claim it repeats, after Holm where that one is primary. *Undecidable by design*: exploratory "
              "rows whose controls failed, so the rule cannot tell reusable from not reusable there.\n"),
             _markdown_table(["notebook", "judgment", "family", "reason", "verdict", "verdict_holm", "n"],
                             [r for r in rows if r["family"] in ("duplicate", "undecidable")]), "",
             f"{head} Tally\n", _tally_line(claims.tally(adjusted)) + "\n"]
    return lines


def _tally_line(t: dict) -> str:
    """One profile's tally of distinct claims and of the rows set apart."""
    return (f"{t['claims']} distinct claims ({t['primary']} primary, after Holm; the rest exploratory): "
            f"{t['holds']} hold, {t['refuted']} refuted, {t['undecided']} undecided "
            f"({t['holds'] + t['refuted']} of {t['claims']} decided). Apart, not claims: "
            f"{t['control']} controls, {t['duplicate']} duplicates ({t['exact']} exact, {t['near']} near), {t['undecidable']} "
            "undecidable by design (a control failed).")


def _numbers_text(row: dict) -> str:
    """'0.89 [0.77, 1.01]; n = 5 seeds; detectable 0.16' with what is known of a verdict row:
    no empty brackets or clauses where a number is missing."""
    parts = []
    if _finite(row.get("estimate")):
        ci = (f" [{markdown.cell(row['ci_low'])}, {markdown.cell(row['ci_high'])}]"
              if _finite(row.get("ci_low")) and _finite(row.get("ci_high")) else ", no interval")
        parts.append(f"{markdown.cell(row['estimate'])}{ci}")
    else:
        parts.append("no estimate")
    n = row.get("n")
    parts.append(f"n = {int(n)} seed{'s' * (int(n) != 1)}" if _finite(n) else "n not recorded")
    if _finite(row.get("detectable")):
        holm = row.get("detectable_holm")
        parts.append(f"detectable {markdown.cell(row['detectable'])}"
                     + (f" ({markdown.cell(holm)} at Holm's level)" if _finite(holm) else ""))
    controls = row.get("controls")
    if isinstance(controls, str) and controls not in ("n/a", "passed") and row.get("family") != "undecidable":
        parts.append(f"controls {controls}")
    return "; ".join(parts)


def _stated(row: dict) -> str:
    """A verdict as the summary states it: a primary claim after Holm, its raw verdict beside
    and labelled; any other row its raw verdict."""
    if row["family"] != "primary":
        return row["verdict"]
    if not _finite(row.get("p_holm")):
        return f"{row['verdict']} (raw, {row['holm']})"
    return f"{row['verdict_holm']} after Holm (raw: {row['verdict']}; Holm p {row['p_holm']:.2g})"


def _overview_cell(row: dict, kept: dict | None) -> str:
    """One verdict of the overview table, with its numbers and number of seeds; a duplicate
    names the claim it repeats and states that claim's verdict."""
    numbers = _numbers_text(row)
    if row["family"] == "duplicate" and kept is not None:
        kind = row["reason"].split(" of ")[0]  # exact duplicate / near-duplicate
        return f"{kind} of {kept['notebook']} {kept['judgment']}: {_stated(kept)} ({numbers})"
    if row["family"] == "undecidable":
        return f"{row['reason']}: {row['verdict']} ({numbers})"
    return f"{_stated(row)} ({numbers})"


def _verdict_overview(adjusted: dict[str, pd.DataFrame]) -> list[str]:
    """Every verdict by profile: one row per judgment, a column per profile; then each
    profile's tally of distinct claims."""
    table: dict[str, dict[str, str]] = {}
    for profile, frame in adjusted.items():
        rows = frame.to_dict("records")
        first = {}
        for r in rows:
            first.setdefault(r["judgment"], r)
        for r in rows:
            kept = first.get(r["alias_of"]) if isinstance(r.get("alias_of"), str) else None
            table.setdefault(f"{r['notebook']} {r['judgment']}", {})[profile] = _overview_cell(r, kept)
    profiles = list(adjusted)
    rows = [{"judgment": k, **{p: cells.get(p, "not run") for p in profiles}} for k, cells in table.items()]
    lines = ["## Verdicts at each profile\n",
             ("Each cell: the verdict, estimate [95% CI], the number of seeds n and the smallest effect the "
              "design can detect. Primary claims (`reuse.study.claims.PRIMARY_CLAIMS`) show their verdict "
              "**after Holm's correction** over the primary family, with the raw verdict beside it, "
              "labelled *raw*, and their detectable effect at Holm's level too; duplicates name the claim "
              "they repeat and state its verdict; rows undecidable by design (a control failed) are "
              "marked. The notebooks state each rule, margin and control.\n"),
             _markdown_table(["judgment", *profiles], rows), ""]
    lines += [f"- `{p}`: {_tally_line(claims.tally(frame))}" for p, frame in adjusted.items()]
    return lines + [""]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reuse.study.publishing.report",
                                     description="Summarise recorded notebook results.")
    parser.add_argument("--results", required=True, type=Path,
                        help="folder with the <name>.json files written by record()")
    parser.add_argument("--out", type=Path,
                        help="Markdown file to write (default: RESULTS/SUMMARY.md)")
    args = parser.parse_args(argv)
    try:
        text = summarize(args.results)
    except (FileNotFoundError, ValueError) as err:
        print(f"reuse.study.publishing.report: {err}", file=sys.stderr)
        return 1
    out = args.out or args.results / "SUMMARY.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    files.write_atomic(out, text)
    return 0


def _load(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read result file {path}: {err}") from err
    return data if isinstance(data, dict) and data.get("format") == FORMAT else None


def _section(data: dict[str, Any], level: int) -> str:
    params, prov = data["params"], data["provenance"]
    commit = prov["commit"] + (" (dirty)" if prov.get("dirty") else "")
    versions = ", ".join(f"{k} {v}" for k, v in prov["packages"].items())
    settings = prov.get("settings", {})
    compute = ", ".join(f"{k} {v}" for k, v in settings.items() if k not in ("device", "data"))
    lines = [f"{'#' * level} {data['name']}", "",
             _markdown_table(data["columns"], data["headline"]), ""]
    if data["notes"]:
        lines += data["notes"] + [""]
    lines += [f"Profile `{params.get('profile', 'n/a')}`, seeds `{params.get('seeds', 'n/a')}`, "
              f"device {prov['device']}" + (f" ({compute})" if compute else "")
              + f", intra-op threads while scoring {prov.get('intra_op_threads', 'n/a')}, "
              f"commit `{commit}`, {prov['timestamp_utc']}; Python {prov['python']}, {versions}."
              + _data_line(settings.get("data")), ""]
    return "\n".join(lines)


def _data_line(data: dict | None) -> str:
    """The data a run read, short: its folder and each file's SHA-256 prefix (the JSON has them whole)."""
    if not data:
        return ""
    hashes = ", ".join(f"{name} {sha[:12]}" for name, sha in data["sha256"].items())
    return f" Data: Fashion-MNIST from `{data['fashion_mnist']}` (SHA-256 {hashes}); digits from {data['digits']}."


def _threads() -> int | None:
    try:
        import torch
        return torch.get_num_threads()
    except ImportError:
        return None


def _markdown_table(columns: list[str], rows: list[dict[str, Any]]) -> str:
    return markdown.table(columns, ([row.get(col) for col in columns] for row in rows))


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and math.isfinite(value)


def _jsonable(value: Any) -> Any:
    """Fallback for json.dumps: numpy values, paths and other objects in params."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    return str(value)


if __name__ == "__main__":
    sys.exit(main())
