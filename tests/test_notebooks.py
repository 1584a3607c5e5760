"""Both notebooks run top to bottom (nbclient, the venv's python3 kernel) on data the tests
produce (a synthetic study) or ship (Epoch AI's extraction of Chinchilla's Figure 4); every
figure cell (tag ``figure``) leaves a PNG in the executed notebook, and the scaling notebook's
headline table is the one of the study's report/fits.json."""
import os
from pathlib import Path

import pandas as pd
import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NB = Path(__file__).resolve().parents[1] / "notebooks"


def _run(path: Path | nbformat.NotebookNode, cwd: Path, env: dict) -> nbformat.NotebookNode:
    """Execute a notebook (a file, or one already read) in ``cwd`` with ``env`` set for its kernel."""
    nb = path if isinstance(path, nbformat.NotebookNode) else nbformat.read(path, as_version=4)
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits the environment: that is how parameters pass
    try:
        nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                resources={"metadata": {"path": str(cwd)}}).execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return nb


def _errors(nb) -> list:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if o.get("output_type") == "error"]


def _tagged(nb, tag: str) -> list:
    return [c for c in nb.cells if c.cell_type == "code" and tag in c.metadata.get("tags", [])]


def _assert_figures_rendered(nb) -> None:
    figs = _tagged(nb, "figure")
    assert figs
    for c in figs:
        pngs = [o for o in c.outputs if "image/png" in o.get("data", {})]
        assert pngs, f"figure cell without an image: {c.source[:60]!r}"
        assert not any("<Figure size" in o.get("data", {}).get("text/plain", "") for o in c.outputs)


def _text(nb) -> str:
    return "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))


def _assert_headline_is_the_reports(nb, study: Path) -> None:
    from analysis import figures
    from analysis.results import read_report

    rep = read_report(study)
    assert rep.headline
    (cell,) = _tagged(nb, "headline")
    (html,) = [o["data"]["text/html"] for o in cell.outputs if "text/html" in o.get("data", {})]
    with pd.option_context("display.max_rows", 200, "display.max_colwidth", 80):
        assert html == figures.headline_table(rep)._repr_html_()


def test_scaling_notebook_reads_the_report(tmp_path):
    from analysis import synthetic
    from analysis.fitting import fit_study
    from analysis.render import format_markdown
    from analysis.results import write_report

    study = synthetic.make_study(tmp_path / "nbstudy", depths=(2, 3, 4, 6), budgets=(1e7, 1e8))
    rep = fit_study(study, n_boot=20, chinchilla_boot=0)
    write_report(rep, study, format_markdown(rep))
    # a relative VARSCALE_STUDY resolves from the kernel's folder
    nb = _run(NB / "scaling_laws.ipynb", tmp_path,
              {"VARSCALE_STUDY": "nbstudy", "VARSCALE_NB_BOOT": "10", "OMP_NUM_THREADS": "1"})
    assert not _errors(nb)
    _assert_figures_rendered(nb)
    assert f"read {study / 'report' / 'fits.json'}" in _text(nb)
    _assert_headline_is_the_reports(nb, study)
    assert "frontier" in _text(nb) and "chinchilla" in _text(nb)


def test_scaling_notebook_fits_a_study_without_report(tmp_path):
    from analysis import synthetic

    study = synthetic.make_study(tmp_path / "bare", depths=(2, 3, 4), budgets=(1e7, 1e8), n_evals=4)
    nb = _run(NB / "scaling_laws.ipynb", NB,
              {"VARSCALE_STUDY": str(study), "VARSCALE_NB_BOOT": "10", "OMP_NUM_THREADS": "1"})
    assert not _errors(nb)
    _assert_figures_rendered(nb)
    assert "no report/fits.json: fitted now" in _text(nb)
    _assert_headline_is_the_reports(nb, study)


def test_scaling_notebook_names_a_missing_study(tmp_path):
    with pytest.raises(nbclient.exceptions.CellExecutionError, match="VARSCALE_STUDY=nope: no study folder"):
        _run(NB / "scaling_laws.ipynb", tmp_path, {"VARSCALE_STUDY": "nope"})


def test_chinchilla_refit_notebook(tmp_path, shared_data):
    nb = _run(NB / "chinchilla_refit.ipynb", tmp_path,
              {"VARSCALE_CHINCHILLA_CSV": str(shared_data / "chinchilla_svg_extracted.csv"),
               "VARSCALE_NB_BOOT": "50", "OMP_NUM_THREADS": "1"})
    assert not _errors(nb)
    _assert_figures_rendered(nb)
    # the points imported as a study and fitted by varscale fit's code: Epoch AI's five
    # Approach-3 estimates inside the report's 95% intervals
    text = _text(nb)
    assert text.count("  inside") == 5 and "OUTSIDE" not in text, text[-1500:]
