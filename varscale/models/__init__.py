"""varscale.models: the VAR transformer, the multi-scale VQVAE, presets and FLOP counting.

    from varscale.models import build, load_official
    vae, var = build("cpu32", depth=4)            # untrained; device="meta" works too
    idx = vae.img_to_idx(img_B3HW)                 # K LongTensors (B, pn*pn)
    logits_BLV = var(label_B, vae.idx_to_var_input(idx))
"""
from __future__ import annotations

from typing import Union

from .presets import PRESETS, Preset, get_preset


def _preset(preset: Union[str, Preset]) -> Preset:
    return get_preset(preset) if isinstance(preset, str) else preset


def build_vqvae(preset: Union[str, Preset], device=None):
    """An untrained VQVAE of the preset's shape (on ``device``; "meta" allocates nothing)."""
    import torch

    from .vqvae import VQVAE

    with torch.device(device if device is not None else "cpu"):
        return VQVAE.from_preset(_preset(preset))
