"""A synthetic study with known scaling laws, written in the real study-folder format.

For tests, notebooks and demos before (or without) a trained study: every cell's metrics
parts, status.json, run record and the token cache's meta.json, as the trainer writes
them, with losses drawn from a Chinchilla-form law

    loss_k(N, D) = floor_k + w_k (A / N^alpha + B / D^beta)     (scale k, nats)

so the reducible all-scale and last-scale losses follow that law exactly (before noise),
with A and B multiplied by the token-weighted mean of w_k and by w_last respectively.
Noise is multiplicative on the reducible part: one draw per run (seed-to-seed spread)
plus a smaller one per evaluation.
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from varscale.schema import RUN_SCHEMA, StudyLayout, atomic_write_json, write_part


@dataclass
class SyntheticLaw:
    # sized for CPU-scale studies (N ~ 1e6-1e8 parameters, D ~ 1e7-1e9 tokens): the
    # reducible loss is ~1 nat at N = 1e6 and ~0.5 nat at D = 1e8, so both terms matter
    A: float = 120.0
    alpha: float = 0.34
    B: float = 100.0
    beta: float = 0.28
    patch_nums: tuple[int, ...] = (1, 2, 3, 4, 6, 8)
    floor_first: float = 3.0  # entropy floor of scale 1 (nats); rises linearly to floor_last
    floor_last: float = 4.5
    run_noise: float = 0.01  # sd of the per-run log multiplier on the reducible loss
    eval_noise: float = 0.003  # sd of the per-evaluation one
    err_scale: float = 0.55  # err = err_scale * (reducible / reducible at N=1e6, D=1e8)^err_power
    err_power: float = 0.35

    def weights(self) -> np.ndarray:
        K = len(self.patch_nums)
        return 0.6 + 0.8 * np.arange(K) / max(K - 1, 1)

    def floors(self) -> np.ndarray:
        K = len(self.patch_nums)
        return self.floor_first + (self.floor_last - self.floor_first) * np.arange(K) / max(K - 1, 1)

    def tokens_per_image(self) -> np.ndarray:
        return np.array(self.patch_nums) ** 2

    def reducible(self, N, D) -> np.ndarray:
        return self.A / np.asarray(N, float) ** self.alpha + self.B / np.asarray(D, float) ** self.beta

    def avg_weight(self) -> float:
        n = self.tokens_per_image()
        return float((self.weights() * n).sum() / n.sum())

    def true_avg(self, N, D) -> np.ndarray:
        """Noise-free all-scale loss."""
        n = self.tokens_per_image()
        return float((self.floors() * n).sum() / n.sum()) + self.avg_weight() * self.reducible(N, D)

    def true_last(self, N, D) -> np.ndarray:
        return self.floors()[-1] + self.weights()[-1] * self.reducible(N, D)


def n_params_of(depth: int, width_per_depth: int = 64) -> int:
    """A VAR-like count: 12 C^2 per block (attention + MLP) plus AdaLN 6 C^2, plus a head."""
    C = width_per_depth * depth
    return int(depth * 18 * C * C + C * 4096 + 4096 + C * 200)


def make_study(root: str | Path, depths: Sequence[int] = (2, 3, 4, 6, 8),
               budgets: Sequence[float] = (1e8, 1e9), unit: str = "tokens",
               seeds: Sequence[int] = (0,), law: SyntheticLaw | None = None, n_evals: int = 8,
               rng_seed: int = 0, study: str = "synthetic", running: int = 0,
               failed: int = 0, pending: int = 0, tokens_per_step: int = 64 * 91,
               entropy_shift: float = 0.0, t0: _dt.datetime | None = None) -> Path:
    """Write a study folder under ``root`` and return it.

    ``unit="tokens"``: every depth of a budget sees the same number of training tokens;
    ``"flops"``: an IsoFLOP design where tokens = budget / (6 N). ``running``, ``failed`` and
    ``pending`` turn that many of the last cells into a partial study (a running cell has
    only its first evaluations and no record; a failed one a few rows; a pending one only
    status.json). ``entropy_shift`` (nats) is added to the token entropies written to
    ``tokens/meta.json``: a positive shift puts them above the losses, as the unigram entropy of
    a real token cache is (the default study's), so the floor has to come from the data.
    ``t0``: the time (UTC) training starts, from which each row's ``time`` counts
    (default 2026-01-01).
    """
    law = law or SyntheticLaw()
    root = Path(root)
    layout = StudyLayout.of(root)
    rng = np.random.default_rng(rng_seed)
    write_token_meta(layout, law, entropy_shift)
    cells = [(d, b, s) for b in budgets for d in depths for s in seeds]
    states = ["done"] * len(cells)
    k = len(cells)
    for name, cnt in (("pending", pending), ("failed", failed), ("running", running)):
        for _ in range(cnt):
            k -= 1
            if k >= 0:
                states[k] = name
    for (depth, budget, seed), state in zip(cells, states):
        N = n_params_of(depth)
        D_total = budget if unit == "tokens" else budget / (6 * N)
        run_id = f"d{depth}-{unit[0]}{budget:.0e}-s{seed}".replace("+", "")
        write_run(layout, run_id, depth, N, D_total, law=law, rng=rng, state=state, seed=seed, study=study,
                  n_evals=n_evals, tokens_per_step=tokens_per_step, t0=t0)
    return root


def write_token_meta(layout: StudyLayout, law: SyntheticLaw, entropy_shift: float = 0.0) -> None:
    """``tokens/meta.json`` with the law's per-scale floors (+ ``entropy_shift``) as entropies."""
    n_img = law.tokens_per_image()
    floors = law.floors()
    atomic_write_json(layout.tokens_dir / "meta.json", {
        "patch_nums": list(law.patch_nums), "V": 4096,
        "entropy_by_scale": (floors + entropy_shift).tolist(),
        "entropy_avg": float((floors * n_img).sum() / n_img.sum()) + entropy_shift,
        "entropy_last": float(floors[-1]) + entropy_shift,
        "synthetic": True,
    })


def write_run(layout: StudyLayout, run_id: str, depth: int, N: float, D_total: float, *,
              law: SyntheticLaw | None = None, rng: np.random.Generator | None = None, state: str = "done",
              seed: int = 0, study: str = "synthetic", n_evals: int = 8, tokens_per_step: int = 64 * 91,
              t0: _dt.datetime | None = None) -> list[dict]:
    """One cell ``cells/<run_id>/`` of a model of N parameters trained on D_total tokens, as the
    trainer writes it (metrics parts, status.json, and for a finished or failed run the run
    record; DONE when done), its losses from ``law``. ``state`` as in :func:`make_study`;
    row ``time`` counts from ``t0`` (default 2026-01-01, UTC). Returns the rows."""
    law = law or SyntheticLaw()
    rng = np.random.default_rng(0) if rng is None else rng
    n_img = law.tokens_per_image()
    tokens_per_img = int(n_img.sum())
    floors = law.floors()
    w = law.weights()
    red_ref = law.reducible(1e6, 1e8)
    t0 = _dt.datetime(2026, 1, 1, tzinfo=_dt.timezone.utc) if t0 is None else t0
    C_total = 6 * N * D_total
    cl = layout.cell(run_id)
    cl.root.mkdir(parents=True, exist_ok=True)
    total_steps = max(int(round(D_total / tokens_per_step)), n_evals)
    steps = np.unique(np.geomspace(max(total_steps // 50, 1), total_steps, n_evals).astype(int))
    if state == "running":
        steps = steps[: max(len(steps) // 2, 1)]
    elif state == "failed":
        steps = steps[:2]
    elif state == "pending":
        steps = steps[:0]
    run_mult = np.exp(rng.normal(0, law.run_noise))
    rows = []
    for i, step in enumerate(steps):
        D = float(step) * tokens_per_step
        red = law.reducible(N, D) * run_mult * np.exp(rng.normal(0, law.eval_noise))
        loss_k = floors + w * red
        err_k = np.clip(law.err_scale * (w * red / red_ref) ** law.err_power, 0, 0.999)
        row = {
            "study": study, "run_id": run_id, "depth": depth, "width": 64 * depth,
            "heads": depth, "seed": seed,
            "budget_flops": float(C_total), "budget_tokens": float(D_total),
            "n_params": N, "n_params_blocks": 73728 * depth ** 3,
            "n_params_nonembedding": N - 4096 * 64 * depth,
            "step": int(step), "total_steps": total_steps,
            "images_seen": int(D // tokens_per_img), "tokens_seen": int(D),
            "flops": 6.2 * N * D, "flops_6nd": 6.0 * N * D,
            "wall_s": D / 1e5, "lr": 1e-4,
            "test_loss_avg": float((loss_k * n_img).sum() / n_img.sum()),
            "test_loss_last": float(loss_k[-1]),
            "test_err_avg": float((err_k * n_img).sum() / n_img.sum()),
            "test_err_last": float(err_k[-1]),
            "test_loss_by_scale": loss_k.tolist(), "test_err_by_scale": err_k.tolist(),
            "train_loss": float((loss_k * n_img).sum() / n_img.sum()) * 0.99,
            "grad_norm": 1.0, "images_per_s": 100.0, "tokens_per_s": 1e5,
            "flops_per_s": 6.2 * N * 1e5, "mfu": 0.3,
            "time": t0 + _dt.timedelta(seconds=D / 1e5),
        }
        rows.append(row)
        write_part(cl.metrics_dir, [row], i)
    atomic_write_json(cl.status_json, {"state": state, "step": int(steps[-1]) if len(steps) else 0,
                                       "total_steps": total_steps})
    if state in ("done", "failed") and rows:
        last = rows[-1]
        rec = {k: last.get(k) for k in RUN_SCHEMA.names}
        rec.update({"status": state, "steps": last["step"],
                    "final_test_loss_avg": last["test_loss_avg"],
                    "final_test_loss_last": last["test_loss_last"],
                    "final_test_err_avg": last["test_err_avg"],
                    "final_test_err_last": last["test_err_last"],
                    "diverged_step": None, "message": "" if state == "done" else "synthetic failure"})
        # write_part's atomic write, then the record's own name
        write_part(cl.root, [rec], 0, schema=RUN_SCHEMA).rename(cl.record)
        if state == "done":
            cl.done.touch()
    return rows
