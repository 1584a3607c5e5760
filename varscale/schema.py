"""The contract between the two halves: study-folder layout and parquet schemas.

Imports only pyarrow (and the standard library) so that ``analysis`` can use it without
torch. ``runs/README.md`` documents the same thing in prose; keep them together.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa

SCHEMA_VERSION = 1

# One row per evaluation of one cell.
METRICS_SCHEMA = pa.schema(
    [
        # identity
        ("study", pa.string()),
        ("run_id", pa.string()),
        ("depth", pa.int32()),
        ("width", pa.int32()),
        ("heads", pa.int32()),
        ("seed", pa.int32()),
        ("budget_flops", pa.float64()),  # the cell's budget in FLOPs (tokens budgets converted)
        ("budget_tokens", pa.float64()),  # the cell's budget in training tokens
        # size
        ("n_params", pa.int64()),  # every trainable parameter of the VAR
        ("n_params_blocks", pa.int64()),  # transformer blocks only (paper's N = 73728 d^3)
        ("n_params_nonembedding", pa.int64()),  # total minus embeddings/positions/class table
        # progress
        ("step", pa.int64()),
        ("total_steps", pa.int64()),
        ("images_seen", pa.int64()),
        ("tokens_seen", pa.int64()),
        ("flops", pa.float64()),  # exact, cumulative training FLOPs (3 x forward)
        ("flops_6nd", pa.float64()),  # 6 * n_params * tokens_seen
        ("wall_s", pa.float64()),  # training wall time (excluding evaluation) so far
        ("lr", pa.float64()),
        # quality on the held-out split (model.eval(), no class dropout)
        ("test_loss_avg", pa.float64()),  # plain token mean over all scales
        ("test_loss_last", pa.float64()),  # last scale only
        ("test_err_avg", pa.float64()),  # 1 - argmax accuracy, in [0, 1]
        ("test_err_last", pa.float64()),
        ("test_loss_by_scale", pa.list_(pa.float64())),
        ("test_err_by_scale", pa.list_(pa.float64())),
        ("train_loss", pa.float64()),  # mean training loss since the previous row
        ("grad_norm", pa.float64()),
        # throughput since the previous row
        ("images_per_s", pa.float64()),
        ("tokens_per_s", pa.float64()),
        ("flops_per_s", pa.float64()),
        ("mfu", pa.float64()),  # flops_per_s / measured matmul peak of this machine
        ("time", pa.timestamp("us", tz="UTC")),
    ]
)

# One record per finished (or failed) cell: cells/<run_id>/record.parquet
RUN_SCHEMA = pa.schema(
    [
        ("study", pa.string()),
        ("run_id", pa.string()),
        ("depth", pa.int32()),
        ("width", pa.int32()),
        ("heads", pa.int32()),
        ("seed", pa.int32()),
        ("budget_flops", pa.float64()),
        ("budget_tokens", pa.float64()),
        ("n_params", pa.int64()),
        ("n_params_blocks", pa.int64()),
        ("n_params_nonembedding", pa.int64()),
        ("status", pa.string()),  # done | failed | diverged
        ("steps", pa.int64()),
        ("tokens_seen", pa.int64()),
        ("flops", pa.float64()),
        ("flops_6nd", pa.float64()),
        ("wall_s", pa.float64()),
        ("final_test_loss_avg", pa.float64()),
        ("final_test_loss_last", pa.float64()),
        ("final_test_err_avg", pa.float64()),
        ("final_test_err_last", pa.float64()),
        ("tokens_per_s", pa.float64()),
        ("flops_per_s", pa.float64()),
        ("mfu", pa.float64()),
        ("diverged_step", pa.int64()),
        ("message", pa.string()),
    ]
)

STATUSES = ("pending", "running", "done", "failed", "diverged")


# --------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class StudyLayout:
    """Where everything of one study lives. ``runs/<study>/`` is the only shared state."""

    root: Path

    @classmethod
    def of(cls, study_dir: str | os.PathLike) -> "StudyLayout":
        return cls(Path(study_dir))

    @property
    def study_yaml(self) -> Path:
        return self.root / "study.yaml"

    @property
    def tokenizer_dir(self) -> Path:
        return self.root / "tokenizer"

    @property
    def tokenizer_ckpt(self) -> Path:
        return self.tokenizer_dir / "vqvae.pt"

    @property
    def tokens_dir(self) -> Path:
        return self.root / "tokens"

    @property
    def cells_dir(self) -> Path:
        return self.root / "cells"

    def cell(self, run_id: str) -> "CellLayout":
        return CellLayout(self.cells_dir / run_id)

    @property
    def report_dir(self) -> Path:
        return self.root / "report"

    @property
    def plan_json(self) -> Path:
        return self.root / "plan.json"


@dataclass(frozen=True)
class CellLayout:
    root: Path

    @property
    def run_id(self) -> str:
        return self.root.name

    @property
    def study(self) -> StudyLayout:
        return StudyLayout(self.root.parent.parent)

    config_json = property(lambda self: self.root / "config.json")  # fully resolved cell config
    ds_config_json = property(lambda self: self.root / "ds_config.json")
    status_json = property(lambda self: self.root / "status.json")
    checkpoints = property(lambda self: self.root / "checkpoints")
    metrics_dir = property(lambda self: self.root / "metrics")
    record = property(lambda self: self.root / "record.parquet")
    done = property(lambda self: self.root / "DONE")
    lock = property(lambda self: self.root / "LOCK")
    log = property(lambda self: self.root / "train.log")
    traceback = property(lambda self: self.root / "traceback.txt")


# --------------------------------------------------------------------------- atomic writes


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a dot-file in the same folder, fsync, then rename: never a torn file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def read_json(path: str | os.PathLike, default: Any = None) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return default


def write_part(metrics_dir: str | os.PathLike, rows: Iterable[dict], index: int,
               schema: pa.Schema = METRICS_SCHEMA) -> Path:
    """Write rows as ``part-<index:06d>.parquet`` atomically; missing columns become null.

    The index is the evaluation's sequence number, so a rerun after a crash that writes the
    same evaluation again overwrites the same file instead of adding a duplicate row.
    """
    import pyarrow.parquet as pq

    rows = list(rows)
    cols = {name: [r.get(name) for r in rows] for name in schema.names}
    table = pa.table(cols, schema=schema)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    path = Path(metrics_dir) / f"part-{index:06d}.parquet"
    atomic_write_bytes(path, sink.getvalue().to_pybytes())
    return path


def read_parts(paths: Iterable[str | os.PathLike]) -> pa.Table:
    """Read parquet files into one table over the union of their schemas.

    A column added in a later schema version is kept (null where absent) rather than
    dropped, which a plain dataset read with the first file's schema would do.
    """
    import pyarrow.parquet as pq

    tables = [pq.read_table(p) for p in paths]
    if not tables:
        return METRICS_SCHEMA.empty_table()
    schema = pa.unify_schemas([t.schema for t in tables], promote_options="permissive")
    return pa.concat_tables([t.cast(schema) if t.schema == schema else _conform(t, schema) for t in tables])


def _conform(t: pa.Table, schema: pa.Schema) -> pa.Table:
    cols = []
    for f in schema:
        if f.name in t.column_names:
            cols.append(t.column(f.name).cast(f.type))
        else:
            cols.append(pa.nulls(t.num_rows, f.type))
    return pa.table(cols, schema=schema)
