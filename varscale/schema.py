"""The contract between the two halves: the study folder's layout and every parquet schema.

Imports only pyarrow (and the standard library) so that ``analysis`` can use it without
torch. ``runs/README.md`` documents the same thing in prose; keep them together.

- ``StudyLayout`` / ``CellLayout`` / ``TokensLayout``: every path of a study folder. No other
  module spells a file or folder name of a study; an old study folder keeps working as long
  as these names stay as they are.
- ``METRICS_SCHEMA`` (one row per evaluation), ``RUN_SCHEMA`` (one record per cell),
  ``QUALITY_SCHEMA`` (one row per sampled checkpoint) and their one writer, ``write_rows``
  (``write_part``, ``write_record``, ``write_quality_row`` name the file). A row with a
  column its schema lacks is an error, not a silently dropped value; a column the row lacks
  is written as null.

Crash safety: every file here is written to a dot-file in its folder, fsynced, then renamed
into place, so a reader never sees a torn file and a crash leaves at most a stray dot-file
(``remove_temp_files``). A full disk is ``DiskFull`` naming the file; a file read back that is
not what it should be is ``DamagedFile`` (one sentence: the file, why, what to do).
"""
from __future__ import annotations

import errno
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

import pyarrow as pa

# 2: budget_unit added to METRICS_SCHEMA and RUN_SCHEMA (parts written before read it as null)
SCHEMA_VERSION = 2

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
        ("budget_unit", pa.string()),  # "flops" | "tokens": the unit the study's budgets are in
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
        ("budget_unit", pa.string()),  # "flops" | "tokens"
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

# One row per (cell, checkpoint) whose samples were scored: quality/part-<run_id>-<step>.parquet
# (written by varscale.quality; read by analysis.load_quality).
QUALITY_SCHEMA = pa.schema(
    [
        ("study", pa.string()),
        ("run_id", pa.string()),
        ("depth", pa.int32()),
        ("step", pa.int64()),
        ("n_params", pa.int64()),
        ("n_params_blocks", pa.int64()),
        ("flops", pa.float64()),  # cumulative training FLOPs at this checkpoint
        ("class_accuracy", pa.float64()),  # in [0, 1]; chance = 1 / num_classes
        ("frechet_distance", pa.float64()),  # classifier-feature Frechet distance (NOT FID)
        ("fid", pa.float64()),  # Inception FID, null unless --inception was given
        ("n_samples", pa.int64()),
        ("cfg", pa.float64()),
        ("top_k", pa.int64()),
        ("top_p", pa.float64()),
        ("seed", pa.int64()),
        ("real_accuracy", pa.float64()),  # the classifier on real held-out images
        ("recon_accuracy", pa.float64()),  # ... on tokenizer reconstructions (ceiling)
        ("recon_frechet_distance", pa.float64()),  # reconstructions vs real (floor)
        ("wall_s", pa.float64()),
        ("time", pa.timestamp("us", tz="UTC")),
    ]
)

# every schema of a study folder, by the name error messages and docs use
SCHEMAS: dict[str, pa.Schema] = {
    "METRICS_SCHEMA": METRICS_SCHEMA,
    "RUN_SCHEMA": RUN_SCHEMA,
    "QUALITY_SCHEMA": QUALITY_SCHEMA,
}

STATUSES = ("pending", "running", "done", "failed", "diverged")
BUDGET_UNITS = ("flops", "tokens")


# --------------------------------------------------------------------------- layout
#
# Every name below is part of the contract: changing one orphans the files of every study
# run before the change. Add a path as a new property here (and a line in runs/README.md);
# never spell it in the module that writes it.


def _step_tag(step: int) -> str:
    return f"step{int(step):08d}"


def part_name(index: int) -> str:
    """``part-<index:06d>.parquet``: a metrics part's name from its evaluation's number."""
    return f"part-{int(index):06d}.parquet"


