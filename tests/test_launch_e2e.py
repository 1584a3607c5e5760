"""``varscale run`` on the ci-tiny study with the real chain: tokenizer, tokens, DeepSpeed
cells, fit, figures (Fig. 7 sampled by the figures stage). The first test is in the default
set; the interruption and executor variants take minutes and are marked slow.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from varscale.schema import StudyLayout, read_parts

ROOT = Path(__file__).resolve().parents[1]
# columns that measure the machine, not the training
TIMING = {"wall_s", "time", "images_per_s", "tokens_per_s", "flops_per_s", "mfu"}


def make_study(tmp_path: Path, name: str = "ci-tiny") -> Path:
    d = tmp_path / name
    d.mkdir()
    shutil.copy(ROOT / "runs" / "ci-tiny" / "study.yaml", d / "study.yaml")
    return d


def env() -> dict:
    e = {k: v for k, v in os.environ.items() if k not in ("VARSCALE_CELL_FN",)}
    e.setdefault("VARSCALE_PEAK_FLOPS", "1e11")  # no matmul benchmark per cell
    return e


def varscale(*args: str, timeout: float = 900) -> tuple[int, str]:
    p = subprocess.run([sys.executable, "-m", "varscale.cli", *args], env=env(), capture_output=True,
                       text=True, timeout=timeout)
    return p.returncode, p.stdout + p.stderr


def metrics(study: Path):
    parts = sorted(StudyLayout.of(study).cells_dir.glob("*/metrics/part-*.parquet"))
    df = read_parts(parts).to_pandas()
    df = df.drop(columns=[c for c in df.columns if c in TIMING]).sort_values(["run_id", "step"])
    return df.reset_index(drop=True)


def test_tiny_study_end_to_end_then_nothing_to_do(tmp_path):
    s = make_study(tmp_path)
    rc, out = varscale("run", str(s))
    assert rc == 0, out
    lay = StudyLayout.of(s)
    assert lay.tokenizer_ckpt.exists() and (lay.tokens_dir / "meta.json").exists()
    cells = sorted(p for p in lay.cells_dir.iterdir() if p.is_dir())
    assert len(cells) == 4 and all((c / "DONE").exists() for c in cells), out
    m = metrics(s)
    assert len(m) == len(m.drop_duplicates(["run_id", "step"])) and m.test_loss_avg.notna().all()
    assert (lay.report_dir / "fits.json").exists()
    assert "fit: done" in out and "figures: done" in out
    # every paper figure from the one command: the figures stage sampled Fig. 7 itself
    assert "figures: sampling Fig. 7" in out and "2 of 2 run(s) sampled" in out, out
    for name in ("fig5_vs_N", "fig6_vs_C", "fig7_samples"):
        assert (lay.report_dir / f"{name}.png").exists() and (lay.report_dir / f"{name}.pdf").exists(), name
    assert {p.parent.name for p in lay.fig7_pngs()} == {"d1-c2e8-s0-a04cbd46", "d2-c2e8-s0-0cafdc8f"}

    rc, out2 = varscale("run", str(s))
    assert rc == 0, out2
    for line in ("tokenizer: complete", "4/4 finished; nothing to run", "fit: up to date",
                 "figures: up to date", "nothing to do: every stage of the study is complete"):
        assert line in out2, out2
    assert metrics(s).equals(m)
    assert "sampling Fig. 7" not in out2  # the samples are current: no cell sampled again

    rc, st = varscale("status", str(s))
    assert rc == 0 and "4 cells: 4 done" in st, st


def _copy_inputs(src: Path, dst: Path) -> None:
    """Share the tokenizer and token cache of a finished study (same config)."""
    for sub in ("tokenizer", "tokens"):
        shutil.copytree(src / sub, dst / sub)


@pytest.mark.slow
def test_sigkill_mid_grid_then_rerun_matches_uninterrupted(tmp_path):
    ref = make_study(tmp_path, "ref")
    rc, out = varscale("run", str(ref), "--no-analysis")
    assert rc == 0, out
    s = make_study(tmp_path, "killed")
    _copy_inputs(ref, s)
    p = subprocess.Popen([sys.executable, "-m", "varscale.cli", "run", str(s), "--no-analysis"], env=env(),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cells = StudyLayout.of(s).cells_dir
    t0 = time.time()
    # kill once a cell is done and another has written a checkpoint but not finished
    while time.time() - t0 < 600:
        done = list(cells.glob("*/DONE"))
        mid = [c for c in cells.glob("*") if list(c.glob("checkpoints/*")) and not (c / "DONE").exists()
               and list(c.glob("metrics/part-*"))]
        if done and mid:
            break
        time.sleep(0.2)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert list(cells.glob("*/DONE")) and len(list(cells.glob("*/DONE"))) < 4
    rc, out = varscale("run", str(s), "--no-analysis")
    assert rc == 0, out
    a, b = metrics(ref), metrics(s)
    assert len(b) == len(b.drop_duplicates(["run_id", "step"]))
    assert a[["run_id", "step"]].equals(b[["run_id", "step"]])
    for col in ("test_loss_avg", "test_loss_last", "test_err_avg", "train_loss", "flops", "tokens_seen"):
        assert a[col].tolist() == pytest.approx(b[col].tolist(), rel=1e-6, abs=1e-9), col


@pytest.mark.slow
def test_real_cells_through_submitit_local_cluster(tmp_path):
    s = make_study(tmp_path)
    rc, out = varscale("run", str(s), "--executor", "slurm", "--cluster", "local", "--no-analysis")
    assert rc == 0, out
    assert len(list(StudyLayout.of(s).cells_dir.glob("*/DONE"))) == 4


@pytest.mark.slow
def test_real_cell_under_torchrun_two_processes(tmp_path):
    s = make_study(tmp_path)
    rc, out = varscale("run", str(s), "--executor", "torchrun", "--nproc", "2", "--cells", "d2-c6e7-*",
                       "--no-analysis")
    assert rc == 0, out
    assert len(list(StudyLayout.of(s).cells_dir.glob("*/DONE"))) == 1


@pytest.mark.slow
def test_wsd_design_runs_stable_runs_then_branches(tmp_path):
    import json

    import yaml

    s = make_study(tmp_path)
    raw = yaml.safe_load((s / "study.yaml").read_text())
    raw["budgets"]["design"] = "wsd"
    (s / "study.yaml").write_text(yaml.safe_dump(raw))
    rc, out = varscale("run", str(s), "--no-analysis")
    assert rc == 0, out
    m = metrics(s)
    cells = [json.loads(p.read_text()) for p in StudyLayout.of(s).cells_dir.glob("*/config.json")]
    assert len(cells) == 6
    for c in cells:
        assert (StudyLayout.of(s).cell(c["run_id"]).done.exists())
        steps = m[m.run_id == c["run_id"]].step.tolist()
        if c["branch_from"]:  # a branch starts from its stable run's checkpoint
            assert min(steps) > c["branch_step"] and max(steps) == c["total_steps"]
