"""Generation and zero-shot editing with a trained VAR (VAR_SPEC §4).

Sampling follows the paper's procedure scale by scale:

* the batch is doubled (the B class labels, then B null labels) for classifier-free guidance,
  with guidance ramped linearly over the scales: ``t = cfg * k / (K - 1)`` (0 at the first
  scale, ``cfg`` at the last) and ``logits = (1 + t) * cond - t * uncond``;
* top-k, then top-p (nucleus), then one multinomial draw per token, all from one
  ``torch.Generator`` seeded by ``seed`` so a call is reproducible;
* the chosen codes update ``f_hat`` (phi-filtered, upsampled, accumulated) and the
  area-downsampled ``f_hat`` is the next scale's input;
* the transformer keeps a KV cache across scales, so each scale costs one forward over its
  own ``pn * pn`` tokens. ``use_cache=False`` recomputes the whole prefix at every scale with
  the block-causal mask instead; the two give the same tokens (tested), the cache is faster.
* ``smooth=True`` is the official "more_smooth" visual mode: the code embedding becomes a
  Gumbel-softmax mixture of codebook vectors (temperature falling over the scales). Not for
  quality measurements.

Images come back in [0, 1] (B, 3, H, W), with the token indices (list of K (B, pn*pn)).

Zero-shot editing (:func:`edit`) runs the same loop with a source image's tokens forced
where a mask says *keep*: at every scale the mask is resized to ``pn x pn`` (bilinear,
``> 0.5``) and, as in the official demo, scales with at most 3 tokens (1x1) take the source
entirely. ``label=None`` (the null class) is in-/out-painting; a class label is
class-conditional editing.

CLI: ``varscale sample <study> --cell <run_id>`` and ``varscale edit <study> --cell <run_id>``
(``-h`` for options); PNGs and raw arrays go to ``runs/<study>/samples/<run_id>/``.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

# --------------------------------------------------------------------------- token choice


def top_k_top_p_filter(logits_BlV: torch.Tensor, top_k: int = 0, top_p: float = 0.0) -> torch.Tensor:
    """Mask (to -inf) all but the top-k logits, then all outside the top-p nucleus.

    top_k <= 0 and top_p <= 0 mean off. The nucleus drops the least likely tokens whose
    cumulative probability (ascending) stays <= 1 - top_p, always keeping the most likely.
    Returns a new tensor.
    """
    logits_BlV = logits_BlV.clone()
    V = logits_BlV.shape[-1]
    if 0 < top_k < V:
        kth_B11 = logits_BlV.topk(top_k, dim=-1, largest=True, sorted=False).values.amin(dim=-1, keepdim=True)
        logits_BlV.masked_fill_(logits_BlV < kth_B11, -torch.inf)
    if top_p > 0:
        sorted_BlV, order_BlV = logits_BlV.sort(dim=-1, descending=False)
        drop_sorted = sorted_BlV.softmax(dim=-1).cumsum(dim=-1) <= (1 - top_p)
        drop_sorted[..., -1] = False  # the most likely token always survives
        drop = torch.zeros_like(drop_sorted).scatter(-1, order_BlV, drop_sorted)
        logits_BlV.masked_fill_(drop, -torch.inf)
    return logits_BlV


def sample_tokens(logits_BlV: torch.Tensor, top_k: int = 0, top_p: float = 0.0,
                  generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """top-k, then top-p, then one multinomial draw per position -> (B, l) long."""
    B, l, V = logits_BlV.shape
    probs = top_k_top_p_filter(logits_BlV.float(), top_k, top_p).softmax(dim=-1)
    return torch.multinomial(probs.view(-1, V), 1, replacement=True, generator=generator).view(B, l)


def gumbel_softmax(logits_BlV: torch.Tensor, tau: float, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Soft (not straight-through) Gumbel-softmax sample with an explicit generator."""
    u = torch.empty_like(logits_BlV, dtype=torch.float32).exponential_(generator=generator)
    return ((logits_BlV.float() - u.log()) / tau).softmax(dim=-1)


def smooth_tau(ratio: float) -> float:
    """The official more_smooth temperature: 0.27 at the first scale down to ~0.0135."""
    return max(0.27 * (1 - 0.95 * ratio), 0.005)


# --------------------------------------------------------------------------- masks


def box_mask(grid: int, y0: float, x0: float, y1: float, x1: float, outpaint: bool = False) -> torch.Tensor:
    """Edit mask (grid, grid) with 1 = generate, 0 = keep the source, from a box in [0, 1] units.

    In-painting regenerates the box; ``outpaint=True`` keeps the box and regenerates around it.
    ``grid`` is usually the last patch_num (the token grid the official demo builds masks on).
    """
    m = torch.zeros(grid, grid)
    m[round(y0 * grid):round(y1 * grid), round(x0 * grid):round(x1 * grid)] = 1
    return 1 - m if outpaint else m


