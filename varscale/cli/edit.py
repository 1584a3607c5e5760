"""``varscale edit <study> --cell <run_id>``: zero-shot in-/out-painting and class editing
(``varscale.sample.edit_cell``)."""
from __future__ import annotations

import sys
from typing import Sequence

from varscale.cli import common as C
from varscale.cli.sample import check_sampling

PROG = "varscale edit"
DEFAULT_VAL = [0, 1, 2, 3]  # what edit_cell uses without --val-index


def build_parser():
    ap = C.parser(
        PROG,
        description="Zero-shot in-painting / out-painting (null class) or class-conditional editing "
                    "(--label) with a trained cell. Writes a PNG of source | mask | result.")
    C.add_study_arg(ap)
    ap.add_argument("--cell", required=True, help="run id (a folder under <study>/cells)")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--image", default=None, help="source image file, resized to the study resolution "
                                                   "(default: held-out images, see --val-index)")
    src.add_argument("--val-index", type=int, nargs="*", default=None,
                     help="source images from the study's held-out split (default: 0 1 2 3)")
    m = ap.add_mutually_exclusive_group()
    m.add_argument("--box", type=float, nargs=4, metavar=("Y0", "X0", "Y1", "X1"), default=None,
                   help="box in [0,1] units to regenerate, Y0 < Y1 and X0 < X1 (default: 0.25 0.25 0.75 0.75)")
    m.add_argument("--mask", default=None, help="mask image: white = generate, black = keep (default: --box)")
    ap.add_argument("--outpaint", action="store_true", help="keep the box, regenerate around it")
    ap.add_argument("--label", type=int, default=None,
                    help="class for class-conditional editing (default: the null class, zero-shot)")
    ap.add_argument("--cfg", type=float, default=3.0, help="guidance at the last scale (0: off)")
    ap.add_argument("--top-k", type=int, default=0, help="0: off")
    ap.add_argument("--top-p", type=float, default=0.0, help="0: off")
    ap.add_argument("--seed", type=int, default=0, help="random seed of the sampler")
    ap.add_argument("--smooth", action="store_true", help="Gumbel-softmax visual mode")
    ap.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
    ap.add_argument("--out", default=None, help="output PNG (default: <study>/samples/<run_id>/edit-....png)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                    help="auto: cuda when available, else cpu")
    return ap


def check_box(box) -> None:
    if box is None:
        return
    y0, x0, y1, x1 = box
    C.require(all(0.0 <= v <= 1.0 for v in box), f"--box {' '.join(f'{v:g}' for v in box)}: every value must lie in [0, 1]")
    C.require(y0 < y1 and x0 < x1, f"--box {' '.join(f'{v:g}' for v in box)}: the box is empty "
              "(it needs Y0 < Y1 and X0 < X1: top, left, bottom, right)")


def check_val_index(cfg, idx) -> None:
    """Every index lies in the study's held-out split (its size read from the dataset kind)."""
    from varscale.data import make_dataset

    try:
        n = len(make_dataset(cfg.study_config().data, "val"))
    except (OSError, ValueError) as e:  # a folder dataset that is not there: its own sentence
        raise C.UsageError(f"cannot open the study's held-out images ({e}); give --image instead") from None
    bad = [i for i in idx if not 0 <= i < n]
    C.require(not bad, f"--val-index {' '.join(map(str, bad))}: the held-out split has {n} images (0 to {n - 1})")


@C.command(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    a = build_parser().parse_args(list(argv) if argv is not None else None)
    lay, cell, cfg = C.study_cell(a)
    C.existing_file("--image", a.image)
    C.existing_file("--mask", a.mask)
    check_box(a.box)
    if a.label is not None:
        C.classes("--label", [a.label], cfg.num_classes)
    check_sampling(a)
    if a.image is None:
        check_val_index(cfg, a.val_index or DEFAULT_VAL)
    C.checkpoint_step(cell, a.step)
    C.cuda_if_asked(a.device)
    from varscale.sample import edit_cell, resolve_device

    try:
        edit_cell(a.study_dir, a.cell, image=a.image, val_index=a.val_index, box=a.box, mask=a.mask,
                  outpaint=a.outpaint, label=a.label, cfg=a.cfg, top_k=a.top_k, top_p=a.top_p, seed=a.seed,
                  smooth=a.smooth, step=a.step, out=a.out, device=resolve_device(a.device))
    except FileNotFoundError as e:  # no checkpoint yet
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1
    return 0
