"""The report of ``cnn-reuse analyze``: the answer first (which layers, how sure, what next), then
the evidence, every column explained; written as ``report.md`` (figures beside it as PNG),
a self-contained ``report.html`` and ``analyze.json``, with the CSV tables.

The report is built once as a list of blocks (:func:`blocks`) and rendered twice
(:func:`markdown`, :func:`html_page`), so the two files cannot say different things.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from pathlib import Path
from typing import Any

import pandas as pd

from .analyze_inputs import Inputs
from .analyze_plots import plot_cka_cross, plot_layers, plot_swaps
from .markdown import table as markdown_table
from .provenance import provenance
from .relations import RELATIONS

TABLES = ("layers", "swaps", "selection", "joint", "unmatched")
_SHOWN = 8  # names listed in a sentence before "and N more"


def columns(relation: str) -> dict[str, dict[str, str]]:
    """One line per column of each table, the distances worded for ``relation``."""
    moved = RELATIONS[relation]["distance"]
    scored = {"score": "the score of the target with these layers swapped in (higher is better)",
              "target_score": "the score of the target as it is",
              "relative": "score / target_score",
              "reuse_score": "(score - chance) / (target_score - chance): 1 = nothing lost, 0 = chance "
                             "(empty without a chance level)",
              "n_layers": "how many layers are swapped in"}
    return {
        "layers": {
            "layer": "layer (module name in the target), forward order",
            "index": "position among the analysed (paired) layers",
            "n_weights": "number of weights in the layer's kernel",
            "rmse": f"root mean square difference of the kernels, source vs target: {moved}",
            "rel_rmse": "rmse / root mean square of the target's kernel: the same, free of the layer's scale",
            "cosine_distance": "1 - cosine of the angle between the flattened kernels (0 = same direction)",
            "floor_rmse": "rmse between the twin and the target: what retraining alone moves this layer",
            "rmse_over_floor": "rmse / floor_rmse: below 1, the layer differs less than two trainings of the target",
            "permuted": "whether weight matching may permute this layer's output channels",
            "aligned_rmse": "rmse after permuting the source's channels to match the target (weight matching)",
            "aligned_rel_rmse": "rel_rmse after weight matching",
            "cka": "linear CKA of the layer's outputs in source and target on the test images (1 = same up to rotation and scale)",
            "cka_debiased": "the same, debiased for a small number of images",
        },
        "swaps": {
            "set": "which swap: single (one layer), prefix (first k), suffix (last k), all",
            "k": "the number of layers of a prefix or suffix (1 for single)",
            "layer": "the layer swapped, or first..last of a range",
            "layers": "every layer swapped, ';'-joined",
            **scored,
            "delta": "score - target_score",
        },
        "selection": {
            "layer": "layer judged by its single swap",
            "estimate": "its value swapped alone (mean over seeds)",
            "ci_low": "lower end of the 95% confidence interval over seeds (empty with one pair)",
            "ci_high": "upper end of that interval",
            "n": "seeds (checkpoint pairs) behind the estimate",
            "reusable": "passes alone: the interval's lower end (one pair: the estimate) exceeds the margin",
            "basis": "what the verdict rests on: an interval over seeds, or one point estimate",
        },
        "joint": {
            "step": "0: every layer passing alone, swapped together; each later step drops one",
            "dropped": "the layer dropped at this step (the one whose removal scores best)",
            "layers": "the layers swapped together at this step, ';'-joined",
            **scored,
            "passes": "whether this set keeps the value above the margin",
        },
        "unmatched": {
            "source_layer": "its name in the source (empty: only in the target)",
            "target_layer": "its name in the target (empty: only in the source)",
            "reason": "why it did not pair: only in source, only in target, shape differs, parameters differ",
        },
    }


def names(args) -> tuple[str, str]:
    """The readable names of source and target: ``--name-source``/``--name-target``, else the
    checkpoint file names."""
    return (args.name_source or Path(args.source).name, args.name_target or Path(args.target).name)


def _listed(items: list[str]) -> str:
    more = f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""
    return ", ".join(items[:_SHOWN]) + more


def _answer(args, inp: Inputs, res: dict[str, Any]) -> list[tuple]:
    rel = RELATIONS[args.relation]
    n = len(res["layers"])
    out: list[tuple] = []
    if "selection" in res:
        value, kept, chosen = res["value"], res["kept"], res["chosen"]
        out.append(("p", f"**{len(kept)} of {n} paired layers {rel['verdict']}**: {rel['reuse']} "
                         f"({value} with the layer swapped alone > margin {args.margin}, and swapped together)."))
        sel = res["selection"].set_index("layer")
        rows = [{"layer": name, f"{value} alone": sel.estimate[name],
                 "interval": (f"[{sel.ci_low[name]:.3g}, {sel.ci_high[name]:.3g}]" if sel.n[name] > 1
                              else "none (one pair)"),
                 "verdict": rel["short"] if name in kept else "dropped by the joint check"}
                for name in chosen]
        if rows:
            out.append(("table", pd.DataFrame(rows), None))
        if (sel.n < 2).any():
            out.append(("warn", "One pair of checkpoints: each verdict is the point estimate of one swap, "
                                "without a confidence interval. For intervals, scan several target seeds "
                                "(`selection.swap_verdicts` over a list of `scan.swap_scan` frames, README)."))
        joint = res["joint"]
        if joint is None:
            out.append(("p", "**Joint check**: not run, no layer passes alone."))
        elif len(joint) > 1:
            out.append(("p", f"**Joint check**: swapped together the {len(chosen)} layers fail ({value} "
                             f"{joint[value].iloc[0]:.3g}), so the selection BACKED OFF: dropped "
                             f"{_listed(list(joint.dropped[1:]))}; {len(kept)} kept ({value} "
                             f"{joint[value].iloc[-1]:.3g})."))
        else:
            out.append(("p", f"**Joint check**: the {len(chosen)} layers swapped together keep {value} "
                             f"{joint[value].iloc[0]:.3g} > {args.margin}: passed."))
        failed = [name for name in sel.index if name not in chosen]
        if failed:
            out.append(("p", f"Not passing alone: {_listed(failed)}."))
        out.append(("p", _freeze_line(res["freeze"])))
    else:
        why = ("no single-layer swap was scored (`--sets` without `single`)" if "swaps" in res else
               "no data was given (`--data`, `--dataset` or `--score`), so no layer was swapped")
        out.append(("p", f"**No verdict**: {why}. The kernel distances below describe the pair; they "
                         "do not decide reuse."))
        order = res["layers"].dropna(subset=["rel_rmse"]).sort_values("rel_rmse").layer.tolist()
        k = min(3, len(order) // 2)
        if k:
            out.append(("p", f"Relative RMSE ({rel['distance']}): smallest in {', '.join(order[:k])}; "
                             f"largest in {', '.join(order[-k:])}."))
        if "rmse_over_floor" in res["layers"]:
            within = res["layers"].layer[res["layers"].rmse_over_floor <= 1].tolist()
            out.append(("p", f"Within the twin's retraining noise (rmse_over_floor <= 1): "
                             f"{_listed(within) if within else 'none'}."))
    unmatched = inp.unmatched
    if len(unmatched):
        listed = [f"{r.target_layer or r.source_layer} ({r.reason})" for r in unmatched.itertuples()]
        out.append(("p", f"**Unmatched layers** (not analysed; `unmatched.csv`): {_listed(listed)}."))
    else:
        out.append(("p", "**Unmatched layers**: none, every layer paired by name and shape."))
    if "selection" in res and res["kept"]:
        out.append(("p", f"**Next**: {rel['next']}."))
    elif "selection" not in res:
        out.append(("p", "**Next**: run again with " + ("" if args.model else "`--model` and ")
                         + "`--data FOLDER` (or `--dataset`, `--score`) to swap each layer and get a verdict."))
    return out


def _freeze_line(plan: dict[str, Any]) -> str:
    """The answer as an action: what to freeze, and where the parameter names are."""
    pre, value = plan["prefix"], plan["value"]
    if pre is None:
        first = "No prefix was scanned (`--sets` without `prefix`)"
    elif pre["k"] == 0:
        first = f"**Freeze**: no prefix can stay frozen (the first layer alone drops {value} to the margin or below)"
    else:
        span = pre["layers"][0] + (f"..{pre['layers'][-1]}" if pre["k"] > 1 else "")
        first = (f"**Freeze** the first {pre['k']} layers ({span}; swapped together {value} "
                 if pre["k"] > 1 else f"**Freeze** the first layer ({span}; swapped {value} "
                 f"{pre[value]:.3g}): {len(pre['parameters'])} parameter tensor(s)")
    return (f"{first}; reuse {len(plan['reuse']['layers'])} layer(s) ({len(plan['reuse']['parameters'])} "
            "parameter tensors). Their names are in `freeze.json`, ready for `requires_grad_(False)`.")


def answer_lines(args, inp: Inputs, res: dict[str, Any]) -> list[str]:
    """The answer's sentences as plain text (what the command prints)."""
    return [("Warning: " if kind == "warn" else "") + rest[0].replace("**", "").replace("`", "")
            for kind, *rest in _answer(args, inp, res) if kind in ("p", "warn")]


