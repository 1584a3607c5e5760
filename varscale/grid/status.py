"""``varscale status <study-dir>``: one line per cell (state, progress, losses, speed), totals.

Reads only the study folder (``plan.json``, ``cells/*/{config,status}.json``, ``DONE``,
``LOCK``, the last metrics part of each cell), never imports torch and writes nothing, so it
answers instantly and works on a login node while a grid runs elsewhere. The losses are the
held-out ones of the cell's latest evaluation, named as the report names them: L_avg (token
mean over all scales) and L_last (last scale only).

A cell's state, from its folder:
  done      DONE exists (and status.json does not say diverged)
  diverged  the trainer stopped it on a non-finite / exploding loss; terminal, not retried
  running   LOCK is held by a live process (same host), or a fresh heartbeat (other host)
  failed    status.json says failed, or a traceback.txt is left; retried by the next run
  pending   anything else; ``step`` > 0 means it resumes from its last checkpoint

``watch`` redraws a view every few seconds (``varscale status --watch``) until every cell
has ended (done, diverged or failed: a launcher retries a failed cell only when it is run
again), clearing the screen between frames on a terminal.
"""
from __future__ import annotations

import datetime as _dt
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, TextIO

from varscale.grid.lock import FileLock, describe
from varscale.schema import CellLayout, StudyLayout, read_json

STATES = ("pending", "running", "done", "failed", "diverged")
ENDED = ("done", "diverged", "failed")  # nothing runs these until someone starts `varscale run` again


@dataclass
class CellState:
    run_id: str
    state: str
    step: int = 0
    total_steps: Optional[int] = None
    depth: Optional[int] = None
    seed: Optional[int] = None
    budget_flops: Optional[float] = None
    loss_avg: Optional[float] = None  # L_avg of the latest evaluation (test_loss_avg)
    loss_last: Optional[float] = None  # L_last (test_loss_last)
    tokens_per_s: Optional[float] = None
    owner: Optional[dict] = None
    note: str = ""
    status: dict = field(default_factory=dict)

    @property
    def flops_done(self) -> float:
        """Training FLOPs spent so far, from the step count (budget pro rata)."""
        if self.state in ("done", "diverged") and self.status.get("flops"):
            return float(self.status["flops"])
        if not self.budget_flops or not self.total_steps:
            return 0.0
        if self.state == "done":
            return float(self.budget_flops)
        return float(self.budget_flops) * min(self.step, self.total_steps) / self.total_steps


