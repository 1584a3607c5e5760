"""``varscale quality <study>``: classifier accuracy and Frechet distance of each cell's samples
(``varscale.quality.evaluate_study``)."""
from __future__ import annotations

import argparse
import sys
from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from varscale.quality import ClassifierConfig, evaluate_study

    ap = argparse.ArgumentParser(
        prog="varscale quality",
        description="Class accuracy and classifier-feature Frechet distance (not Inception-FID) "
                    "of each cell's class-conditional samples; rows under <study>/quality/.")
    ap.add_argument("study_dir")
    ap.add_argument("--cell", action="append", default=None,
                    help="run id (repeatable); default: every cell with a checkpoint")
    ap.add_argument("--step", type=int, default=None, help="checkpoint step (default: the last)")
    ap.add_argument("--all-steps", action="store_true",
                    help="evaluate every kept checkpoint, not only the last")
    ap.add_argument("--per-class", type=int, default=50, help="samples per class (default 50)")
    ap.add_argument("--cfg", type=float, default=1.5)
    ap.add_argument("--top-k", type=int, default=0)
    ap.add_argument("--top-p", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--inception", default=None,
                    help="path to the standard Inception TorchScript (inception-2015-12-05.pt) for FID")
    ap.add_argument("--retrain-classifier", action="store_true")
    ap.add_argument("--classifier-steps", type=int, default=ClassifierConfig.steps)
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args(list(argv) if argv is not None else None)
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
        print(f"varscale quality: {e}", file=sys.stderr)
        return 1
    return 1 if skipped else 0
