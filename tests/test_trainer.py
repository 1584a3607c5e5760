"""Divergence, failure, bf16 and loading a trained cell's model without DeepSpeed."""
import json
import subprocess

import numpy as np
import pandas as pd
import pytest

from test_trainer_kit import PY, env, make_study, metrics

RUNNER = """
import os, sys
from varscale.train.trainer import train_cell
nan_cell, broken_cell, bf16_cell, *wsd_cells = sys.argv[1:]
os.environ["VARSCALE_INJECT_NAN_AT"] = "3"
print("RC", train_cell(nan_cell))
del os.environ["VARSCALE_INJECT_NAN_AT"]
print("RC", train_cell(broken_cell))
print("RC", train_cell(bf16_cell))
print("RC", train_cell(nan_cell))  # a finished (diverged) cell is not rerun
for c in wsd_cells:  # the stable run first, then its decay branches
    print("WSD", train_cell(c))
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("trainer")
    _, (nan,) = make_study(root / "nan")
    _, (broken,) = make_study(root / "broken")
    _, (bf16,) = make_study(root / "bf16", training={"precision": "bf16"})
    (root / "broken" / "tokens" / "val_idx.npy").unlink()  # a missing split: setup fails
    _, wsd = make_study(root / "wsd", budgets={"design": "wsd", "values": [16 * 5 * 12, 16 * 5 * 24]})
    dirs = [root / n / "cells" / c.run_id for n, c in (("nan", nan), ("broken", broken), ("bf16", bf16))]
    wsd_dirs = [root / "wsd" / "cells" / c.run_id for c in wsd]
    r = subprocess.run([PY, "-c", RUNNER, *map(str, dirs + wsd_dirs)], env=env(), capture_output=True,
                       text=True, timeout=600)
    out = dict(zip(("nan", "broken", "bf16"), dirs))
    out["wsd"] = wsd_dirs
    return r, out, {"nan": nan, "broken": broken, "bf16": bf16, "wsd": wsd}


def test_return_codes_and_no_traceback_for_divergence(runs):
    r, _, _ = runs
    assert r.returncode == 0, r.stderr[-3000:]
    assert [l for l in r.stdout.splitlines() if l.startswith("RC")] == ["RC 3", "RC 1", "RC 0", "RC 3"]


def test_nan_marks_cell_diverged(runs):
    _, dirs, _ = runs
    d = dirs["nan"]
    status = json.loads((d / "status.json").read_text())
    assert status["state"] == "diverged" and status["diverged_step"] == 3
    assert "non-finite" in status["message"]
    assert not (d / "traceback.txt").exists()
    rec = pd.read_parquet(d / "record.parquet")
    assert rec["status"][0] == "diverged" and rec["diverged_step"][0] == 3 and rec["steps"][0] == 2
    assert (d / "DONE").read_text().strip() == "diverged"
    assert list(metrics(d)["step"]) == [2]  # the row before divergence is kept


def test_failure_writes_traceback_and_status(runs):
    _, dirs, _ = runs
    d = dirs["broken"]
    assert "val_idx.npy" in (d / "traceback.txt").read_text()
    status = json.loads((d / "status.json").read_text())
    assert status["state"] == "failed" and status["message"]
    assert not (d / "DONE").exists()  # a failed cell is retried


def test_bf16_autocast_trains(runs):
    _, dirs, cells = runs
    df = metrics(dirs["bf16"])
    assert list(df["step"]) == cells["bf16"].eval_steps
    assert df["train_loss"].iloc[-1] < df["train_loss"].iloc[0]
    assert np.isfinite(df["test_loss_avg"]).all()


def test_load_cell_model_reproduces_final_test_loss(runs):
    import torch

    from varscale.tokenizer.cache import TokenCache
    from varscale.train.evaluate import evaluate
    from varscale.train.batches import TeacherForcing
    from varscale.train.model import load_cell_model

    _, dirs, _ = runs
    d = dirs["bf16"]
    torch.set_num_threads(1)
    vae, var, cell = load_cell_model(d)
    assert not var.training
    val = TokenCache(d.parent.parent / "tokens", "val")
    m = evaluate(var, val, TeacherForcing(vae, val, "cpu"), batch_size=32,
                 autocast=torch.autocast("cpu", dtype=torch.bfloat16), scale_slices=val.scale_slices())
    last = metrics(d).iloc[-1]
    assert m["test_loss_avg"] == pytest.approx(last["test_loss_avg"], abs=1e-5)
    with pytest.raises(FileNotFoundError):
        load_cell_model(d, step=1)


def test_wsd_branches_decay_from_the_stable_run(runs):
    r, dirs, cells = runs
    assert [l for l in r.stdout.splitlines() if l.startswith("WSD")] == ["WSD 0"] * 3
    stable, *branches = cells["wsd"]
    assert stable.branch_from is None and all(b.branch_from == stable.run_id for b in branches)
    assert "branching from" in r.stdout
    peak = 0.05 * 16 / 256
    for b, d in zip(branches, dirs["wsd"][1:]):
        df = metrics(d)
        assert df["step"].min() > b.branch_step and df["step"].max() == b.total_steps
        assert df["lr"].iloc[-1] == pytest.approx(peak * 0.01)
        assert df["flops"].iloc[-1] == b.total_steps * b.flops_per_step
    # the stable run kept the checkpoints the branches start from
    kept = {p.name for p in (dirs["wsd"][0] / "checkpoints").iterdir() if p.is_dir()}
    assert {f"step{b.branch_step:08d}" for b in branches} <= kept


def test_loading_a_cell_model_imports_no_deepspeed():
    """varscale.train.model (sampling and quality load trained cells through it) stays off
    DeepSpeed and the training loop: checked in a fresh interpreter."""
    code = ("import sys, varscale.train.model\n"
            "bad = [m for m in sys.modules if m.split('.')[0] == 'deepspeed' or m in "
            "('varscale.train.trainer', 'varscale.train.checkpoint', 'varscale.train.engine')]\n"
            "print(bad)\n"
            "sys.exit(1 if bad else 0)")
    r = subprocess.run([PY, "-c", code], env=env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
