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

For a cell's checkpoints: :func:`sample_cell` and :func:`edit_cell`, the work of
``varscale sample <study> --cell <run_id>`` and ``varscale edit <study> --cell <run_id>``
(``varscale.cli.sample`` / ``.edit``; ``-h`` for options); PNGs and raw arrays go to
``runs/<study>/samples/<run_id>/``.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from varscale.fig7 import cell_steps, fig7_steps  # noqa: F401 - torch-free; importable from here too
from varscale.schema import CellLayout, StudyLayout

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
    probs_NV = top_k_top_p_filter(logits_BlV.float(), top_k, top_p).softmax(dim=-1).view(-1, V)
    # Inverse-CDF draw: one uniform per token. torch.multinomial(replacement=True) draws V
    # exponentials per token on CPU, which was ~40% of generation time at V = 4096.
    cdf_NV = probs_NV.cumsum(dim=-1)
    u_N1 = torch.rand(cdf_NV.shape[0], 1, generator=generator, device=cdf_NV.device) * cdf_NV[:, -1:]
    # right=True: the first index whose cdf exceeds u, so a zero-probability token is never hit
    return torch.searchsorted(cdf_NV, u_N1, right=True).clamp_(max=V - 1).view(B, l)


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


# --------------------------------------------------------------------------- cells


def load_cell(study_dir: Union[str, Path], run_id: str, step: Optional[int] = None, device="cpu"):
    """(vae, var, cell_cfg, step) of one cell's checkpoint (the latest when ``step`` is None)."""
    from varscale.train.model import load_cell_model

    cell = StudyLayout.of(study_dir).cell(run_id)
    cell_dir = cell.root
    if not cell.config_json.exists():
        raise FileNotFoundError(f"no cell {run_id} under {cell.study.cells_dir}")
    if step is None:
        from varscale.train.model import latest_step

        step = latest_step(cell)  # LATEST.json's, or the newest kept weights when it is damaged
        if step is None:
            raise FileNotFoundError(f"cell {run_id} has no checkpoint yet")
    vae, var, cell = load_cell_model(cell_dir, step=step, device=device)
    return vae.eval(), var.eval(), cell, int(step)


def samples_dir(study_dir: Union[str, Path], run_id: str) -> Path:
    return StudyLayout.of(study_dir).samples(run_id)


def resolve_device(kind: str) -> str:
    """``auto`` -> cuda when available, else cpu; anything else as given."""
    if kind == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return kind


def _write_samples(out_dir: Path, stem: str, img: torch.Tensor, labels: torch.Tensor, meta: dict,
                   nrow: int) -> Path:
    from varscale.schema import atomic_write_json

    png = save_grid(img, out_dir / f"{stem}.png", nrow=nrow)
    save_npy(to_uint8(img), out_dir / f"{stem}.npy")
    atomic_write_json(out_dir / f"{stem}.json", {**meta, "labels": labels.tolist()})
    return png


def sample_cell(study_dir: Union[str, Path], run_id: str, *, classes: Optional[Sequence[int]] = None,
                n: int = 4, cfg: float = 1.5, top_k: int = 0, top_p: float = 0.0, seed: int = 0,
                smooth: bool = False, use_cache: bool = True, step: Optional[int] = None, fig7: bool = False,
                out: Union[str, Path, None] = None, device: str = "cpu", log=print) -> dict[int, str]:
    """Class-conditional samples of one cell: ``n`` per class of ``classes`` (default: all).

    Writes, per checkpoint, a PNG grid, the raw images (uint8 npy, B x H x W x 3) and a json of
    the settings under ``out`` (default ``<study>/samples/<run_id>/``); each file is written
    whole (atomically for the json), so an interrupted call leaves complete files or none.
    ``fig7``: the checkpoints nearest 20 / 60 / 100% of training with the same seed, one
    sample per class unless ``classes`` or ``n`` say otherwise, plus ``fig7.json``. Returns
    {step: png path}. Raises ``FileNotFoundError`` when the cell has no checkpoint.
    """
    study_dir = Path(study_dir)
    cell_dir = StudyLayout.of(study_dir).cell(run_id).root
    out_dir = Path(out) if out else samples_dir(study_dir, run_id)
    steps = cell_steps(cell_dir)
    if not steps:
        raise FileNotFoundError(f"cell {run_id} has no checkpoint under {CellLayout(cell_dir).checkpoints}")
    if fig7:
        from varscale.cell import CellConfig

        total = CellConfig.load(cell_dir).total_steps
        todo = fig7_steps(steps, total)
        missing = [f for f, s in todo.items() if abs(s - f * total) > 0.05 * total]
        if missing:
            print(f"note: no checkpoint near {[f'{f:.0%}' for f in missing]} of {total} steps; using the nearest "
                  f"kept ones (kept: {steps}); cells trained before the 20%/60% snapshots, and WSD branches, lack them.", file=sys.stderr)
        run = sorted(set(todo.values()))
    else:
        run = [step]
    written = {}
    for step in run:
        vae, var, cell, step = load_cell(study_dir, run_id, step, device=device)
        labels_of = list(classes) if classes else list(range(var.num_classes))
        per = 1 if fig7 and n == 4 and not classes else n
        labels = torch.tensor(labels_of).repeat_interleave(per)
        t0 = time.perf_counter()
        img, _ = generate(vae, var, labels, cfg=cfg, top_k=top_k, top_p=top_p, seed=seed,
                          smooth=smooth, use_cache=use_cache)
        dt = time.perf_counter() - t0
        meta = {"run_id": run_id, "step": step, "total_steps": cell.total_steps, "depth": cell.depth,
                "cfg": cfg, "top_k": top_k, "top_p": top_p, "seed": seed, "smooth": smooth,
                "seconds": dt, "device": device}
        stem = StudyLayout.fig7_stem(step) if fig7 else f"samples-step{step:08d}-seed{seed}"
        png = _write_samples(out_dir, stem, img, labels, meta, nrow=len(labels_of) if fig7 else max(per, 1))
        written[step] = str(png)
        log(f"{run_id} step {step}: {labels.numel()} samples in {dt:.2f}s -> {png}")
    if fig7:
        from varscale.schema import atomic_write_json

        atomic_write_json(out_dir / "fig7.json", {"total_steps": total, "seed": seed, "cfg": cfg,
                                                  "fractions": {f"{f:g}": s for f, s in todo.items()},
                                                  "files": written})
    return written


