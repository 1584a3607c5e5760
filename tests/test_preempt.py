"""A preempted cell resumes from its last checkpoint: submitit's local cluster, the real
trainer, SIGUSR2 (what Slurm sends ``--signal=USR2@90`` before a preemption or the time
limit) to the training process mid-run. submitit calls ``SlurmCellJob.checkpoint`` and
requeues; the job ends with the metrics of an undisturbed run, every row once."""
from __future__ import annotations

import json
import os
import shutil
import signal
import time

import numpy as np

from test_trainer_kit import CLOCK_COLUMNS, ROOT, make_study, metrics, train
from varscale.train.monitor import read_series

STEPS = 30


def _read(path, key, default=0):
    try:
        return json.loads(path.read_text()).get(key, default)
    except (FileNotFoundError, ValueError):
        return default


def _wait(cond, what, timeout=300):
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_usr2_requeues_and_the_cell_resumes_with_identical_metrics(tmp_path, monkeypatch):
    from varscale.config import SlurmConfig
    from varscale.grid.executors.slurm import SlurmExecutor
    from varscale.schema import StudyLayout

    _, cells = make_study(tmp_path / "s", budgets={"values": [16 * 5 * STEPS]},
                          training={"checkpoint_every": 10, "zero_stage": 1, "log_every": 5},
                          evaluation={"min_step": 2, "num_evals": 8}, monitor={"backends": ["csv"]})
    cell = cells[0]
    lay = StudyLayout.of(tmp_path / "s").cell(cell.run_id)
    ref = tmp_path / "ref"
    shutil.copytree(lay.root, ref)
    r = train(ref)
    assert r.returncode == 0, r.stderr[-3000:]

    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("VARSCALE_TEST_STEP_DELAY", "0.1")  # time to signal it between checkpoints
    monkeypatch.setenv("VARSCALE_PEAK_FLOPS", "1e11")
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    ex = SlurmExecutor(tmp_path / "s", SlurmConfig(cluster="local", time_min=20, cpus_per_task=1),
                       parallel=1, threads=1, cluster="local")
    [h] = ex.submit([lay])
    try:
        _wait(lambda: _read(lay.latest_json, "step") >= 10 and _read(lay.status_json, "step") >= 13,
              "a checkpoint and three more steps")
        pid = _read(lay.status_json, "pid")
        assert pid and pid != h.proc._process.pid  # the task, not submitit's controller
        os.kill(pid, signal.SIGUSR2)
        _wait(lambda: h.poll() is not None, "the requeued job to finish")
    finally:
        if h.poll() is None:
            h.stop()
    assert h.rc == 0, (ex.folder, h.rc)
    log = "".join(p.read_text() for p in ex.folder.glob("*/*_log.*"))
    assert "requeued" in log and "resumed from step" in log, log[-3000:]
    assert lay.done.read_text().strip() == "done"

    a, b = metrics(ref), metrics(lay.root)
    assert list(b["step"]) == cell.eval_steps  # every evaluation once, none lost
    assert len(lay.metrics_parts()) == len(cell.eval_steps)
    for c in a.columns:
        if c in CLOCK_COLUMNS or a[c].dtype == object:
            continue
        if a[c].dtype.kind == "f":
            np.testing.assert_allclose(b[c], a[c], rtol=1e-6, atol=1e-5, err_msg=c)
        else:
            assert (a[c] == b[c]).all(), c
    for name in ("Train_Samples_train_loss", "Train_Samples_lr", "Eval_Samples_test_loss_avg"):
        sa = read_series(ref / "monitor" / "csv" / f"{name}.csv")
        sb = read_series(lay.monitor_dir / "csv" / f"{name}.csv")
        assert [x for x, _ in sb] == [x for x, _ in sa], name  # each step once, in order
        np.testing.assert_allclose([v for _, v in sb], [v for _, v in sa], rtol=1e-6, atol=1e-5, err_msg=name)
