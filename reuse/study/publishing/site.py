"""A static HTML site of the executed, committed notebooks: read the results without Jupyter.

Entry point: ``python -m reuse.study.publishing.site [--notebooks notebooks] [--summary results/SUMMARY.md]
[--out site]`` (or :func:`build_site`). Each ``NN_name.ipynb`` becomes ``NN_name.html`` through
nbconvert's HTML exporter (``lab`` template) with its outputs as committed: nothing is
re-executed, and figures are already stored in the notebook as base64 PNGs, so each page is
one self-contained file. ``summary.html`` renders ``results/SUMMARY.md`` (every verdict);
``index.html`` has the title, one line per notebook (its title and a link) and the links to
the summary and the paper (Liang, Cheng, Wang, Zhu, 2020, arXiv 2008.03411).

The pages load nothing from the network: the lab template's require.js, MathJax and Mermaid
script tags (CDN addresses, needed only for widgets, LaTeX and diagrams, which these notebooks
do not use) are left out.

Self-contained on purpose: it imports only the standard library, nbformat and nbconvert.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat
from nbconvert import HTMLExporter

TITLE = "reuse: when can a CNN's trained parameters be reused?"
PAPER = (
    'Liang, Cheng, Wang, Zhu (2020), "Exploring the parameter reusability of CNN", '
    "[arXiv 2008.03411](https://arxiv.org/abs/2008.03411)"
)
FINDINGS_HEADING = "What we found"  # every notebook ends with this section (STYLE.md)

# The lab template without its CDN scripts (require.js: widgets, MathJax: LaTeX, Mermaid: diagrams).
_OFFLINE_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""
_NOTEBOOK_NAME = re.compile(r"^\d\d_[A-Za-z0-9_]+\.ipynb$")


def notebook_title(nb: nbformat.NotebookNode, path: Path) -> str:
    """The first ``# `` heading of the notebook's first markdown cell.

    Raises ``ValueError`` naming the file when there is none: every notebook starts with one.
    """
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
            break
    raise ValueError(f"{path}: its first markdown cell has no '# ' title line")


def _exporter() -> HTMLExporter:
    exporter = HTMLExporter(template_name="lab")
    exporter.raw_template = _OFFLINE_TEMPLATE
    return exporter


def _page(exporter: HTMLExporter, nb: nbformat.NotebookNode, title: str) -> str:
    nb.metadata["title"] = title  # the lab template's <title>
    body, _ = exporter.from_notebook_node(nb)
    return body


def _markdown_page(exporter: HTMLExporter, title: str, markdown: str) -> str:
    """A page of markdown, rendered by the same exporter so that it looks like the notebooks."""
    return _page(exporter, nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(markdown)]), title)


def build_site(notebooks: Path, summary: Path | None, out: Path) -> list[Path]:
    """Write ``out/index.html``, one page per ``notebooks/NN_*.ipynb`` and ``summary.html``.

    ``notebooks``: folder of executed notebooks (read, never executed); ``summary``: the
    results summary in markdown, or None for none. Returns the files written, index first.
    Raises ``ValueError`` naming the folder or file when there is no notebook, a summary path
    does not exist, or a notebook has no title or no "What we found" section.
    """
    paths = sorted(p for p in Path(notebooks).glob("*.ipynb") if _NOTEBOOK_NAME.match(p.name))
    if not paths:
        raise ValueError(f"no notebook named NN_*.ipynb in {notebooks!s} (expected e.g. 01_network_reusability.ipynb)")
    summary = Path(summary) if summary is not None else None
    if summary is not None and not summary.is_file():
        raise ValueError(f"summary file {summary!s} does not exist (pass --summary '' for none)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    exporter = _exporter()
    written, lines = [], []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        title = notebook_title(nb, path)
        if not any(
            cell.cell_type == "markdown" and FINDINGS_HEADING in line
            for cell in nb.cells
            for line in cell.source.splitlines()
            if line.startswith("#")
        ):
            raise ValueError(f"{path}: no heading containing {FINDINGS_HEADING!r}")
        page = out / f"{path.stem}.html"
        page.write_text(_page(exporter, nb, title), encoding="utf-8")
        written.append(page)
        lines.append(f"- [{path.stem[:2]} · {title}]({page.name})")
    # the summary named by its folder and file only: no machine path in a page
    links = [f"- [Every verdict at each profile](summary.html) (`{summary.parent.name}/{summary.name}`)"] if summary else []
    if summary:
        page = out / "summary.html"
        page.write_text(_markdown_page(exporter, "Results summary", summary.read_text(encoding="utf-8")), encoding="utf-8")
        written.append(page)
    index = "\n".join(
        [
            f"# {TITLE}",
            "",
            f"A reproduction of {PAPER}. The notebooks below are the committed ones, with the "
            "outputs of their last run (their parameters cell names the profile); this site "
            "shows them as they are and re-executes nothing.",
            "",
            "## Notebooks",
            "",
            *lines,
            "",
            "## Results",
            "",
            *links,
            "",
            "Built by `python -m reuse.study.publishing.site`.",
        ]
    )
    index_page = out / "index.html"
    index_page.write_text(_markdown_page(exporter, TITLE, index), encoding="utf-8")
    return [index_page, *written]


def main(argv: list[str] | None = None) -> int:
    """``python -m reuse.study.publishing.site``: build the site; exit status 2 with one line on a bad
    path."""
    parser = argparse.ArgumentParser(prog="python -m reuse.study.publishing.site",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--notebooks", type=Path, default=Path("notebooks"), help="folder of executed notebooks (default: notebooks)")
    parser.add_argument("--summary", default="results/SUMMARY.md", help="results summary in markdown; '' for none (default: results/SUMMARY.md)")
    parser.add_argument("--out", type=Path, default=Path("site"), help="output folder (default: site)")
    args = parser.parse_args(argv)
    try:
        written = build_site(args.notebooks, Path(args.summary) if args.summary else None, args.out)
    except ValueError as err:
        print(f"python -m reuse.study.publishing.site: error: {err}", file=sys.stderr)
        return 2
    print(f"Wrote {len(written)} pages to {args.out}/; open {written[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