@dataclass(frozen=True)
class StudyLayout:
    """Where everything of one study lives. ``runs/<study>/`` is the only shared state."""

    root: Path

    @classmethod
    def of(cls, study_dir: str | os.PathLike) -> "StudyLayout":
        return cls(Path(study_dir))

    study_yaml = property(lambda self: self.root / "study.yaml")  # committed; everything else is output
    plan_json = property(lambda self: self.root / "plan.json")  # the planned cells (`plan`, `run`)
    # predicted metrics of every planned run, written before training (`plan --predict-from`)
    predictions_json = property(lambda self: self.root / "predictions.json")
    prepare_traceback = property(lambda self: self.root / "prepare.traceback.txt")  # tokenizer/tokens failed
    # runs trained elsewhere (`varscale import`): where they came from; `varscale run` refuses the folder
    imported_json = property(lambda self: self.root / "imported.json")

    def stage_lock(self, stage: str) -> Path:
        """The study-wide lock of a one-off stage (tokenizer, tokens, fit, figures)."""
        return self.root / f".lock-{stage}"

    # tokenizer: trained once per study (or tokenizer.checkpoint is loaded and measured)
    tokenizer_dir = property(lambda self: self.root / "tokenizer")
    tokenizer_ckpt = property(lambda self: self.tokenizer_dir / "vqvae.pt")
    tokenizer_metrics = property(lambda self: self.tokenizer_dir / "metrics.json")

    # token cache: every image's K index maps, encoded once
    tokens_dir = property(lambda self: self.root / "tokens")

    @property
    def tokens(self) -> "TokensLayout":
        return TokensLayout(self.tokens_dir)

    @property
    def tokens_meta(self) -> Path:
        return self.tokens.meta

    # cells
    cells_dir = property(lambda self: self.root / "cells")

    def cell(self, run_id: str) -> "CellLayout":
        return CellLayout(self.cells_dir / run_id)

    def cell_dirs(self) -> list[Path]:
        """Every cell folder present, sorted by run id (dot-folders are not cells)."""
        if not self.cells_dir.is_dir():
            return []
        return sorted(p for p in self.cells_dir.iterdir() if p.is_dir() and not p.name.startswith("."))

    # report: written by analysis (varscale fit / figures) and the launcher's analysis stages
    report_dir = property(lambda self: self.root / "report")
    fits_json = property(lambda self: self.report_dir / "fits.json")
    fits_md = property(lambda self: self.report_dir / "fits.md")
    # predicted against observed (`varscale check`, alias `fit --check-predictions`)
    check_json = property(lambda self: self.report_dir / "predictions-check.json")
    check_md = property(lambda self: self.report_dir / "predictions-check.md")
    PREDICTOR_GLOB = "predictor-*.npz"

    def predictor_cache(self, key: str) -> Path:
        """A fitted predictor (``analysis.predictor_cache``), named by the key of what it was
        fitted on and how: ``varscale predict`` / ``allocate`` read it instead of refitting."""
        return self.report_dir / f"predictor-{key}.npz"

    def predictor_caches(self) -> list[Path]:
        return sorted(self.report_dir.glob(self.PREDICTOR_GLOB)) if self.report_dir.is_dir() else []

    def stage_log(self, stage: str) -> Path:
        """What ``varscale run``'s fit / figures stage printed."""
        return self.report_dir / f"{stage}.log"

    def stage_stamp(self, stage: str) -> Path:
        """The finished cells an analysis stage last saw (its rerun-or-skip fingerprint)."""
        return self.report_dir / f".{stage}.stamp"

    # sample quality (varscale quality)
    quality_dir = property(lambda self: self.root / "quality")
    quality_classifier = property(lambda self: self.quality_dir / "classifier.pt")
    quality_reference = property(lambda self: self.quality_dir / "reference.json")
    quality_real_stats = property(lambda self: self.quality_dir / "real_stats.npz")

    def quality_inception_stats(self, n: int) -> Path:
        return self.quality_dir / f"inception_real_stats-{int(n)}.npz"

    def quality_part(self, run_id: str, step: int) -> Path:
        return self.quality_dir / f"part-{run_id}-{int(step):08d}.parquet"

    def quality_parts(self) -> list[Path]:
        return sorted(self.quality_dir.glob("part-*.parquet"))

    # samples (varscale sample)
    samples_dir = property(lambda self: self.root / "samples")

    def samples(self, run_id: str) -> Path:
        return self.samples_dir / run_id

    @staticmethod
    def fig7_stem(step: int) -> str:
        """File stem of a Fig. 7 sample grid (``<stem>.png`` / ``.npy`` / ``.json``)."""
        return f"step-{int(step):08d}"

    def fig7_pngs(self) -> list[Path]:
        """Every Fig. 7 sample grid, ``samples/<run_id>/step-<step>.png``, sorted."""
        return sorted(self.samples_dir.glob("*/step-*.png"))

    # the Slurm executor: submitit's job folders
    slurm_dir = property(lambda self: self.root / "slurm")


