"""Micro-batches (gradient accumulation) and activation checkpointing change memory, not numbers.

A tiny cell trained with ``training.micro_batch_size`` 4 (4 micro-batches of the 16-image
batch) or with ``training.activation_checkpointing`` matches the same cell trained plainly:
the loss and gradient norm of every step and every evaluation metric, with class dropout and
drop-path off (their draws depend on how a batch is cut). Neither option enters the run id.
"""
import json
import subprocess

import numpy as np
import pytest

from test_trainer_kit import PY, env, make_study, metrics

NO_NOISE = {"class_dropout": 0.0, "drop_path": False}

# every training step's (loss, grad norm), recorded around the trainer's own train_step
RUNNER = """
import json, sys
from varscale.train import trainer
orig = trainer.CellRun.train_step
steps = {}
def recorded(self):
    loss, dt = orig(self)
    steps.setdefault(str(self.layout.root), []).append((loss, self.p.grad_norm))
    return loss, dt
trainer.CellRun.train_step = recorded
rcs = [trainer.train_cell(d) for d in sys.argv[1:]]
print("STEPS " + json.dumps({"rcs": rcs, "steps": steps}))
"""

VARIANTS = {  # name: (zero stage, precision, training options)
    "z0": (0, "fp32", {}),
    "z0-mb4": (0, "fp32", {"micro_batch_size": 4}),
    "z0-ckpt": (0, "fp32", {"activation_checkpointing": True}),
    "z2": (2, "fp32", {}),
    "z2-mb4": (2, "fp32", {"micro_batch_size": 4}),
    "z3": (3, "fp32", {}),
    "z3-mb8-ckpt": (3, "fp32", {"micro_batch_size": 8, "activation_checkpointing": True}),
    "bf16": (2, "bf16", {}),
    "bf16-mb4-ckpt": (2, "bf16", {"micro_batch_size": 4, "activation_checkpointing": True}),
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("micro")
    cells = {}
    for name, (stage, precision, extra) in VARIANTS.items():
        _, (cell,) = make_study(root / name, model=NO_NOISE,
                                training={"zero_stage": stage, "precision": precision, **extra})
        cells[name] = (cell, root / name / "cells" / cell.run_id)
    r = subprocess.run([PY, "-c", RUNNER, *[str(d) for _, d in cells.values()]], env=env(),
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    out = json.loads(next(l for l in r.stdout.splitlines() if l.startswith("STEPS "))[6:])
    assert out["rcs"] == [0] * len(cells), r.stdout[-3000:]
    return cells, out["steps"], r.stdout


def _steps(trained, name):
    cells, steps, _ = trained
    return np.array(steps[str(cells[name][1])])


@pytest.mark.parametrize("ref, other", [("z0", "z0-mb4"), ("z2", "z2-mb4"), ("z3", "z3-mb8-ckpt"),
                                        ("z0", "z0-ckpt")])
def test_same_losses_grad_norms_and_evaluations(trained, ref, other):
    cells, _, _ = trained
    a, b = _steps(trained, ref), _steps(trained, other)
    assert len(a) == len(b) == cells[ref][0].total_steps
    np.testing.assert_allclose(b[:, 0], a[:, 0], rtol=0, atol=1e-5)  # loss of every step
    np.testing.assert_allclose(b[:, 1], a[:, 1], rtol=0, atol=1e-5)  # its gradient norm
    ma, mb = metrics(cells[ref][1]), metrics(cells[other][1])
    assert list(ma["step"]) == list(mb["step"]) == cells[ref][0].eval_steps
    for col in ("train_loss", "test_loss_avg", "test_loss_last", "test_err_avg", "test_err_last", "grad_norm"):
        np.testing.assert_allclose(mb[col], ma[col], rtol=0, atol=1e-5, err_msg=col)
    np.testing.assert_allclose(np.stack(mb["test_loss_by_scale"]), np.stack(ma["test_loss_by_scale"]),
                               rtol=0, atol=1e-5)
    for col in ("flops", "tokens_seen", "images_seen", "flops_6nd", "lr"):  # counters exactly equal
        assert list(ma[col]) == list(mb[col]), col


def test_checkpointing_alone_is_bit_for_bit_on_cpu(trained):
    a, b = _steps(trained, "z0"), _steps(trained, "z0-ckpt")
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-6)


def test_bf16_with_both_trains_like_bf16(trained):
    # autocast's bf16 rounding depends on the batch's shape (matmul blocking), so the bound is looser
    a, b = _steps(trained, "bf16"), _steps(trained, "bf16-mb4-ckpt")
    np.testing.assert_allclose(b[:, 0], a[:, 0], rtol=0, atol=1e-3)  # measured: 9e-5
    assert b[-1, 0] < b[0, 0]


def test_ds_config_log_line_and_run_id(trained):
    cells, _, stdout = trained
    ids = {c.run_id for c, _ in cells.values() if c.training.zero_stage == 0}
    assert len(ids) == 1  # neither option enters the run id
    ds = json.loads((cells["z0-mb4"][1] / "ds_config.json").read_text())
    assert (ds["train_batch_size"], ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"]) == (16, 4, 4)
    ds = json.loads((cells["z0"][1] / "ds_config.json").read_text())
    assert (ds["train_batch_size"], ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"]) == (16, 16, 1)
    assert "16 images (4 x 4 per rank)" in stdout
    assert "16 images (2 x 8 per rank, activation checkpointing)" in stdout


# ------------------------------------------------------------------ the model alone


@pytest.mark.parametrize("bf16", [False, True])
def test_checkpointing_same_loss_and_grads_with_dropout(bf16):
    """Class dropout and drop-path on: the recomputation restores the RNG state, so the same
    labels are dropped and the same paths kept."""
    import contextlib

    import torch
    import torch.nn.functional as F

    from varscale.models import build_var

    def run(ckpt):
        torch.manual_seed(0)
        var = build_var("cpu32", 3, class_dropout=0.5, drop_path_rate=0.3).train()
        var.set_activation_checkpointing(ckpt)
        g = torch.Generator().manual_seed(1)
        label_B = torch.randint(0, 10, (6,), generator=g)
        x_BlC = torch.randn(6, var.L - var.first_l, var.cfg.cvae, generator=g)
        target_BL = torch.randint(0, var.cfg.vocab_size, (6, var.L), generator=g)
        losses = []
        for _ in range(2):
            torch.manual_seed(7)
            ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
            with ctx:
                logits = var(label_B, x_BlC)
            loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), target_BL.reshape(-1))
            loss.backward()
            losses.append(float(loss.detach()))
        return losses, {n: p.grad.clone() for n, p in var.named_parameters()}

    (la, ga), (lb, gb) = run(False), run(True)
    np.testing.assert_allclose(lb, la, rtol=0, atol=1e-6)
    assert ga.keys() == gb.keys()
    for n in ga:
        torch.testing.assert_close(gb[n], ga[n], rtol=0, atol=1e-6, msg=n)


def test_checkpointing_off_in_eval_and_without_grad():
    import torch

    from varscale.models import build_var

    var = build_var("tiny", 2).set_activation_checkpointing(True)
    x = torch.randn(2, var.L - var.first_l, var.cfg.cvae)
    with torch.no_grad():
        a = var.train()(torch.tensor([0, 1]), x)
    b = var.eval()(torch.tensor([0, 1]), x)
    assert a.grad_fn is None and b.grad_fn is not None


# ------------------------------------------------------------------ config


def test_micro_batch_size_is_checked():
    from varscale.config import ConfigError, from_dict

    base = {"training": {"batch_size": 64}, "execution": {"executor": "torchrun", "nproc_per_node": 2}}
    from_dict({**base, "training": {"batch_size": 64, "micro_batch_size": 8}})
    with pytest.raises(ConfigError) as e:
        from_dict({**base, "training": {"batch_size": 64, "micro_batch_size": 12}})
    assert e.value.errors == ["training.micro_batch_size: 12 does not divide the per-rank batch 32 "
                              "(training.batch_size 64 / world size 2)"]
    with pytest.raises(ConfigError) as e:
        from_dict({"training": {"micro_batch_size": 0}})
    assert e.value.errors[0].startswith("training.micro_batch_size: must be >= 1")
    with pytest.raises(ConfigError) as e:
        from_dict({"training": {"activation_checkpointing": "yes"}})
    assert e.value.errors[0].startswith("training.activation_checkpointing: expected bool")


def test_options_enter_no_hash():
    from varscale.config import from_dict

    plain = from_dict({})
    mem = from_dict({"training": {"micro_batch_size": 16, "activation_checkpointing": True},
                     "execution": {"gpu_mem_gb": 80}})
    assert mem.hash() == plain.hash() and mem.hash("training") == plain.hash("training")
    assert mem.hash("execution") == plain.hash("execution")


def test_accumulation_steps_and_batches():
    from varscale.train.batches import Batches
    from varscale.train.engine import accumulation_steps, ds_config

    assert accumulation_steps(768, 16, None) == 1 and accumulation_steps(768, 16, 12) == 4
    with pytest.raises(ValueError):
        accumulation_steps(768, 16, 10)
    cfg = ds_config(batch_size=768, world_size=16, zero_stage=2, lr=1e-4, betas=(0.9, 0.95),
                    weight_decay=0.05, grad_clip=2.0, micro_batch_size=12)
    assert cfg["train_batch_size"] == cfg["train_micro_batch_size_per_gpu"] * cfg["gradient_accumulation_steps"] * 16
    whole = Batches(1000, 48, seed=3, rank=1, world=2)
    micro = Batches(1000, 48, seed=3, rank=1, world=2, micro_batch_size=6)
    assert micro.accumulation_steps == 4 and whole.accumulation_steps == 1
    for step in (0, 20, 21):  # the same rows in the same order, across an epoch boundary too
        assert np.array_equal(np.concatenate(micro.micro_rows(step)), whole.rows(step))
        assert [len(r) for r in micro.micro_rows(step)] == [6] * 4


def test_turning_them_on_keeps_the_planned_cells(tmp_path):
    """A study re-planned with the memory options finds its cells and rewrites their config."""
    from varscale.cell import CellConfig
    from varscale.config import from_dict
    from varscale.grid.cells import PlanError, plan_cells, write_cell

    raw = {"model": {"depths": [1]}, "budgets": {"values": [1e10]}, "training": {"batch_size": 16}}
    (cell,) = plan_cells(from_dict(raw), tmp_path)
    write_cell(tmp_path, cell)
    raw["training"].update(micro_batch_size=4, activation_checkpointing=True)
    (again,) = plan_cells(from_dict(raw), tmp_path)
    assert again.run_id == cell.run_id
    write_cell(tmp_path, again)
    loaded = CellConfig.load(tmp_path / "cells" / cell.run_id)
    assert loaded.training.micro_batch_size == 4 and loaded.training.activation_checkpointing
    raw["training"]["batch_size"] = 32  # what is learned: a different cell (and id)
    (other,) = plan_cells(from_dict(raw), tmp_path)
    assert other.run_id != cell.run_id
    with pytest.raises(PlanError, match="different config"):
        write_cell(tmp_path, CellConfig.from_dict({**again.to_dict(), "total_steps": again.total_steps + 1}))


FAIL_THEN_RESUME = """
import json, sys
from pathlib import Path
from varscale.train import trainer
ref, cell = sys.argv[1:]
print("RC", trainer.train_cell(ref))
orig = trainer.CellRun.train_step
def failing(self):
    if self.p.step == 9:  # after the checkpoint at step 8
        raise RuntimeError("injected failure")
    return orig(self)
trainer.CellRun.train_step = failing
print("RC", trainer.train_cell(cell))
trainer.CellRun.train_step = orig
p = Path(cell) / "config.json"
raw = json.loads(p.read_text())
raw["training"].update(micro_batch_size=4, activation_checkpointing=True)
p.write_text(json.dumps(raw))
print("RC", trainer.train_cell(cell))
"""


def test_a_run_resumed_with_micro_batches_continues_the_same_run(tmp_path):
    _, (cell,) = make_study(tmp_path / "ref", model=NO_NOISE)
    _, _ = make_study(tmp_path / "cell", model=NO_NOISE)
    ref, other = (tmp_path / n / "cells" / cell.run_id for n in ("ref", "cell"))
    r = subprocess.run([PY, "-c", FAIL_THEN_RESUME, str(ref), str(other)], env=env(), capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert [l for l in r.stdout.splitlines() if l.startswith("RC")] == ["RC 0", "RC 1", "RC 0"]
    assert "resumed from step00000008" in r.stdout and "(4 x 4 per rank, activation checkpointing)" in r.stdout
    a, b = metrics(ref), metrics(other)
    assert list(a["step"]) == list(b["step"]) == cell.eval_steps
    for col in ("train_loss", "test_loss_avg", "test_err_avg", "grad_norm"):
        np.testing.assert_allclose(b[col], a[col], rtol=0, atol=1e-5, err_msg=col)
