"""A study's tokenizer checkpoint: what identifies it and how it is loaded.

Shared by the tokenizer trainer (``varscale.tokenizer.train``, which writes the checkpoint),
the token cache (``varscale.tokenizer.cache``, keyed by the tokenizer's hash) and the VAR
trainer (which loads the frozen tokenizer), so none of them imports another's internals.

Identity, two hashes:

* ``config_hash(cfg)``: what a trained tokenizer depends on (data, tokenizer recipe, VQVAE
  shape); stored in ``tokenizer/vqvae.pt`` so a finished checkpoint is reused only for the
  same config (``existing_complete``).
* ``tokenizer_hash(vae)``: of the weights; stored in the token cache's ``meta.json`` so a
  cache made by another tokenizer is rebuilt.

Reads only; the trainer writes the checkpoint atomically (``varscale.schema``), so a file
here is either complete or absent, and ``complete: false`` marks a collapsed tokenizer. A file
damaged afterwards (truncated, overwritten, a failed CRC, not a state dict, another preset's)
is a ``varscale.schema.DamagedFile`` naming it and what to do when loaded, and not complete
for ``existing_complete`` (so ``varscale run`` / ``tokenizer train`` train it again).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Optional

import torch

from varscale.schema import DamagedFile, StudyLayout, torch_file_problem

# --------------------------------------------------------------------------- identity


def tokenizer_hash(vae_or_sd) -> str:
    """Hash (16 hex) of everything that decides a tokenizer's output: its weights.

    Two tokenizers with the same hash map every image to the same tokens; the token cache
    stores it and is rebuilt when the study's tokenizer hashes differently. Running statistics
    that do not affect tokenization (code-hit EMAs) are left out.
    """
    sd = vae_or_sd.state_dict() if hasattr(vae_or_sd, "state_dict") else vae_or_sd
    h = hashlib.sha256()
    for k in sorted(sd):
        if "ema_vocab_hit" in k:
            continue
        t = sd[k].detach().cpu().contiguous()
        h.update(k.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(str(t.dtype).encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def config_hash(cfg) -> str:
    """Hash of what a trained tokenizer depends on: the data, the tokenizer recipe, the VQVAE
    shape (``varscale.config.tokenizer_config_hash``; each field declares whether it enters)."""
    from varscale.config import tokenizer_config_hash

    return tokenizer_config_hash(cfg)


def preset_of(cfg):
    """The study's model preset (the VQVAE's shape)."""
    from varscale.models.presets import get_preset

    return get_preset(cfg.model.preset)


def device_for(cfg) -> torch.device:
    """``execution.device`` resolved: cuda when asked for, or when ``auto`` finds one."""
    want = cfg.execution.device
    if want == "cuda" or (want == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


# --------------------------------------------------------------------------- loading


def resolve_checkpoint(path: str, study_dir: Path) -> Path:
    """``tokenizer.checkpoint`` as a file: as given, else relative to the study folder."""
    p = Path(os.path.expanduser(path))
    if not p.is_absolute() and not p.exists() and (study_dir / p).exists():
        p = study_dir / p
    if not p.exists():
        raise FileNotFoundError(f"tokenizer.checkpoint: no file at {path}")
    return p


def fix_for(path: Path, study_dir: Optional[Path] = None) -> str:
    """What to do about a damaged tokenizer file: the study's own is trained again, a given
    ``tokenizer.checkpoint`` must be restored."""
    if study_dir is not None and Path(path) == StudyLayout.of(study_dir).tokenizer_ckpt:
        return (f"delete it and run 'varscale tokenizer train {study_dir}' (or 'varscale run', which does it); "
                "the token cache is then encoded again")
    return "restore it (study.yaml's tokenizer.checkpoint names it)"


def load_state_dict_file(path: str | os.PathLike, study_dir: Optional[Path] = None) -> dict[str, torch.Tensor]:
    """A VQVAE state dict from varscale's vqvae.pt or a plain one (the official .pth); a damaged
    file is ``DamagedFile`` (``study_dir``: whose own tokenizer it may be, for what to do)."""
    fix = fix_for(Path(path), study_dir)
    why = torch_file_problem(path)
    if why:
        raise DamagedFile(path, why, fix)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - unpicklable, foreign: one sentence
        raise DamagedFile(path, f"torch.load fails: {str(e).splitlines()[0][:120] if str(e) else type(e).__name__}",
                          fix) from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        return obj["state_dict"]
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    raise DamagedFile(path, "not a VQVAE state dict", fix)


def tokenizer_problem(study_dir) -> Optional[str]:
    """Why the study's own ``tokenizer/vqvae.pt`` is damaged (None when it is whole or absent)."""
    return torch_file_problem(StudyLayout.of(study_dir).tokenizer_ckpt)


def load_tokenizer(study_dir, cfg, device=None):
    """The study's frozen tokenizer (eval mode, requires_grad False)."""
    from varscale.models.vqvae import VQVAE

    study_dir = Path(study_dir)
    if cfg.tokenizer.checkpoint:
        path = resolve_checkpoint(cfg.tokenizer.checkpoint, study_dir)
    else:
        path = StudyLayout.of(study_dir).tokenizer_ckpt
        if not path.exists():
            raise FileNotFoundError(f"no tokenizer at {path}; run 'varscale tokenizer train {study_dir}'")
    vae = VQVAE.from_preset(preset_of(cfg))
    sd = load_state_dict_file(path, study_dir)
    try:
        missing, unexpected = vae.load_state_dict(sd, strict=False)
    except RuntimeError as e:  # a tensor of another shape
        raise DamagedFile(path, f"does not fit preset '{cfg.model.preset}': {str(e).splitlines()[-1].strip()[:160]}",
                          fix_for(path, study_dir)) from None
    missing = [k for k in missing if "ema_vocab_hit" not in k]
    if missing or unexpected:
        raise ValueError(f"{path} does not fit preset '{cfg.model.preset}': missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    vae.eval().requires_grad_(False)
    return vae.to(device) if device is not None else vae


def existing_complete(study_dir, cfg) -> Optional[dict]:
    """The metrics of a finished checkpoint for this exact tokenizer config, else None."""
    path = StudyLayout.of(study_dir).tokenizer_ckpt
    if not path.exists() or torch_file_problem(path):
        return None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return None
    if isinstance(obj, dict) and obj.get("complete") and obj.get("config_hash") == config_hash(cfg):
        return obj.get("metrics", {})
    return None