@dataclass(frozen=True)
class TokensLayout:
    """The token cache folder (``tokens/`` of a study, or any folder the low-level API is given)."""

    root: Path

    meta = property(lambda self: self.root / "meta.json")  # written last: its presence = complete

    def idx(self, split: str) -> Path:
        return self.root / f"{split}_idx.npy"

    def labels(self, split: str) -> Path:
        return self.root / f"{split}_labels.npy"


@dataclass(frozen=True)
class CellLayout:
    """One cell's folder, ``cells/<run_id>/``."""

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
    metrics_dir = property(lambda self: self.root / "metrics")
    record = property(lambda self: self.root / "record.parquet")
    done = property(lambda self: self.root / "DONE")
    lock = property(lambda self: self.root / "LOCK")
    log = property(lambda self: self.root / "train.log")
    traceback = property(lambda self: self.root / "traceback.txt")
    # live curves (study.yaml `monitor:`): DeepSpeed's monitor writes monitor/<backend>/
    # (csv: one <tag>.csv per series; tensorboard: event files; wandb: offline runs)
    monitor_dir = property(lambda self: self.root / "monitor")

    def monitor_backend_dir(self, backend: str) -> Path:
        return self.monitor_dir / backend

    def metrics_part(self, index: int) -> Path:
        return self.metrics_dir / part_name(index)

    def metrics_parts(self) -> list[Path]:
        return sorted(self.metrics_dir.glob("part-*.parquet"))

    # checkpoints/: DeepSpeed checkpoints step<NNNNNNNN>/ (+ weights.pt), LATEST.json
    checkpoints = property(lambda self: self.root / "checkpoints")
    latest_json = property(lambda self: self.checkpoints / "LATEST.json")  # names the complete ones
    checkpoint_tag = staticmethod(_step_tag)  # the folder name (and DeepSpeed tag) of a step

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints / _step_tag(step)

    def weights(self, step: int) -> Path:
        """Model weights alone (no optimizer state), loadable without DeepSpeed."""
        return self.checkpoint(step) / "weights.pt"

    def checkpoint_manifest(self, step: int) -> Path:
        """Written last into a full checkpoint: its files and their sizes (its presence = complete)."""
        return self.checkpoint(step) / "manifest.json"

    def checkpoint_rows(self, step: int) -> Path:
        """A copy of every metrics row written up to a full checkpoint (restores a damaged part)."""
        return self.checkpoint(step) / "metrics.parquet"


# --------------------------------------------------------------------------- atomic writes


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


_UMASK = _umask()  # read once at import: os.umask can only be read by setting it


class DiskFull(OSError):
    """A write failed because the disk (or the user's quota) is full: names the file.

    An ``OSError`` with errno ENOSPC, so a caller that handles OSError still does; its text
    is one sentence for a status.json message or a command's error line.
    """

    def __init__(self, path: str | os.PathLike, detail: str = "no space left on device"):
        super().__init__(errno.ENOSPC, detail, str(path))
        self.path = Path(path)
        self.detail = detail

    def __str__(self) -> str:
        return f"the disk is full: writing {self.path} failed ({self.detail}); free space on that disk and rerun"


LOW_DISK_BYTES = 64 << 20  # below this much free space a write error without an errno is "disk full"


def is_disk_full(e: BaseException, where: Optional[str | os.PathLike] = None) -> bool:
    """True for an error that says the disk or quota is full: ENOSPC / EDQUOT from the OS, or
    (with ``where``, a folder on that disk) torch's zip writer, which turns a failed write into
    ``RuntimeError: ... file write failed`` with no errno, when that disk has next to nothing left."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if where is None or not isinstance(e, RuntimeError) or "write failed" not in str(e):
        return False
    import shutil

    try:
        return shutil.disk_usage(where).free < LOW_DISK_BYTES
    except OSError:
        return False


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a dot-file in the same folder, fsync, then rename: never a torn file.

    A full disk (ENOSPC, EDQUOT) raises :class:`DiskFull` naming ``path``; the file keeps its
    previous content (the dot-file is removed).
    """
    path = Path(path)
    try:
        _atomic_write(path, data)
    except OSError as e:
        if isinstance(e, DiskFull) or not is_disk_full(e):
            raise
        raise DiskFull(path, e.strerror or str(e)) from e


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", dir=path.parent)
    try:
        # mkstemp makes the file 0600; a study folder is shared (a cluster group, a notebook
        # server), so its files get the permissions a plain open() would give them
        os.fchmod(fd, 0o666 & ~_UMASK)
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


