"""What a training run reports: metrics rows, status.json, the run record, the log line.

Written into the cell folder (paths from ``varscale.schema.CellLayout``), by rank 0 only:

    metrics/part-<eval index>.parquet  one METRICS_SCHEMA row per evaluation (``write_part``)
    status.json                        replaced atomically at every log line, evaluation and the end
    record.parquet                     one RUN_SCHEMA row at the end (done, diverged or failed)
    DONE                               the final state, written last (``Records.finish``)

Crash safety: a part file's name is the evaluation's index, so an evaluation recomputed
after a resume overwrites its row instead of adding one. ``Records.rows`` keeps every row
written so far; each full checkpoint stores a copy of them (``checkpoints/step<N>/metrics.parquet``),
so a resumed run continues from exactly the rows its checkpoint saw (``Records.restore``) and
a damaged or deleted part of an evaluation before that checkpoint is written again from the
copy (``repair_parts``, which also repairs a finished cell, torch-free: ``varscale run`` calls
it for done cells). ``Progress`` is the trainer's own state, saved in every checkpoint's
``client_state`` so a resumed run carries on with the same counters.
"""
from __future__ import annotations

import datetime as _dt
import math
import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from varscale.cell import CellConfig
from varscale.schema import (CellLayout, atomic_write_bytes, atomic_write_json, parquet_problem, read_json, write_part,
                             write_record)


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class Window:
    """Training steps since the last metrics row (or log line): loss sum, count, images, seconds."""
    loss_sum: float = 0.0
    n: int = 0
    images: int = 0
    seconds: float = 0.0

    def add(self, loss: float, images: int, seconds: float) -> None:
        self.loss_sum += loss
        self.n += 1
        self.images += images
        self.seconds += seconds

    # the checkpoint's client_state keeps the keys it has always had
    def to_state(self) -> dict[str, Any]:
        return {"loss_sum": self.loss_sum, "n": self.n, "images": self.images, "time": self.seconds}

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> "Window":
        return cls(d["loss_sum"], d["n"], d["images"], d["time"])


TIMING_KEYS = ("compute", "data", "eval", "checkpoint", "log", "setup")


@dataclass
class Progress:
    """The trainer's counters; everything but ``since_log`` survives a resume."""
    step: int = 0
    wall_s: float = 0.0  # training only: evaluation and checkpoints excluded
    grad_norm: float = math.nan  # of the last step
    lr: float = 0.0  # of the last step
    since_row: Window = field(default_factory=Window)
    since_log: Window = field(default_factory=Window)
    timing: dict[str, float] = field(default_factory=lambda: dict.fromkeys(TIMING_KEYS, 0.0))

    def client_state(self) -> dict[str, Any]:
        return {"step": self.step, "acc": self.since_row.to_state(), "wall_s": self.wall_s,
                "grad_norm": self.grad_norm, "last_lr": self.lr,
                "timing": dict(self.timing), "varscale_version": 1}

    def restore(self, client: dict[str, Any]) -> None:
        """Continue from a checkpoint of this run (this process's setup time is kept)."""
        self.step = int(client["step"])
        self.since_row = Window.from_state(client["acc"])
        self.wall_s = float(client["wall_s"])
        self.grad_norm = client["grad_norm"]
        self.lr = client["last_lr"]
        for k, v in client.get("timing", {}).items():
            if k != "setup":
                self.timing[k] = v


@dataclass(frozen=True)
class ModelSize:
    n_params: int
    n_params_blocks: int
    n_params_nonembedding: int
    width: int
    heads: int

    @classmethod
    def of(cls, cell: CellConfig, counts: dict) -> "ModelSize":
        """From ``VAR.param_counts()``; VAR-d has d heads."""
        return cls(int(counts["n_params"]), int(counts["n_params_blocks"]),
                   int(counts["n_params_nonembedding"]), cell.width, cell.depth)


def eval_index(cell: CellConfig, step: int) -> Optional[int]:
    """The index (part number) of the evaluation at ``step``: its place in ``eval_steps``, or
    one past the end for a last step that is no evaluation step (the trainer evaluates it)."""
    if step in cell.eval_steps:
        return cell.eval_steps.index(step)
    return len(cell.eval_steps) if step == cell.total_steps else None


def _read_rows(path: Path) -> Optional[list[dict[str, Any]]]:
    """The rows of a parquet file, or None when it is absent or damaged."""
    import pyarrow.parquet as pq

    if not path.is_file() or parquet_problem(path):
        return None
    return pq.read_table(path).to_pylist()


def _part_index(path: Path) -> Optional[int]:
    m = re.fullmatch(r"part-(\d+)\.parquet", path.name)
    return int(m.group(1)) if m else None


def rows_from(cell: CellConfig, rows: list[dict[str, Any]], upto: Optional[int] = None) -> dict[int, dict]:
    """{eval index: row} of the rows at or before step ``upto`` (all with None)."""
    out = {}
    for r in rows:
        i = eval_index(cell, int(r["step"])) if r.get("step") is not None else None
        if i is not None and (upto is None or int(r["step"]) <= upto):
            out[i] = r
    return out