def blocks(args, inp: Inputs, res: dict[str, Any], tables: dict[str, pd.DataFrame],
           findings: list[str] | None = None) -> list[tuple]:
    """The report: ``(kind, ...)`` blocks, kinds ``h2``, ``h3``, ``p``, ``warn``, ``ul``
    (a list of lines), ``img`` (a figure's name), ``table`` (a frame, and its column lines or None).
    ``findings``: what a study found for this relation (a heading line, then one line per
    finding), a section after the answer; None: none."""
    rel = RELATIONS[args.relation]
    source, target = names(args)
    glossary = columns(args.relation)
    out: list[tuple] = [("h2", "Answer"), *_answer(args, inp, res)]
    if findings:
        out += [("h2", f"What the study found, for {args.relation}"), ("p", findings[0]), ("ul", findings[1:])]
    out.append(("h2", "Evidence"))
    captions = {
        "layers": ("Per-layer kernel distance", f"For a {args.relation} pair the distance is {rel['distance']}."),
        "swaps": ("Swaps", f"Each swap asks: {rel['swap']}"),
        "selection": ("Each layer alone", f"A layer passes when its single swap keeps {res.get('value')} "
                                          f"above the margin {args.margin}."),
        "joint": ("The layers together", "The layers that pass alone, swapped together; while that fails, "
                                         "the one whose removal scores best is dropped."),
        "unmatched": ("Unmatched layers", "Layers that did not pair by name and shape (after `--map`): "
                                          "not analysed, never swapped."),
    }
    for name, frame in tables.items():
        title, caption = captions[name]
        out += [("h3", title), ("p", caption)]
        if name in ("layers", "swaps"):
            out.append(("img", name))
        out.append(("table", frame, {c: glossary[name].get(c, "") for c in frame.columns}))
        if name == "layers" and "cka_cross" in res:
            out += [("h3", "Cross-layer CKA"),
                    ("p", "Debiased linear CKA of every source layer's outputs (rows) against every target "
                          "layer's (columns) on the scored images, in mini-batches (`cka_cross.csv`): a bright "
                          "diagonal says each layer computes the same in both models."),
                    ("img", "cka_cross")]
    out += [("h2", "Inputs"), ("ul", [
        f"source `{args.source}` ({source}), target `{args.target}` ({target})"
        + (f", twin `{args.twin}`" if args.twin else ""),
        f"relation: {args.relation} ({rel['meaning']})",
        f"{len(inp.layers)} paired layers analysed, {len(inp.unmatched)} layers unmatched",
        *inp.notes])]
    return out


