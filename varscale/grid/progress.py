"""Progress of a running study: one bar for the study, one per running cell.

The study bar counts training FLOPs (cells differ by orders of magnitude in cost, so a
count of cells would give a useless ETA): cells done / total, percent of the planned FLOPs,
and an ETA from the FLOP rate seen since this launcher started. Each running cell gets a
bar of its steps, read from its ``status.json`` (the cell runs in another process).

On a terminal these are tqdm bars; otherwise (a log file, CI, Slurm output) the bars are
off and a one-line summary is printed every ``log_every_s`` seconds instead. Event lines
("<run_id>: done ...") are printed either way.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Optional

from varscale.schema import StudyLayout, read_json


def _fmt_s(s: float) -> str:
    s = int(max(s, 0))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def say(msg: str) -> None:
    """Print an event line of the launcher (above the bars when they are drawn)."""
    Progress.write(msg)


class Progress:
    _active: Optional["Progress"] = None

    def __init__(self, mode: str = "auto", log_every_s: float = 60.0):
        self.bars = mode == "on" or (mode == "auto" and sys.stderr.isatty())
        self.log_every_s = log_every_s
        self.layout: Optional[StudyLayout] = None
        self.cost: dict[str, float] = {}
        self.steps: dict[str, int] = {}
        self.first: dict[str, int] = {}
        self.finished_ids: set[str] = set()
        self.flops_base = 0.0  # FLOPs of cells finished before this launcher started
        self.t0 = time.time()
        self.study_bar: Any = None
        self.cell_bars: dict[str, Any] = {}
        self.last_log = time.time()
        self.spent_at_start: Optional[float] = None
        Progress._active = self

    # ------------------------------------------------------------------ events
    @classmethod
    def write(cls, msg: str) -> None:
        p = cls._active
        if p is not None and p.bars and p.study_bar is not None:
            from tqdm import tqdm

            tqdm.write(msg, file=sys.stdout)  # clears and redraws the bars (on stderr) around it
        else:
            print(msg, flush=True)

    def start(self, cells: list[Any], layout: StudyLayout, done: list[str]) -> None:
        self.layout = layout
        from varscale.grid.plan import cell_cost

        self.cost = {c.run_id: cell_cost(c) for c in cells}
        self.steps = {c.run_id: int(c.total_steps) for c in cells}
        # a WSD decay branch starts at its stable run's branch step, not at 0
        self.first = {c.run_id: int(getattr(c, "branch_step", None) or 0) if getattr(c, "branch_from", None) else 0
                      for c in cells}
        self.finished_ids = set(done)
        self.t0 = time.time()
        self.spent_at_start = self._spent({})
        if self.bars and len(done) < len(cells):
            from tqdm import tqdm

            # a status line more than a bar: the text carries the numbers, drawn by hand
            self.study_bar = tqdm(total=1, position=0, leave=True, file=sys.stderr, bar_format="{desc}")
            self._update_study({})

    def count(self) -> str:
        return f"{len(self.finished_ids) + 0}/{len(self.cost)}" if self.cost else "?"

    def started(self, rid: str) -> None:
        if self.study_bar is None:
            return
        from tqdm import tqdm

        taken = {b.pos for b in self.cell_bars.values()}
        pos = next(i for i in range(1, len(taken) + 2) if i not in taken and -i not in taken)
        self.cell_bars[rid] = tqdm(total=self.steps.get(rid, 0), desc=rid, position=pos, leave=False,
                                   file=sys.stderr, unit="step", dynamic_ncols=True)

    def stopped(self, rid: str) -> None:
        bar = self.cell_bars.pop(rid, None)
        if bar is not None:
            bar.close()

    def finished(self, rid: str, ok: bool = True) -> None:
        self.finished_ids.add(rid)

    # ------------------------------------------------------------------ periodic
    def _cell_step(self, rid: str) -> int:
        st = read_json(self.layout.cell(rid).status_json, {}) if self.layout else {}
        return int((st or {}).get("step") or 0)

    def _fraction(self, rid: str) -> float:
        first, total = self.first.get(rid, 0), self.steps.get(rid, 1)
        return min(max(self._cell_step(rid) - first, 0) / max(total - first, 1), 1.0)

    def _spent(self, running: dict[str, Any]) -> float:
        done = sum(self.cost.get(r, 0.0) for r in self.finished_ids)
        run = sum(self.cost.get(r, 0.0) * self._fraction(r) for r in running)
        return done + run

    def _line(self, running: dict[str, Any]) -> tuple[float, str]:
        total = sum(self.cost.values()) or 1.0
        spent = self._spent(running)
        if self.spent_at_start is None:
            self.spent_at_start = spent
        rate = (spent - self.spent_at_start) / max(time.time() - self.t0, 1e-9)
        eta = _fmt_s((total - spent) / rate) if rate > 0 else "?"
        pct = 100.0 * spent / total
        line = (f"cells {len(self.finished_ids)}/{len(self.cost)} done, {len(running)} running, "
                f"{pct:.0f}% of {total:.3g} FLOPs, elapsed {_fmt_s(time.time() - self.t0)}, ETA {eta}")
        return pct, line

    def _update_study(self, running: dict[str, Any]) -> None:
        pct, line = self._line(running)
        k = int(round(20 * min(pct, 100.0) / 100))
        self.study_bar.set_description_str(f"study [{'#' * k}{'.' * (20 - k)}] {line}", refresh=True)

    def tick(self, running: dict[str, Any]) -> None:
        if self.study_bar is not None:
            for rid, bar in self.cell_bars.items():
                st = read_json(self.layout.cell(rid).status_json, {}) or {}
                bar.n = min(int(st.get("step") or 0), bar.total or 0)
                loss = st.get("last_test_loss_avg")
                if loss is not None:
                    bar.set_postfix_str(f"L_avg {loss:.4f}", refresh=False)
                bar.refresh()
            self._update_study(running)
        elif running and time.time() - self.last_log >= self.log_every_s:
            self.last_log = time.time()
            print("progress: " + self._line(running)[1], flush=True)

    def close(self) -> None:
        for rid in list(self.cell_bars):
            self.stopped(rid)
        if self.study_bar is not None:
            self.study_bar.close()
            self.study_bar = None
        if Progress._active is self:
            Progress._active = None
