"""``varscale tokenizer train|eval <study-dir>``: the study's VQVAE (``varscale.tokenizer.train``)."""
from __future__ import annotations

import sys

from varscale.cli import common as C

PROG = "varscale tokenizer"


def build_parser():
    ap = C.parser(PROG, description="train the study's multi-scale VQVAE")
    sub = ap.add_subparsers(dest="verb", required=True, metavar="{train,eval}")
    tr = sub.add_parser("train", help="train (or load) runs/<study>/tokenizer/vqvae.pt",
                        formatter_class=C.HelpFormatter)
    C.add_study_arg(tr)
    tr.add_argument("--force", action="store_true", help="retrain even if a complete checkpoint exists")
    ev = sub.add_parser("eval", help="validation PSNR and codebook utilisation of the study's tokenizer",
                        formatter_class=C.HelpFormatter)
    C.add_study_arg(ev)
    return ap


@C.command(PROG)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    C.refuse_imported(args.study_dir)
    C.study_dir(args.study_dir)
    cfg = C.load_study(args.study_dir)
    from varscale.tokenizer.train import evaluate_tokenizer, train_tokenizer

    try:
        if args.verb == "train":
            train_tokenizer(args.study_dir, cfg, force=args.force)
        else:
            evaluate_tokenizer(args.study_dir, cfg)
    except (FileNotFoundError, ValueError) as e:  # a missing tokenizer, a collapsed one: one line
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1
    return 0
