"""The study-folder contract: layout paths are the names old studies were written with, every
parquet schema has one writer, and that writer refuses a column its schema lacks."""
from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from varscale.schema import (METRICS_SCHEMA, QUALITY_SCHEMA, RUN_SCHEMA, SCHEMAS, CellLayout, StudyLayout,
                             read_parts, write_part, write_quality_row, write_record, write_rows)


def test_layout_paths_are_the_names_old_studies_use(tmp_path):
    s = StudyLayout.of(tmp_path)
    rel = lambda p: p.relative_to(tmp_path).as_posix()  # noqa: E731
    c = s.cell("d2-c1e8-s0-abcd1234")
    assert {
        "study": rel(s.study_yaml), "plan": rel(s.plan_json), "vqvae": rel(s.tokenizer_ckpt),
        "tok_metrics": rel(s.tokenizer_metrics), "meta": rel(s.tokens_meta),
        "idx": rel(s.tokens.idx("train")), "labels": rel(s.tokens.labels("val")),
        "lock": rel(s.stage_lock("tokens")), "prep": rel(s.prepare_traceback),
        "fits": rel(s.fits_json), "fits_md": rel(s.fits_md),
        "stamp": rel(s.stage_stamp("fit")), "stage_log": rel(s.stage_log("figures")),
        "clf": rel(s.quality_classifier), "ref": rel(s.quality_reference),
        "real": rel(s.quality_real_stats), "inc": rel(s.quality_inception_stats(1000)),
        "qpart": rel(s.quality_part("r", 12)), "samples": rel(s.samples("r")),
        "fig7": s.fig7_stem(40), "slurm": rel(s.slurm_dir),
        "config": rel(c.config_json), "ds": rel(c.ds_config_json), "status": rel(c.status_json),
        "part": rel(c.metrics_part(3)), "record": rel(c.record), "done": rel(c.done),
        "cell_lock": rel(c.lock), "log": rel(c.log), "tb": rel(c.traceback),
        "latest": rel(c.latest_json), "weights": rel(c.weights(120)), "tag": c.checkpoint_tag(120),
    } == {
        "study": "study.yaml", "plan": "plan.json", "vqvae": "tokenizer/vqvae.pt",
        "tok_metrics": "tokenizer/metrics.json", "meta": "tokens/meta.json",
        "idx": "tokens/train_idx.npy", "labels": "tokens/val_labels.npy",
        "lock": ".lock-tokens", "prep": "prepare.traceback.txt",
        "fits": "report/fits.json", "fits_md": "report/fits.md",
        "stamp": "report/.fit.stamp", "stage_log": "report/figures.log",
        "clf": "quality/classifier.pt", "ref": "quality/reference.json",
        "real": "quality/real_stats.npz", "inc": "quality/inception_real_stats-1000.npz",
        "qpart": "quality/part-r-00000012.parquet", "samples": "samples/r",
        "fig7": "step-00000040", "slurm": "slurm",
        "config": "cells/d2-c1e8-s0-abcd1234/config.json",
        "ds": "cells/d2-c1e8-s0-abcd1234/ds_config.json",
        "status": "cells/d2-c1e8-s0-abcd1234/status.json",
        "part": "cells/d2-c1e8-s0-abcd1234/metrics/part-000003.parquet",
        "record": "cells/d2-c1e8-s0-abcd1234/record.parquet",
        "done": "cells/d2-c1e8-s0-abcd1234/DONE", "cell_lock": "cells/d2-c1e8-s0-abcd1234/LOCK",
        "log": "cells/d2-c1e8-s0-abcd1234/train.log", "tb": "cells/d2-c1e8-s0-abcd1234/traceback.txt",
        "latest": "cells/d2-c1e8-s0-abcd1234/checkpoints/LATEST.json",
        "weights": "cells/d2-c1e8-s0-abcd1234/checkpoints/step00000120/weights.pt",
        "tag": "step00000120",
    }
    assert c.study == s and c.run_id == "d2-c1e8-s0-abcd1234"


