"""Both notebooks run top to bottom (nbclient, the venv's python3 kernel) on data the tests
produce (a synthetic study) or ship (Epoch AI's extraction of Chinchilla's Figure 4)."""
import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NB = Path(__file__).resolve().parents[1] / "notebooks"


def _run(path: Path, cwd: Path, env: dict) -> nbformat.NotebookNode:
    nb = nbformat.read(path, as_version=4)
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


def test_scaling_notebook_runs_on_a_study(tmp_path):
    from analysis import synthetic

    study = synthetic.make_study(tmp_path / "nbstudy", depths=(2, 3, 4, 6), budgets=(1e7, 1e8))
    nb = _run(NB / "scaling_laws.ipynb", tmp_path,
              {"VARSCALE_STUDY": str(study), "VARSCALE_NB_BOOT": "50", "OMP_NUM_THREADS": "1"})
    assert not _errors(nb)
    text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "frontier" in text and "chinchilla" in text


def test_chinchilla_refit_notebook(tmp_path, shared_data):
    nb = _run(NB / "chinchilla_refit.ipynb", tmp_path,
              {"VARSCALE_CHINCHILLA_CSV": str(shared_data / "chinchilla_svg_extracted.csv"),
               "VARSCALE_NB_BOOT": "50", "OMP_NUM_THREADS": "1"})
    assert not _errors(nb)
