"""varscale.models: the VAR transformer, the multi-scale VQVAE, presets and FLOP counting.

    from varscale.models import build, load_official
    vae, var = build("cpu32", depth=4)            # untrained; device="meta" allocates nothing
    idx = vae.img_to_idx(img_B3HW)                 # K LongTensors (B, pn*pn)
    logits_BLV = var(label_B, vae.idx_to_var_input(idx))
    load_official(vae, var, vae_sd, var_sd)        # official release checkpoints -> ours

One model is described by one ``VARConfig`` (``spec.py``, no torch): a study's or a cell's
model section (``varscale.config.ArchConfig`` / ``ModelConfig``) becomes one through
``var_config_for(model_cfg, depth, num_classes)``, and the torch model
(``build_var(var_cfg)``), its parameter counts (``param_counts``), FLOPs (``flops.py``),
memory (``memory.Shape.of``) and a study's family (``family.py``) are all taken from it.
``build_var(preset, depth, **overrides)`` / ``var_config(preset, depth, **overrides)`` set any
``VARConfig`` field directly (e.g. ``head_dim``, ``class_dropout``, ``aln_gamma_init``, ``fused``).

Importing this package, ``spec``, ``presets``, ``flops``, ``memory`` or ``family`` loads no
torch; ``build*`` and ``load_official`` import it when called.
"""
from __future__ import annotations

from typing import Optional, Union

from .presets import PRESETS, Preset, get_preset
from .spec import VARConfig, param_counts, var_config, var_config_for, vqvae_param_count

__all__ = ["PRESETS", "Preset", "get_preset", "VARConfig", "var_config", "var_config_for", "param_counts",
           "vqvae_param_count", "build", "build_vqvae", "build_var", "load_official"]


def _preset(preset: Union[str, Preset]) -> Preset:
    return get_preset(preset) if isinstance(preset, str) else preset


def build_vqvae(preset: Union[str, Preset], device=None):
    """An untrained VQVAE of the preset's shape (on ``device``; "meta" allocates nothing)."""
    import torch

    from .vqvae import VQVAE

    with torch.device(device if device is not None else "cpu"):
        return VQVAE.from_preset(_preset(preset))


def build_var(preset: Union[str, Preset, VARConfig], depth: Optional[int] = None, device=None,
              num_classes: Optional[int] = None, **overrides):
    """An initialised VAR (official init; on "meta" shapes only): of a ``VARConfig``
    (``build_var(var_config_for(model_cfg, depth, num_classes), device)``), or VAR-``depth``
    on ``preset`` with ``var_config``'s overrides."""
    import torch

    from .var import VAR

    if isinstance(preset, VARConfig):
        if depth is not None or num_classes is not None or overrides:
            raise TypeError("build_var(VARConfig): depth, num_classes and overrides are the config's own")
        cfg = preset
    elif depth is None:
        raise TypeError("build_var(preset, depth): depth is required with a preset")
    else:
        cfg = var_config(preset, depth, num_classes=num_classes, **overrides)
    with torch.device(device if device is not None else "cpu"):
        return VAR(cfg)


def build(preset: Union[str, Preset], depth: int, device=None, num_classes: Optional[int] = None, **overrides):
    """(vae, var) for ``preset``; the VAE is untrained (load or train it separately)."""
    return build_vqvae(preset, device), build_var(preset, depth, device, num_classes, **overrides)


def _load_into(module, sd: dict, what: str):
    import torch

    ours = module.state_dict()
    missing = sorted(set(ours) - set(sd))
    unexpected = sorted(set(sd) - set(ours))
    misshapen = sorted(f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(ours[k].shape)}"
                       for k in set(ours) & set(sd) if tuple(sd[k].shape) != tuple(ours[k].shape))
    errs = []
    if missing:
        errs.append(f"{what}: missing keys: {', '.join(missing)}")
    if unexpected:
        errs.append(f"{what}: unexpected keys: {', '.join(unexpected)}")
    if misshapen:
        errs.append(f"{what}: misshapen keys: {'; '.join(misshapen)}")
    if errs:
        raise ValueError("load_official: " + "\n".join(errs))
    if any(t.is_meta for t in ours.values()):
        module.load_state_dict({k: torch.as_tensor(v) for k, v in sd.items()}, strict=True, assign=True)
    else:
        module.load_state_dict(sd, strict=True)


def load_official(vae, var, vae_sd: Optional[dict], var_sd: Optional[dict]):
    """Load the official release's state dicts (vae_ch160v4096z32.pth, var_d*.pth) into ours.

    Names match one to one; any missing, unexpected or misshapen key raises ValueError
    naming every such key. Either state dict may be None to skip that model. Models built on
    the meta device receive the given tensors (``assign=True``).
    """
    if vae_sd is not None:
        _load_into(vae, dict(vae_sd), "vqvae")
        vae.quantize.record_hit = 1 if float(vae.quantize.ema_vocab_hit_SV.abs().sum()) > 0 else 0
    if var_sd is not None:
        _load_into(var, dict(var_sd), "var")
    return vae, var
