from pathlib import Path

import nbformat

from reuse.study.publishing import nbclean

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def _noisy() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("print(1)", execution_count=7)
    cell.outputs = [nbformat.v4.new_output("stream", name="stderr", text="  run 1/9\n"),
                    nbformat.v4.new_output("stream", name="stdout", text="1\n")]
    cell.metadata["papermill"] = {"duration": 1.5}
    nb.cells = [nbformat.v4.new_markdown_cell("# t"), cell]
    nb.metadata["papermill"] = {"parameters": {"profile": "quick"}, "start_time": "x"}
    return nb


def test_clean_drops_noise_and_keeps_results():
    out = nbclean.clean(_noisy())
    cell = out.cells[1]
    assert [o.name for o in cell.outputs] == ["stdout"] and cell.execution_count == 1
    assert "papermill" not in cell.metadata
    assert out.metadata.papermill == {"parameters": {"profile": "quick"}}
    assert out.metadata.kernelspec["name"] == "python3"
    assert nbclean.clean(out) == out  # idempotent


def test_check_mode(tmp_path, capsys):
    path = tmp_path / "n.ipynb"
    nbformat.write(_noisy(), path)
    assert nbclean.main(["--check", str(path)]) == 1
    assert "fix: python -m reuse.study.publishing.nbclean" in capsys.readouterr().err
    assert nbclean.main([str(path)]) == 0
    assert nbclean.main(["--check", str(path)]) == 0


def test_committed_notebooks_are_clean_and_have_results():
    assert NOTEBOOKS, "no notebooks found"
    assert nbclean.main(["--check", *map(str, NOTEBOOKS)]) == 0
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, f"{path.name}: one cell tagged 'parameters' expected"
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert code[-1].outputs, f"{path.name}: committed without outputs (run it first)"
        assert not any(o.output_type == "error" for c in code for o in c.outputs)


def test_machine_paths_and_repeated_figures_go():
    nb = _noisy()
    injected = nbformat.v4.new_code_cell('# Parameters\nprofile = "quick"\nfigures_dir = "/home/me/figs"\n'
                                         "cache_dir = 'C:\\\\cache'\nseeds = [0]")
    injected.metadata["tags"] = ["injected-parameters"]
    figure = nbformat.v4.new_output("display_data", data={"image/png": "iVBOR", "text/plain": "<Figure>"})
    shown = nbformat.v4.new_code_cell("plot()")
    shown.outputs = [figure, nbformat.v4.new_output("display_data", data=dict(figure.data)),
                     nbformat.v4.new_output("display_data", data={"image/png": "OTHER"})]
    nb.cells += [injected, shown]
    nb.metadata["papermill"]["parameters"].update(figures_dir="/home/me/figs", device="cpu")
    out = nbclean.clean(nb)
    assert out.cells[2].source == '# Parameters\nprofile = "quick"\nseeds = [0]'
    assert [o.data["image/png"] for o in out.cells[3].outputs] == ["iVBOR", "OTHER"]
    assert out.metadata.papermill.parameters == {"profile": "quick", "device": "cpu"}
