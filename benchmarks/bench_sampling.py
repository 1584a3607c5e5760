"""Generation speed: VAR's K next-scale steps vs a raster next-token baseline.

For each depth of a preset this times

* ``var``: the full sampler (``varscale.sample.generate``: CFG batch 2B, KV cache, K steps),
  transformer only (the VQVAE decode is timed separately as ``decode``);
* ``raster``: the *same* transformer (same weights, same blocks and KV cache code) run as a
  next-token model, one token per step with CFG and the cache, over either the last scale's
  h*w tokens (``raster_hw``: the paper's comparison, e.g. VQGAN's 256 steps at 256x256) or all
  L tokens of VAR's sequence (``raster_L``: the same number of tokens as VAR produces).

Weights are untrained: the time per step does not depend on them. Times are per image.

    .venv/bin/python benchmarks/bench_sampling.py --preset cpu32 --depths 1 2 4 8 --batch 1 16
    .venv/bin/python benchmarks/bench_sampling.py --preset imagenet256 --depths 2 4 --batch 1 --no-decode
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from varscale.models import build
from varscale.sample import generate, sample_tokens


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _timeit(fn, reps: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(reps):
        _sync()
        t0 = time.perf_counter()
        fn()
        _sync()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


@torch.no_grad()
def var_transformer(vae, var, B: int, cfg: float = 1.5):
    """generate() without the decode (same loop; the decode is timed on its own)."""
    from varscale.sample import _autoregress, make_generator

    dev = var.pos_1LC.device
    labels = torch.arange(B, device=dev) % var.num_classes
    return _autoregress(vae, var, labels, cfg, 0, 0.0, make_generator(0, dev), False, True)


@torch.no_grad()
def raster(var, B: int, n_tokens: int, cfg: float = 1.5):
    """Next-token generation of ``n_tokens`` with VAR's transformer: one token per step.

    Each step embeds one token (word_embed of a code vector + a position embedding), runs all
    blocks with the KV cache, mixes the CFG halves and samples one code, exactly the per-step
    work of a GPT-style image model of the same size.
    """
    C, dev = var.C, var.pos_1LC.device
    emb = torch.randn(var.cfg.vocab_size, var.cfg.cvae, device=dev)  # stands in for the VQVAE codebook
    labels = torch.arange(B, device=dev) % var.num_classes
    lab2 = torch.cat([labels, torch.full_like(labels, var.num_classes)])
    cond = var.class_cond(lab2)
    shared = var.shared_ada_lin(cond)
    mods = var._modulations(shared)
    pos = torch.randn(1, n_tokens, C, device=dev) * 0.02
    g = torch.Generator(device=dev).manual_seed(0)
    var.kv_cache(True)
    try:
        x = cond.unsqueeze(1) + var.pos_start[:, :1]
        for i in range(n_tokens):
            h = x
            for blk, mod in zip(var.blocks, mods):
                h = blk(h, shared, None, mod)
            logits = var.logits(h, cond)
            t = cfg * i / max(n_tokens - 1, 1)
            logits = (1 + t) * logits[:B] - t * logits[B:]
            idx = sample_tokens(logits, generator=g)
            x = (var.word_embed(emb[idx]) + pos[:, i:i + 1]).repeat(2, 1, 1)
    finally:
        var.kv_cache(False)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cpu32")
    ap.add_argument("--depths", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-decode", action="store_true", help="skip timing the VQVAE decode")
    ap.add_argument("--no-raster-L", action="store_true", help="skip the all-L-tokens raster baseline")
    ap.add_argument("--json", default=None, help="also write the rows here")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    rows = []
    hdr = (f"{'preset':<12}{'d':>3}{'params':>11}{'B':>4}{'K':>4}{'L':>6}{'hw':>5}"
           f"{'var ms/img':>12}{'raster_hw':>11}{'raster_L':>10}{'x(hw)':>7}{'x(L)':>7}{'decode':>9}")
    print(hdr)
    for d in a.depths:
        torch.manual_seed(0)
        vae, var = build(a.preset, d, device=a.device)
        vae.eval(), var.eval()
        pn = var.cfg.patch_nums
        K, L, hw = len(pn), var.cfg.seq_len, pn[-1] ** 2
        n_params = var.param_counts()["n_params"]
        for B in a.batch:
            t_var = _timeit(lambda: var_transformer(vae, var, B), a.reps) / B
            t_hw = _timeit(lambda: raster(var, B, hw), a.reps) / B
            t_L = float("nan") if a.no_raster_L else _timeit(lambda: raster(var, B, L), a.reps) / B
            t_dec = float("nan")
            if not a.no_decode:
                f_hat = torch.randn(B, var.cfg.cvae, pn[-1], pn[-1], device=a.device)
                with torch.no_grad():
                    t_dec = _timeit(lambda: vae.fhat_to_img(f_hat), a.reps) / B
            row = dict(preset=a.preset, depth=d, n_params=n_params, batch=B, K=K, L=L, hw=hw,
                       var_s=t_var, raster_hw_s=t_hw, raster_L_s=t_L, decode_s=t_dec,
                       speedup_hw=t_hw / t_var, speedup_L=t_L / t_var, threads=a.threads, device=a.device)
            rows.append(row)
            print(f"{a.preset:<12}{d:>3}{n_params:>11,}{B:>4}{K:>4}{L:>6}{hw:>5}{t_var * 1e3:>12.2f}"
                  f"{t_hw * 1e3:>11.2f}{t_L * 1e3:>10.2f}{t_hw / t_var:>7.1f}{t_L / t_var:>7.1f}{t_dec * 1e3:>9.2f}",
                  flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
