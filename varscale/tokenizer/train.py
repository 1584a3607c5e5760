"""Tokenizer training: the study's multi-scale VQVAE, trained once on its own images.

Loss per step (VAR paper eq. 5 without the pretrained-network terms):

    l2_weight * ||x - x_rec||^2 + l1_weight * |x - x_rec| + vq_loss

where ``vq_loss`` is the multi-scale commitment/codebook loss of ``MultiScaleQuantizer``
(commitment weight ``tokenizer.beta``). The perceptual (LPIPS) and adversarial terms need
pretrained networks that cannot be downloaded here; they are not built (the study file's
``tokenizer.perceptual_weight`` / ``adversarial_weight`` are removed options: only 0 loads).

Against codebook collapse (coarse scales in particular, where only B tokens per batch are
seen): the codebook is initialised from the encoder's residuals of the first batch, and
every ``revive_every`` steps each code not hit at any scale during the window is moved onto
a random residual vector (plus a little noise), drawn in equal shares from every scale,
so that the 1x1..3x3 residual distributions always have codes near them.

Outputs ``runs/<study>/tokenizer/vqvae.pt`` (``{"state_dict", "preset", "config_hash",
"metrics", ...}``, loadable with ``torch.load(weights_only=True)``) and ``metrics.json``
(validation PSNR, per-scale codebook utilisation, wall time, loss curve), both atomic.
A study that names ``tokenizer.checkpoint`` (e.g. the official ``vae_ch160v4096z32.pth``,
a plain state dict) uses that instead of training. The checkpoint's identity (its hashes) and
loading live in ``varscale.tokenizer.checkpoint``; a crash mid-training leaves no checkpoint
(written once, at the end, atomically), so the next run trains again from the start.
"""
from __future__ import annotations

import io
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F

from varscale.schema import StudyLayout, atomic_write_bytes, atomic_write_json
from varscale.tokenizer.checkpoint import (config_hash, device_for, existing_complete, load_tokenizer,
                                           preset_of, resolve_checkpoint, tokenizer_hash)

EVAL_IMAGES = 5000  # validation images used for PSNR / utilisation (all if fewer)


# --------------------------------------------------------------------------- pieces


@torch.no_grad()
def residual_samples(vae, f_BChw: torch.Tensor) -> list[torch.Tensor]:
    """The vectors each scale quantises for this latent batch: list over scales of (N_k, Cvae)."""
    q = vae.quantize
    f_rest = f_BChw.detach().float().clone()
    B, C, H, W = f_rest.shape
    K = len(q.patch_nums)
    out = []
    for si, pn in enumerate(q.patch_nums):
        z = F.interpolate(f_rest, size=(pn, pn), mode="area") if si != K - 1 else f_rest
        z_NC = z.permute(0, 2, 3, 1).reshape(-1, C)
        out.append(z_NC)
        idx = q.nearest_code(z_NC).view(B, pn * pn)
        f_rest.sub_(q._up_phi(si, q.embed_map(idx, pn)))
    return out


@torch.no_grad()
def revive_codes(vae, dead_V: torch.Tensor, samples: list[torch.Tensor], gen: torch.Generator) -> int:
    """Move dead codes onto random residual vectors, equal shares from every scale."""
    dead = torch.nonzero(dead_V).flatten()
    n = dead.numel()
    if n == 0:
        return 0
    dead = dead[torch.randperm(n, generator=gen)]
    w = vae.quantize.embedding.weight
    K = len(samples)
    for k, chunk in enumerate(dead.chunk(K) if n >= K else [dead]):
        if chunk.numel() == 0:
            continue
        pool = samples[k % K]
        pick = torch.randint(0, pool.shape[0], (chunk.numel(),), generator=gen)
        v = pool[pick]
        noise = torch.randn(v.shape, generator=gen) * (v.std() * 0.05 + 1e-6)
        w.data[chunk] = (v + noise).to(w.dtype)
    return n


RECIPES = ("original", "unit_gain")  # tokenizer.recipe: how the VQVAE's weights start