def markdown(title: str, report: list[tuple]) -> str:
    """``report`` as Markdown; figures as ``NAME.png`` beside it."""
    md = [f"# {title}", ""]
    for kind, *rest in report:
        if kind in ("h2", "h3"):
            md += [f"{'#' * int(kind[1])} {rest[0]}", ""]
        elif kind == "p":
            md += [rest[0], ""]
        elif kind == "warn":
            md += [f"> **Warning**: {rest[0]}", ""]
        elif kind == "ul":
            md += [*(f"- {line}" for line in rest[0]), ""]
        elif kind == "img":
            md += [f"![{rest[0]}]({rest[0]}.png)", ""]
        else:
            frame, lines = rest
            md += [markdown_table(list(frame.columns), frame.itertuples(index=False))]
            md += ["", *(["Columns:", "", *(f"- `{c}`: {t}" for c, t in lines.items()), ""] if lines else [])]
    return "\n".join(md)


def _inline(text: str) -> str:
    """Escaped text with Markdown's `code` and **bold** as HTML."""
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text, quote=False))
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)


def html_page(title: str, report: list[tuple], png: dict[str, bytes]) -> str:
    """``report`` as one self-contained HTML page (figures embedded); the answer in ``#answer``."""
    body, section = [f"<h1>{html.escape(title)}</h1>"], False
    for kind, *rest in report:
        if kind == "h2":
            body.append(("</section>" if section else "")
                        + f'<section id="{rest[0].split()[0].lower()}"><h2>{html.escape(rest[0])}</h2>')
            section = True
        elif kind == "h3":
            body.append(f"<h3>{html.escape(rest[0])}</h3>")
        elif kind == "p":
            body.append(f"<p>{_inline(rest[0])}</p>")
        elif kind == "warn":
            body.append(f'<p class="warn"><strong>Warning</strong>: {_inline(rest[0])}</p>')
        elif kind == "ul":
            body.append("<ul>" + "".join(f"<li>{_inline(line)}</li>" for line in rest[0]) + "</ul>")
        elif kind == "img":
            body.append(f'<img alt="{rest[0]} figure" src="data:image/png;base64,'
                        f'{base64.b64encode(png[rest[0]]).decode()}">')
        else:
            frame, lines = rest
            body.append(frame.to_html(index=False, float_format="{:.4g}".format, na_rep=""))
            if lines:
                body.append('<dl class="columns">' + "".join(
                    f"<dt>{html.escape(c)}</dt><dd>{_inline(t)}</dd>" for c, t in lines.items()) + "</dl>")
    body.append("</section>" if section else "")
    style = ("body{font-family:sans-serif;margin:2em;max-width:75em}table{border-collapse:collapse;"
             "font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px}img{max-width:100%}"
             "#answer{background:#f3f7ff;border:1px solid #9ab;padding:0.2em 1em 0.5em}"
             ".warn{background:#fff4d6;padding:0.4em}dl.columns{font-size:12px;display:grid;"
             "grid-template-columns:max-content auto;gap:0 1em}dd{margin:0}code{background:#eee}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>" + "\n".join(body) + "</body></html>")


