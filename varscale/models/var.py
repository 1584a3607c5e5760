"""The VAR transformer (Tian et al. 2024; VAR_SPEC §1): next-scale prediction with AdaLN blocks.

Shape rule: width C = head_dim * depth, heads = depth (official head_dim 64). The sequence is
all K scales' tokens, L = sum(pn^2): the first pn0^2 tokens are the start token
(class embedding + pos_start), the rest are the word-embedded teacher-forcing inputs of scales
1..K-1. Every token also gets its scale's level embedding and its absolute position embedding.
The attention mask is block-causal: a token sees every token of its own and earlier scales.

Training / teacher-forced forward::

    logits_BLV = var(label_B, x_BlCvae)        # x: vae.idx_to_var_input(idx), (B, L - pn0^2, Cvae)

Class dropout (label -> null class ``num_classes`` with probability ``class_dropout``) acts in
training mode only; ``class_dropout_in_eval=True`` restores the official always-on behaviour.

KV-cached incremental inference (one call per scale; the sampler does CFG by passing a 2B
batch of labels followed by null labels and mixing the two halves of the logits)::

    var.kv_cache(True)                          # enables and clears the caches of all blocks
    cond_BD = var.class_cond(label_B)           # no class dropout here
    f_hat, nxt = vae.empty_fhat(B), None
    for si, pn in enumerate(var.cfg.patch_nums):
        logits_BlV = var.infer_scale(si, cond_BD, nxt)    # nxt None at si == 0
        idx_Bl = sample(logits_BlV)                        # (B, pn*pn)
        f_hat, nxt = vae.next_var_input(si, f_hat, vae.quantize.embed_map(idx_Bl, pn))
    var.kv_cache(False)
    img = vae.fhat_to_img(f_hat)

(with CFG, repeat ``nxt`` along the batch to 2B before passing it back in.)

Activation checkpointing (``var.set_activation_checkpointing(True)``; the trainer turns it on
with ``training.activation_checkpointing``): in a training forward with gradients, each block
keeps only its input and recomputes its activations in the backward
(``torch.utils.checkpoint``, non-reentrant, RNG state restored so drop-path draws the same
mask, autocast state restored so bf16 recomputes in bf16). Same numbers, ~1/3 more compute.

Parameter names follow the official release (``blocks.0.attn.mat_qkv.weight``, ...;
``lvl_1L`` and ``attn_bias_for_masking`` are buffers), so its checkpoints load directly.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .spec import VARConfig  # noqa: F401 - defined torch-free in spec.py, importable from here too


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth per sample, rescaled by 1 / keep (timm's drop_path, scale_by_keep)."""
    if p <= 0.0 or not training:
        return x
    keep = 1.0 - p
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep).div_(keep)
    return x * mask


