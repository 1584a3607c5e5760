"""Learning-rate schedules: the one implementation, driven per step by the trainer (not by
DeepSpeed's scheduler) and read by the analysis half's loss-curve law (``analysis.curve``),
which needs every step's learning rate of every run. A leaf module: no torch, nothing of
varscale imported.

``lin0`` is the VAR paper's schedule (official utils/lr_control.py): a linear warmup from
0.005 x peak over the first ``warmup_frac`` of the steps, the peak held for ``hold_frac`` of
the remaining steps, then a linear decay that reaches ``final_ratio`` x peak exactly at the
last step. ``wsd`` (warmup-stable-decay) keeps the peak until the last ``decay_steps`` steps
and then decays linearly to the same final ratio, so a short decay can branch off a long
stable run at any budget. ``cosine`` is the same warmup, then a half cosine from the peak to
``final_ratio`` x peak at the last step (a schedule ``varscale predict --schedule cosine``
can ask the loss-curve law about).

Steps are 0-based: ``lr_at(s)`` is the learning rate used by the update that makes step
``s + 1`` complete. ``schedule_of_cell(config)`` is the schedule of a cell's ``config.json``
(what the trainer runs); ``history(...)`` the multipliers a run saw at every step, a WSD
branch's first steps being its stable run's.
"""
from __future__ import annotations

from dataclasses import dataclass
import math
from typing import Any, Mapping, Optional, Sequence

WARMUP_START = 0.005  # official wp0


def peak_lr(base_lr: float, batch_size: int, width: int | None = None,
            width_ref: Optional[int] = None, width_power: float = 0.5) -> float:
    """The paper's peak lr (tblr x batch / 256), optionally scaled by (width_ref / width)^p."""
    lr = base_lr * batch_size / 256
    if width_ref is not None and width is not None:
        lr *= (width_ref / width) ** width_power
    return lr


@dataclass(frozen=True)
class Schedule:
    peak: float
    total_steps: int
    warmup_frac: float = 0.02
    hold_frac: float = 0.05
    final_ratio: float = 0.01
    kind: str = "lin0"  # "lin0" | "wsd" | "cosine"
    decay_steps: int = 0  # wsd only: the last decay_steps steps decay linearly

    @property
    def warmup_steps(self) -> int:
        return int(round(self.warmup_frac * self.total_steps))

    def factor(self, step: int) -> float:
        """Multiplier of the peak lr at 0-based step ``step``."""
        T, W = self.total_steps, self.warmup_steps
        if step < W:
            return WARMUP_START + (1 - WARMUP_START) * step / W
        if self.kind == "wsd":
            start = T - self.decay_steps
            if self.decay_steps <= 0 or step < start:
                return 1.0
            # decay_steps updates: the first one at a fraction (1/decay) below peak, the last at final
            p = (step - start + 1) / self.decay_steps
            return 1.0 - (1.0 - self.final_ratio) * min(p, 1.0)
        if self.kind not in ("lin0", "cosine"):
            raise ValueError(f"unknown schedule kind {self.kind!r}")
        span = T - 1 - W
        if span <= 0:
            return 1.0
        if self.kind == "cosine":
            p = min((step - W) / span, 1.0)
            return self.final_ratio + (1.0 - self.final_ratio) * 0.5 * (1.0 + math.cos(math.pi * p))
        p = (step - W) / span  # 0 at the end of warmup, 1 at the last step
        if p < self.hold_frac:
            return 1.0
        rest = (1.0 - p) / (1.0 - self.hold_frac)
        return self.final_ratio + (1.0 - self.final_ratio) * max(rest, 0.0)

    def lr_at(self, step: int) -> float:
        return self.peak * self.factor(step)

    def factors(self, stop: Optional[int] = None) -> list[float]:
        """``factor(s)`` for s = 0 .. stop - 1 (default: every step of the run)."""
        return [self.factor(s) for s in range(self.total_steps if stop is None else stop)]


def schedule_of_cell(cell: Mapping[str, Any], peak: float = 1.0) -> Schedule:
    """The schedule the trainer runs for a cell, from its config (``CellConfig.to_dict()``, i.e.
    a cell's ``config.json``); ``peak`` 1 gives the multipliers of the peak learning rate.
    Fields the file lacks take ``TrainingConfig``'s defaults."""
    tr = cell.get("training") or {}
    return Schedule(peak, int(cell["total_steps"]), float(tr.get("warmup_frac", 0.02)),
                    float(tr.get("hold_frac", 0.05)), float(tr.get("final_lr_ratio", 0.01)),
                    kind=str(cell.get("schedule") or "lin0"), decay_steps=int(cell.get("decay_steps") or 0))


def history(schedule: Schedule, parent: Optional[Schedule] = None, branch_step: Optional[int] = None,
            stop: Optional[int] = None) -> list[float]:
    """The peak multipliers of steps 0 .. stop - 1 (default: the whole run) as the run saw them:
    a WSD branch (``parent`` its stable run's schedule, ``branch_step`` where it branched) ran
    its stable run's first ``branch_step`` steps, then its own schedule."""
    stop = schedule.total_steps if stop is None else int(stop)
    if parent is None or not branch_step:
        return schedule.factors(stop)
    b = min(int(branch_step), stop)
    return parent.factors(b) + [schedule.factor(s) for s in range(b, stop)]


def areas(factors: Sequence[float], decay: float = 0.999) -> tuple[list[float], list[float]]:
    """Tissue et al.'s (2024) areas after each step k = 1 .. len(factors): the forward area
    S1(k) = sum of the multipliers of the first k updates, and the annealing area
    S2(k) = sum over those updates of m, the momentum of the learning-rate drops
    (m_i = decay * m_(i-1) + (f_(i-1) - f_i); a rise, such as warmup, adds no drop)."""
    s1, s2, out1, out2 = 0.0, 0.0, [], []
    m, prev = 0.0, None
    for f in factors:
        drop = 0.0 if prev is None else max(prev - f, 0.0)
        m = decay * m + drop
        s1 += f
        s2 += m
        prev = f
        out1.append(s1)
        out2.append(s2)
    return out1, out2
