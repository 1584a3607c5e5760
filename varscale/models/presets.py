"""Named model presets: the tokenizer and transformer shapes of a study.

Plain Python (no torch) so that config validation and planning can read them. Every field
enters the tokenizer's config hash (``varscale.config.tokenizer_config_hash``) as declared
on it (``opt(..., hash=...)``, see ``varscale.config``): a field added later declares no
``hash=`` and stays out of the hash while at its default, so trained tokenizers stay valid.

``imagenet256`` / ``imagenet512`` are the official release's shapes. The CPU presets keep
VAR's shape rule (width = head_dim * depth, heads = depth) with a smaller head_dim so that a
depth 1..8 family spans ~1.5e4..2.5e6 parameters (cpu32), where compute-optimal models sit for
the ~1e13 FLOP budgets a 2-core laptop can spend on a cell (see docs/models.md).
``tiny`` is for tests only: 16x16 images, 2x2 latent grid, L = 5 tokens.
"""
from __future__ import annotations

from dataclasses import dataclass

from varscale.configkit import opt


@dataclass(frozen=True)
class Preset:
    name: str
    resolution: int
    patch_nums: tuple[int, ...]
    vocab_size: int  # V, one codebook shared by all scales
    cvae: int  # Cvae, latent channels
    ch: int  # VQVAE base channels
    ch_mult: tuple[int, ...]  # one entry per level; downsample = 2 ** (len - 1)
    head_dim: int = opt(64, hash="always")
    num_classes: int = opt(1000, hash="always")
    share_quant_resi: int = opt(4, hash="always")  # number of shared phi convs
    quant_resi: float = opt(0.5, hash="always")  # phi(h) = (1 - r) h + r conv(h)
    enc_res_blocks: int = opt(2, hash="always")  # decoder uses enc_res_blocks + 1
    beta: float = opt(0.25, hash="always")
    mlp_ratio: float = opt(4.0, hash="always")
    norm_eps: float = opt(1e-6, hash="always")
    vae_norm: str = opt("group", hash="always")  # VQVAE normalisation: "group" (official GroupNorm32) or "none"
    # VQVAE encoder/decoder layout: "ldm" (official: res blocks, attention, GroupNorm) or
    # "plain" (stride-2 convs / transposed convs, SiLU, no norm; a CPU-preset deviation)
    vae_arch: str = opt("ldm")  # in the tokenizer's hash only when not "ldm"

    @property
    def seq_len(self) -> int:
        return sum(p * p for p in self.patch_nums)

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset("imagenet256", 256, (1, 2, 3, 4, 5, 6, 8, 10, 13, 16), 4096, 32, 160, (1, 1, 2, 2, 4)),
        Preset("imagenet512", 512, (1, 2, 3, 4, 6, 9, 13, 18, 24, 32), 4096, 32, 160, (1, 1, 2, 2, 4)),
        # 32x32 images, 4x4 latent grid, L = 30 tokens
        # VQVAE shrunk for 2-core CPUs (varscale.tokenizer.train, docs/data.md): 16 channels at
        # full resolution and one res block per level keep tokenizer training and tokenizing
        # 50k images within minutes
        Preset("cpu32", 32, (1, 2, 3, 4), 512, 16, 16, (1, 2, 4, 4), head_dim=16, num_classes=10,
               enc_res_blocks=1, vae_norm="none"),
        # 64x64 images, 8x8 latent grid, L = 130 tokens
        Preset("cpu64", 64, (1, 2, 3, 4, 6, 8), 1024, 16, 16, (1, 2, 4, 4), head_dim=32, num_classes=10,
               enc_res_blocks=1, vae_norm="none"),
        # 32x32 images, 8x8 latent grid, L = 130 tokens: the tokenizer that reaches 26 dB on
        # the default dataset (docs/data.md); plain conv encoder/decoder, 64-128 channels
        Preset("cpu32x8", 32, (1, 2, 3, 4, 6, 8), 512, 16, 64, (1, 1, 2), head_dim=16, num_classes=10,
               vae_norm="none", vae_arch="plain"),
        # tests: seconds per cell; downsample 8 so the 2x2 latent grid matches patch_nums[-1]
        Preset("tiny", 16, (1, 2), 64, 8, 16, (1, 1, 2, 2), head_dim=8, num_classes=4),
    ]
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown preset '{name}'; valid: {', '.join(sorted(PRESETS))}") from None
