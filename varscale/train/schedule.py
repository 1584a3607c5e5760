"""Learning-rate schedules, driven per step by the trainer (not by DeepSpeed's scheduler).

``lin0`` is the VAR paper's schedule (official utils/lr_control.py): a linear warmup from
0.005 x peak over the first ``warmup_frac`` of the steps, the peak held for ``hold_frac`` of
the remaining steps, then a linear decay that reaches ``final_ratio`` x peak exactly at the
last step. ``wsd`` (warmup-stable-decay) keeps the peak until the last ``decay_steps`` steps
and then decays linearly to the same final ratio, so a short decay can branch off a long
stable run at any budget.

Steps are 0-based: ``lr_at(s)`` is the learning rate used by the update that makes step
``s + 1`` complete.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

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
    kind: str = "lin0"  # "lin0" | "wsd"
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
        if self.kind != "lin0":
            raise ValueError(f"unknown schedule kind {self.kind!r}")
        span = T - 1 - W
        if span <= 0:
            return 1.0
        p = (step - W) / span  # 0 at the end of warmup, 1 at the last step
        if p < self.hold_frac:
            return 1.0
        rest = (1.0 - p) / (1.0 - self.hold_frac)
        return self.final_ratio + (1.0 - self.final_ratio) * max(rest, 0.0)

    def lr_at(self, step: int) -> float:
        return self.peak * self.factor(step)
