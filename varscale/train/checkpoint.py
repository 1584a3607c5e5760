"""A cell's checkpoints: saving, weights-only snapshots, LATEST.json, resume, the WSD branch start.

Written under ``checkpoints/`` in the cell folder (paths from ``varscale.schema.CellLayout``):

    step<N>/             DeepSpeed checkpoint (every rank's partition, the trainer's client_state)
    step<N>/weights.pt   the full fp32 model state dict (what ``varscale.train.model`` loads)
    LATEST.json          {"step", "tag", "tags", "time"}: the newest complete checkpoint

Full checkpoints are saved at the cell's ``checkpoint_steps`` and ``keep_steps`` (a stable
run's WSD branch points); at ``SNAPSHOT_FRACTIONS`` of the run only ``weights.pt`` is written.
The last ``KEEP_CHECKPOINTS`` full ones, the branch points and the snapshots are kept, every
other ``step<N>`` folder is deleted after a save.

Crash safety: a checkpoint counts only once LATEST.json names it, and that file is replaced
atomically after every rank finished writing; a half-written ``step<N>`` folder from before a
crash is deleted before being written again. ``load`` resumes from LATEST.json or, for a WSD
decay branch that has none yet, starts from the stable run's checkpoint at ``branch_step``.
A checkpoint resumes at the same world size only (DeepSpeed's ZeRO partitions).
"""
from __future__ import annotations

import io
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from varscale.cell import CellConfig
from varscale.schema import CellLayout, StudyLayout, atomic_write_bytes, atomic_write_json
from varscale.train.model import read_latest
from varscale.train.records import now

KEEP_CHECKPOINTS = 2
# Fig. 7 (samples at 20%, 60% and 100% of training): at these fractions of a run the model
# weights alone are kept (``checkpoints/step<N>/weights.pt``, no optimizer state), so that
# ``varscale sample --fig7`` has them without keeping full DeepSpeed checkpoints
SNAPSHOT_FRACTIONS = (0.2, 0.6)


def snapshot_steps(total_steps: int) -> set[int]:
    return {max(1, round(f * total_steps)) for f in SNAPSHOT_FRACTIONS} if total_steps >= 5 else set()


def _tag(step: int) -> str:
    return CellLayout.checkpoint_tag(step)


def _torch_bytes(obj) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


@dataclass(frozen=True)
class Loaded:
    """A loaded checkpoint: the trainer's client_state, and whether it is this run's own
    (a resume) or the stable run's at the branch step (a WSD branch's start)."""
    client: dict[str, Any]
    own: bool
    tag: str


class Checkpoints:
    """Save and load one cell's checkpoints through its DeepSpeed engine (every rank calls)."""

    def __init__(self, layout: CellLayout, cell: CellConfig, engine, *, zero_stage: int, main: bool):
        self.layout, self.cell, self.engine = layout, cell, engine
        self.zero_stage, self.main = zero_stage, main
        self.full_at = set(cell.checkpoint_steps) | set(cell.keep_steps)
        self.weights_at = snapshot_steps(cell.total_steps) - self.full_at

    def save(self, step: int, client_state: dict[str, Any]) -> None:
        """A full checkpoint at ``step``, then LATEST.json, then pruning."""
        import torch.distributed as dist

        ckpt = self.layout.checkpoints
        tag = _tag(step)
        if self.main:
            ckpt.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(ckpt / tag, ignore_errors=True)  # a half-written try from before a crash
        dist.barrier()
        self.engine.save_checkpoint(str(ckpt), tag=tag, client_state=client_state, save_latest=False)
        sd = self.full_state_dict()
        if self.main:
            atomic_write_bytes(self.layout.weights(step), _torch_bytes(sd))
        dist.barrier()
        if self.main:
            prev = read_latest(self.layout) or {"tags": []}
            tags = [t for t in prev.get("tags", []) if t != tag] + [tag]
            atomic_write_json(self.layout.latest_json, {"step": step, "tag": tag, "tags": tags[-KEEP_CHECKPOINTS:],
                                                        "time": now()})
            self._prune(set(tags[-KEEP_CHECKPOINTS:]))

    def _prune(self, latest_tags: set[str]) -> None:
        keep = latest_tags | {_tag(s) for s in self.cell.keep_steps} \
            | {_tag(s) for s in snapshot_steps(self.cell.total_steps)}
        for d in self.layout.checkpoints.iterdir():
            if d.is_dir() and d.name.startswith("step") and d.name not in keep:
                shutil.rmtree(d, ignore_errors=True)

    def save_weights(self, step: int) -> None:
        """Model weights only at ``step<N>/weights.pt`` (for samples; never resumed from)."""
        sd = self.full_state_dict()  # a collective at ZeRO-3: every rank calls it
        if self.main:
            atomic_write_bytes(self.layout.weights(step), _torch_bytes(sd))

    def full_state_dict(self) -> Optional[dict]:
        """fp32 model weights on rank 0 (gathered from the partitions at ZeRO-3)."""
        module = self.engine.module
        if self.zero_stage == 3:
            import deepspeed

            with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
                return {k: v.detach().clone().cpu() for k, v in module.state_dict().items()} if self.main else None
        return {k: v.detach().clone().cpu() for k, v in module.state_dict().items()} if self.main else None

    def _source(self) -> Optional[tuple[Path, str, bool]]:
        """(checkpoints folder, tag, own) to start from; None for a fresh run."""
        latest = read_latest(self.layout)
        if latest is not None:
            return self.layout.checkpoints, latest["tag"], True
        c = self.cell
        if c.branch_from:  # WSD decay branch: start from the stable run's checkpoint
            stable = StudyLayout.of(c.study_dir).cell(c.branch_from)
            if not stable.weights(int(c.branch_step)).exists():
                raise FileNotFoundError(f"stable run {c.branch_from} has no checkpoint at step "
                                        f"{c.branch_step} yet; run it first")
            return stable.checkpoints, _tag(int(c.branch_step)), False
        return None

    def load(self) -> Optional[Loaded]:
        """Load weights and Adam state into the engine from where this run starts; None if fresh."""
        src = self._source()
        if src is None:
            return None
        folder, tag, own = src
        _, client = self.engine.load_checkpoint(str(folder), tag=tag, load_optimizer_states=True,
                                                load_lr_scheduler_states=False)
        if client is None:
            raise RuntimeError(f"could not load checkpoint {folder / tag}")
        return Loaded(client, own, tag)