def keep_masks(mask: torch.Tensor, patch_nums: Sequence[int], B: int = 1) -> list[torch.Tensor]:
    """Per-scale boolean keep masks (B, pn*pn) from an edit mask (1 = generate).

    ``mask``: (H, W), (1, H, W) or (B, H, W) at any resolution (token grid or image). A mask
    finer than the last token grid is first area-averaged to it (the fraction of each token's
    pixels to generate). Then, per scale, the keep mask (1 - mask) is bilinearly resized to
    pn x pn and thresholded at 0.5; scales with at most 3 tokens keep the source entirely.
    """
    m = torch.as_tensor(mask, dtype=torch.float32)
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3:
        raise ValueError(f"mask must be (H, W) or (B, H, W), got {tuple(m.shape)}")
    m = m[:, None].expand(B if m.shape[0] == 1 else m.shape[0], 1, *m.shape[1:])
    grid = patch_nums[-1]
    if m.shape[-1] > grid or m.shape[-2] > grid:
        m = F.interpolate(m, size=(grid, grid), mode="area")
    keep = 1 - m
    out = []
    for pn in patch_nums:
        if pn * pn <= 3:
            k = torch.ones(keep.shape[0], pn * pn, dtype=torch.bool)
        else:
            k = F.interpolate(keep, size=(pn, pn), mode="bilinear", align_corners=False).gt(0.5).flatten(1)
        out.append(k)
    return out


# --------------------------------------------------------------------------- images


