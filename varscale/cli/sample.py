"""``varscale sample <study> --cell <run_id>``: class-conditional samples (``varscale.sample.sample_cell``)."""
from __future__ import annotations

import sys
from typing import Sequence

from varscale.cli import common as C

PROG = "varscale sample"


def build_parser():
    ap = C.parser(
        PROG,
        description="Class-conditional samples of one cell (CFG ramp, top-k/top-p, KV cache). Writes a PNG "
                    "grid, the raw images (uint8 npy, B x H x W x 3) and a json of the settings under "
                    "<study>/samples/<run_id>/.")
    C.add_study_arg(ap)
    ap.add_argument("--cell", required=True, help="run id (a folder under <study>/cells)")
    ap.add_argument("--classes", type=int, nargs="*", default=None, help="class ids (default: all)")
    ap.add_argument("--n", type=int, default=4, help="samples per class")
    ap.add_argument("--cfg", type=float, default=1.5, help="guidance at the last scale (0: off)")
    ap.add_argument("--top-k", type=int, default=0, help="0: off (the paper's FID setting: 900 of 4096)")
    ap.add_argument("--top-p", type=float, default=0.0, help="0: off (paper's FID setting: 0.96)")
    ap.add_argument("--seed", type=int, default=0, help="random seed of the sampler")
    ap.add_argument("--smooth", action="store_true", help="Gumbel-softmax visual mode (not for metrics)")
    ap.add_argument("--no-cache", action="store_true", help="recompute the prefix each scale (slow; checks)")
    ap.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
    ap.add_argument("--fig7", action="store_true",
                    help="the Fig. 7 inputs: same seed at ~20/60/100%% of training, step-<step>.png")
    ap.add_argument("--out", default=None, help="output folder (default: <study>/samples/<run_id>)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                    help="auto: cuda when available, else cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    return ap


def check_sampling(a) -> None:
    """The sampler's options shared by sample, edit and quality."""
    C.positive("--cfg", a.cfg, allow_zero=True)
    C.positive("--top-k", a.top_k, allow_zero=True)
    C.require(0.0 <= a.top_p < 1.0, f"--top-p must be in [0, 1) (0: off), got {a.top_p:g}")
    C.positive("--threads", getattr(a, "threads", None))


@C.command(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    a = build_parser().parse_args(list(argv) if argv is not None else None)
    lay, cell, cfg = C.study_cell(a)
    C.classes("--classes", a.classes, cfg.num_classes)
    C.positive("--n", a.n)
    check_sampling(a)
    C.checkpoint_step(cell, a.step)
    C.cuda_if_asked(a.device)
    import torch

    from varscale.sample import resolve_device, sample_cell

    if a.threads:
        torch.set_num_threads(a.threads)
    try:
        sample_cell(a.study_dir, a.cell, classes=a.classes, n=a.n, cfg=a.cfg, top_k=a.top_k, top_p=a.top_p,
                    seed=a.seed, smooth=a.smooth, use_cache=not a.no_cache, step=a.step, fig7=a.fig7,
                    out=a.out, device=resolve_device(a.device))
    except FileNotFoundError as e:  # no checkpoint yet
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1
    return 0
