"""The multi-scale VQVAE of VAR (VAR_SPEC §5): an LDM-style CNN encoder/decoder around the
multi-scale residual quantizer of ``quant.py``.

    f     = quant_conv(encoder(img))              # (B, Cvae, h, h), h = resolution / 2**(len(ch_mult)-1)
    idx   = quantize.f_to_idx(f)                  # K index maps, one shared codebook
    f_hat = quantize.idx_to_fhat(idx)
    img   = decoder(post_quant_conv(f_hat))       # clamped to [-1, 1] by fhat_to_img

Encoder: conv_in; per level ``enc_res_blocks`` ResnetBlocks (+ self-attention at the lowest
resolution) and a stride-2 downsample except at the last level; mid = block, attention,
block; GroupNorm, swish, conv_out to Cvae. The decoder mirrors it with one more ResnetBlock
per level and nearest-x2 upsampling. GroupNorm uses 32 groups (fewer only when the channel
count is not a multiple of 32, as in the ``tiny`` preset), eps 1e-6.

Names and shapes follow the official release (``encoder.down.0.block.0.conv1.weight``,
``encoder.mid.attn_1.qkv.weight``, ``quantize.embedding.weight``, ...), so its
``vae_ch160v4096z32.pth`` loads with ``load_state_dict``.

Used by: the tokenizer trainer (``forward``; ``quantize.embedding`` and
``quant_conv(encoder(x))`` to revive dead codes), the token cache (``img_to_idx``), the VAR
trainer (``idx_to_var_input``) and the sampler (``quantize.embed_map`` +
``next_var_input`` + ``fhat_to_img``).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .quant import MultiScaleQuantizer


def Normalize(C: int, kind: str = "group") -> nn.Module:
    """GroupNorm(32) as the official VQVAE (``kind="group"``), or none (``kind="none"``).

    At the CPU presets' 16-64 channels, 32 groups hold one or two channels each: the norm
    acts as a per-image instance norm that strips each channel's mean, and the decoder has
    to relearn global colour through the skip paths. Measured on cpu32 (docs/data.md), the
    tokenizer then stalls near the dataset-mean PSNR; without the norm it trains. A preset
    deviation, switched by ``Preset.vae_norm``.
    """
    if kind == "none":
        return nn.Identity()
    if kind != "group":
        raise ValueError(f"unknown VQVAE norm '{kind}'; valid: group, none")
    groups = 32 if C % 32 == 0 else math.gcd(32, C)
    return nn.GroupNorm(num_groups=groups, num_channels=C, eps=1e-6, affine=True)


class Upsample2x(nn.Module):
    def __init__(self, C: int):
        super().__init__()
        self.conv = nn.Conv2d(C, C, kernel_size=3, stride=1, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class Downsample2x(nn.Module):
    def __init__(self, C: int):
        super().__init__()
        self.conv = nn.Conv2d(C, C, kernel_size=3, stride=2, padding=0)

    def forward(self, x):
        # asymmetric pad as in LDM / the official VAR code
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0))


class ResnetBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0, norm: str = "group"):
        super().__init__()
        self.norm1 = Normalize(in_channels, norm)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.norm2 = Normalize(out_channels, norm)
        self.dropout = nn.Dropout(dropout) if dropout > 1e-6 else nn.Identity()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.nin_shortcut(x) + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention; one fused 1x1 qkv conv (official key ``qkv``)."""

    def __init__(self, C: int, norm: str = "group"):
        super().__init__()
        self.C = C
        self.norm = Normalize(C, norm)
        self.qkv = nn.Conv2d(C, 3 * C, 1)
        self.proj_out = nn.Conv2d(C, C, 1)

    def forward(self, x):
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).view(B, 3, C, H * W).transpose(2, 3).unbind(1)  # each (B, HW, C)
        h = F.scaled_dot_product_attention(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1)).squeeze(1)
        return x + self.proj_out(h.transpose(1, 2).reshape(B, C, H, W))


