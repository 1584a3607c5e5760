"""``varscale tokenizer train|eval <study-dir>``: the study's VQVAE (``varscale.tokenizer.train``)."""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="varscale tokenizer", description="train the study's multi-scale VQVAE")
    sub = ap.add_subparsers(dest="verb", required=True)
    tr = sub.add_parser("train", help="train (or load) runs/<study>/tokenizer/vqvae.pt")
    tr.add_argument("study_dir")
    tr.add_argument("--force", action="store_true", help="retrain even if a complete checkpoint exists")
    ev = sub.add_parser("eval", help="validation PSNR and codebook utilisation of the study's tokenizer")
    ev.add_argument("study_dir")
    args = ap.parse_args(argv)
    from varscale.config import load_study_for_cli

    cfg = load_study_for_cli(args.study_dir)
    if cfg is None:
        return 2
    from varscale.tokenizer.train import evaluate_tokenizer, train_tokenizer

    try:
        if args.verb == "train":
            train_tokenizer(args.study_dir, cfg, force=args.force)
        else:
            evaluate_tokenizer(args.study_dir, cfg)
    except (FileNotFoundError, ValueError) as e:  # a missing tokenizer, a collapsed one: one line
        print(f"varscale tokenizer: {e}", file=sys.stderr)
        return 1
    return 0