def repair_parts(layout: CellLayout, cell: CellConfig, rows: dict[int, dict], upto: Optional[int] = None,
                 source: str = "") -> list[str]:
    """Write again every part of an evaluation at or before ``upto`` (all with None) that is
    missing or damaged, from ``rows`` ({eval index: row}); one message per part it touched
    or could not."""
    msgs = []
    indices = set(rows) | {i for i in map(_part_index, layout.metrics_parts()) if i is not None}
    for i in sorted(indices):
        step = cell.eval_steps[i] if i < len(cell.eval_steps) else cell.total_steps
        if upto is not None and step > upto:
            continue  # evaluated again by the run that resumes before it
        p = layout.metrics_part(i)
        why = "missing" if not p.exists() else parquet_problem(p)
        if why is None:
            continue
        if i in rows:
            if p.is_dir():
                import shutil

                shutil.rmtree(p)
            write_part(layout.metrics_dir, [rows[i]], i)
            msgs.append(f"metrics part {p.name} (evaluation at step {step}) was {why}: written again from {source}")
        else:
            msgs.append(f"metrics part {p} (evaluation at step {step}) is {why} and no kept checkpoint holds "
                        "a copy of it: it stays lost (the analysis skips it with a warning)")
    return msgs


def kept_rows(layout: CellLayout, cell: CellConfig) -> tuple[dict[int, dict], list[str]]:
    """Every row the cell's kept checkpoints hold a copy of ({eval index: row}, the newest copy
    winning), and the copies read."""
    rows: dict[int, dict] = {}
    used = []
    folders = sorted((d for d in layout.checkpoints.glob("step*") if d.is_dir()), key=lambda d: d.name)
    for d in folders:  # oldest first: a newer copy of the same row replaces an older one
        m = re.fullmatch(r"step(\d+)", d.name)
        got = _read_rows(layout.checkpoint_rows(int(m.group(1)))) if m else None
        if got:
            rows.update(rows_from(cell, got))
            used.append(d.name)
    return rows, used


def repair_finished(cell_dir: str | os.PathLike, log: Callable[[str], Any] = print) -> list[str]:
    """A finished (done or diverged) cell's missing or damaged metrics parts written again from
    the copies its kept checkpoints hold; what it did, each also given to ``log``. Torch-free;
    touches nothing when every part reads."""
    layout = CellLayout(Path(cell_dir))
    bad = [p for p in layout.metrics_parts() if parquet_problem(p)]
    if not bad and not layout.checkpoints.is_dir():
        return []
    cell = CellConfig.load(layout.root)
    have = {i for i in map(_part_index, layout.metrics_parts()) if i is not None}
    if not bad and have >= set(range(len(cell.eval_steps))):
        return []  # every evaluation's part there and readable: the copies need not be read
    rows, used = kept_rows(layout, cell)
    if not bad and set(rows) <= have:
        return []
    msgs = repair_parts(layout, cell, rows, source="the copy in checkpoint " + (used[-1] if used else "?"))
    for m in msgs:
        log(f"[{cell.run_id}] {m}")
    return msgs