class Encoder(nn.Module):
    def __init__(self, ch: int, ch_mult: Sequence[int], num_res_blocks: int, z_channels: int,
                 in_channels: int = 3, dropout: float = 0.0, using_sa: bool = True, using_mid_sa: bool = True,
                 norm: str = "group"):
        super().__init__()
        self.num_resolutions = len(ch_mult)
        in_ch_mult = (1,) + tuple(ch_mult)
        self.conv_in = nn.Conv2d(in_channels, ch, 3, 1, 1)
        self.down = nn.ModuleList()
        block_in = ch
        for i_level in range(self.num_resolutions):
            block, attn = nn.ModuleList(), nn.ModuleList()
            block_in, block_out = ch * in_ch_mult[i_level], ch * ch_mult[i_level]
            for _ in range(num_res_blocks):
                block.append(ResnetBlock(block_in, block_out, dropout, norm))
                block_in = block_out
                if i_level == self.num_resolutions - 1 and using_sa:
                    attn.append(AttnBlock(block_in, norm))
            down = nn.Module()
            down.block, down.attn = block, attn
            if i_level != self.num_resolutions - 1:
                down.downsample = Downsample2x(block_in)
            self.down.append(down)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(block_in, block_in, dropout, norm)
        self.mid.attn_1 = AttnBlock(block_in, norm) if using_mid_sa else nn.Identity()
        self.mid.block_2 = ResnetBlock(block_in, block_in, dropout, norm)
        self.norm_out = Normalize(block_in, norm)
        self.conv_out = nn.Conv2d(block_in, z_channels, 3, 1, 1)

    def forward(self, x):
        h = self.conv_in(x)
        for i_level, down in enumerate(self.down):
            for i_block, blk in enumerate(down.block):
                h = blk(h)
                if len(down.attn) > 0:
                    h = down.attn[i_block](h)
            if i_level != self.num_resolutions - 1:
                h = down.downsample(h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, ch: int, ch_mult: Sequence[int], num_res_blocks: int, z_channels: int,
                 out_ch: int = 3, dropout: float = 0.0, using_sa: bool = True, using_mid_sa: bool = True,
                 norm: str = "group"):
        super().__init__()
        self.num_resolutions = len(ch_mult)
        block_in = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(z_channels, block_in, 3, 1, 1)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(block_in, block_in, dropout, norm)
        self.mid.attn_1 = AttnBlock(block_in, norm) if using_mid_sa else nn.Identity()
        self.mid.block_2 = ResnetBlock(block_in, block_in, dropout, norm)
        ups = []
        for i_level in reversed(range(self.num_resolutions)):
            block, attn = nn.ModuleList(), nn.ModuleList()
            block_out = ch * ch_mult[i_level]
            for _ in range(num_res_blocks + 1):
                block.append(ResnetBlock(block_in, block_out, dropout, norm))
                block_in = block_out
                if i_level == self.num_resolutions - 1 and using_sa:
                    attn.append(AttnBlock(block_in, norm))
            up = nn.Module()
            up.block, up.attn = block, attn
            if i_level != 0:
                up.upsample = Upsample2x(block_in)
            ups.insert(0, up)  # index = level, as in the official key names
        self.up = nn.ModuleList(ups)
        self.norm_out = Normalize(block_in, norm)
        self.conv_out = nn.Conv2d(block_in, out_ch, 3, 1, 1)

    def forward(self, z):
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(self.conv_in(z))))
        for i_level in reversed(range(self.num_resolutions)):
            up = self.up[i_level]
            for i_block, blk in enumerate(up.block):
                h = blk(h)
                if len(up.attn) > 0:
                    h = up.attn[i_block](h)
            if i_level != 0:
                h = up.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


def _plain_stack(c_in: int, chans: Sequence[int], c_out: int, resample) -> nn.Sequential:
    """conv3x3 c_in -> chans[0], then ``resample(chans[i], chans[i+1])`` per level, conv3x3 -> c_out; SiLU between."""
    layers: list[nn.Module] = [nn.Conv2d(c_in, chans[0], 3, 1, 1), nn.SiLU()]
    for a, b in zip(chans[:-1], chans[1:]):
        layers += [resample(a, b), nn.SiLU()]
    layers.append(nn.Conv2d(chans[-1], c_out, 3, 1, 1))
    return nn.Sequential(*layers)


class PlainEncoder(nn.Module):
    """conv3x3 -> a stride-2 conv4x4 per level -> conv3x3 to z_channels, SiLU between, no norm.

    The ``plain`` layout (``Preset.vae_arch``), a deviation for CPU presets: measured on the
    default dataset it learns several times faster per image than the LDM layout at these
    widths and costs less per image (docs/data.md). Channels ch * ch_mult[i] at level i.
    """

    def __init__(self, ch: int, ch_mult: Sequence[int], z_channels: int, in_channels: int = 3):
        super().__init__()
        self.net = _plain_stack(in_channels, [ch * m for m in ch_mult], z_channels,
                                lambda a, b: nn.Conv2d(a, b, 4, 2, 1))

    def forward(self, x):
        return self.net(x)


class PlainDecoder(nn.Module):
    """Mirror of ``PlainEncoder``: conv3x3, a stride-2 transposed conv4x4 per level, conv3x3 to RGB."""

    def __init__(self, ch: int, ch_mult: Sequence[int], z_channels: int, out_ch: int = 3):
        super().__init__()
        self.net = _plain_stack(z_channels, [ch * m for m in ch_mult][::-1], out_ch,
                                lambda a, b: nn.ConvTranspose2d(a, b, 4, 2, 1))

    def forward(self, z):
        return self.net(z)


