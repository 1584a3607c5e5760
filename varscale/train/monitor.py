"""Live curves of a cell through DeepSpeed's monitor (TensorBoard, W&B offline, CSV).

The study's ``monitor`` section (``varscale.config.MonitorConfig``) becomes the DeepSpeed
config keys ``tensorboard`` / ``wandb`` / ``csv_monitor`` (:func:`ds_keys`), so
``deepspeed.initialize`` builds its ``MonitorMaster`` and every series goes through
``engine.monitor.write_events`` (written by rank 0 only). The parquet metrics parts stay the
record; these files are for watching a run while it trains and are never read back.

Series (one per tag; the x-axis of every one is the number of images seen, DeepSpeed's
``global_samples``, the axis of the ``Train/Samples/lr`` series DeepSpeed writes by itself
after every step, so that all of a cell's series share one axis as W&B requires):

    Train/Samples/lr            every step (DeepSpeed's own)
    Train/Samples/train_loss    mean training loss over the last ``training.log_every`` steps
    Train/Samples/grad_norm     of the last step
    Train/Samples/tokens_per_s  over the last ``training.log_every`` steps
    Eval/Samples/<metric>       every evaluation: test_loss_avg, test_loss_last, test_err_avg,
                                test_err_last and, per scale k, test_loss_scale<k>, test_err_scale<k>

Written under ``cells/<run_id>/monitor/<backend>/`` (``CellLayout.monitor_backend_dir``):
``csv/<tag with / as _>.csv`` (columns ``step,<name>``), ``tensorboard/`` event files,
``wandb/`` offline runs. A backend whose package is not installed is left out with one
line in the cell's log; the cell trains on.

Crash safety: DeepSpeed appends to the CSV files as it goes, so a crash can leave rows past
the checkpoint a rerun resumes from; :meth:`CellMonitor.resumed_at` trims every CSV to the
resumed step (rewritten atomically) before the rerun appends, so a series has each step once.
TensorBoard and W&B get a new event file / offline run per process.
"""
from __future__ import annotations

import csv
import importlib.util
import io
import os
from typing import Any, Callable

from varscale.config import MONITOR_MODULES as NEEDS, MonitorConfig
from varscale.schema import CellLayout, atomic_write_bytes

DS_KEY = {"tensorboard": "tensorboard", "wandb": "wandb", "csv": "csv_monitor"}
TRAIN, EVAL = "Train/Samples/", "Eval/Samples/"
EVAL_KEYS = ("test_loss_avg", "test_loss_last", "test_err_avg", "test_err_last")


def installed(backend: str) -> bool:
    mod = NEEDS[backend]
    return mod is None or importlib.util.find_spec(mod) is not None


def ds_keys(mon: MonitorConfig, layout: CellLayout, study: str,
            log: Callable[[str], None] = print) -> dict[str, Any]:
    """The DeepSpeed config keys of the installed backends (empty: monitoring is off).

    DeepSpeed writes to ``<output_path>/<job_name>``: here ``monitor/<backend>``. W&B is
    configured through its environment (mode, folder, run name), which ``wandb.init`` reads.
    """
    out: dict[str, Any] = {}
    for b in mon.backends:
        if not installed(b):
            log(f"monitor: {b} is not installed on this machine (pip install 'varscale[monitor]'); "
                f"training without it")
            continue
        if b == "wandb":
            # wandb.init writes into $WANDB_DIR/wandb/, i.e. monitor/wandb/
            layout.monitor_dir.mkdir(parents=True, exist_ok=True)
            os.environ.update(WANDB_MODE=mon.wandb_mode, WANDB_DIR=str(layout.monitor_dir.resolve()),
                              WANDB_NAME=layout.run_id, WANDB_SILENT="true", WANDB_CONSOLE="off")
            out["wandb"] = {"enabled": True, "project": mon.wandb_project or study, "group": study}
        else:
            out[DS_KEY[b]] = {"enabled": True, "output_path": str(layout.monitor_dir.resolve()), "job_name": b}
    return out


class CellMonitor:
    """The trainer's side of the monitor: what it logs and when (rank 0 writes)."""

    def __init__(self, engine, layout: CellLayout, batch_size: int, main: bool):
        self.monitor = getattr(engine, "monitor", None)
        self.enabled = bool(self.monitor is not None and self.monitor.enabled)
        self.layout, self.batch_size, self.main = layout, int(batch_size), main

    def _write(self, events: list[tuple[str, float, int]]) -> None:
        if self.enabled and events:
            self.monitor.write_events(events)

    def resumed_at(self, step: int) -> None:
        """Before the first event of this process: the CSV series end at ``step``."""
        if not (self.enabled and self.main):
            return
        csv_mon = getattr(self.monitor, "csv_monitor", None)
        folder = self.layout.monitor_backend_dir("csv")
        if csv_mon is None or not folder.is_dir():
            return
        samples = step * self.batch_size
        for f in sorted(folder.glob("*.csv")):
            _trim_csv(f, samples)
            # DeepSpeed writes a header the first time it writes a tag in a process; these
            # files have theirs already
            if f.stem not in csv_mon.filenames:
                csv_mon.filenames.append(f.stem)

    def train(self, step: int, loss: float, grad_norm: float, tokens_per_s: float) -> None:
        x = step * self.batch_size
        self._write([(TRAIN + "train_loss", float(loss), x), (TRAIN + "grad_norm", float(grad_norm), x),
                     (TRAIN + "tokens_per_s", float(tokens_per_s), x)])

    def evaluation(self, step: int, row: dict[str, Any]) -> None:
        x = step * self.batch_size
        ev = [(EVAL + k, float(row[k]), x) for k in EVAL_KEYS if row.get(k) is not None]
        for name, key in (("test_loss", "test_loss_by_scale"), ("test_err", "test_err_by_scale")):
            for k, v in enumerate(row.get(key) or []):
                ev.append((f"{EVAL}{name}_scale{k}", float(v), x))
        self._write(ev)


def _trim_csv(path, max_step: int) -> None:
    """Keep the header and the rows at ``step <= max_step`` (atomically); unreadable rows go."""
    keep: list[list[str]] = []
    with open(path, newline="") as f:
        for i, row in enumerate(csv.reader(f)):
            if i == 0:
                keep.append(row)
                continue
            try:
                if row and float(row[0]) <= max_step:
                    keep.append(row)
            except ValueError:
                pass
    buf = io.StringIO()
    csv.writer(buf).writerows(keep)
    atomic_write_bytes(path, buf.getvalue().encode())


def read_series(path) -> list[tuple[int, float]]:
    """A CSV series as (images seen, value) pairs (for tests and notebooks)."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return [(int(float(r[0])), float(r[1])) for r in rows[1:] if r]


