"""The batch script Slurm gets, as submitit writes it (no Slurm needed), against snapshots.

``varscale.grid.executors.slurm.sbatch_script`` submits through submitit to a stand-in
``sbatch`` that keeps the file. The paper study's script is compared line by line with
``tests/data/slurm_imagenet256-paper.sbatch`` (paths as <study> and <python>); regenerate it
with ``VARSCALE_UPDATE_SNAPSHOTS=1`` after a deliberate change and read the diff.
"""
from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from varscale.config import load_study
from varscale.grid.executors import Options
from varscale.grid.executors.slurm import sbatch_script
from varscale.schema import StudyLayout

ROOT = Path(__file__).resolve().parents[1]
SNAPSHOT = ROOT / "tests" / "data" / "slurm_imagenet256-paper.sbatch"


def _script(study: str, tmp_path: Path, n_cells: int, opts=None) -> str:
    cfg = load_study(ROOT / "runs" / study)
    lay = StudyLayout.of(tmp_path / study)
    text = sbatch_script(cfg, lay, n_cells, opts)
    return text.replace(str(lay.root), "<study>").replace(shlex.quote(sys.executable), "<python>")


def _flags(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if line.startswith("#SBATCH --"):
            k, _, v = line[len("#SBATCH --"):].partition("=")
            out[k] = v
    return out


def test_paper_study_script_matches_its_snapshot(tmp_path):
    text = _script("imagenet256-paper", tmp_path, 12)
    if os.environ.get("VARSCALE_UPDATE_SNAPSHOTS"):
        SNAPSHOT.write_text(text)
    assert text == SNAPSHOT.read_text()
    f = _flags(text)
    # 12 cells, 12 at a time; 2 nodes x 8 ranks (one task per rank), 8 GPUs each; 72 h
    assert f["array"] == "0-11%12" and f["nodes"] == "2" and f["ntasks-per-node"] == "8"
    assert f["gpus-per-node"] == "8" and f["time"] == "4320" and f["cpus-per-task"] == "10"
    # preemption / time limit: USR2 90 s before the end (submitit requeues), requeue allowed
    assert f["signal"] == "USR2@90" and "requeue" in f and f["open-mode"] == "append"
    assert "srun --unbuffered" in text and "-m submitit.core._submit <study>/slurm/%j" in text


def test_one_node_cell_is_one_task_with_every_rank_cpus(tmp_path):
    f = _flags(_script("ci-tiny", tmp_path, 1, Options(parallel=1, nproc=4)))
    assert "array" not in f  # one cell: a plain job
    assert f["nodes"] == "1" and f["ntasks-per-node"] == "1" and f["cpus-per-task"] == "4"
    assert f["time"] == "10" and "gpus-per-node" not in f and "requeue" in f
