"""kill -9 of a real training process, then rerun: rows kept, none duplicated, same numbers."""
import json
import os
import shutil
import signal
import subprocess
import time

import pandas as pd

from test_trainer_kit import TRAIN, assert_same_rows, env, make_study, metrics, train

STEPS = 60


def _latest_step(cell_dir):
    try:
        return json.loads((cell_dir / "checkpoints" / "LATEST.json").read_text())["step"]
    except (FileNotFoundError, ValueError):
        return 0


def _kill_after(cell_dir, min_step, extra_delay):
    """Start training, SIGKILL it once a checkpoint at >= min_step exists (+ extra_delay s)."""
    p = subprocess.Popen([*TRAIN, str(cell_dir)],
                         env=env(VARSCALE_TEST_STEP_DELAY="0.05"),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while _latest_step(cell_dir) < min_step and p.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(extra_delay)
        assert p.poll() is None, "training finished before it could be killed"
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == -signal.SIGKILL


def test_sigkill_then_resume_equals_uninterrupted(tmp_path):
    _, cells = make_study(tmp_path / "s", budgets={"values": [16 * 5 * STEPS]},
                          training={"checkpoint_every": 10, "zero_stage": 1},
                          evaluation={"min_step": 2, "num_evals": 8})
    cell = cells[0]
    ref = tmp_path / "s" / "cells" / cell.run_id
    victim = tmp_path / "victim"
    shutil.copytree(ref, victim)

    r = train(ref)
    assert r.returncode == 0, r.stderr[-3000:]

    _kill_after(victim, min_step=10, extra_delay=0.13)  # somewhere between checkpoints
    killed_rows = sorted(p.name for p in (victim / "metrics").glob("part-*.parquet"))
    assert killed_rows, "no row written before the kill"
    assert not (victim / "DONE").exists()
    _kill_after(victim, min_step=_latest_step(victim) + 10, extra_delay=0.0)  # right after a save
    r = train(victim)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resumed from step" in r.stdout

    a, b = metrics(ref), metrics(victim)
    assert list(b["step"]) == cell.eval_steps  # every evaluation once, none duplicated
    assert len(list((victim / "metrics").glob("part-*.parquet"))) == len(cell.eval_steps)
    assert_same_rows(a, b)
    ra = pd.read_parquet(ref / "record.parquet")
    rb = pd.read_parquet(victim / "record.parquet")
    assert abs(ra["final_test_loss_avg"][0] - rb["final_test_loss_avg"][0]) < 1e-5
    # at most the last two full checkpoints are kept, plus the weights-only Fig. 7 snapshots
    from varscale.cell import CellConfig
    from varscale.train.checkpoint import snapshot_steps

    dirs = [d for d in (victim / "checkpoints").iterdir() if d.is_dir()]
    full = [d for d in dirs if any(f.name != "weights.pt" for f in d.iterdir())]
    assert len(full) <= 2
    snaps = {f"step{s:08d}" for s in snapshot_steps(CellConfig.load(victim).total_steps)}
    assert snaps and snaps <= {d.name for d in dirs}
    assert all((victim / "checkpoints" / s / "weights.pt").exists() for s in snaps)
