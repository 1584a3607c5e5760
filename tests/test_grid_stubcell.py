"""A stand-in for the trainer that keeps the cell-folder contract in milliseconds.

The grid tests run it in the worker processes through ``VARSCALE_CELL_FN=
test_grid_stubcell:train_cell`` (with ``tests/`` on PYTHONPATH). Like the real trainer it
resumes from its last checkpoint, writes one metrics part per evaluation (index = the
evaluation's number, so a replayed evaluation overwrites its file), keeps status.json
current and writes DONE last. Its "loss" is a deterministic function of (run id, step), so
an interrupted-and-resumed grid must give exactly the rows of an uninterrupted one.

Knobs (environment): STUB_SLEEP seconds per step; STUB_FAIL / STUB_DIVERGE fnmatch
patterns of run ids that raise / diverge. Every start appends a line to ``starts.log`` in
the cell folder, so tests can count how many processes trained a cell.
"""
from __future__ import annotations

import fnmatch
import json
import math
import os
import time
import zlib
from pathlib import Path

from varscale.schema import CellLayout, atomic_write_json, read_json, write_part


def _loss(run_id: str, step: int) -> float:
    h = zlib.crc32(run_id.encode()) % 1000 / 1000.0
    return 4.0 + h + 3.0 / math.sqrt(step)


def train_cell(cell_dir: str) -> int:
    if os.environ.get("RANK", "0") != "0":  # under torchrun: rank 0 does the writing
        with open(Path(cell_dir) / f"rank{os.environ['RANK']}.log", "a") as f:
            f.write(f"{os.getpid()} world {os.environ.get('WORLD_SIZE')}\n")
        return 0
    cell = CellLayout(Path(cell_dir))
    cfg = json.loads(cell.config_json.read_text())
    rid = cfg["run_id"]
    with open(cell.root / "starts.log", "a") as f:
        f.write(f"{os.getpid()} {time.time()}\n")
    ckpt = cell.checkpoints / "latest.json"
    start = (read_json(ckpt, {}) or {}).get("step", 0)
    total = int(cfg["total_steps"])
    evals = list(cfg["eval_steps"])
    ckpts = set(cfg["checkpoint_steps"])
    sleep = float(os.environ.get("STUB_SLEEP", "0"))
    fail = os.environ.get("STUB_FAIL")
    diverge = os.environ.get("STUB_DIVERGE")
    status = {"state": "running", "step": start, "total_steps": total, "pid": os.getpid()}
    atomic_write_json(cell.status_json, status)
    for step in range(start + 1, total + 1):
        if sleep:
            time.sleep(sleep)
        if fail and fnmatch.fnmatch(rid, fail) and step >= min(3, total):
            raise RuntimeError(f"stub failure in {rid} at step {step}")
        if diverge and fnmatch.fnmatch(rid, diverge) and step >= min(3, total):
            atomic_write_json(cell.status_json, {**status, "state": "diverged", "step": step, "diverged_step": step})
            return 3
        if step in evals:
            loss = _loss(rid, step)
            write_part(cell.metrics_dir, [{
                "study": cfg["study"], "run_id": rid, "depth": cfg["depth"], "seed": cfg["seed"],
                "budget_flops": cfg["budget_flops"], "step": step, "total_steps": total,
                "flops": float(step * cfg["flops_per_step"]), "test_loss_avg": loss,
            }], evals.index(step))
            status["last_test_loss_avg"] = loss
        if step in ckpts:
            atomic_write_json(ckpt, {"step": step})
        status.update(step=step, tokens_per_s=1000.0)
        if step % 25 == 0 or step == total:
            atomic_write_json(cell.status_json, status)
    atomic_write_json(cell.status_json, {**status, "state": "done"})
    cell.done.write_text("done\n")
    return 0