def remove_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Delete the dot-files an atomic write left in ``folder`` when its process was killed
    between creating and renaming them (the only dot-files varscale writes); returns them.
    Call it only where no other process writes (a cell's folder under its lock)."""
    out = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return out
    for p in entries:
        if p.name.startswith(".") and p.is_file():
            p.unlink(missing_ok=True)
            out.append(p)
    return out


def read_json(path: str | os.PathLike, default: Any = None) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return default


# --------------------------------------------------------------------------- parquet


def schema_name(schema: pa.Schema) -> str:
    for name, s in SCHEMAS.items():
        if s is schema or s.equals(schema):
            return name
    return "the given schema"


def write_rows(path: str | os.PathLike, rows: Iterable[dict], schema: pa.Schema) -> Path:
    """The one parquet writer of a study: ``rows`` as one file at ``path``, atomically.

    A column the rows lack is written as null; a key that is not a column of ``schema`` is a
    ValueError naming it (a value would otherwise vanish without a trace: add the column to
    the schema above, and a line to runs/README.md).
    """
    import pyarrow.parquet as pq

    rows = list(rows)
    names = set(schema.names)
    unknown = sorted({k for r in rows for k in r} - names)
    if unknown:
        raise ValueError(f"{path}: column(s) {', '.join(repr(k) for k in unknown)} not in "
                         f"{schema_name(schema)} (varscale/schema.py); add them there first")
    table = pa.table({name: [r.get(name) for r in rows] for name in schema.names}, schema=schema)
    sink = pa.BufferOutputStream()
    # a CRC per page, checked on reading (read_parts, parquet_problem): a changed byte in a
    # value is then an error instead of a silently different number
    pq.write_table(table, sink, write_page_checksum=True)
    atomic_write_bytes(path, sink.getvalue().to_pybytes())
    return Path(path)


def write_part(metrics_dir: str | os.PathLike, rows: Iterable[dict], index: int,
               schema: pa.Schema = METRICS_SCHEMA) -> Path:
    """Write rows as ``part-<index:06d>.parquet`` atomically; missing columns become null.

    The index is the evaluation's sequence number, so a rerun after a crash that writes the
    same evaluation again overwrites the same file instead of adding a duplicate row.
    """
    return write_rows(Path(metrics_dir) / part_name(index), rows, schema)


def write_record(cell: CellLayout, record: dict) -> Path:
    """A cell's run record (``record.parquet``, one RUN_SCHEMA row)."""
    return write_rows(cell.record, [record], RUN_SCHEMA)


def write_quality_row(study: StudyLayout, row: dict) -> Path:
    """One QUALITY_SCHEMA row as ``quality/part-<run_id>-<step>.parquet``."""
    return write_rows(study.quality_part(row["run_id"], row["step"]), [row], QUALITY_SCHEMA)


def read_parts(paths: Iterable[str | os.PathLike], schema: Optional[pa.Schema] = None) -> pa.Table:
    """Read parquet files into one table over the union of their schemas.

    A column added in a later schema version is kept (null where absent) rather than
    dropped, which a plain dataset read with the first file's schema would do. With
    ``schema``, each of its columns is there even if no file has it (all null), so a reader
    of old parts can rely on e.g. ``budget_unit`` existing; without it, an empty list of
    paths gives an empty METRICS_SCHEMA table.
    """
    import pyarrow.parquet as pq

    tables = [pq.read_table(p, page_checksum_verification=True) for p in paths]
    if not tables:
        return (schema or METRICS_SCHEMA).empty_table()
    schemas = [t.schema for t in tables] + ([schema] if schema is not None else [])
    unified = pa.unify_schemas(schemas, promote_options="permissive")
    return pa.concat_tables([t.cast(unified) if t.schema == unified else _conform(t, unified) for t in tables])


def _conform(t: pa.Table, schema: pa.Schema) -> pa.Table:
    cols = []
    for f in schema:
        if f.name in t.column_names:
            cols.append(t.column(f.name).cast(f.type))
        else:
            cols.append(pa.nulls(t.num_rows, f.type))
    return pa.table(cols, schema=schema)


# --------------------------------------------------------------------------- damaged files
# One check per file kind, used by the command line (varscale/cli), the trainer and analysis
# alike: each says in a phrase why a file is not what it should be, or None when it is (or is
# absent). A reader that cannot go on raises DamagedFile, whose text is one sentence: the
# file, what is wrong with it, and what to do.


class DamagedFile(Exception):
    """A file varscale reads back is not what it should be: ``"<path> is damaged (<why>); <fix>"``.

    Commands turn it into that one line and exit 2 (``varscale.cli.common.command``); the
    trainer into a failed cell with it as the message.
    """

    def __init__(self, path: str | os.PathLike, why: str, fix: str):
        super().__init__(f"{path} is damaged ({why}); {fix}")
        self.path, self.why, self.fix = Path(path), why, fix


def torch_file_problem(path: str | os.PathLike) -> Optional[str]:
    """Why ``path`` (a file ``torch.save`` wrote: weights.pt, vqvae.pt, a DeepSpeed shard) is not
    whole (None when it is, or is absent). torch.save writes a zip archive with a CRC per
    member; ``torch.load`` does not check them (a flipped byte in a tensor loads silently),
    so every member's CRC is checked here (reads the file once: 0.8 ms for 400 kB here)."""
    import zipfile

    p = Path(path)
    if not p.exists():
        return None
    if not p.is_file():
        return "not a file"
    try:
        if p.stat().st_size == 0:
            return "the file is empty"
        with zipfile.ZipFile(p) as z:
            bad = z.testzip()
    except zipfile.BadZipFile:
        return "not a torch file (truncated or overwritten: no zip directory at its end)"
    except (OSError, EOFError, ValueError, RuntimeError) as e:  # a torn zip can fail in each way
        return f"cannot be read ({e})"
    return f"its member {bad} fails its CRC check (the bytes changed after writing)" if bad else None


def parquet_problem(path: str | os.PathLike) -> Optional[str]:
    """Why ``path`` (a metrics part, a record) is not a readable parquet file with rows (None when
    it is, or is absent)."""
    import pyarrow.parquet as pq

    p = Path(path)
    if not p.exists():
        return None
    if not p.is_file():
        return "not a file"
    try:
        t = pq.read_table(p, page_checksum_verification=True)
    except Exception as e:  # noqa: BLE001 - truncated, foreign, empty: all the same to a reader
        text = re.sub(r"^Could not open Parquet input source '[^']*': ", "", str(e).splitlines()[0] if str(e) else "")
        if "magic bytes not found" in text:
            return "not a parquet file (truncated or overwritten: no parquet footer at its end)"
        return f"unreadable by pyarrow ({text[:120] or type(e).__name__})"
    return None if t.num_rows else "no rows"


def _text_problem(path: Path) -> tuple[Optional[str], Optional[str]]:
    """(text, None), (None, why it cannot be read as text), or (None, None) when absent."""
    try:
        return Path(path).read_text(encoding="utf-8"), None
    except FileNotFoundError:
        return None, None
    except UnicodeDecodeError as e:
        return None, f"not a text file (byte {e.start} is not UTF-8)"
    except OSError as e:
        return None, f"cannot be read ({e.strerror or e})"


def json_problem(path: str | os.PathLike, want: type = dict) -> Optional[str]:
    """Why ``path`` is not a readable JSON ``want`` (None when it is, or when it is absent)."""
    text, why = _text_problem(Path(path))
    if text is None:
        return why
    if not text.strip():
        return "the file is empty"
    try:
        raw = json.loads(text)
    except ValueError as e:
        return f"not JSON ({e})"
    if not isinstance(raw, want):
        return f"expected a JSON {'object' if want is dict else want.__name__}, got {type(raw).__name__}"
    return None


def yaml_problem(path: str | os.PathLike) -> Optional[str]:
    """Why ``path`` (a study.yaml) is not a readable YAML mapping (None when it is, or is absent)."""
    import yaml

    text, why = _text_problem(Path(path))
    if text is None:
        return why
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        return f"YAML syntax: {getattr(e, 'problem', None) or str(e).splitlines()[0]}{where}"
    if raw is None:
        return "the file is empty"
    return None if isinstance(raw, dict) else f"expected a mapping of sections, got {type(raw).__name__}"