@torch.no_grad()
def init_unit_gain(vae) -> None:
    """The ``unit_gain`` recipe: every encoder/decoder conv variance-preserving (Kaiming normal,
    linear gain, zero bias) and every residual branch's last conv (ResnetBlock.conv2,
    AttnBlock.proj_out) zero, so each block starts as the identity; the quantizer's phi convs
    and codebook are left as they are (the codebook is set from the data at the first
    quantized step).

    Why: under PyTorch's default init each conv scales the variance by ~1/3, and the cpu32
    VQVAE has no normalisation (``vae_norm: none``) to undo it, so at step 0 its reconstruction
    depends on the input at std 1.4e-5 (a random input against another: 0.115 after this
    init). Training then sits at the mean image (loss 0.333, 12.1 dB) until the weights grow,
    after a number of steps float rounding decides. As a plain autoencoder at lr 1e-3, batch
    16: 13.8 dB train PSNR at step 300 with the default init, 21.7 dB with this one
    (docs/data.md, "The tokenizer recipe").
    """
    from varscale.models.vqvae import AttnBlock, ResnetBlock

    quant = set(vae.quantize.modules())
    for m in vae.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)) and m not in quant:
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="linear")
            torch.nn.init.zeros_(m.bias)
    for m in vae.modules():
        if isinstance(m, ResnetBlock):
            torch.nn.init.zeros_(m.conv2.weight)
        elif isinstance(m, AttnBlock):
            torch.nn.init.zeros_(m.proj_out.weight)


def psnr_from_mse(mse: float) -> float:
    """PSNR in dB of images in [0, 1] (the [-1, 1] MSE divided by 4)."""
    return float(10 * math.log10(1.0 / max(mse, 1e-12)))


@torch.no_grad()
def evaluate(vae, ds, max_images: int = EVAL_IMAGES, batch_size: int = 250, device=None) -> dict[str, Any]:
    """Validation PSNR (of the mean MSE, images in [0, 1]) and per-scale codebook utilisation."""
    was_training = vae.training
    vae.eval()
    n = min(len(ds), max_images)
    K = len(vae.patch_nums)
    hits_SV = torch.zeros(K, vae.vocab_size)
    se, count, psnrs = 0.0, 0, []
    sum_x = sum_xx = 0.0  # per pixel, for the PSNR of predicting the mean image
    for s in range(0, n, batch_size):
        img, _ = ds.batch(np.arange(s, min(s + batch_size, n)))
        x = torch.as_tensor(img, device=device)
        idx = vae.img_to_idx(x)
        rec = vae.idx_to_img(idx)
        err = ((rec - x) * 0.5).pow(2).flatten(1).mean(1)  # [0, 1] scale
        se += float(err.sum())
        psnrs += (10 * torch.log10(1 / err.clamp_min(1e-12))).tolist()
        count += x.shape[0]
        x01 = (x.double().cpu() + 1) * 0.5
        sum_x = sum_x + x01.sum(0)
        sum_xx = sum_xx + x01.pow(2).sum(0)
        for k, i in enumerate(idx):
            hits_SV[k] += torch.bincount(i.flatten().cpu(), minlength=vae.vocab_size).float()
    vae.train(was_training)
    used_S = (hits_SV > 0).float().mean(1)
    return {
        "val_psnr": psnr_from_mse(se / max(count, 1)),
        "val_psnr_mean_per_image": float(np.mean(psnrs)) if psnrs else float("nan"),
        "val_mse_01": se / max(count, 1),
        "usage_by_scale": [round(float(u), 4) for u in used_S],
        "usage_overall": float((hits_SV.sum(0) > 0).float().mean()),
        "eval_images": count,
        "mean_image_psnr": psnr_from_mse(float((sum_xx / max(count, 1) - (sum_x / max(count, 1)) ** 2).mean()))
        if count else float("nan"),
    }


COLLAPSE_MARGIN_DB = 1.0


class TokenizerCollapsed(ValueError):
    """The trained tokenizer reconstructs no better than the dataset's mean image."""