def write(out_dir: Path, args, inp: Inputs, res: dict[str, Any], seconds: float,
          findings: list[str] | None = None) -> None:
    """The CSV tables (``unmatched.csv`` always), figures, report.md, report.html and
    analyze.json in ``out_dir``; ``findings`` as in :func:`blocks`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tables = {name: res[name] for name in TABLES[:-1] if res.get(name) is not None}
    tables["unmatched"] = inp.unmatched
    for name, frame in tables.items():
        frame.to_csv(out_dir / f"{name}.csv", index=False)
    ylabel = "moved by fine-tuning" if args.relation == "fine-tuned" else "source vs target"
    figures = {"layers": plot_layers(res["layers"], ylabel)}
    if "cka_cross" in res:  # every layer pair: a heatmap and a CSV, no table in the report
        res["cka_cross"].to_csv(out_dir / "cka_cross.csv", index=False)
        figures["cka_cross"] = plot_cka_cross(res["cka_cross"])
    if "swaps" in res:
        figures["swaps"] = plot_swaps(res["swaps"], res["layers"], res["value"], args.margin)
    png = {}
    for name, fig in figures.items():
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110)
        png[name] = buf.getvalue()
        (out_dir / f"{name}.png").write_bytes(png[name])
    source, target = names(args)
    title = f"cnn-reuse analyze: {source} \u2192 {target} ({args.relation})"
    report = blocks(args, inp, res, tables, findings)
    if "freeze" in res:
        (out_dir / "freeze.json").write_text(json.dumps(res["freeze"], indent=2))
    (out_dir / "report.md").write_text(markdown(title, report))
    (out_dir / "report.html").write_text(html_page(title, report, png))
    summary = {"relation": args.relation, "source_name": source, "target_name": target,
               "layers_analysed": inp.layers, "layers_to_reuse": res.get("kept"),
               "passed_alone": res.get("chosen"),
               "backed_off": res.get("joint") is not None and len(res["joint"]) > 1,
               "unmatched": inp.unmatched.to_dict("records"),
               "notes": inp.notes, "seconds": round(seconds, 3), "files": sorted(
                   [f"{n}.csv" for n in [*tables, *(["cka_cross"] if "cka_cross" in res else [])]]
                   + [f"{n}.png" for n in png] + ["report.md", "report.html"]
                   + (["freeze.json"] if "freeze" in res else []))}
    (out_dir / "analyze.json").write_text(json.dumps(
        {**provenance(vars(args)), "summary": summary}, indent=2, default=str))
