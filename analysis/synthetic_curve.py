"""A synthetic warmup-stable-decay study whose every evaluation follows a known loss-curve law.

The default study's design in miniature: per depth one stable run (wsd, no decay) evaluated
``n_evals`` times from step ``min_step`` to its last step, and one decay branch per token
budget (``decay_frac`` of the budget's steps, branched from the stable run) evaluated at its
end; every cell's ``config.json`` holds its schedule, as ``varscale plan`` writes it. Each
evaluation's L_avg is ``law`` (analysis/curve.py's onset law) at the run's N and areas, times a
per-run and a per-evaluation log-normal factor; ``size_shift`` moves a depth's own onset and
asymptote off the law in N (what the per-size law is for). L_last is ``last_ratio`` x L_avg
(the same law with P, E, A scaled), the error rates a fixed function of the loss. For the
curve law's calibration (tests/test_curve.py) and demos.
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from varscale.schema import RUN_SCHEMA, StudyLayout, atomic_write_json, write_part

from .curve import DECAY, schedule_areas
from .curve_onset import Onset, onset_law
from .synthetic import n_params_of


@dataclass
class CurveLaw:
    P: float = 5.7
    beta: float = 2.5
    g: float = 0.4
    k: float = 0.2
    tau: float = 0.03
    E: float = 3.6
    A: float = 0.4
    alpha: float = 0.4
    s0: float = 0.6
    gamma: float = 0.15
    last_ratio: float = 0.9
    run_noise: float = 0.002  # sd of the per-run log factor
    eval_noise: float = 0.002  # sd of the per-evaluation one
    # depth -> (factor on its onset s_N, nats added to its asymptote E_N): off the law in N
    size_shift: dict[int, tuple[float, float]] = field(default_factory=dict)

    def params(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in Onset.PARAMS}

    def loss(self, N, S1, S2, depth: int | None = None):
        """L_avg at N, S1, S2 (tokens); ``depth``: with that depth's ``size_shift``."""
        fs, dE = self.size_shift.get(depth, (1.0, 0.0)) if depth is not None else (1.0, 0.0)
        return onset_law({**self.params(), "E": self.E + dE, "s0": self.s0 * fs}, N, S1, S2)


def _cell(total: int, decay_steps: int = 0, branch_from: str | None = None, branch_step: int | None = None,
          warmup_frac: float = 0.05) -> dict:
    return {"total_steps": int(total), "schedule": "wsd", "decay_steps": int(decay_steps),
            "branch_from": branch_from, "branch_step": branch_step, "budget_unit": "tokens",
            "training": {"warmup_frac": warmup_frac, "hold_frac": 0.0, "final_lr_ratio": 0.01}}


def make_curve_study(root: str | Path, depths: Sequence[int] = (1, 2, 3, 4, 6, 8),
                     budgets: Sequence[float] = (6e5, 1.2e6, 2.4e6), decay_frac: float = 0.2,
                     tokens_per_step: int = 64 * 30, n_evals: int = 8, min_step: int = 20,
                     law: CurveLaw | None = None, rng_seed: int = 0, decay: float = DECAY,
                     study: str = "synthetic-curve") -> Path:
    """Write the study folder under ``root`` and return it (see the module doc)."""
    law = law or CurveLaw()
    root = Path(root)
    layout = StudyLayout.of(root)
    rng = np.random.default_rng(rng_seed)
    t0 = _dt.datetime(2026, 1, 1, tzinfo=_dt.timezone.utc)
    steps_of = [max(int(round(b / tokens_per_step)), 2) for b in budgets]
    decays = [max(1, int(round(decay_frac * s))) for s in steps_of]
    for depth in depths:
        N = n_params_of(depth, 16)
        T = max(s - d for s, d in zip(steps_of, decays))
        stable_id = f"d{depth}-stable"
        stable = _cell(T)
        evals = np.unique(np.geomspace(min_step, T, n_evals).astype(int))
        _write(layout, stable_id, depth, N, stable, None, evals, law, rng, tokens_per_step, T * tokens_per_step,
               study, t0, decay)
        for b, s, dk in zip(budgets, steps_of, decays):
            cell = _cell(s, dk, stable_id, s - dk)
            _write(layout, f"d{depth}-t{b:.2g}", depth, N, cell, stable, np.array([s]), law, rng, tokens_per_step,
                   float(b), study, t0, decay)
    return root


def _write(layout, run_id, depth, N, cell, parent, evals, law, rng, tps, budget, study, t0, decay):
    cl = layout.cell(run_id)
    cl.root.mkdir(parents=True, exist_ok=True)
    atomic_write_json(cl.config_json, {**cell, "run_id": run_id, "depth": depth})
    a1, a2 = schedule_areas(cell, parent, decay)
    run_mult = np.exp(rng.normal(0, law.run_noise))
    rows = []
    for i, step in enumerate(evals):
        S1, S2 = a1[step - 1] * tps, a2[step - 1] * tps
        L = float(law.loss(N, S1, S2, depth)) * run_mult * np.exp(rng.normal(0, law.eval_noise))
        D = int(step * tps)
        row = {"study": study, "run_id": run_id, "depth": depth, "width": 16 * depth, "heads": depth, "seed": 0,
               "budget_flops": 6.0 * N * budget, "budget_tokens": float(budget), "budget_unit": "tokens",
               "n_params": int(N), "n_params_blocks": int(N), "n_params_nonembedding": int(N),
               "step": int(step), "total_steps": int(cell["total_steps"]), "images_seen": D // 30,
               "tokens_seen": D, "flops": 6.0 * N * D, "flops_6nd": 6.0 * N * D, "wall_s": D / 1e5, "lr": 1e-3,
               "test_loss_avg": L, "test_loss_last": law.last_ratio * L,
               "test_err_avg": 0.9 * (1 - np.exp(-L / 6)), "test_err_last": 0.9 * (1 - np.exp(-0.9 * L / 6)),
               "time": t0 + _dt.timedelta(seconds=D / 1e5)}
        rows.append(row)
        write_part(cl.metrics_dir, [row], i)
    atomic_write_json(cl.status_json, {"state": "done", "step": int(evals[-1]), "total_steps": int(cell["total_steps"])})
    last = rows[-1]
    rec = {k: last.get(k) for k in RUN_SCHEMA.names}
    rec.update({"status": "done", "steps": last["step"], "final_test_loss_avg": last["test_loss_avg"],
                "final_test_loss_last": last["test_loss_last"], "final_test_err_avg": last["test_err_avg"],
                "final_test_err_last": last["test_err_last"], "diverged_step": None, "message": ""})
    write_part(cl.root, [rec], 0, schema=RUN_SCHEMA).rename(cl.record)
    cl.done.touch()