def collapse_message(m: dict) -> Optional[str]:
    """Why the measured tokenizer ``m`` is unusable, or None.

    A VQVAE that sits at the mean image (the encoder output shrinks, every scale lands on a
    few codes, the decoder learns the average) still "trains" without error; its tokens carry
    next to nothing, and a grid on them would spend its whole budget fitting noise.
    """
    base = m.get("mean_image_psnr")
    if base is None or not math.isfinite(base) or m["val_psnr"] >= base + COLLAPSE_MARGIN_DB:
        return None
    return (f"the tokenizer collapsed: val PSNR {m['val_psnr']:.2f} dB is within {COLLAPSE_MARGIN_DB:g} dB "
            f"of predicting the dataset's mean image ({base:.2f} dB), so its tokens carry (almost) nothing")


FINE_EVERY = 25  # steps per point of metrics.json's fine_curve
PLATEAU_MIN_STEPS = 100


def mean_image_plateau(fine: list, mean_image_psnr: float) -> Optional[list[int]]:
    """[first, last] step of the longest run of ``fine`` points (``[step, loss, train PSNR]``,
    each the mean over FINE_EVERY steps) within COLLAPSE_MARGIN_DB of the mean image's PSNR,
    when it spans at least PLATEAU_MIN_STEPS steps; else None.

    The ``original`` recipe on the default study sits there for 600-800 of its 2,500 steps
    (benchmarks/tokenizer_kernels.py); a tokenizer that ends well can still have spent them.
    """
    if not fine or mean_image_psnr is None or not math.isfinite(mean_image_psnr):
        return None
    best, start, prev = None, None, None
    for step, _, psnr in fine:
        if psnr < mean_image_psnr + COLLAPSE_MARGIN_DB:
            start = step - FINE_EVERY + 1 if start is None else start
            prev = step
            if best is None or prev - start > best[1] - best[0]:
                best = [start, prev]
        else:
            start = None
    return best if best is not None and best[1] - best[0] + 1 >= PLATEAU_MIN_STEPS else None


def _lr_at(step: int, total: int, peak: float) -> float:
    """Linear warmup over 2% of the steps, then cosine decay to 10% of the peak."""
    warm = max(1, int(0.02 * total))
    if step < warm:
        return peak * (step + 1) / warm
    t = (step - warm) / max(1, total - warm)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


def _save(path: Path, obj: dict) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


# --------------------------------------------------------------------------- training