class Records:
    """Rows, status and log of one cell's run; only rank 0 (``main``) writes or prints."""

    def __init__(self, layout: CellLayout, cell: CellConfig, size: ModelSize, *, main: bool,
                 world: int, peak_flops: float):
        self.layout, self.cell, self.size = layout, cell, size
        self.main, self.world, self.peak_flops = main, world, peak_flops
        self.state: dict[str, Any] = {"state": "running", "step": 0, "total_steps": cell.total_steps}
        self.rows: dict[int, dict[str, Any]] = {}  # every row written so far, by evaluation index

    def restore(self, step: int, log: Callable[[str], Any]) -> dict[str, Any]:
        """After a resume from the checkpoint at ``step``: ``rows`` from its copy (a checkpoint
        from before copies existed: from the parts), damaged or missing parts of evaluations up
        to ``step`` written again; returns the last row (the run record's finals)."""
        c = self.cell
        copy = self.layout.checkpoint_rows(step)
        got = _read_rows(copy)
        if got is not None:
            self.rows = rows_from(c, got, step)
            source = f"the copy in checkpoint {copy.parent.name}"
        else:  # a checkpoint saved before copies existed: what the parts still hold
            parts = [_read_rows(self.layout.metrics_part(i)) for i in range(len(c.eval_steps) + 1)]
            self.rows = rows_from(c, [r for p in parts if p for r in p], step)
            source = "the parts"
        if self.main:
            for m in repair_parts(self.layout, c, self.rows, upto=step, source=source):
                log(m)
        return self.rows[max(self.rows)] if self.rows else {}

    def copy_rows(self) -> list[dict[str, Any]]:
        """Every row written so far, in evaluation order (a full checkpoint keeps a copy)."""
        return [self.rows[i] for i in sorted(self.rows)]

    def log(self, msg: str) -> None:
        if self.main:
            print(f"[{self.cell.run_id}] {msg}", flush=True)

    def status(self, **kw) -> None:
        """Update status.json's fields (every rank keeps the dict; rank 0 writes it)."""
        self.state.update(kw)
        if self.main:
            self.state.update(updated=now(), pid=os.getpid(), host=socket.gethostname())
            atomic_write_json(self.layout.status_json, self.state)

    def throughput(self, images: float, seconds: float) -> dict[str, float]:
        ips = images / seconds if seconds > 0 else float("nan")
        fps = ips * self.cell.flops_per_image
        return {"images_per_s": ips, "tokens_per_s": ips * self.cell.seq_len, "flops_per_s": fps,
                "mfu": fps / (self.peak_flops * self.world)}

    def identity(self) -> dict[str, Any]:
        c, z = self.cell, self.size
        return {"study": c.study, "run_id": c.run_id, "depth": c.depth, "width": z.width,
                "heads": z.heads, "seed": c.seed, "budget_flops": c.budget_flops,
                "budget_tokens": c.budget_tokens, "budget_unit": c.budget_unit, "n_params": z.n_params,
                "n_params_blocks": z.n_params_blocks, "n_params_nonembedding": z.n_params_nonembedding}

    def write_row(self, eval_index: int, p: Progress, metrics: dict[str, Any]) -> dict[str, Any]:
        """The metrics row of an evaluation at step ``p.step``; written as part ``eval_index``."""
        c, a = self.cell, p.since_row
        tokens = p.step * c.batch_size * c.seq_len
        row = {
            **self.identity(),
            "step": p.step, "total_steps": c.total_steps, "images_seen": p.step * c.batch_size,
            "tokens_seen": tokens, "flops": float(p.step * c.flops_per_step),
            "flops_6nd": 6.0 * self.size.n_params * tokens, "wall_s": p.wall_s, "lr": p.lr,
            **{k: v for k, v in metrics.items() if k != "eval_images"},
            "train_loss": a.loss_sum / a.n if a.n else None,
            "grad_norm": p.grad_norm,
            **self.throughput(a.images, a.seconds),
            "time": _dt.datetime.now(_dt.timezone.utc),
        }
        if self.main:
            write_part(self.layout.metrics_dir, [row], eval_index)
        self.rows[eval_index] = row
        return row

    def log_line(self, p: Progress) -> None:
        """``step 120/1000 loss ... lr ... gnorm ... | img/s tok/s GFLOP/s mfu`` and status.json."""
        L = p.since_log
        loss = L.loss_sum / max(L.n, 1)
        tp = self.throughput(L.images, L.seconds)
        self.log(f"step {p.step}/{self.cell.total_steps} loss {loss:.4f} "
                 f"lr {p.lr:.3g} gnorm {p.grad_norm:.3g} | {tp['images_per_s']:.0f} img/s "
                 f"{tp['tokens_per_s']:.0f} tok/s {tp['flops_per_s'] / 1e9:.2f} GFLOP/s mfu {100 * tp['mfu']:.1f}%")
        self.status(step=p.step, tokens_per_s=tp["tokens_per_s"], train_loss=loss)

    def finish(self, state: str, p: Progress, last_row: dict[str, Any], diverged_step: Optional[int] = None,
               message: Optional[str] = None, mark_done: bool = True) -> None:
        """record.parquet, the final status.json and (unless a failure to retry) DONE, last."""
        c, r = self.cell, last_row
        t = p.timing
        tp = self.throughput(p.step * c.batch_size, t["compute"] + t["data"]) \
            if p.step else {"tokens_per_s": None, "flops_per_s": None, "mfu": None}
        tokens = p.step * c.batch_size * c.seq_len
        record = {
            **self.identity(),
            "status": state, "steps": p.step, "tokens_seen": tokens,
            "flops": float(p.step * c.flops_per_step),
            "flops_6nd": 6.0 * self.size.n_params * tokens, "wall_s": p.wall_s,
            "final_test_loss_avg": r.get("test_loss_avg"), "final_test_loss_last": r.get("test_loss_last"),
            "final_test_err_avg": r.get("test_err_avg"), "final_test_err_last": r.get("test_err_last"),
            "tokens_per_s": tp["tokens_per_s"], "flops_per_s": tp["flops_per_s"], "mfu": tp["mfu"],
            "diverged_step": diverged_step, "message": message,
        }
        if self.main:
            write_record(self.layout, record)
        self.status(state=state, step=p.step, diverged_step=diverged_step, message=message,
                    timing={k: round(v, 3) for k, v in t.items()})
        if self.main and mark_done:
            atomic_write_bytes(self.layout.done, (state + "\n").encode())


def mark_failed(layout: CellLayout, message: str, traceback_text: str) -> None:
    """``state: failed`` in status.json, then traceback.txt (rank 0; no DONE, so the grid
    retries). The small file first: on a full disk the state is what must get through."""
    try:
        prev = read_json(layout.status_json, {}) or {}
    except ValueError:  # a damaged status.json is replaced
        prev = {}
    prev = prev if isinstance(prev, dict) else {}
    prev.update(state="failed", message=message, updated=now(), pid=os.getpid(), host=socket.gethostname())
    atomic_write_json(layout.status_json, prev)
    atomic_write_bytes(layout.traceback, traceback_text.encode())