class VQVAE(nn.Module):
    """Multi-scale VQVAE. Build with ``VQVAE.from_preset(preset)`` or keyword args.

    Images are (B, 3, H, W) in [-1, 1]; token lists are K LongTensors (B, pn*pn), row-major.
    """

    def __init__(self, vocab_size: int = 4096, cvae: int = 32, ch: int = 160, ch_mult=(1, 1, 2, 2, 4),
                 patch_nums=(1, 2, 3, 4, 5, 6, 8, 10, 13, 16), share_quant_resi: int = 4,
                 quant_resi: float = 0.5, beta: float = 0.25, enc_res_blocks: int = 2,
                 resolution: int | None = None, dropout: float = 0.0, norm: str = "group", arch: str = "ldm"):
        super().__init__()
        self.vocab_size, self.Cvae = vocab_size, cvae
        self.patch_nums = tuple(int(p) for p in patch_nums)
        self.downsample = 2 ** (len(ch_mult) - 1)
        if resolution is not None and resolution // self.downsample != self.patch_nums[-1]:
            raise ValueError(f"resolution {resolution} / downsample {self.downsample} must equal the last patch_num "
                             f"{self.patch_nums[-1]}")
        self.resolution = resolution if resolution is not None else self.patch_nums[-1] * self.downsample
        if arch == "ldm":
            self.encoder = Encoder(ch, ch_mult, enc_res_blocks, cvae, dropout=dropout, norm=norm)
            self.decoder = Decoder(ch, ch_mult, enc_res_blocks, cvae, dropout=dropout, norm=norm)
        elif arch == "plain":
            self.encoder = PlainEncoder(ch, ch_mult, cvae)
            self.decoder = PlainDecoder(ch, ch_mult, cvae)
        else:
            raise ValueError(f"unknown VQVAE layout '{arch}'; valid: ldm, plain")
        self.quantize = MultiScaleQuantizer(vocab_size, cvae, self.patch_nums, beta=beta,
                                            quant_resi=quant_resi, share_quant_resi=share_quant_resi)
        self.quant_conv = nn.Conv2d(cvae, cvae, 3, 1, 1)
        self.post_quant_conv = nn.Conv2d(cvae, cvae, 3, 1, 1)

    @classmethod
    def from_preset(cls, preset) -> "VQVAE":
        return cls(vocab_size=preset.vocab_size, cvae=preset.cvae, ch=preset.ch, ch_mult=preset.ch_mult,
                   patch_nums=preset.patch_nums, share_quant_resi=preset.share_quant_resi,
                   quant_resi=preset.quant_resi, beta=preset.beta, enc_res_blocks=preset.enc_res_blocks,
                   resolution=preset.resolution, norm=preset.vae_norm, arch=preset.vae_arch)

    @property
    def seq_len(self) -> int:
        return sum(p * p for p in self.patch_nums)

    # ------------------------------------------------------------ training path
    def encode(self, img_B3HW: torch.Tensor) -> torch.Tensor:
        """Continuous latent f = quant_conv(encoder(img)), (B, Cvae, h, h)."""
        return self.quant_conv(self.encoder(img_B3HW))

    def forward(self, img_B3HW: torch.Tensor):
        """Tokenizer training: returns (rec_img, vq_loss, usages).

        rec_img is the decoder output (not clamped); vq_loss and usages are documented at
        ``MultiScaleQuantizer.forward`` (usages: per-scale fraction of the codebook hit by
        this batch; raw hit counts in ``self.quantize.last_hits_SV``).
        """
        f_hat, vq_loss, usages = self.quantize(self.encode(img_B3HW))
        return self.decoder(self.post_quant_conv(f_hat)), vq_loss, usages

    # ------------------------------------------------------------ tokens <-> images
    @torch.no_grad()
    def img_to_idx(self, img_B3HW: torch.Tensor) -> list[torch.Tensor]:
        """Images in [-1, 1] -> list of K LongTensors (B, pn*pn)."""
        return self.quantize.f_to_idx(self.encode(img_B3HW))

    @torch.no_grad()
    def idx_to_var_input(self, idx_list: Sequence[torch.Tensor]) -> torch.Tensor:
        """Teacher-forcing input (B, L - pn0^2, Cvae) for VAR, no grad (the VQVAE is frozen
        while VAR trains); see ``MultiScaleQuantizer.idx_to_var_input``."""
        return self.quantize.idx_to_var_input(idx_list)

    def idx_to_fhat(self, idx_list: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.quantize.idx_to_fhat(idx_list)

    def fhat_to_img(self, f_hat: torch.Tensor) -> torch.Tensor:
        """f_hat (B, Cvae, h, h) -> image (B, 3, H, W) clamped to [-1, 1]."""
        return self.decoder(self.post_quant_conv(f_hat)).clamp(-1, 1)

    def idx_to_img(self, idx_list: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.fhat_to_img(self.idx_to_fhat(idx_list))

    def next_var_input(self, si: int, f_hat: torch.Tensor, h_BCpp: torch.Tensor):
        """Incremental sampling step; see ``MultiScaleQuantizer.next_var_input``."""
        return self.quantize.next_var_input(si, f_hat, h_BCpp)

    def empty_fhat(self, B: int, device=None) -> torch.Tensor:
        """Zero f_hat (B, Cvae, h, h) in fp32 to start incremental sampling."""
        H = self.patch_nums[-1]
        return torch.zeros(B, self.Cvae, H, H, device=device if device is not None else self.quantize.embedding.weight.device)
