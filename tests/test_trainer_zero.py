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
    zo = json.loads((cell_dir / "ds_config.json").read_text())["zero_optimization"]
    assert zo["stage"] == stage

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


def test_zero_buckets_are_sized_from_the_model(trained):
    """ZeRO 1-3 run with buckets of the model's size (its trainable parameters, even), not
    DeepSpeed's 5e8 elements (2 GB per rank); ZeRO-0 has none."""
    from varscale.train.engine import DS_BUCKET, bucket_elements, ds_config

    n = int(metrics(trained[0][1])["n_params"].iloc[0])  # every parameter of VAR trains
    assert n < 1e6 and bucket_elements(n) in (n, n + 1) and bucket_elements(n) % 2 == 0
    for stage in STAGES:
        zo = json.loads((trained[stage][1] / "ds_config.json").read_text())["zero_optimization"]
        buckets = {k: v for k, v in zo.items() if "bucket" in k}
        want = {} if stage == 0 else {"reduce_bucket_size": bucket_elements(n), "allgather_bucket_size": bucket_elements(n)}
        if stage == 3:
            want["stage3_prefetch_bucket_size"] = bucket_elements(n)
        assert buckets == want, (stage, buckets)
    # a model above DeepSpeed's default keeps it; no n_params: DeepSpeed's own defaults
    big = ds_config(batch_size=8, world_size=1, zero_stage=2, lr=1e-4, betas=(0.9, 0.95), weight_decay=0.0,
                    grad_clip=1.0, n_params=2_007_000_000)["zero_optimization"]
    assert big["reduce_bucket_size"] == big["allgather_bucket_size"] == DS_BUCKET
    plain = ds_config(batch_size=8, world_size=1, zero_stage=2, lr=1e-4, betas=(0.9, 0.95), weight_decay=0.0,
                      grad_clip=1.0)["zero_optimization"]
    assert not [k for k in plain if "bucket" in k]


def test_zero_stages_agree_on_one_rank(trained):
    ref = metrics(trained[0][1])
    for stage in STAGES[1:]:
        df = metrics(trained[stage][1])
        np.testing.assert_allclose(df["train_loss"], ref["train_loss"], rtol=0, atol=1e-5)
        np.testing.assert_allclose(df["test_loss_avg"], ref["test_loss_avg"], rtol=0, atol=1e-5)
