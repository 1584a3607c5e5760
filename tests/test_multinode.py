"""Two nodes on one machine, as a cluster runs them: two torchrun agents (one process each)
meet through a c10d rendezvous on localhost and train one cell over gloo; the metrics equal
one process's within 1e-4. Each agent is what one node of a multi-node job runs:

    torchrun --nnodes 2 --nproc-per-node 1 --rdzv-backend c10d --rdzv-endpoint HOST:PORT \\
             --rdzv-id <job> -m varscale.cli train runs/<study>/cells/<run_id>

(with ``--rdzv-backend c10d`` the rendezvous numbers the nodes; ``--node-rank`` is for the
static backend, ``--master-addr HOST --master-port PORT --node-rank K``).

Class dropout and drop-path draw per rank, so they are off (as in test_trainer_dist.py).
"""
import shutil
import subprocess

import numpy as np
import pytest

from test_trainer_kit import PY, TRAIN, env, make_study, metrics
from varscale.train.engine import free_port

NO_NOISE = {"class_dropout": 0.0, "drop_path": False}


def agent(cell_dir, port: int, log) -> subprocess.Popen:
    cmd = [PY, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
           "--rdzv-backend", "c10d", "--rdzv-endpoint", f"localhost:{port}", "--rdzv-id", "varscale-test",
           "--no-python", *TRAIN, str(cell_dir)]
    return subprocess.Popen(cmd, env=env(), stdout=log, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow  # three trainer start-ups: 54-77 s on the 2-core CI machine
def test_two_agents_reproduce_one_process(tmp_path):
    _, cells = make_study(tmp_path / "one", model=NO_NOISE, budgets={"values": [16 * 5 * 10]},
                          training={"zero_stage": 2, "checkpoint_every": 5},
                          evaluation={"min_step": 1, "num_evals": 20}, monitor={"backends": ["csv"]})
    cell = cells[0]
    one = tmp_path / "one" / "cells" / cell.run_id
    two = tmp_path / "two"
    shutil.copytree(one, two)  # a shared file system: both agents write the same cell folder

    r1 = subprocess.run([*TRAIN, str(one)], env=env(), capture_output=True, text=True, timeout=600)
    assert r1.returncode == 0, r1.stderr[-3000:]
    port = free_port()
    logs = [open(tmp_path / f"agent{k}.log", "w+") for k in range(2)]
    procs = [agent(two, port, logs[k]) for k in range(2)]  # the rendezvous numbers the nodes
    try:
        rcs = [p.wait(timeout=600) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    text = [(tmp_path / f"agent{k}.log").read_text() for k in range(2)]
    assert rcs == [0, 0], "\n----\n".join(t[-3000:] for t in text)
    assert "x2 rank(s)" in "".join(text)  # one cell, world size 2

    a, b = metrics(one), metrics(two)
    assert list(a["step"]) == list(b["step"]) == list(range(1, 11))
    np.testing.assert_allclose(b["train_loss"], a["train_loss"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(b["test_loss_avg"], a["test_loss_avg"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(b["test_loss_last"], a["test_loss_last"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(b["test_err_avg"], a["test_err_avg"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(b["grad_norm"], a["grad_norm"], rtol=1e-4, atol=1e-6)
    assert (a["flops"] == b["flops"]).all()
    assert (two / "DONE").read_text().strip() == "done"
    assert (two / "monitor" / "csv" / "Eval_Samples_test_loss_avg.csv").exists()  # rank 0 only