class SelfAttention(nn.Module):
    def __init__(self, C: int, heads: int, attn_l2_norm: bool = True, fused: bool = True):
        super().__init__()
        assert C % heads == 0
        self.C, self.heads, self.head_dim = C, heads, C // heads
        self.attn_l2_norm, self.fused = attn_l2_norm, fused
        if attn_l2_norm:
            self.scale = 1.0
            # learnable per-head temperature on the cosine logits, init 4, capped at 100
            self.scale_mul_1H11 = nn.Parameter(torch.full((1, heads, 1, 1), 4.0).log())
            self.max_scale_mul = math.log(100)
        else:
            self.scale = 0.25 / math.sqrt(self.head_dim)
        self.mat_qkv = nn.Linear(C, 3 * C, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(C))
        self.v_bias = nn.Parameter(torch.zeros(C))
        self.register_buffer("zero_k_bias", torch.zeros(C))
        self.proj = nn.Linear(C, C)
        self.caching = False
        self.cached_k: Optional[torch.Tensor] = None
        self.cached_v: Optional[torch.Tensor] = None

    def kv_caching(self, enable: bool):
        self.caching, self.cached_k, self.cached_v = enable, None, None

    def forward(self, x_BLC: torch.Tensor, attn_bias: Optional[torch.Tensor]) -> torch.Tensor:
        B, L, C = x_BLC.shape
        bias = torch.cat((self.q_bias, self.zero_k_bias, self.v_bias))
        qkv = F.linear(x_BLC, self.mat_qkv.weight, bias).view(B, L, 3, self.heads, self.head_dim)
        if self.fused and self.attn_l2_norm:
            # normalise q and k in one op, in the B,L,3,H,c layout; then to B,H,L,c views
            qk = F.normalize(qkv[:, :, :2], dim=-1)
            scale_mul_11H1 = self.scale_mul_1H11.clamp_max(self.max_scale_mul).exp().view(1, 1, self.heads, 1)
            q = (qk[:, :, 0] * scale_mul_11H1).transpose(1, 2)
            k = qk[:, :, 1].transpose(1, 2)
            v = qkv[:, :, 2].transpose(1, 2)
        else:
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each B,H,L,c
            if self.attn_l2_norm:
                scale_mul = self.scale_mul_1H11.clamp_max(self.max_scale_mul).exp()
                q = F.normalize(q, dim=-1).mul(scale_mul)
                k = F.normalize(k, dim=-1)
        if self.caching:
            if self.cached_k is not None:
                k = torch.cat((self.cached_k, k), dim=2)
                v = torch.cat((self.cached_v, v), dim=2)
            self.cached_k, self.cached_v = k, v
        if attn_bias is not None and attn_bias.dtype != q.dtype and attn_bias.dtype != torch.bool:
            attn_bias = attn_bias.to(q.dtype)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias, scale=self.scale)
        return self.proj(o.transpose(1, 2).reshape(B, L, C))