def train_tokenizer(study_dir, cfg, force: bool = False, log=print) -> Path:
    """Train (or load) the study's tokenizer; returns the checkpoint path."""
    from varscale.data import make_dataset
    from varscale.models.vqvae import VQVAE

    study_dir = Path(study_dir)
    layout = StudyLayout.of(study_dir)
    tc = cfg.tokenizer
    threads = tc.threads or cfg.execution.threads
    if threads:
        torch.set_num_threads(threads)
    device = device_for(cfg)
    preset = preset_of(cfg)
    val_ds = make_dataset(cfg.data, "val")

    if tc.checkpoint:  # a given tokenizer: check it loads and measure it, never train
        path = resolve_checkpoint(tc.checkpoint, study_dir)
        vae = load_tokenizer(study_dir, cfg, device=device)
        log(f"tokenizer: using checkpoint {path} (hash {tokenizer_hash(vae)})")
        if getattr(val_ds, "fast_batch", False):
            m = evaluate(vae, val_ds, device=device)
        else:
            m = evaluate(vae, val_ds, max_images=500, batch_size=50, device=device)
        m.update({"checkpoint": str(path), "tokenizer_hash": tokenizer_hash(vae), "preset": preset.name})
        atomic_write_json(layout.tokenizer_metrics, m)
        report(m, log)
        return path

    chash = config_hash(cfg)
    if not force:
        done = existing_complete(study_dir, cfg)
        if done is not None:
            log(f"tokenizer: {layout.tokenizer_ckpt} is complete for this config ({chash}); skipping "
                f"(val PSNR {done.get('val_psnr', float('nan')):.2f} dB; --force retrains)")
            return layout.tokenizer_ckpt

    from varscale.tokenizer.checkpoint import tokenizer_problem

    damaged = tokenizer_problem(study_dir)
    if damaged:  # trained again, like a missing one (the atomic write below replaces it)
        log(f"tokenizer: {layout.tokenizer_ckpt} is damaged ({damaged}); training it again")
        if layout.tokenizer_ckpt.is_dir():
            import shutil

            shutil.rmtree(layout.tokenizer_ckpt)
    torch.manual_seed(tc.seed)
    gen = torch.Generator().manual_seed(tc.seed)
    rng = np.random.default_rng(tc.seed)
    train_ds = make_dataset(cfg.data, "train")
    vae = VQVAE.from_preset(preset)
    if tc.recipe == "unit_gain":
        init_unit_gain(vae)
    # unit_gain also trains in channels_last: the same convs, 1.15-1.25x faster per cpu32 step
    # on CPU (docs/data.md); "original" keeps NCHW, so its tokenizers stay reproducible bit for bit
    fmt = torch.channels_last if tc.recipe == "unit_gain" else torch.contiguous_format
    vae = vae.to(device, memory_format=fmt).train()
    vae.quantize.beta = tc.beta
    opt = torch.optim.Adam(vae.parameters(), lr=tc.lr, betas=tuple(tc.betas))
    K, V = len(preset.patch_nums), preset.vocab_size
    window_SV = torch.zeros(K, V)  # code hits since the last revival
    log_SV = torch.zeros(K, V)  # code hits since the last log line
    n_revived = 0
    curve = []
    fine, fine_loss, fine_rec = [], 0.0, 0.0  # [step, loss, train PSNR] every FINE_EVERY steps
    batches = _batches(train_ds, tc.batch_size, rng)
    from tqdm import tqdm

    bar = tqdm(range(tc.steps), desc="tokenizer", disable=not sys.stderr.isatty(), leave=False)
    t0, c0 = time.time(), time.process_time()
    run_loss = run_rec = 0.0
    log_every = max(1, tc.steps // 10)
    for step in bar:
        img = next(batches).to(device, non_blocking=True, memory_format=fmt)
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, tc.steps, tc.lr)
        f = vae.encode(img)
        quantizing = step >= tc.ae_warmup_steps
        if step == tc.ae_warmup_steps:  # codebook from the data: every code starts where residuals are
            n_revived += revive_codes(vae, torch.ones(V, dtype=torch.bool),
                                      [s.cpu() for s in residual_samples(vae, f.detach())], gen)
        if quantizing:  # the same three calls as VQVAE.forward, keeping f for dead-code revival
            f_hat, vq_loss, _ = vae.quantize(f)
        else:  # warm start: a plain autoencoder until the encoder's features mean something
            f_hat, vq_loss = f, f.new_zeros(())
        rec = vae.decoder(vae.post_quant_conv(f_hat))
        rec_l2 = F.mse_loss(rec, img)
        loss = tc.l2_weight * rec_l2 + tc.l1_weight * F.l1_loss(rec, img) + vq_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if quantizing:
            hits_SV = vae.quantize.last_hits_SV.detach().cpu()
            window_SV += hits_SV
            log_SV += hits_SV
        if quantizing and tc.revive_dead_codes and (step + 1 - tc.ae_warmup_steps) % tc.revive_every == 0:
            # without this the encoder output shrinks under the commitment loss, drifts away
            # from the codebook and all scales collapse onto a few codes (seen within 100 steps)
            dead = window_SV.sum(0) == 0
            n_revived += revive_codes(vae, dead, [s.cpu() for s in residual_samples(vae, f.detach())], gen)
            window_SV.zero_()
        run_loss += float(loss.detach())
        run_rec += float(rec_l2.detach())
        fine_loss += float(loss.detach())
        fine_rec += float(rec_l2.detach())
        if (step + 1) % FINE_EVERY == 0:
            fine.append([step + 1, round(fine_loss / FINE_EVERY, 5), round(psnr_from_mse(fine_rec / FINE_EVERY / 4), 3)])
            fine_loss = fine_rec = 0.0
        if (step + 1) % log_every == 0 or step + 1 == tc.steps:
            nb = (step % log_every) + 1
            row = {"step": step + 1, "loss": run_loss / nb, "train_psnr": psnr_from_mse(run_rec / nb / 4),
                   "window_usage": float((log_SV.sum(0) > 0).float().mean()),
                   "window_usage_by_scale": [round(float(u), 3) for u in (log_SV > 0).float().mean(1)], "wall_s": time.time() - t0,
                   "cpu_s": time.process_time() - c0}
            curve.append(row)
            bar.set_postfix(loss=f"{row['loss']:.4f}", psnr=f"{row['train_psnr']:.1f}")
            if not sys.stderr.isatty():
                log(f"tokenizer: step {row['step']}/{tc.steps} loss {row['loss']:.4f} "
                    f"train PSNR {row['train_psnr']:.2f} dB, "
                    + (f"codes used {row['window_usage']:.0%} " if quantizing else "autoencoder warm-up ")
                    + f"({row['wall_s']:.0f} s, cpu {row['cpu_s']:.0f} s)")
            run_loss = run_rec = 0.0
            log_SV.zero_()
    bar.close()
    train_s = time.time() - t0
    vae = vae.to(memory_format=torch.contiguous_format).eval()  # measured as it is loaded
    m = evaluate(vae, val_ds, device=device)
    m.update({"train_wall_s": round(train_s, 1), "steps": tc.steps, "batch_size": tc.batch_size,
              "codes_revived": n_revived, "preset": preset.name, "config_hash": chash,
              "tokenizer_hash": tokenizer_hash(vae), "curve": curve, "fine_curve": fine,
              "n_params": sum(p.numel() for p in vae.parameters()),
              "threads": torch.get_num_threads(), "device": str(device)})
    m["mean_image_plateau"] = mean_image_plateau(fine, m["mean_image_psnr"])
    collapsed = collapse_message(m)
    m["collapsed"] = collapsed is not None
    sd = {k: v.detach().cpu() for k, v in vae.state_dict().items()}
    usable = not collapsed or not tc.fail_on_collapse
    _save(layout.tokenizer_ckpt, {"state_dict": sd, "preset": preset.name, "config_hash": chash,
                                  "metrics": _plain(m), "complete": usable})
    atomic_write_json(layout.tokenizer_metrics, m)
    report(m, log)
    if collapsed and tc.fail_on_collapse:
        raise TokenizerCollapsed(
            f"{collapsed}. Its checkpoint is kept, marked incomplete, and nothing downstream was run. "
            f"Try tokenizer.recipe: unit_gain, tokenizer.ae_warmup_steps, more tokenizer.steps, a lower tokenizer.lr, or another "
            f"tokenizer.seed (docs/data.md)")
    if collapsed:
        log(f"tokenizer: WARNING: {collapsed} (tokenizer.fail_on_collapse is false: going on)")
    return layout.tokenizer_ckpt


