"""``varscale tokenize <study-dir>``: the study's token cache (``varscale.tokenizer.cache``)."""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="varscale tokenize",
                                 description="encode every train/val image of a study once into runs/<study>/tokens/")
    ap.add_argument("study_dir")
    ap.add_argument("--force", action="store_true", help="rebuild even if a matching cache exists")
    ap.add_argument("--batch-size", type=int, default=500)
    args = ap.parse_args(argv)
    from varscale.config import load_study_for_cli

    cfg = load_study_for_cli(args.study_dir)
    if cfg is None:
        return 2
    from varscale.tokenizer.cache import build_token_cache

    try:
        build_token_cache(args.study_dir, cfg, force=args.force, batch_size=args.batch_size)
    except FileNotFoundError as e:  # no tokenizer yet
        print(f"varscale tokenize: {e}", file=sys.stderr)
        return 1
    return 0
