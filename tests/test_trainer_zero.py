"""Every ZeRO stage trains a depth-2 cell of a tiny study and writes complete parquet rows."""
import json

import numpy as np
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

import subprocess

from test_trainer_kit import PY, env, make_study, metrics
from varscale.schema import METRICS_SCHEMA, RUN_SCHEMA

STAGES = [0, 1, 2, 3]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One cell per ZeRO stage, trained one after another in one process (imports are slow)."""
    root = tmp_path_factory.mktemp("zero")
    out = {}
    for stage in STAGES:
        _, cells = make_study(root / f"z{stage}", training={"zero_stage": stage})
        out[stage] = (cells[0], root / f"z{stage}" / "cells" / cells[0].run_id)
    code = ("import sys; from varscale.train.trainer import train_cell; "
            "sys.exit(max(train_cell(d) for d in sys.argv[1:]))")
    r = subprocess.run([PY, "-c", code, *[str(d) for _, d in out.values()]], env=env(),
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return out


@pytest.mark.parametrize("stage", STAGES)
def test_zero_stage_trains_and_writes_rows(trained, stage):
    cell, cell_dir = trained[stage]
    assert (cell_dir / "DONE").read_text().strip() == "done"
    assert json.loads((cell_dir / "ds_config.json").read_text())["zero_optimization"]["stage"] == stage

    status = json.loads((cell_dir / "status.json").read_text())
    assert status["state"] == "done" and status["step"] == cell.total_steps
    for key in ("total_steps", "last_test_loss_avg", "tokens_per_s", "updated", "pid", "host"):
        assert key in status

    df = metrics(cell_dir)
    assert list(df["step"]) == cell.eval_steps
    assert df["train_loss"].iloc[-1] < df["train_loss"].iloc[0]
    assert df["test_loss_avg"].iloc[-1] < df["test_loss_avg"].iloc[0]
    t = pq.read_table(cell_dir / "metrics" / "part-000000.parquet")
    assert t.schema.equals(METRICS_SCHEMA)
    row = df.iloc[-1]
    for col in METRICS_SCHEMA.names:  # every column filled
        v = row[col]
        assert v is not None and not (isinstance(v, float) and np.isnan(v)), col
    assert row["flops"] == cell.total_steps * cell.flops_per_step
    assert row["tokens_seen"] == cell.total_steps * cell.batch_size * cell.seq_len
    assert row["flops_6nd"] == 6.0 * row["n_params"] * row["tokens_seen"]
    assert 0 <= row["test_err_avg"] <= 1 and len(row["test_loss_by_scale"]) == 2
    assert row["grad_norm"] > 0 and row["mfu"] > 0

    rec = pq.read_table(cell_dir / "record.parquet")
    assert rec.schema.equals(RUN_SCHEMA) and rec.num_rows == 1
    assert rec.column("status")[0].as_py() == "done"
    assert rec.column("final_test_loss_avg")[0].as_py() == pytest.approx(row["test_loss_avg"])

    if stage == 0:  # pandas and pyarrow.dataset read the same table
        via_ds = ds.dataset(str(cell_dir / "metrics"), format="parquet").to_table().to_pandas()
        via_ds = via_ds.sort_values("step").reset_index(drop=True)
        assert via_ds.equals(df)


def test_zero_stages_agree_on_one_rank(trained):
    ref = metrics(trained[0][1])
    for stage in STAGES[1:]:
        df = metrics(trained[stage][1])
        np.testing.assert_allclose(df["train_loss"], ref["train_loss"], rtol=0, atol=1e-5)
        np.testing.assert_allclose(df["test_loss_avg"], ref["test_loss_avg"], rtol=0, atol=1e-5)
