"""The launcher's cell stage with a stub trainer (tests/test_grid_stubcell.py): resume,
kill -9, two launchers, failures, divergence, and the submitit local cluster.

Each launcher runs as its own process (``varscale run --only-cells``), as a user would.
"""
from __future__ import annotations

import json
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
TESTS = Path(__file__).resolve().parent


def make_study(tmp_path: Path, name: str = "s") -> Path:
    d = tmp_path / name
    d.mkdir()
    shutil.copy(ROOT / "runs" / "ci-tiny" / "study.yaml", d / "study.yaml")
    return d


def env(**extra: str) -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(TESTS), e.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    e["VARSCALE_CELL_FN"] = "test_grid_stubcell:train_cell"
    e["STUB_SLEEP"] = "0"
    e.update(extra)
    return e


def launch(study: Path, *args: str, **extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "varscale.cli", "run", str(study), "--only-cells", *args]
    return subprocess.Popen(cmd, env=env(**extra), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def run(study: Path, *args: str, **extra: str) -> tuple[int, str]:
    p = launch(study, *args, **extra)
    out, _ = p.communicate(timeout=300)
    return p.returncode, out


def cell_dirs(study: Path) -> list[Path]:
    return sorted(p for p in StudyLayout.of(study).cells_dir.iterdir() if p.is_dir())


def metrics(study: Path) -> list[tuple]:
    parts = sorted(StudyLayout.of(study).cells_dir.glob("*/metrics/part-*.parquet"))
    t = read_parts(parts).to_pandas()
    return sorted(zip(t.run_id, t.step, t.test_loss_avg))


def starts(cell: Path) -> int:
    f = cell / "starts.log"
    return len(f.read_text().splitlines()) if f.exists() else 0


def test_runs_every_cell_then_second_run_does_nothing(tmp_path):
    s = make_study(tmp_path)
    rc, out = run(s)
    assert rc == 0, out
    cells = cell_dirs(s)
    assert len(cells) == 4 and all((c / "DONE").exists() for c in cells), out
    assert all(not (c / "LOCK").exists() for c in cells)
    first = metrics(s)
    assert len(first) == len(set((r, st) for r, st, _ in first)) == 12  # 3 evals x 4 cells
    rc, out = run(s)
    assert rc == 0, out
    assert "4/4 finished; nothing to run" in out
    assert all(starts(c) == 1 for c in cells)
    assert metrics(s) == first


def _wait_for(pred, timeout: float = 120.0) -> None:
    t0 = time.time()
    while not pred():
        if time.time() - t0 > timeout:
            raise TimeoutError
        time.sleep(0.05)


def test_sigkill_of_launcher_then_rerun_gives_identical_metrics(tmp_path):
    ref = make_study(tmp_path, "ref")
    rc, out = run(ref)
    assert rc == 0, out
    s = make_study(tmp_path, "killed")
    p = launch(s, STUB_SLEEP="0.01")
    cells = StudyLayout.of(s).cells_dir

    def mid_grid() -> bool:  # one cell finished and another one part-way
        done = list(cells.glob("*/DONE"))
        parts = [c for c in cells.glob("*") if (c / "checkpoints" / "latest.json").exists() and not (c / "DONE").exists()]
        return len(done) >= 1 and len(parts) >= 1

    _wait_for(mid_grid)
    p.send_signal(signal.SIGKILL)
    p.wait()
    interrupted = [c for c in cell_dirs(s) if not (c / "DONE").exists()]
    assert interrupted
    rc, out = run(s)
    assert rc == 0, out
    assert all((c / "DONE").exists() for c in cell_dirs(s))
    assert metrics(s) == metrics(ref)  # identical values, no duplicate rows
    # the interrupted cell resumed (a second start), the finished ones were not rerun
    assert any(starts(c) == 2 for c in interrupted)
    assert all(starts(c) == 1 for c in cell_dirs(s) if c not in interrupted)


def test_two_concurrent_launchers_run_each_cell_once(tmp_path):
    s = make_study(tmp_path)
    a = launch(s, STUB_SLEEP="0.01")
    b = launch(s, STUB_SLEEP="0.01")
    out_a, _ = a.communicate(timeout=300)
    out_b, _ = b.communicate(timeout=300)
    assert a.returncode == 0 and b.returncode == 0, out_a + out_b
    cells = cell_dirs(s)
    assert len(cells) == 4
    assert [starts(c) for c in cells] == [1, 1, 1, 1], out_a + out_b
    assert len(metrics(s)) == 12


def test_failed_cell_keeps_traceback_others_go_on(tmp_path):
    s = make_study(tmp_path)
    rc, out = run(s, "--parallel", "2", STUB_FAIL="d2-c6e7-*", STUB_DIVERGE="d1-c2e8-*")
    assert rc == 1, out
    assert "2 cell(s) at a time" in out
    by = {c.name.split("-s0-")[0]: c for c in cell_dirs(s)}
    tb = (by["d2-c6e7"] / "traceback.txt").read_text()
    assert "stub failure" in tb
    assert (by["d1-c6e7"] / "DONE").exists() and (by["d2-c2e8"] / "DONE").exists()
    assert "FAILED cells: d2-c6e7" in out
    assert "DIVERGED" in out and "d1-c2e8" in out
    st = subprocess.run([sys.executable, "-m", "varscale.cli", "status", str(s)], capture_output=True, text=True)
    assert st.returncode == 0
    lines = {ln.split()[0]: ln for ln in st.stdout.splitlines() if ln.startswith("d")}
    assert " failed " in lines[by["d2-c6e7"].name] and "stub failure" in lines[by["d2-c6e7"].name]
    assert " diverged " in lines[by["d1-c2e8"].name]
    assert "2 done, 1 failed, 1 diverged" in st.stdout
    # the rerun retries the failure (now fixed), leaves the diverged cell alone
    rc, out = run(s)
    assert rc == 0, out
    assert (by["d2-c6e7"] / "DONE").exists() and not (by["d2-c6e7"] / "traceback.txt").exists()
    assert starts(by["d1-c2e8"]) == 1


def test_slurm_executor_on_submitit_local_cluster(tmp_path):
    s = make_study(tmp_path)
    rc, out = run(s, "--executor", "slurm", "--cluster", "local", "--parallel", "2")
    assert rc == 0, out
    assert "submitit (cluster=local)" in out
    assert all((c / "DONE").exists() for c in cell_dirs(s))
    assert len(metrics(s)) == 12
    assert list((s / "slurm").glob("*/*_result.pkl")), "jobs should have gone through submitit"


@pytest.mark.slow
def test_torchrun_executor_runs_each_cell_as_a_process_group(tmp_path):
    s = make_study(tmp_path)
    rc, out = run(s, "--executor", "torchrun", "--nproc", "2", "--cells", "d2-*")
    assert rc == 0, out
    cells = [c for c in cell_dirs(s) if c.name.startswith("d2-")]
    assert len(cells) == 2 and all((c / "DONE").exists() for c in cells)
    assert all("world 2" in (c / "rank1.log").read_text() for c in cells)
    assert not any(c.name.startswith("d1-") and (c / "DONE").exists() for c in cell_dirs(s))


@pytest.mark.slow
def test_wsd_branches_run_after_their_stable_run(tmp_path):
    import yaml

    s = make_study(tmp_path)
    raw = yaml.safe_load((s / "study.yaml").read_text())
    raw["budgets"]["design"] = "wsd"
    (s / "study.yaml").write_text(yaml.safe_dump(raw))
    rc, out = run(s, "--parallel", "2")
    assert rc == 0, out
    cfgs = [json.loads((c / "config.json").read_text()) for c in cell_dirs(s)]
    stable = {c["run_id"]: c for c in cfgs if c["schedule"] == "wsd" and not c["branch_from"]}
    branches = [c for c in cfgs if c["branch_from"]]
    assert len(stable) == 2 and len(branches) == 4
    for b in branches:
        parent = StudyLayout.of(s).cell(b["branch_from"])
        first_start = float((StudyLayout.of(s).cell(b["run_id"]).root / "starts.log").read_text().split()[1])
        assert first_start >= parent.done.stat().st_mtime - 0.01


@pytest.mark.slow
def test_ctrl_c_stops_cells_releases_locks_and_rerun_resumes(tmp_path):
    s = make_study(tmp_path)
    cmd = [sys.executable, "-m", "varscale.cli", "run", str(s), "--only-cells"]
    p = subprocess.Popen(cmd, env=env(STUB_SLEEP="0.01"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, start_new_session=True)
    cells = StudyLayout.of(s).cells_dir
    _wait_for(lambda: list(cells.glob("*/DONE")) and any(
        (c / "checkpoints" / "latest.json").exists() and not (c / "DONE").exists() for c in cells.glob("*")))
    os.killpg(p.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
    out, _ = p.communicate(timeout=120)
    assert p.returncode == 130, out
    assert "interrupted" in out
    assert not list(cells.glob("*/LOCK")), "every worker releases its lock"
    rc, out = run(s)
    assert rc == 0, out
    assert any(starts(c) == 2 for c in cell_dirs(s))  # the interrupted cell ran again (and resumed)
    m = metrics(s)
    assert len(m) == len(set((r, st) for r, st, _ in m)) == 12
