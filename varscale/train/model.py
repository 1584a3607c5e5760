"""A cell's model: its frozen tokenizer, a fresh VAR from its config, and trained weights.

The trainer builds its model here; sampling and quality load a trained cell here, so this
module imports neither DeepSpeed nor the training loop (tests/test_trainer.py checks it in a
subprocess). It writes nothing.

``load_cell_model`` reads ``checkpoints/step<N>/weights.pt``, the full fp32 state dict that
the trainer writes with every checkpoint and at the weights-only snapshots
(``varscale.train.checkpoint``); it never reads DeepSpeed's partitioned files.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from varscale.cell import CellConfig
from varscale.models import var_overrides
from varscale.schema import CellLayout, read_json


def load_vae(cell: CellConfig, device=None):
    """The study's frozen tokenizer (``varscale.tokenizer.checkpoint.load_tokenizer``)."""
    from varscale.tokenizer.checkpoint import load_tokenizer

    vae = load_tokenizer(cell.study_dir, cell.study_config())
    vae = vae.to(device) if device is not None else vae
    vae.eval()
    for p in vae.parameters():
        p.requires_grad_(False)
    return vae


def build_model(cell: CellConfig, device=None):
    """A freshly initialised VAR-d of the cell (initialised from torch's global RNG)."""
    from varscale.models import build_var

    return build_var(cell.preset, cell.depth, device=device, num_classes=cell.num_classes,
                     **var_overrides(cell.model))


def read_latest(cell: CellLayout) -> Optional[dict]:
    """``checkpoints/LATEST.json`` (``{"step", "tag", "tags"}``), None before the first checkpoint."""
    return read_json(cell.latest_json)


def load_cell_model(cell_dir: str | os.PathLike, step: Optional[int] = None, device="cpu"):
    """(vae, var, cell) with the weights of the latest (or step ``step``) checkpoint, no DeepSpeed."""
    import torch

    cell_dir = Path(cell_dir)
    cell = CellConfig.load(cell_dir)
    layout = CellLayout(cell_dir)
    if step is None:
        latest = read_latest(layout)
        if latest is None:
            raise FileNotFoundError(f"no complete checkpoint in {layout.checkpoints}")
        step = int(latest["step"])
    path = layout.weights(step)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint for step {step} in {layout.checkpoints}")
    vae = load_vae(cell, device)
    var = build_model(cell, device)
    var.load_state_dict(torch.load(path, map_location=device, weights_only=True))
    var.eval()
    return vae, var, cell