class FFN(nn.Module):
    def __init__(self, C: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(C, hidden)
        self.fc2 = nn.Linear(hidden, C)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class SharedAdaLin(nn.Linear):
    def forward(self, cond_BD):
        C = self.weight.shape[0] // 6
        return super().forward(cond_BD).view(-1, 1, 6, C)


class AdaLNSelfAttn(nn.Module):
    """x += gamma1 * Attn(LN(x)(1 + scale1) + shift1); x += gamma2 * FFN(LN(x)(1 + scale2) + shift2)."""

    def __init__(self, C: int, D: int, heads: int, mlp_ratio: float, norm_eps: float, drop_path: float,
                 attn_l2_norm: bool, shared_aln: bool, fused: bool):
        super().__init__()
        self.C, self.D, self.norm_eps, self.drop_path, self.fused = C, D, norm_eps, drop_path, fused
        self.attn = SelfAttention(C, heads, attn_l2_norm=attn_l2_norm, fused=fused)
        self.ffn = FFN(C, round(C * mlp_ratio))
        self.shared_aln = shared_aln
        if shared_aln:
            self.ada_gss = nn.Parameter(torch.randn(1, 1, 6, C) / C ** 0.5)
        else:
            self.ada_lin = nn.Sequential(nn.SiLU(inplace=False), nn.Linear(D, 6 * C))

    def modulation(self, cond: torch.Tensor) -> torch.Tensor:
        """(B, 1, 6, C): gamma1, gamma2, scale1, scale2, shift1, shift2."""
        if self.shared_aln:
            return self.ada_gss + cond  # cond is the shared (B, 1, 6, C)
        return self.ada_lin(cond).view(-1, 1, 6, self.C)

    def ln(self, x):
        return F.layer_norm(x, (self.C,), eps=self.norm_eps)

    def forward(self, x_BLC, cond, attn_bias, mod_B16C: Optional[torch.Tensor] = None):
        if mod_B16C is None:
            mod_B16C = self.modulation(cond)
        gamma1, gamma2, scale1, scale2, shift1, shift2 = mod_B16C.unbind(2)
        if self.fused:
            h = torch.addcmul(shift1, self.ln(x_BLC), scale1 + 1)
            x_BLC = x_BLC + drop_path(self.attn(h, attn_bias) * gamma1, self.drop_path, self.training)
            h = torch.addcmul(shift2, self.ln(x_BLC), scale2 + 1)
            x_BLC = x_BLC + drop_path(self.ffn(h) * gamma2, self.drop_path, self.training)
        else:
            h = self.ln(x_BLC).mul(scale1.add(1)).add_(shift1)
            x_BLC = x_BLC + drop_path(self.attn(h, attn_bias).mul_(gamma1), self.drop_path, self.training)
            h = self.ln(x_BLC).mul(scale2.add(1)).add_(shift2)
            x_BLC = x_BLC + drop_path(self.ffn(h).mul(gamma2), self.drop_path, self.training)
        return x_BLC


class AdaLNBeforeHead(nn.Module):
    def __init__(self, C: int, D: int, norm_eps: float):
        super().__init__()
        self.C, self.norm_eps = C, norm_eps
        self.ada_lin = nn.Sequential(nn.SiLU(inplace=False), nn.Linear(D, 2 * C))

    def forward(self, x_BLC, cond_BD):
        scale, shift = self.ada_lin(cond_BD).view(-1, 1, 2, self.C).unbind(2)
        return torch.addcmul(shift, F.layer_norm(x_BLC, (self.C,), eps=self.norm_eps), scale + 1)


def pos_sincos_2d(patch_nums, C: int, std: float) -> torch.Tensor:
    """(1, L, C) position table where every scale shares one continuous 2-D frame.

    Token (i, j) of a pn x pn scale sits at the centre ((i + .5) / pn, (j + .5) / pn) of the
    unit square and gets sin/cos of that point at C/4 geometric frequencies per axis, so a
    token and the coarser tokens covering the same area start out with similar embeddings,
    and neighbours are linearly separable from the first step. The official code draws
    pos_1LC at random; with 8x8 latents every depth then sits for hundreds of steps on a
    plateau where it ignores the image content and predicts each scale's marginal codes;
    this init shortens it (docs/default_study_v1.md). Scaled to the per-element std of the
    official init so nothing else changes.
    """
    nf = max(1, C // 4)
    pmax = max(patch_nums)
    freqs = math.pi * torch.logspace(0, math.log10(max(pmax, 2)), nf, dtype=torch.float64)
    rows = []
    for pn in patch_nums:
        c = (torch.arange(pn, dtype=torch.float64) + 0.5) / pn
        y, x = torch.meshgrid(c, c, indexing="ij")
        y, x = y.reshape(-1, 1) * freqs, x.reshape(-1, 1) * freqs
        rows.append(torch.cat([y.sin(), y.cos(), x.sin(), x.cos()], dim=1))
    table = torch.cat(rows)
    if table.shape[1] < C:  # C not a multiple of 4: pad with zeros
        table = torch.cat([table, table.new_zeros(table.shape[0], C - table.shape[1])], dim=1)
    table = table[:, :C]
    table = table / table.std() * std
    return table.unsqueeze(0).float()


class VAR(nn.Module):
    def __init__(self, cfg: VARConfig):
        super().__init__()
        self.cfg = cfg
        C = D = cfg.width
        self.C, self.D, self.L, self.first_l = C, D, cfg.seq_len, cfg.first_l
        self.num_classes = cfg.num_classes
        K = len(cfg.patch_nums)
        if cfg.pos_init not in ("trunc_normal", "sincos2d"):
            raise ValueError(f"pos_init must be 'trunc_normal' or 'sincos2d', got {cfg.pos_init!r}")
        init_std = math.sqrt(1 / C / 3) if cfg.init_std is None else cfg.init_std
        self.init_std = init_std

        self.word_embed = nn.Linear(cfg.cvae, C)
        self.class_emb = nn.Embedding(cfg.num_classes + 1, C)  # index num_classes = null class (CFG)
        self.pos_start = nn.Parameter(torch.empty(1, self.first_l, C))
        self.pos_1LC = nn.Parameter(torch.empty(1, self.L, C))
        self.lvl_embed = nn.Embedding(K, C)

        self.shared_ada_lin = (nn.Sequential(nn.SiLU(inplace=False), SharedAdaLin(D, 6 * C))
                               if cfg.shared_aln else nn.Identity())
        dpr = torch.linspace(0, cfg.max_drop_path, cfg.depth, device="cpu").tolist()
        self.blocks = nn.ModuleList([
            AdaLNSelfAttn(C, D, cfg.heads, cfg.mlp_ratio, cfg.norm_eps, dpr[i], cfg.attn_l2_norm,
                          cfg.shared_aln, cfg.fused) for i in range(cfg.depth)])

        lvl = torch.cat([torch.full((pn * pn,), i) for i, pn in enumerate(cfg.patch_nums)])
        self.register_buffer("lvl_1L", lvl.view(1, self.L).contiguous())
        d_L1 = lvl.view(self.L, 1)
        self.register_buffer("attn_bias_for_masking",
                             torch.where(d_L1 >= d_L1.T, 0.0, -torch.inf).reshape(1, 1, self.L, self.L).contiguous())
        self.begin_ends = []
        cur = 0
        for pn in cfg.patch_nums:
            self.begin_ends.append((cur, cur + pn * pn))
            cur += pn * pn

        self.head_nm = AdaLNBeforeHead(C, D, cfg.norm_eps)
        self.head = nn.Linear(C, cfg.vocab_size)
        self.activation_checkpointing = False
        self.init_weights()

    def set_activation_checkpointing(self, enable: bool) -> "VAR":
        """Recompute each block in the backward instead of keeping its activations (see module doc)."""
        self.activation_checkpointing = bool(enable)
        return self

    # ------------------------------------------------------------------ init
    @torch.no_grad()
    def init_weights(self):
        """The official init_weights (VAR_SPEC §1); a no-op on the meta device."""
        if self.pos_1LC.is_meta:
            return
        cfg, std = self.cfg, self.init_std
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=std)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.Embedding):
                nn.init.trunc_normal_(m.weight, std=std)
        nn.init.trunc_normal_(self.pos_start, std=std)
        if cfg.pos_init == "sincos2d":
            self.pos_1LC.copy_(pos_sincos_2d(cfg.patch_nums, self.C, std))
        else:
            nn.init.trunc_normal_(self.pos_1LC, std=std)
        if cfg.head_init >= 0:
            self.head.weight.mul_(cfg.head_init)
            self.head.bias.zero_()
        self.head_nm.ada_lin[-1].weight.mul_(cfg.aln_init)
        self.head_nm.ada_lin[-1].bias.zero_()
        for blk in self.blocks:
            blk.attn.proj.weight.div_(math.sqrt(2 * cfg.depth))
            blk.ffn.fc2.weight.div_(math.sqrt(2 * cfg.depth))
            blk.attn.q_bias.zero_()
            blk.attn.v_bias.zero_()
            if cfg.attn_l2_norm:
                blk.attn.scale_mul_1H11.fill_(math.log(4.0))
            if cfg.shared_aln:
                blk.ada_gss.copy_(torch.randn_like(blk.ada_gss) / self.C ** 0.5)
                blk.ada_gss[:, :, 2:].mul_(cfg.aln_init)
                blk.ada_gss[:, :, :2].mul_(cfg.aln_gamma_init)
            else:
                w = blk.ada_lin[-1].weight
                w[2 * self.C:].mul_(cfg.aln_init)
                w[:2 * self.C].mul_(cfg.aln_gamma_init)  # gamma1, gamma2 rows: blocks start near identity
                blk.ada_lin[-1].bias.zero_()

    # ------------------------------------------------------------------ sizes
    def param_counts(self) -> dict:
        """n_params: all parameters. n_params_blocks: the transformer blocks (plus the shared
        AdaLN linear when shared_aln), the paper's N ~ 18 d w^2. n_params_nonembedding: all
        minus the lookup tables class_emb, pos_start, pos_1LC, lvl_embed (word_embed and the
        head are matmuls per token and stay in). Counted from the modules; the torch-free
        ``varscale.models.spec.param_counts(cfg)`` gives the same numbers from the config."""
        n = sum(p.numel() for p in self.parameters())
        blocks = sum(p.numel() for p in self.blocks.parameters()) + sum(p.numel() for p in self.shared_ada_lin.parameters())
        emb = self.class_emb.weight.numel() + self.pos_start.numel() + self.pos_1LC.numel() + self.lvl_embed.weight.numel()
        return dict(n_params=n, n_params_blocks=blocks, n_params_nonembedding=n - emb)

    # ------------------------------------------------------------------ forward
    def class_cond(self, label_B: torch.Tensor) -> torch.Tensor:
        """Class embedding (B, C), no dropout: the AdaLN condition and the start token."""
        return self.class_emb(label_B)

    def drop_labels(self, label_B: torch.Tensor) -> torch.Tensor:
        p = self.cfg.class_dropout
        if p > 0 and (self.training or self.cfg.class_dropout_in_eval):
            drop = torch.rand(label_B.shape[0], device=label_B.device) < p
            label_B = torch.where(drop, torch.full_like(label_B, self.num_classes), label_B)
        return label_B

    def _modulations(self, cond):
        """Per-block AdaLN outputs. With fused=True (and not shared) all blocks' ada_lin run
        as one matmul on SiLU(cond), computed once; same numbers as block-by-block."""
        if not (self.cfg.fused and not self.cfg.shared_aln) or len(self.blocks) == 1:
            return [None] * len(self.blocks)
        W = torch.cat([b.ada_lin[-1].weight for b in self.blocks], 0)
        bias = torch.cat([b.ada_lin[-1].bias for b in self.blocks], 0)
        out = F.linear(F.silu(cond), W, bias).view(cond.shape[0], 1, len(self.blocks), 6, self.C)
        return out.unbind(2)

    def logits(self, x_BLC, cond_BD):
        return self.head(self.head_nm(x_BLC.float(), cond_BD)).float()

    def forward(self, label_B: torch.Tensor, x_BlCvae: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits (B, L, V). x_BlCvae: (B, L - first_l, Cvae) from vae.idx_to_var_input."""
        B = x_BlCvae.shape[0]
        label_B = self.drop_labels(label_B)
        with torch.autocast(device_type=x_BlCvae.device.type, enabled=False):
            cond_BD = self.class_emb(label_B)
            sos = cond_BD.unsqueeze(1).expand(B, self.first_l, -1) + self.pos_start
            x_BLC = torch.cat((sos, self.word_embed(x_BlCvae.float())), dim=1)
            x_BLC = x_BLC + (self.lvl_embed(self.lvl_1L) + self.pos_1LC)
        cond = self.shared_ada_lin(cond_BD)
        attn_bias = self.attn_bias_for_masking
        if torch.is_autocast_enabled(x_BLC.device.type):
            dt = torch.get_autocast_dtype(x_BLC.device.type)
            x_BLC, cond, attn_bias = x_BLC.to(dt), cond.to(dt), attn_bias.to(dt)
        mods = self._modulations(cond)
        recompute = self.activation_checkpointing and self.training and torch.is_grad_enabled()
        for blk, mod in zip(self.blocks, mods):
            if recompute:
                x_BLC = checkpoint(blk, x_BLC, cond, attn_bias, mod, use_reentrant=False)
            else:
                x_BLC = blk(x_BLC, cond, attn_bias, mod)
        return self.logits(x_BLC, cond_BD)

    # ------------------------------------------------------------------ incremental inference
    def kv_cache(self, enable: bool):
        """Enable (and clear) or disable the per-block KV caches."""
        for blk in self.blocks:
            blk.attn.kv_caching(enable)

    def infer_scale(self, si: int, cond_BD: torch.Tensor, x_BlCvae: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Logits (B, pn_si^2, V) of scale ``si``, attending to the cached keys/values of scales < si.

        Call with si = 0, 1, ... in order after ``kv_cache(True)``; ``cond_BD`` from ``class_cond``;
        ``x_BlCvae`` (B, pn_si^2, Cvae) is the previous step's ``vae.next_var_input`` output (None at si 0).
        """
        bg, ed = self.begin_ends[si]
        lvl_pos = self.lvl_embed(self.lvl_1L[:, bg:ed]) + self.pos_1LC[:, bg:ed]
        if si == 0:
            B = cond_BD.shape[0]
            x_BLC = cond_BD.unsqueeze(1).expand(B, self.first_l, -1) + self.pos_start + lvl_pos
        else:
            x_BLC = self.word_embed(x_BlCvae.float()) + lvl_pos
        cond = self.shared_ada_lin(cond_BD)
        mods = self._modulations(cond)
        for blk, mod in zip(self.blocks, mods):
            x_BLC = blk(x_BLC, cond, None, mod)
        return self.logits(x_BLC, cond_BD)
