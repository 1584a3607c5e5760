"""Benchmark: tokenize N default procedural images (cpu32 preset) into a token cache.

    .venv/bin/python benchmarks/bench_tokenize.py [--images 50000] [--threads 2] [--study runs/default]

Uses the study's trained tokenizer when --study has one (else a randomly initialised VQVAE
of the same shape: the cost is the same). Reports wall time, images/s and the cache's bytes
per token. Acceptance (issue 3): 50,000 images at 32x32 in <= 120 s on 2 cores, <= 2 bytes
per token.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=50000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--preset", default="cpu32")
    ap.add_argument("--study", default=None, help="a study whose tokenizer to use")
    ap.add_argument("--batch-size", type=int, default=500)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from varscale.config import from_dict, load_study
    from varscale.tokenizer.cache import build_token_cache
    from varscale.models import build_vqvae
    from varscale.models.presets import get_preset

    p = get_preset(args.preset)
    n_val = max(1, args.images // 10)
    raw = {"model": {"preset": args.preset},
           "data": {"resolution": p.resolution, "num_classes": p.num_classes,
                    "train_images": args.images - n_val, "val_images": n_val},
           "execution": {"device": "cpu"}}
    vae = None
    if args.study and (Path(args.study) / "tokenizer" / "vqvae.pt").exists():
        from varscale.tokenizer.checkpoint import load_tokenizer

        vae = load_tokenizer(args.study, load_study(args.study))
        raw["model"]["preset"] = load_study(args.study).model.preset
    if vae is None:
        torch.manual_seed(0)
        vae = build_vqvae(args.preset).eval()
    cfg = from_dict(raw)
    with tempfile.TemporaryDirectory() as d:
        t = time.time()
        c = time.process_time()
        meta = build_token_cache(d, cfg, vae=vae, force=True, batch_size=args.batch_size, log=lambda s: None)
        wall, cpu = time.time() - t, time.process_time() - c
        tok = Path(d) / "tokens"
        n_tokens = sum(meta["counts"].values()) * meta["seq_len"]
        size = sum((tok / f"{s}_idx.npy").stat().st_size for s in ("train", "val"))
    print(f"tokenized {args.images} images ({args.preset}, {args.threads} threads) in {wall:.1f} s wall "
          f"({args.images / wall:.0f} img/s), {cpu:.1f} s process CPU; "
          f"cache {size / n_tokens:.3f} bytes/token ({meta['dtype']}); "
          f"load average {open('/proc/loadavg').read().split()[0]}")


if __name__ == "__main__":
    main()
