"""kill -9 of a real training process, then rerun: rows kept, none duplicated, same numbers; a kill
between the steps of a checkpoint save, then rerun: the two newest full checkpoints kept."""
import json
import os
import shutil
import signal
import subprocess
import time

import pandas as pd
import pytest

from test_trainer_kit import PY, TRAIN, assert_same_rows, env, make_study, metrics, train

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


# ------------------------------------------------------------------ a kill between a save's steps

# `varscale train` of a cell, SIGKILLed just before one step of the checkpoint save at a given
# step (``Checkpoints.save``: _write, _seal (manifest), _point_latest (LATEST.json), _prune):
# the kill point comes from the order of the calls, not from the clock
KILL = """
import os, signal, sys
from varscale.train import checkpoint as K
from varscale.train.trainer import train_cell

cell, before, at = sys.argv[1], sys.argv[2], int(sys.argv[3])
saving = {}
save, step_fn = K.Checkpoints.save, getattr(K.Checkpoints, before)

def save_(self, step, *a, **k):
    saving["step"] = step
    return save(self, step, *a, **k)

def killed(self, *a, **k):
    if saving.get("step") == at:
        os.kill(os.getpid(), signal.SIGKILL)
    return step_fn(self, *a, **k)

K.Checkpoints.save = save_
setattr(K.Checkpoints, before, killed)
train_cell(cell)
"""
CK = "step{:08d}".format


def _full(cell_dir):
    """The full checkpoints on disk (a weights-only snapshot holds weights.pt alone)."""
    return sorted(d.name for d in (cell_dir / "checkpoints").iterdir()
                  if d.is_dir() and any(f.name != "weights.pt" for f in d.iterdir()))


def _latest(cell_dir):
    return json.loads((cell_dir / "checkpoints" / "LATEST.json").read_text())


# (the save step the kill comes before, the save's step, what the kill leaves: full checkpoints
# and LATEST.json's tags, the checkpoint the rerun resumes from). The tiny cell: 12 steps,
# full checkpoints at 4, 8, 12, weights-only snapshots at 2 and 7.
KILLS = {
    "last-save-before-pruning": ("_prune", 12, [4, 8, 12], [8, 12], 12),  # seen as 3 kept before
    "last-save-before-latest": ("_point_latest", 12, [4, 8, 12], [4, 8], 12),
    "mid-save-before-latest": ("_point_latest", 8, [4, 8], [4], 8),  # the next save kept 4, lost 8
    "last-save-before-manifest": ("_seal", 12, [4, 8, 12], [4, 8], 8),  # step 12 half a checkpoint
}
SLOW_KILLS = {"last-save-before-latest", "last-save-before-manifest"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_KILLS else n for n in KILLS])
def test_a_kill_between_the_steps_of_a_save_leaves_the_two_newest_checkpoints(name, tmp_path, capsys):
    from varscale.cli import main

    before, at, left, latest_tags, resumes = KILLS[name]
    _, (cell,) = make_study(tmp_path / "s")
    d = tmp_path / "s" / "cells" / cell.run_id
    r = subprocess.run([PY, "-c", KILL, str(d), before, str(at)], env=env(), capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == -signal.SIGKILL, r.stdout[-2000:] + r.stderr[-3000:]
    assert _full(d) == [CK(s) for s in left] and _latest(d)["tags"] == [CK(s) for s in latest_tags]
    r = train(d)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert f"resumed from {CK(resumes)}" in r.stdout
    assert _full(d) == [CK(8), CK(12)]
    assert _latest(d)["tag"] == CK(12) and _latest(d)["tags"] == [CK(8), CK(12)]
    assert all((d / "checkpoints" / CK(s) / "weights.pt").exists() for s in (2, 7))  # the snapshots stay
    assert list(metrics(d)["step"]) == cell.eval_steps  # every evaluation once
    main(["doctor", str(tmp_path / "s")])  # (the fabricated tokenizer file is a bare state dict: damaged)
    out = capsys.readouterr().out
    assert "nothing was changed" in out and not [ln for ln in out.splitlines() if str(d) in ln], out