def load_image(path: Union[str, Path], resolution: int) -> torch.Tensor:
    """An image file -> (1, 3, R, R) in [-1, 1] (shorter side resized with Lanczos, centre crop)."""
    from PIL import Image

    im = Image.open(path).convert("RGB")
    s = resolution / min(im.size)
    im = im.resize((max(resolution, round(im.size[0] * s)), max(resolution, round(im.size[1] * s))), Image.LANCZOS)
    l, t = (im.size[0] - resolution) // 2, (im.size[1] - resolution) // 2
    im = im.crop((l, t, l + resolution, t + resolution))
    x = torch.from_numpy(np.asarray(im, dtype=np.float32) / 127.5 - 1)
    return x.permute(2, 0, 1)[None]


def load_mask(path: Union[str, Path]) -> torch.Tensor:
    """A mask image -> (H, W) in [0, 1]; white (bright) = generate, black = keep."""
    from PIL import Image

    return torch.from_numpy(np.asarray(Image.open(path).convert("L"), dtype=np.float32) / 255.0)


def edit_cell(study_dir: Union[str, Path], run_id: str, *, image: Union[str, Path, None] = None,
              val_index: Optional[Sequence[int]] = None, box: Optional[Sequence[float]] = None,
              mask: Union[str, Path, None] = None, outpaint: bool = False, label: Optional[int] = None,
              cfg: float = 3.0, top_k: int = 0, top_p: float = 0.0, seed: int = 0, smooth: bool = False,
              step: Optional[int] = None, out: Union[str, Path, None] = None, device: str = "cpu",
              log=print) -> Path:
    """Zero-shot in-/out-painting (``label=None``) or class-conditional editing with one cell.

    The source is an image file (``image``, resized to the study resolution) or held-out
    images (``val_index``, default 0 1 2 3); the region to regenerate is a mask image (white =
    generate) or a ``box`` in [0, 1] units (default the centre half; ``outpaint`` keeps the
    box and regenerates around it). Writes one PNG of source | mask | result rows to ``out``
    (default ``<study>/samples/<run_id>/edit-....png``) and returns its path.
    """
    study_dir = Path(study_dir)
    vae, var, cell, step = load_cell(study_dir, run_id, step, device=device)
    R = vae.resolution
    if image:
        src_img, tag = load_image(image, R), Path(image).stem
    else:
        from varscale.data import make_dataset

        idx = list(val_index) if val_index else [0, 1, 2, 3]
        src_img, _ = make_dataset(cell.study_config().data, "val").batch(idx)
        src_img, tag = torch.as_tensor(src_img, dtype=torch.float32), "val" + "-".join(map(str, idx))
    if mask:
        mask_HW = load_mask(mask)
        mtag = "mask"
    else:
        box = list(box) if box else [0.25, 0.25, 0.75, 0.75]
        mask_HW = box_mask(var.cfg.patch_nums[-1], *box, outpaint=outpaint)
        mtag = ("out" if outpaint else "in") + "-" + "-".join(f"{b:g}" for b in box)
    img, _, _ = edit(vae, var, src_img.to(device), mask_HW, label=label, cfg=cfg, top_k=top_k,
                     top_p=top_p, seed=seed, smooth=smooth)
    B = img.shape[0]
    src01 = src_img.add(1).mul(0.5).cpu()
    mask_img = F.interpolate(torch.as_tensor(mask_HW, dtype=torch.float32)[None, None], size=(R, R),
                             mode="nearest")[0].expand(3, R, R)
    rows = torch.stack([src01, mask_img.expand(B, 3, R, R), img.cpu()], dim=1).flatten(0, 1)
    lab = "null" if label is None else str(label)
    path = Path(out) if out else samples_dir(study_dir, run_id) / f"edit-step{step:08d}-{tag}-{mtag}-label{lab}-seed{seed}.png"
    save_grid(rows, path, nrow=3)
    log(f"{run_id} step {step}: edited {B} image(s) (source | mask | result) -> {path}")
    return path
