"""The analysis half without the training extra: ``pip install varscale`` alone.

Every command here runs in a fresh interpreter where torch and DeepSpeed are not installed as
far as Python can tell: a ``sitecustomize`` on PYTHONPATH wraps the import system's path finder
so that it finds neither package (``import torch`` raises ModuleNotFoundError "No module named
'torch'", ``importlib.util.find_spec("torch")`` is None, as in an environment without them; the
notebook's kernel inherits it). On a small synthetic study ``fit``, ``figures``, ``predict``,
``allocate``, ``check``, ``validate``, ``status`` and ``import`` exit 0 and the scaling-law
notebook executes; ``run`` says in one line which extra to install (exit 2), and so does a
command whose work reaches an ``import torch`` (``doctor`` on a tokenizer checkpoint).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from analysis.synthetic import make_study

ROOT = Path(__file__).resolve().parents[1]
EXTRA = "pip install 'varscale[train]'"

HIDE = '''\
"""torch and deepspeed are not installed, as far as this interpreter's imports can tell."""
import sys
from importlib.machinery import PathFinder

HIDDEN = ("torch", "deepspeed")


class _WithoutTrainingExtra(PathFinder):
    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        if fullname.partition(".")[0] in HIDDEN:
            return None
        return super().find_spec(fullname, path, target)


sys.meta_path[:] = [_WithoutTrainingExtra if f is PathFinder else f for f in sys.meta_path]
'''


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("notorch")
    (d / "sitecustomize.py").write_text(HIDE)
    path = os.pathsep.join([str(d), str(ROOT)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    d = make_study(tmp_path_factory.mktemp("nt") / "study", depths=(2, 3, 4, 6), budgets=(1e8, 1e9))
    shutil.copy(ROOT / "runs/v1/default/study.yaml", d / "study.yaml")  # predict / allocate size depths from it
    return d


def varscale(env: dict, *argv) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "varscale.cli", *map(str, argv)], env=env, cwd=ROOT,
                          capture_output=True, text=True)


def test_torch_and_deepspeed_do_not_import(env):
    code = ("import importlib.util\n"
            "for m in ('torch', 'deepspeed'):\n"
            "    assert importlib.util.find_spec(m) is None, m\n"
            "    try:\n"
            "        __import__(m)\n"
            "    except ModuleNotFoundError as e:\n"
            "        assert e.name == m, e\n"
            "    else:\n"
            "        raise AssertionError(m + ' imported')\n")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_analysis_commands_work_without_torch(env, study, tmp_path):
    import numpy as np
    from matplotlib.image import imsave

    # a Fig. 7 sample grid as `varscale run` / `varscale sample --fig7` write it: drawn without torch
    run = sorted(p.name for p in (study / "cells").iterdir())[0]
    (study / "samples" / run).mkdir(parents=True, exist_ok=True)
    imsave(study / "samples" / run / "step-00000010.png", np.zeros((8, 40, 3)))
    steps = [
        ("fit", study, "--n-boot", "8", "--quiet"),
        ("figures", study, "--formats", "png"),
        ("predict", study, "--depth", "12", "--tokens", "2e9", "--n-boot", "20"),
        ("allocate", study, "--flops", "1e17", "--n-boot", "20"),
        ("validate", study),
        ("status", study),
    ]
    for argv in steps:
        r = varscale(env, *argv)
        assert r.returncode == 0 and "Traceback" not in r.stderr, (argv, r.stderr)
    assert (study / "report" / "fits.json").is_file() and list((study / "report").glob("*.png"))
    assert (study / "report" / "fig7_samples.png").is_file()
    # check: no predictions were written for this study, which it says in one line (exit 2)
    r = varscale(env, "check", study)
    assert r.returncode == 2 and "no predictions" in r.stderr and "Traceback" not in r.stderr
    # import: a table of runs trained elsewhere (N and D given, so nothing is sized by depth)
    table = tmp_path / "runs.csv"
    rows = [f"r{i},{n:g},{d:g},{4 + 300 / n ** 0.3 + 900 / d ** 0.3:.4f}"
            for i, (n, d) in enumerate((n, d) for n in (1e7, 3e7, 1e8) for d in (1e9, 3e9))]
    table.write_text("run,N,D,loss\n" + "\n".join(rows) + "\n")
    r = varscale(env, "import", table, tmp_path / "imported", "--run", "run", "--n", "N", "--tokens", "D",
                 "--loss", "loss")
    assert r.returncode == 0 and "imported 6 runs" in r.stdout, r.stderr


def test_training_commands_name_the_extra(env, study, tmp_path):
    r = varscale(env, "run", study)
    assert r.returncode == 2, r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("varscale run needs the training extra") and EXTRA in line and "'torch'" in line
    assert varscale(env, "run", "-h").returncode == 0  # the help needs nothing of it
    # an import of torch deep in a command's work: doctor reading a tokenizer checkpoint
    small = make_study(tmp_path / "small", depths=(2,), budgets=(1e8,), n_evals=2)
    shutil.copy(ROOT / "runs/v1/default/study.yaml", small / "study.yaml")
    (small / "tokenizer").mkdir(exist_ok=True)
    (small / "tokenizer" / "vqvae.pt").write_bytes(b"not read without torch")
    r = varscale(env, "doctor", small)
    assert r.returncode == 2 and r.stderr.startswith("varscale doctor needs the training extra"), r.stderr
    assert EXTRA in r.stderr and "Traceback" not in r.stderr


def test_scaling_notebook_without_torch(env, study, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    pytest.importorskip("nbclient")
    from test_notebooks import _run, _text

    nb = nbformat.read(ROOT / "notebooks" / "scaling_laws.ipynb", as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(
        "import importlib.util, sys\n"
        "assert importlib.util.find_spec('torch') is None\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in ('torch', 'deepspeed')]\n"
        "print('no torch here')"))
    _run(nb, tmp_path, {"PYTHONPATH": env["PYTHONPATH"], "VARSCALE_STUDY": str(study), "VARSCALE_NB_BOOT": "10",
                        "OMP_NUM_THREADS": "1"})
    assert "no torch here" in _text(nb)