def test_unknown_metrics_column_is_an_error_naming_it(tmp_path):
    with pytest.raises(ValueError, match=r"'test_loss_mean'.*METRICS_SCHEMA"):
        write_part(tmp_path, [{"run_id": "r", "step": 1, "test_loss_mean": 4.0}], 0)
    assert not list(tmp_path.iterdir())  # nothing half-written
    with pytest.raises(ValueError, match=r"'bogus'.*RUN_SCHEMA"):
        write_record(CellLayout(tmp_path / "cells" / "r"), {"run_id": "r", "bogus": 1})
    with pytest.raises(ValueError, match=r"'fid50k'.*QUALITY_SCHEMA"):
        write_quality_row(StudyLayout.of(tmp_path), {"run_id": "r", "step": 1, "fid50k": 3.0})


def test_missing_columns_are_null_and_budget_unit_is_a_column(tmp_path):
    assert "budget_unit" in METRICS_SCHEMA.names and "budget_unit" in RUN_SCHEMA.names
    p = write_part(tmp_path, [{"run_id": "r", "step": 5, "budget_unit": "tokens"}], 7)
    assert p.name == "part-000007.parquet"
    t = pq.read_table(p)
    assert t.schema.equals(METRICS_SCHEMA)
    row = t.to_pylist()[0]
    assert row["budget_unit"] == "tokens" and row["test_loss_avg"] is None


def test_quality_rows_go_through_the_schema_writer(tmp_path):
    from varscale import quality as Q

    assert Q.QUALITY_SCHEMA is QUALITY_SCHEMA is SCHEMAS["QUALITY_SCHEMA"]
    p = Q.write_quality_row(tmp_path, {"run_id": "d2", "step": 40, "class_accuracy": 0.5})
    assert p == StudyLayout.of(tmp_path).quality_part("d2", 40)
    assert pq.read_table(p).schema.equals(QUALITY_SCHEMA)
    with pytest.raises(ValueError, match="QUALITY_SCHEMA"):
        Q.write_quality_row(tmp_path, {"run_id": "d2", "step": 40, "not_a_column": 1})
    t = Q.read_quality(tmp_path)
    assert t.column("class_accuracy").to_pylist() == [0.5] and "test_loss_avg" not in t.column_names


def test_old_parts_without_budget_unit_still_read(tmp_path):
    import pyarrow as pa

    old_schema = pa.schema([f for f in METRICS_SCHEMA if f.name != "budget_unit"])
    old = write_rows(tmp_path / "part-000000.parquet", [{"run_id": "r", "step": 1}], old_schema)
    new = write_part(tmp_path, [{"run_id": "r", "step": 2, "budget_unit": "flops"}], 1)
    t = read_parts([old, new])
    assert t.column("budget_unit").to_pylist() == [None, "flops"]
    # with the schema named, the column is there even when no part has it
    t = read_parts([old], METRICS_SCHEMA)
    assert t.column("budget_unit").to_pylist() == [None]


def test_no_module_spells_a_study_path_by_hand():
    """The layout classes own every path: the names of study files appear nowhere else."""
    root = Path(__file__).resolve().parents[1]
    spelled = ['/ "quality"', '/ "samples"', '/ "slurm"', '/ "cells"', '/ "checkpoints"', '/ "metrics"',
               '"LATEST.json"', '"status.json"', '"record.parquet"', '"weights.pt"', '".lock-',
               '"prepare.traceback.txt"', '/ "tokens"', '/ "report"']
    hits = []
    for p in [*root.glob("varscale/**/*.py"), root / "analysis" / "load.py"]:
        if p.name == "schema.py":
            continue
        text = p.read_text()
        hits += [f"{p.relative_to(root)}: {s}" for s in spelled if s in text]
    assert not hits, hits


def test_atomic_writes_get_the_permissions_of_a_plain_open(tmp_path):
    import os
    import stat

    from varscale.schema import atomic_write_json

    atomic_write_json(tmp_path / "a.json", {"x": 1})
    (tmp_path / "b.json").write_text("{}")
    mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)  # noqa: E731
    assert mode(tmp_path / "a.json") == mode(tmp_path / "b.json")
