"""Two processes (torchrun, gloo) with half the per-rank batch reproduce one process (fp32).

Class dropout and drop-path draw per rank, so they are off here: with them on, the two runs
are different (equally valid) random draws rather than the same computation.
"""
import shutil
import subprocess

import numpy as np
import pytest

from test_trainer_kit import PY, env, make_study, metrics
from varscale.train.engine import free_port

NO_NOISE = {"class_dropout": 0.0, "drop_path": False}


@pytest.mark.parametrize("stage", [2, pytest.param(0, marks=pytest.mark.slow),
                                   pytest.param(3, marks=pytest.mark.slow)])
def test_two_ranks_reproduce_one(tmp_path, stage):
    # 10 steps of 16 images, an evaluation after every step (20 log-spaced points cover 1..10)
    _, cells = make_study(tmp_path / "one", model=NO_NOISE, budgets={"values": [16 * 5 * 10]},
                          training={"zero_stage": stage, "checkpoint_every": 5},
                          evaluation={"min_step": 1, "num_evals": 20})
    cell = cells[0]
    assert cell.eval_steps == list(range(1, 11))
    one = tmp_path / "one" / "cells" / cell.run_id
    two = tmp_path / "two"
    shutil.copytree(one, two)
    # config.json is the same; the token cache and tokenizer are found through study_dir

    r1 = subprocess.run([PY, "-m", "varscale.cli", "train", str(one)], env=env(),
                        capture_output=True, text=True, timeout=600)
    assert r1.returncode == 0, r1.stderr[-3000:]
    r2 = subprocess.run([PY, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                         "--master_port", str(free_port()),
                         "-m", "varscale.cli", "train", str(two)],
                        env=env(), capture_output=True, text=True, timeout=600)
    assert r2.returncode == 0, r2.stdout[-2000:] + r2.stderr[-3000:]

    a, b = metrics(one), metrics(two)
    assert list(a["step"]) == list(b["step"]) == list(range(1, 11))
    np.testing.assert_allclose(b["train_loss"], a["train_loss"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(b["test_loss_avg"], a["test_loss_avg"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(b["grad_norm"], a["grad_norm"], rtol=1e-4, atol=1e-6)
    assert (a["flops"] == b["flops"]).all()
    assert a["train_loss"].iloc[-1] < a["train_loss"].iloc[0]