def _last_line(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except FileNotFoundError:
        return ""
    return lines[-1].strip()[:100] if lines else ""


def _last_evaluation(cell: CellLayout) -> dict:
    """The losses of the cell's latest metrics part ({} when there is none or it is unreadable)."""
    parts = cell.metrics_parts() if cell.metrics_dir.is_dir() else []
    if not parts:
        return {}
    import pyarrow.parquet as pq

    try:
        t = pq.read_table(parts[-1])
    except Exception:  # noqa: BLE001 - a foreign file must not stop the table
        return {}
    cols = [c for c in ("test_loss_avg", "test_loss_last") if c in t.column_names]
    rows = t.select(cols).to_pylist()
    return rows[-1] if rows else {}


def cell_state(cell: CellLayout, planned: Optional[dict] = None) -> CellState:
    """The state of one cell, read from its folder (``planned``: its plan.json entry)."""
    planned = planned or {}
    cfg = read_json(cell.config_json, {}) or {}
    st = read_json(cell.status_json, {}) or {}
    if not isinstance(st, dict):
        st = {}
    s = st.get("state")
    lock = FileLock(cell.lock)
    owner = lock.held_by_other() if cell.lock.exists() else None
    try:
        done_text: Optional[str] = cell.done.read_text().strip()
    except FileNotFoundError:
        done_text = None
    if s == "diverged" or done_text == "diverged":
        state = "diverged"
    elif done_text is not None:
        state = "done"
    elif owner is not None:
        state = "running"
    elif s == "failed" or cell.traceback.exists():
        state = "failed"
    else:
        state = "pending"

    def pick(key: str) -> Any:
        for d in (st, cfg, planned):
            if d.get(key) is not None:
                return d[key]
        return None

    c = CellState(
        run_id=cell.run_id,
        state=state,
        step=int(st.get("step") or 0),
        total_steps=pick("total_steps"),
        depth=pick("depth"),
        seed=pick("seed"),
        budget_flops=pick("budget_flops"),
        loss_avg=st.get("last_test_loss_avg", st.get("test_loss_avg")),
        tokens_per_s=st.get("tokens_per_s"),
        owner=owner,
        status=st,
    )
    last = _last_evaluation(cell)
    if last.get("test_loss_avg") is not None:
        c.loss_avg = last["test_loss_avg"]
    c.loss_last = last.get("test_loss_last")
    if state == "done" and c.total_steps and not c.step:
        c.step = int(c.total_steps)
    if state == "running":
        c.note = describe(owner)
    elif state == "failed":
        c.note = _last_line(cell.traceback) or str(st.get("message", ""))[:100]
    elif state == "diverged":
        c.note = f"diverged at step {st.get('diverged_step', st.get('step', '?'))}"
    elif state == "pending" and c.step > 0:
        c.note = f"interrupted; resumes from its last checkpoint (step <= {c.step})"
    return c


def study_cells(study_dir: str | Path) -> list[CellState]:
    """Every cell of the study: those in plan.json (in plan order), then any other folders."""
    lay = StudyLayout.of(study_dir)
    plan = read_json(lay.plan_json, {}) or {}
    planned = {c["run_id"]: c for c in plan.get("cells", [])}
    ids = list(planned)
    ids += [p.name for p in lay.cell_dirs() if p.name not in planned]
    return [cell_state(lay.cell(r), planned.get(r)) for r in ids]


def _fmt_num(x: Optional[float], spec: str = ".3g") -> str:
    return "-" if x is None else format(x, spec)


def format_table(cells: list[CellState]) -> str:
    rows = [("run_id", "state", "step/total", "L_avg", "L_last", "tok/s", "note")]
    for c in cells:
        total = "?" if c.total_steps is None else str(c.total_steps)
        rows.append((c.run_id, c.state, f"{c.step}/{total}", _fmt_num(c.loss_avg, ".4f"),
                     _fmt_num(c.loss_last, ".4f"), _fmt_num(c.tokens_per_s, ".3g"), c.note))
    n = len(rows[0]) - 1  # the note is last and not padded
    w = [max(len(r[i]) for r in rows) for i in range(n)]
    out = ["  ".join(r[i].ljust(w[i]) for i in range(n)) + ("  " + r[n] if r[n] else "") for r in rows]
    return "\n".join(line.rstrip() for line in out)


def totals(cells: list[CellState]) -> dict:
    counts = {s: sum(c.state == s for c in cells) for s in STATES}
    planned = sum(c.budget_flops or 0.0 for c in cells)
    spent = sum(c.flops_done for c in cells)
    return {"cells": len(cells), **counts, "flops_planned": planned, "flops_spent": spent}


def format_totals(t: dict) -> str:
    parts = [f"{t[s]} {s}" for s in STATES if t[s]]
    frac = f" ({100 * t['flops_spent'] / t['flops_planned']:.0f}% of planned FLOPs)" if t["flops_planned"] else ""
    return f"{t['cells']} cells: " + (", ".join(parts) or "none") + frac


def all_ended(cells: list[CellState]) -> bool:
    """Every cell done, diverged or failed (False while none is planned: a launcher may plan them)."""
    return bool(cells) and all(c.state in ENDED for c in cells)


CLEAR = "\x1b[H\x1b[2J"  # cursor home, erase the screen


def watch(frame: Callable[[], tuple[str, bool]], interval_s: float, max_refreshes: Optional[int] = None,
          out: Optional[TextIO] = None, sleep: Callable[[float], None] = time.sleep) -> int:
    """Print ``frame()`` -> (text, finished) every ``interval_s`` until it says finished (or
    after ``max_refreshes`` frames); the number of frames drawn. A terminal is cleared before
    each frame; anything else (a pipe, a log file) gets the frames one after another."""
    out = out or sys.stdout
    tty = out.isatty()
    n = 0
    while True:
        text, finished = frame()
        n += 1
        stamp = _dt.datetime.now().strftime("%H:%M:%S")
        head = f"{stamp}  every {interval_s:g} s; " + ("every cell has ended" if finished else "Ctrl-C stops")
        out.write((CLEAR if tty else ("\n" if n > 1 else "")) + head + "\n" + text + "\n")
        out.flush()
        if finished or (max_refreshes is not None and n >= max_refreshes):
            return n
        sleep(interval_s)