def to_uint8(img_B3HW_01: torch.Tensor) -> np.ndarray:
    """[0, 1] (B, 3, H, W) -> uint8 (B, H, W, 3)."""
    x = img_B3HW_01.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def grid_image(img_B3HW_01: torch.Tensor, nrow: int = 8, pad: int = 2, min_tile: int = 96):
    """A PIL image of the batch as a grid, tiles upscaled (nearest) to at least ``min_tile`` px."""
    from PIL import Image

    u8 = to_uint8(img_B3HW_01)
    B, H, W, _ = u8.shape
    s = max(1, -(-min_tile // max(H, W)))
    nrow = max(1, min(nrow, B))
    ncol = -(-B // nrow)
    canvas = np.full((ncol * (H * s + pad) + pad, nrow * (W * s + pad) + pad, 3), 255, np.uint8)
    for i in range(B):
        r, c = divmod(i, nrow)
        tile = u8[i].repeat(s, 0).repeat(s, 1)
        y, x = pad + r * (H * s + pad), pad + c * (W * s + pad)
        canvas[y:y + H * s, x:x + W * s] = tile
    return Image.fromarray(canvas)


def save_grid(img_B3HW_01: torch.Tensor, path: Union[str, Path], nrow: int = 8) -> Path:
    from varscale.schema import atomic_write_bytes
    import io

    buf = io.BytesIO()
    grid_image(img_B3HW_01, nrow=nrow).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def save_npy(arr: np.ndarray, path: Union[str, Path]) -> Path:
    from varscale.schema import atomic_write_bytes
    import io

    buf = io.BytesIO()
    np.save(buf, arr)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


# --------------------------------------------------------------------------- the autoregressive loop


def _device(var) -> torch.device:
    return next(var.parameters()).device


class _PrefixStepper:
    """Scale-by-scale logits without a KV cache: every scale re-runs the teacher-forced forward.

    The inputs of the scales so far are placed in a full-length input (zeros after them);
    the block-causal mask means a scale's logits never see later positions, so what fills
    them does not matter. The reference that the cached path is tested against.
    """

    def __init__(self, var, label_B: torch.Tensor):
        self.var, self.label_B = var, label_B
        cfg = var.cfg
        self.x_BlCvae = torch.zeros(label_B.shape[0], cfg.seq_len - cfg.first_l, cfg.cvae, device=label_B.device)

    def __call__(self, si: int, x_BlCvae: Optional[torch.Tensor]) -> torch.Tensor:
        bg, ed = self.var.begin_ends[si]
        if si > 0:
            f = self.var.cfg.first_l
            self.x_BlCvae[:, bg - f:ed - f] = x_BlCvae
        return self.var(self.label_B, self.x_BlCvae)[:, bg:ed]


class _CachedStepper:
    """One forward per scale over that scale's tokens, attending to the KV cache."""

    def __init__(self, var, label_B: torch.Tensor):
        self.var = var
        self.cond_BD = var.class_cond(label_B)
        var.kv_cache(True)

    def __call__(self, si: int, x_BlCvae: Optional[torch.Tensor]) -> torch.Tensor:
        return self.var.infer_scale(si, self.cond_BD, x_BlCvae)

    def close(self):
        self.var.kv_cache(False)


def _autoregress(vae, var, label_B: torch.Tensor, cfg: float, top_k: int, top_p: float,
                 generator: Optional[torch.Generator], smooth: bool, use_cache: bool,
                 src_idx: Optional[Sequence[torch.Tensor]] = None,
                 keep: Optional[Sequence[torch.Tensor]] = None):
    """The shared loop of generate and edit. Returns (f_hat, idx list).

    ``keep[si]`` (B, pn*pn) bool forces ``src_idx[si]`` at those positions, in the returned
    tokens and in the embedding that updates f_hat (so the AR context is the source there).
    """
    patch_nums = tuple(var.cfg.patch_nums)
    K, B = len(patch_nums), label_B.shape[0]
    emb = vae.quantize.embedding
    guided = cfg != 0
    labels = torch.cat([label_B, torch.full_like(label_B, var.num_classes)]) if guided else label_B
    step = _CachedStepper(var, labels) if use_cache else _PrefixStepper(var, labels)
    f_hat, nxt = vae.empty_fhat(B, device=label_B.device), None
    idx_list = []
    try:
        for si, pn in enumerate(patch_nums):
            ratio = si / (K - 1) if K > 1 else 1.0
            logits = step(si, None if nxt is None else (nxt.repeat(2, 1, 1) if guided else nxt))
            if guided:
                t = cfg * ratio
                logits = (1 + t) * logits[:B] - t * logits[B:]
            idx_Bl = sample_tokens(logits, top_k, top_p, generator)
            if smooth:
                h_BlC = gumbel_softmax(logits * (1 + ratio), smooth_tau(ratio), generator) @ emb.weight.float()
            else:
                h_BlC = emb(idx_Bl).float()
            if keep is not None:
                k_Bl = keep[si].to(idx_Bl.device)
                src_Bl = src_idx[si].to(idx_Bl.device)
                idx_Bl = torch.where(k_Bl, src_Bl, idx_Bl)
                h_BlC = torch.where(k_Bl[..., None], emb(src_Bl).float(), h_BlC)
            idx_list.append(idx_Bl)
            h_BCpp = h_BlC.transpose(1, 2).reshape(B, -1, pn, pn)
            f_hat, nxt = vae.next_var_input(si, f_hat, h_BCpp)
    finally:
        if use_cache:
            step.close()
    return f_hat, idx_list


def _labels(labels_B, var, device) -> torch.Tensor:
    if labels_B is None:
        raise ValueError("labels are required (use edit() for the null class)")
    lab = torch.as_tensor(labels_B, dtype=torch.long, device=device).reshape(-1)
    if lab.numel() and (lab.min() < 0 or lab.max() > var.num_classes):
        raise ValueError(f"labels must be in [0, {var.num_classes}] ({var.num_classes} = null class), got {lab.tolist()}")
    return lab


def make_generator(seed: int, device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(int(seed))


@torch.no_grad()
def generate(vae, var, labels_B, cfg: float = 1.5, top_k: int = 0, top_p: float = 0.0, seed: int = 0,
             smooth: bool = False, use_cache: bool = True):
    """Class-conditional samples: (img_B3HW in [0, 1], idx list of K (B, pn*pn) LongTensors).

    ``labels_B``: class ids (``var.num_classes`` is the null class: unconditional). ``cfg``:
    guidance at the last scale (ramped from 0 at the first); 0 turns CFG off (and the doubled
    batch). ``top_k``/``top_p``: 0 = off. ``seed``: the generator of every draw. ``smooth``: the
    Gumbel-softmax visual mode (the image then comes from soft embeddings; the returned
    indices are the hard draws). ``use_cache=False``: recompute the prefix at every scale.
    Models are switched to eval mode (no class dropout, no drop-path).
    """
    vae.eval(), var.eval()
    dev = _device(var)
    label_B = _labels(labels_B, var, dev)
    f_hat, idx = _autoregress(vae, var, label_B, cfg, top_k, top_p, make_generator(seed, dev), smooth, use_cache)
    return vae.fhat_to_img(f_hat).add(1).mul(0.5), idx


@torch.no_grad()
def edit(vae, var, src, mask, label=None, cfg: float = 1.5, top_k: int = 0, top_p: float = 0.0,
         seed: int = 0, smooth: bool = False, use_cache: bool = True):
    """Zero-shot in-/out-painting (``label=None``: null class) or class-conditional editing.

    ``src``: images (B, 3, H, W) / (3, H, W) in [-1, 1], or the source token list (K (B, pn*pn)).
    ``mask``: 1 = generate, 0 = keep the source; (H, W) or (B, H, W) at any resolution (token
    grid or image; see :func:`box_mask`, :func:`keep_masks`). ``label``: None, an int or (B,).
    Returns (img_B3HW in [0, 1], idx list, keep list): outside the mask (per scale, as
    resized) the tokens equal the source tokens.
    """
    vae.eval(), var.eval()
    dev = _device(var)
    if isinstance(src, (list, tuple)):
        src_idx = [torch.as_tensor(s, dtype=torch.long, device=dev) for s in src]
    else:
        img = torch.as_tensor(src, dtype=torch.float32, device=dev)
        src_idx = vae.img_to_idx(img[None] if img.ndim == 3 else img)
    B = src_idx[0].shape[0]
    if label is None:
        label = var.num_classes
    label_B = _labels(label, var, dev)
    if label_B.numel() == 1:
        label_B = label_B.expand(B).clone()
    keep = keep_masks(torch.as_tensor(mask).cpu(), var.cfg.patch_nums, B)
    f_hat, idx = _autoregress(vae, var, label_B, cfg, top_k, top_p, make_generator(seed, dev), smooth,
                              use_cache, src_idx=src_idx, keep=keep)
    return vae.fhat_to_img(f_hat).add(1).mul(0.5), idx, keep
