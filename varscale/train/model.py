"""A cell's model: its frozen tokenizer, a fresh VAR from its config, and trained weights.

The trainer builds its model here; sampling and quality load a trained cell here, so this
module imports neither DeepSpeed nor the training loop (tests/test_trainer.py checks it in a
subprocess). It writes nothing.

``load_cell_model`` reads ``checkpoints/step<N>/weights.pt``, the full fp32 state dict that
the trainer writes with every checkpoint and at the weights-only snapshots
(``varscale.train.checkpoint``); it never reads DeepSpeed's partitioned files. A damaged one
(truncated, overwritten, a failed CRC, another model's) is a ``DamagedFile`` naming it and the
other kept steps; a damaged LATEST.json means the newest kept weights.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional

from varscale.cell import CellConfig
from varscale.schema import CellLayout, DamagedFile, json_problem, read_json, torch_file_problem


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
    from varscale.models import build_var, var_config_for

    return build_var(var_config_for(cell.model, cell.depth, cell.num_classes), device=device)


def read_latest(cell: CellLayout) -> Optional[dict]:
    """``checkpoints/LATEST.json`` (``{"step", "tag", "tags"}``), None before the first checkpoint
    and when it is damaged (not JSON, not an object, no integer step: the trainer then finds
    its checkpoints by their manifests, ``varscale.train.checkpoint``)."""
    if json_problem(cell.latest_json):
        return None
    latest = read_json(cell.latest_json)
    if latest is None or not isinstance(latest.get("step"), int) or not isinstance(latest.get("tag"), str):
        return None
    return latest


def kept_weights(layout: CellLayout) -> list[int]:
    """Steps with a ``weights.pt`` (full checkpoints and weights-only snapshots), sorted."""
    steps = []
    for d in layout.checkpoints.glob("step*"):
        m = re.fullmatch(r"step(\d+)", d.name)
        if m and layout.weights(int(m.group(1))).exists():
            steps.append(int(m.group(1)))
    return sorted(steps)


def latest_step(layout: CellLayout) -> Optional[int]:
    """The step "the latest checkpoint" means: LATEST.json's, or with LATEST.json missing or
    damaged the newest kept ``weights.pt``; None when the cell has none. (A damaged weights.pt
    of that step is then an error naming it, not a silent older model.)"""
    latest = read_latest(layout)
    if latest is not None and layout.weights(int(latest["step"])).exists():
        return int(latest["step"])
    steps = kept_weights(layout)
    return steps[-1] if steps else None


def load_weights(layout: CellLayout, step: int, model, device="cpu") -> None:
    """``checkpoints/step<step>/weights.pt`` into ``model``; a damaged file is ``DamagedFile``
    naming it and the other kept steps."""
    import torch

    path = layout.weights(step)
    others = [s for s in kept_weights(layout) if s != step]
    fix = (f"give --step with another kept checkpoint ({', '.join(map(str, others))}), or delete its folder"
           if others else "delete its folder and train the cell again ('varscale run')")
    why = torch_file_problem(path)
    if why:
        raise DamagedFile(path, why, fix)
    try:
        sd = torch.load(path, map_location=device, weights_only=True)
        model.load_state_dict(sd)
    except Exception as e:  # noqa: BLE001 - a foreign or mismatched file: one sentence
        text = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise DamagedFile(path, f"not this cell's model weights: {text}", fix) from None


def load_cell_model(cell_dir: str | os.PathLike, step: Optional[int] = None, device="cpu"):
    """(vae, var, cell) with the weights of the latest (or step ``step``) checkpoint, no DeepSpeed."""
    cell_dir = Path(cell_dir)
    cell = CellConfig.load(cell_dir)
    layout = CellLayout(cell_dir)
    if step is None:
        step = latest_step(layout)
        if step is None:
            raise FileNotFoundError(f"no complete checkpoint in {layout.checkpoints}")
    path = layout.weights(step)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint for step {step} in {layout.checkpoints}")
    vae = load_vae(cell, device)
    var = build_model(cell, device)
    load_weights(layout, step, var, device)
    var.eval()
    return vae, var, cell