def evaluate_tokenizer(study_dir, cfg, log=print) -> dict[str, Any]:
    """Re-measure the study's tokenizer on its validation split (``varscale tokenizer eval``)."""
    from varscale.data import make_dataset

    m = evaluate(load_tokenizer(study_dir, cfg), make_dataset(cfg.data, "val"))
    report(m, log)
    return m


def _plain(m: dict) -> dict:
    """Metrics without the curve, in types torch.load(weights_only=True) accepts."""
    return {k: v for k, v in m.items() if k not in ("curve", "fine_curve")}


def report(m: dict, log=print) -> None:
    """One line: validation PSNR and codebook use, overall and per scale."""
    us = ", ".join(f"{u:.0%}" for u in m["usage_by_scale"])
    wall = f" in {m['train_wall_s']:.0f} s" if "train_wall_s" in m else ""
    log(f"tokenizer: val PSNR {m['val_psnr']:.2f} dB, codes used {m['usage_overall']:.0%} overall, "
        f"per scale [{us}]{wall}")


def _batches(ds, batch_size: int, rng: np.random.Generator):
    """Endless random batches (with replacement across batches) as float tensors."""
    if getattr(ds, "fast_batch", False):
        while True:
            idx = np.sort(rng.choice(len(ds), size=min(batch_size, len(ds)), replace=False))
            yield torch.as_tensor(ds.batch(idx)[0])
    workers = min(4, max((os.cpu_count() or 1) - 1, 0))
    sampler = torch.utils.data.RandomSampler(ds, replacement=True, num_samples=1 << 62,
                                             generator=torch.Generator().manual_seed(int(rng.integers(1 << 31))))
    for img, _ in torch.utils.data.DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=workers):
        yield img
