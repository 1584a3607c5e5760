"""``varscale edit <study> --cell <run_id>``: zero-shot in-/out-painting and class editing
(``varscale.sample.edit_cell``)."""
from __future__ import annotations

import argparse
from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="varscale edit",
        description="Zero-shot in-painting / out-painting (null class) or class-conditional editing "
                    "(--label) with a trained cell. Writes a PNG of source | mask | result.")
    ap.add_argument("study_dir")
    ap.add_argument("--cell", required=True)
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--image", default=None, help="source image file (resized to the study resolution)")
    src.add_argument("--val-index", type=int, nargs="*", default=None,
                     help="source images from the study's held-out split (default: 0 1 2 3)")
    m = ap.add_mutually_exclusive_group()
    m.add_argument("--box", type=float, nargs=4, metavar=("Y0", "X0", "Y1", "X1"), default=None,
                   help="box in [0,1] units to regenerate (default 0.25 0.25 0.75 0.75)")
    m.add_argument("--mask", default=None, help="mask image: white = generate, black = keep")
    ap.add_argument("--outpaint", action="store_true", help="keep the box, regenerate around it")
    ap.add_argument("--label", type=int, default=None, help="class for class-conditional editing (default: null)")
    ap.add_argument("--cfg", type=float, default=3.0)
    ap.add_argument("--top-k", type=int, default=0)
    ap.add_argument("--top-p", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--smooth", action="store_true")
    ap.add_argument("--step", type=int, default=None)
    ap.add_argument("--out", default=None, help="output PNG (default <study>/samples/<run_id>/edit-....png)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    a = ap.parse_args(list(argv) if argv is not None else None)
    from varscale.sample import edit_cell, resolve_device

    edit_cell(a.study_dir, a.cell, image=a.image, val_index=a.val_index, box=a.box, mask=a.mask,
              outpaint=a.outpaint, label=a.label, cfg=a.cfg, top_k=a.top_k, top_p=a.top_p, seed=a.seed,
              smooth=a.smooth, step=a.step, out=a.out, device=resolve_device(a.device))
    return 0
