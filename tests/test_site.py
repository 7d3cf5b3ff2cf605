"""reuse.study.publishing.site: the static site of the committed notebooks, built into a tmp folder and opened
in headless Chromium (every notebook's "What we found" section present, every figure loaded)."""

from __future__ import annotations

import html
import json
import re
import shutil
from pathlib import Path

import nbformat
import pytest
from _chromium import dump_dom

from reuse.study.publishing import site

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))

# Appended to a copy of a page: after the load event (images decoded), a <pre> with what loaded.
_PROBE = """<script>
window.addEventListener("load", () => {
  const imgs = [...document.images];
  const pre = document.createElement("pre");
  pre.id = "reuse-probe";
  pre.textContent = JSON.stringify({
    images: imgs.length,
    loaded: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
    headings: [...document.querySelectorAll("h1, h2")].map(h => h.textContent.replace("\\u00b6", "").trim()),
    links: [...document.querySelectorAll("a[href]")].map(a => a.getAttribute("href")),
  });
  document.body.appendChild(pre);
});
</script>"""


def _open(page: Path, tmp_path: Path) -> dict:
    """What Chromium saw on ``page`` (a copy with the probe appended, beside the original)."""
    probed = page.with_name(f"probe-{page.name}")
    probed.write_text(page.read_text(encoding="utf-8") + _PROBE, encoding="utf-8")
    dom = dump_dom(probed.as_uri())
    found = re.search(r'<pre id="reuse-probe">(.*?)</pre>', dom, re.S)
    assert found, f"the probe did not run on {page.name} (no load event?)"
    return json.loads(html.unescape(found.group(1)))


def _n_images(path: Path) -> int:
    nb = nbformat.read(path, as_version=4)
    return sum("image/png" in out.get("data", {}) for cell in nb.cells for out in cell.get("outputs", []))


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    written = site.build_site(REPO / "notebooks", REPO / "results" / "SUMMARY.md", out)
    assert written[0] == out / "index.html"
    return out


def test_one_page_per_notebook_and_no_network(built):
    names = {p.name for p in built.glob("*.html")}
    assert names == {"index.html", "summary.html", *(f"{p.stem}.html" for p in NOTEBOOKS)}
    assert len(NOTEBOOKS) >= 6
    for page in built.glob("*.html"):
        text = page.read_text(encoding="utf-8")
        loads = re.findall(r'<(?:script|img|iframe)[^>]+src="https?:[^"]*|<link[^>]+href="https?:[^"]*|url\(["\']?https?:[^)]*', text)
        assert not loads, f"{page.name} loads from the network: {loads[:3]}"
        assert "/work/" not in text and "/tmp/" not in text, f"{page.name} names a machine path"


def test_summary_page_renders_the_verdict_table(built):
    text = (built / "summary.html").read_text(encoding="utf-8")
    assert "<table>" in text and "Verdicts at each profile" in text


def test_index_in_chromium_links_every_notebook(built, tmp_path):
    seen = _open(built / "index.html", tmp_path)
    assert seen["headings"][0] == site.TITLE
    for nb in NOTEBOOKS:
        assert f"{nb.stem}.html" in seen["links"], f"index does not link {nb.stem}.html"
    assert "summary.html" in seen["links"]
    assert "https://arxiv.org/abs/2008.03411" in seen["links"]


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem[:2])
def test_notebook_page_in_chromium(built, tmp_path, notebook):
    seen = _open(built / f"{notebook.stem}.html", tmp_path)
    assert any(site.FINDINGS_HEADING in h for h in seen["headings"]), seen["headings"]
    assert seen["images"] == _n_images(notebook) > 0
    assert seen["loaded"] == seen["images"], f"{seen['images'] - seen['loaded']} figures did not load"


def test_probe_sees_a_broken_figure(tmp_path):
    """The figure check can fail: a PNG that does not decode counts as not loaded."""
    page = tmp_path / "broken.html"
    page.write_text('<html><body><h2>What we found</h2><img src="data:image/png;base64,iVBORw0KGgoAAAA="></body></html>')
    seen = _open(page, tmp_path)
    assert (seen["images"], seen["loaded"]) == (1, 0)


def test_titles_are_the_first_heading():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("intro\n# E9 · A title\n")])
    assert site.notebook_title(nb, Path("x.ipynb")) == "E9 · A title"
    with pytest.raises(ValueError, match="x.ipynb.*no '# ' title"):
        site.notebook_title(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("## sub")]), Path("x.ipynb"))


def test_bad_inputs_exit_2_naming_them(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert site.main(["--notebooks", str(empty), "--out", str(tmp_path / "out")]) == 2
    assert f"no notebook named NN_*.ipynb in {empty}" in capsys.readouterr().err
    shutil.copy(NOTEBOOKS[0], empty / NOTEBOOKS[0].name)
    assert site.main(["--notebooks", str(empty), "--summary", str(tmp_path / "nope.md"), "--out", str(tmp_path / "out")]) == 2
    assert "nope.md does not exist" in capsys.readouterr().err
    nb = nbformat.read(NOTEBOOKS[0], as_version=4)
    nb.cells = [c for c in nb.cells if site.FINDINGS_HEADING not in c.source]
    nbformat.write(nb, empty / NOTEBOOKS[0].name)
    with pytest.raises(ValueError, match="no heading containing 'What we found'"):
        site.build_site(empty, None, tmp_path / "out")


def test_main_builds_the_default_layout(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    assert site.main(["--summary", "", "--out", str(tmp_path / "s")]) == 0
    assert f"Wrote {len(NOTEBOOKS) + 1} pages" in capsys.readouterr().out
    assert not (tmp_path / "s" / "summary.html").exists()
