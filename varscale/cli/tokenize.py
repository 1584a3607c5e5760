"""``varscale tokenize <study-dir>``: the study's token cache (``varscale.tokenizer.cache``)."""
from __future__ import annotations

import sys

from varscale.cli import common as C

PROG = "varscale tokenize"


def build_parser():
    ap = C.parser(PROG, description="encode every train/val image of a study once into runs/<study>/tokens/")
    C.add_study_arg(ap)
    ap.add_argument("--force", action="store_true", help="rebuild even if a matching cache exists")
    ap.add_argument("--batch-size", type=int, default=500, help="images encoded at a time")
    return ap


@C.command(PROG)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    C.positive("--batch-size", args.batch_size)
    C.refuse_imported(args.study_dir)
    C.study_dir(args.study_dir)
    cfg = C.load_study(args.study_dir)
    from varscale.tokenizer.cache import build_token_cache

    try:
        build_token_cache(args.study_dir, cfg, force=args.force, batch_size=args.batch_size)
    except FileNotFoundError as e:  # no tokenizer yet
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1
    return 0
