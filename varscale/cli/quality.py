"""``varscale quality <study>``: classifier accuracy and Frechet distance of each cell's samples
(``varscale.quality.evaluate_study``)."""
from __future__ import annotations

import sys
from typing import Sequence

from varscale.cli import common as C
from varscale.cli.sample import check_sampling

PROG = "varscale quality"


def build_parser():
    from varscale.quality import ClassifierConfig

    ap = C.parser(
        PROG,
        description="Class accuracy and classifier-feature Frechet distance (not Inception-FID) "
                    "of each cell's class-conditional samples; rows under <study>/quality/.")
    C.add_study_arg(ap)
    ap.add_argument("--cell", action="append", default=None,
                    help="run id (repeatable; default: every cell with a checkpoint)")
    ap.add_argument("--step", type=int, default=None, help="checkpoint step (default: the last)")
    ap.add_argument("--all-steps", action="store_true",
                    help="evaluate every kept checkpoint, not only the last")
    ap.add_argument("--per-class", type=int, default=50, help="samples per class")
    ap.add_argument("--cfg", type=float, default=1.5, help="guidance at the last scale (0: off)")
    ap.add_argument("--top-k", type=int, default=0, help="0: off")
    ap.add_argument("--top-p", type=float, default=0.0, help="0: off")
    ap.add_argument("--seed", type=int, default=0, help="random seed of the sampler")
    ap.add_argument("--inception", default=None,
                    help="path to the standard Inception TorchScript (inception-2015-12-05.pt) for FID "
                         "(default: no FID)")
    ap.add_argument("--retrain-classifier", action="store_true",
                    help="train the study's classifier again even if quality/classifier.pt exists")
    ap.add_argument("--classifier-steps", type=int, default=ClassifierConfig.steps,
                    help="training steps of the classifier")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    return ap


@C.command(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    a = build_parser().parse_args(list(argv) if argv is not None else None)
    lay = C.study_dir(a.study_dir)
    C.load_study(a.study_dir)
    cells = [C.cell(lay, r) for r in a.cell or []]
    for c in cells:
        C.cell_config(c)
    if a.step is not None:
        for c in cells or [lay.cell(p.name) for p in lay.cell_dirs() if lay.cell(p.name).checkpoints.exists()]:
            C.checkpoint_step(c, a.step)
    C.positive("--per-class", a.per_class)
    C.positive("--classifier-steps", a.classifier_steps)
    check_sampling(a)
    C.existing_file("--inception", a.inception)
    from varscale.quality import ClassifierConfig, evaluate_study

    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    try:
        _, skipped = evaluate_study(a.study_dir, a.cell, step=a.step, all_steps=a.all_steps,
                                    per_class=a.per_class, cfg=a.cfg, top_k=a.top_k, top_p=a.top_p,
                                    seed=a.seed, inception_path=a.inception,
                                    classifier=ClassifierConfig(steps=a.classifier_steps),
                                    retrain_classifier=a.retrain_classifier)
    except FileNotFoundError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1
    return 1 if skipped else 0
