"""The data side of a training step: which rows a step reads, their teacher-forcing input, its seed.

Everything here is a pure function of the cell's config and (seed, step, rank), so a run
resumed from a checkpoint reads the same images and draws the same random numbers as the
run that was interrupted. Nothing is written.
"""
from __future__ import annotations

import os
from typing import Optional

import numpy as np

from varscale.cell import CellConfig


def step_seed(seed: int, step: int, rank: int) -> int:
    """torch's seed for step ``step`` on rank ``rank`` (class dropout, drop-path)."""
    return (seed * 1_000_003 + step * 7919 + rank * 104_729) % (2 ** 63)


class Batches:
    """The global batch of step s: rows ``perm_e[p % N]`` for positions p in [sB, (s+1)B).

    ``perm_e`` is a permutation of the train split drawn from (seed, epoch e = p // N), so the
    order is a pure function of the step (resumable) and of nothing about the world size; rank
    r takes the r-th contiguous slice of the global batch. With ``micro_batch_size`` m, the
    rank's slice is fed as consecutive micro-batches of m rows (``micro_rows``): the same rows
    in the same order, so the global batch of a step does not depend on m.
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1,
                 micro_batch_size: Optional[int] = None):
        self.n, self.B, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self.b = batch_size // world
        self.m = self.b if micro_batch_size is None else int(micro_batch_size)
        if self.m < 1 or self.b % self.m:
            raise ValueError(f"micro-batch size {self.m} does not divide the per-rank batch {self.b}")
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            if len(self._perms) > 2:
                self._perms.pop(min(self._perms))
            self._perms[epoch] = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        return self._perms[epoch]

    def global_rows(self, step: int) -> np.ndarray:
        pos = np.arange(step * self.B, (step + 1) * self.B, dtype=np.int64)
        epochs = pos // self.n
        out = np.empty_like(pos)
        for e in np.unique(epochs):
            m = epochs == e
            out[m] = self._perm(int(e))[pos[m] % self.n]
        return out

    def rows(self, step: int) -> np.ndarray:
        return self.global_rows(step)[self.rank * self.b:(self.rank + 1) * self.b]

    @property
    def accumulation_steps(self) -> int:
        return self.b // self.m

    def micro_rows(self, step: int) -> list[np.ndarray]:
        """This rank's rows of step ``step`` as ``accumulation_steps`` micro-batches."""
        r = self.rows(step)
        return [r[i:i + self.m] for i in range(0, self.b, self.m)]


class TeacherForcing:
    """Token rows -> (label_B, x_BlC, target_BL): VAR's teacher-forcing input from the frozen VQVAE.

    With ``precompute`` the whole split's inputs are computed once (a (N, L-1, Cvae) fp32 array
    in memory) and batches are slices of it: at small depths the VQVAE's upsample + phi-conv
    pass otherwise costs a sizeable share of a step.
    """

    def __init__(self, vae, cache, device, precompute: bool = False, chunk: int = 1024,
                 limit: Optional[int] = None):
        import torch

        self.vae, self.cache, self.device = vae, cache, device
        self.slices = cache.scale_slices()
        self.x_NlC = None
        if precompute:
            parts = []
            n = len(cache) if limit is None else min(limit, len(cache))
            for s in range(0, n, chunk):
                rows = np.arange(s, min(s + chunk, n))
                parts.append(self._compute(cache.batch(rows)[0]).cpu())
            self.x_NlC = torch.cat(parts) if parts else None

    def _compute(self, idx_BL: np.ndarray):
        import torch

        with torch.no_grad():
            idx = torch.from_numpy(idx_BL).to(self.device)
            return self.vae.idx_to_var_input([idx[:, sl] for sl in self.slices]).float()

    def __call__(self, rows: np.ndarray):
        import torch

        idx_BL, label_B = self.cache.batch(rows)
        if self.x_NlC is not None and int(np.max(rows)) < len(self.x_NlC):
            x_BlC = self.x_NlC[torch.from_numpy(np.asarray(rows))].to(self.device)
        else:
            x_BlC = self._compute(idx_BL)
        return (torch.from_numpy(label_B).to(self.device), x_BlC,
                torch.from_numpy(idx_BL).to(self.device))


def precompute_plan(cell: CellConfig, n_train: int, n_val: int, cvae: int) -> tuple[bool, bool]:
    """Whether to precompute the teacher-forcing inputs of (train, val) once.

    The VQVAE's pass costs ~15-20% of a step at depth 1-2 on CPU (docs/training.md), so
    it is done once per image when that is cheaper than once per use (train: the run sees
    at least the whole split; val: always, it is evaluated repeatedly) and the array fits
    in ``VARSCALE_PRECOMPUTE_MAX_GB`` (default 2). ``VARSCALE_PRECOMPUTE_INPUT=0/1`` forces it.
    Decided from the cell's config only, so a resumed run decides the same way.
    """
    force = os.environ.get("VARSCALE_PRECOMPUTE_INPUT")
    if force in ("0", "1"):
        return force == "1", force == "1"
    c = cell
    cap = float(os.environ.get("VARSCALE_PRECOMPUTE_MAX_GB", "2")) * 2 ** 30
    size = lambda n: n * (c.seq_len - 1) * cvae * 4  # noqa: E731  (fp32 bytes, generous L-1)
    ev = c.evaluation.max_images
    n_val = min(n_val, ev) if ev else n_val
    train = c.total_steps * c.batch_size >= n_train and size(n_train) + size(n_val) <= cap
    val = size(n_val) <= cap
    return train, val
