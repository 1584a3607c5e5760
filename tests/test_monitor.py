"""Live monitoring through DeepSpeed's monitor: the study's ``monitor`` section, the series a
tiny cell writes, resume trimming, missing backends, and hashes left alone."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from test_trainer_kit import make_study, metrics, train
from varscale.train.monitor import read_series

HAS_TB = importlib.util.find_spec("tensorboard") is not None
HAS_WANDB = importlib.util.find_spec("wandb") is not None


def test_monitored_cell_writes_every_series(tmp_path):
    backends = ["csv"] + (["tensorboard"] if HAS_TB else []) + (["wandb"] if HAS_WANDB else [])
    _, cells = make_study(tmp_path / "s", monitor={"backends": backends})
    cell = cells[0]
    d = tmp_path / "s" / "cells" / cell.run_id
    r = train(d)
    assert r.returncode == 0, r.stderr[-3000:]
    B, T = cell.batch_size, cell.total_steps
    csv = d / "monitor" / "csv"
    m = metrics(d)

    lr = read_series(csv / "Train_Samples_lr.csv")  # DeepSpeed's own, after every step
    assert [x for x, _ in lr] == [B * s for s in range(1, T + 1)]
    by_x = dict(lr)
    for _, row in m.iterrows():  # the lr of a metrics row is that of its step
        assert by_x[B * row["step"]] == pytest.approx(row["lr"], rel=1e-12)

    log_steps = [s for s in range(1, T + 1) if s % cell.training.log_every == 0 or s == T]
    for name in ("train_loss", "grad_norm", "tokens_per_s"):
        series = read_series(csv / f"Train_Samples_{name}.csv")
        assert [x for x, _ in series] == [B * s for s in log_steps], name
        assert all(np.isfinite(v) for _, v in series), name
    assert (csv / "Train_Samples_train_loss.csv").read_text().splitlines()[0] == "step,train_loss"

    for k in ("test_loss_avg", "test_loss_last", "test_err_avg", "test_err_last"):
        series = read_series(csv / f"Eval_Samples_{k}.csv")
        assert [x for x, _ in series] == [B * s for s in cell.eval_steps], k
        np.testing.assert_allclose([v for _, v in series], m[k], rtol=1e-12, err_msg=k)
    for k in range(2):  # the tiny preset has two scales
        series = read_series(csv / f"Eval_Samples_test_loss_scale{k}.csv")
        np.testing.assert_allclose([v for _, v in series], [row[k] for row in m["test_loss_by_scale"]], rtol=1e-12)
        assert (csv / f"Eval_Samples_test_err_scale{k}.csv").exists()

    if HAS_TB:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        ea = EventAccumulator(str(d / "monitor" / "tensorboard"))
        ea.Reload()
        tags = set(ea.Tags()["scalars"])
        assert {"Train/Samples/train_loss", "Train/Samples/lr", "Eval/Samples/test_loss_avg"} <= tags
        assert [e.step for e in ea.Scalars("Eval/Samples/test_loss_avg")] == [B * s for s in cell.eval_steps]
    if HAS_WANDB:
        runs = list((d / "monitor" / "wandb").glob("offline-run-*"))
        assert len(runs) == 1 and list(runs[0].glob("*.wandb")), "no W&B offline run"


class _FakeCSV:
    filenames: list = []


class _FakeMaster:
    enabled = True

    def __init__(self):
        self.csv_monitor = _FakeCSV()
        self.csv_monitor.filenames = []


class _FakeEngine:
    def __init__(self):
        self.monitor = _FakeMaster()


def test_resume_trims_series_to_the_resumed_step(tmp_path):
    from varscale.schema import CellLayout
    from varscale.train.monitor import CellMonitor

    lay = CellLayout(tmp_path / "cell")
    f = lay.monitor_backend_dir("csv") / "Train_Samples_train_loss.csv"
    f.parent.mkdir(parents=True)
    # a crashed process logged steps 4, 8, 12 (x = 16 images per step); the checkpoint is at 8
    f.write_text("step,train_loss\n64,4.1\n128,4.0\n192,3.9\n")
    mon = CellMonitor(_FakeEngine(), lay, batch_size=16, main=True)
    mon.resumed_at(8)
    assert f.read_text().splitlines() == ["step,train_loss", "64,4.1", "128,4.0"]
    # DeepSpeed must not write a second header into the file it appends to
    assert mon.monitor.csv_monitor.filenames == ["Train_Samples_train_loss"]
    mon.resumed_at(0)  # a rerun from scratch keeps the header only
    assert f.read_text().splitlines() == ["step,train_loss"]


def test_monitor_section_changes_no_hash_and_no_run_id():
    from pathlib import Path

    from varscale.config import load_study
    from varscale.grid.cells import plan_cells

    cfg = load_study(Path(__file__).resolve().parents[1] / "runs" / "ci-tiny")
    h, ids = cfg.hash(), [c.run_id for c in plan_cells(cfg, "/tmp/x")]
    cfg.monitor.backends = ["csv", "tensorboard", "wandb"]
    cfg.monitor.wandb_mode = "online"
    assert cfg.hash() == h and cfg.hash("data") == load_study(Path(__file__).resolve().parents[1]
                                                                 / "runs" / "ci-tiny").hash("data")
    cells = plan_cells(cfg, "/tmp/x")
    assert [c.run_id for c in cells] == ids
    assert cells[0].monitor.backends == ["csv", "tensorboard", "wandb"]


def test_unknown_and_missing_backends(monkeypatch):
    from varscale import config as C

    with pytest.raises(C.ConfigError, match=r"monitor\.backends\[0\]: 'tensorbord' .*did you mean 'tensorboard'"):
        C.from_dict({"monitor": {"backends": ["tensorbord"]}})
    with pytest.raises(C.ConfigError, match="duplicate"):
        C.from_dict({"monitor": {"backends": ["csv", "csv"]}})
    cfg = C.from_dict({"monitor": {"backends": ["csv", "tensorboard", "wandb"]}})
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("tensorboard", "wandb") else real(name, *a))
    probs = C.monitor_problems(cfg)
    assert len(probs) == 2 and probs[0].startswith("monitor.backends: tensorboard is not installed here")
    assert C.monitor_problems(C.from_dict({"monitor": {"backends": ["csv"]}})) == []


def test_missing_backend_is_left_out_with_one_line(tmp_path, monkeypatch):
    from varscale.config import MonitorConfig
    from varscale.schema import CellLayout
    from varscale.train import monitor as M

    monkeypatch.setattr(M, "installed", lambda b: b == "csv")
    said = []
    keys = M.ds_keys(MonitorConfig(backends=["tensorboard", "csv"]), CellLayout(tmp_path / "c"), "s", log=said.append)
    assert set(keys) == {"csv_monitor"} and keys["csv_monitor"]["job_name"] == "csv"
    assert len(said) == 1 and "tensorboard is not installed" in said[0]
    assert M.ds_keys(MonitorConfig(), CellLayout(tmp_path / "c"), "s") == {}
