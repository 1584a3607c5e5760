"""``varscale train <cell-dir>``: train (or resume) one cell (``varscale.train.trainer.train_cell``).

Runs the same under ``torchrun`` (one process per rank):
``torchrun --nproc_per_node 2 -m varscale.cli train runs/<study>/cells/<run_id>``.
Exit codes are the trainer's: 0 done, 3 diverged, 1 failed; 2 when the folder holds no cell
or its ``config.json`` is damaged (said in one line before anything loads).
"""
from __future__ import annotations

from pathlib import Path

from varscale.cli import common as C

PROG = "varscale train"


def build_parser():
    ap = C.parser(PROG, description="train one cell (a cells/<run_id> folder)")
    ap.add_argument("cell_dir", metavar="CELL", help="the cell's folder, runs/<study>/cells/<run_id>")
    return ap


@C.command(PROG)
def main(argv: list[str] | None = None) -> int:
    import faulthandler
    import signal

    args = build_parser().parse_args(argv)
    from varscale.schema import CellLayout

    cell = CellLayout(Path(args.cell_dir))
    C.require(cell.config_json.exists(), f"no config.json in {args.cell_dir}")
    C.cell_config(cell)
    if hasattr(signal, "SIGUSR1"):  # `kill -USR1 <pid>` prints every thread's stack: for hung runs
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    from varscale.train.trainer import train_cell

    return train_cell(args.cell_dir)
