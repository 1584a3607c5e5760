"""``varscale train <cell-dir>``: train (or resume) one cell (``varscale.train.trainer.train_cell``).

Runs the same under ``torchrun`` (one process per rank):
``torchrun --nproc_per_node 2 -m varscale.cli train runs/<study>/cells/<run_id>``.
Exit codes are the trainer's: 0 done, 3 diverged, 1 failed; 2 when the folder holds no cell.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    import faulthandler
    import signal

    if hasattr(signal, "SIGUSR1"):  # `kill -USR1 <pid>` prints every thread's stack: for hung runs
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    ap = argparse.ArgumentParser(prog="varscale train", description="train one cell (a cells/<run_id> folder)")
    ap.add_argument("cell_dir")
    args = ap.parse_args(argv)
    from varscale.schema import CellLayout

    if not CellLayout(Path(args.cell_dir)).config_json.exists():
        print(f"varscale train: no config.json in {args.cell_dir}", file=sys.stderr)
        return 2
    from varscale.train.trainer import train_cell

    return train_cell(args.cell_dir)
