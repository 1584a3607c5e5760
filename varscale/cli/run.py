"""``varscale run <study-dir>``: the whole chain of a study (``varscale.grid.launch.run_study``)."""
from __future__ import annotations

import argparse
import signal
import time
from typing import Any

from varscale.cli import common as C
from varscale.grid import executors as X
from varscale.grid import launch


PROG = "varscale run"


def build_parser() -> argparse.ArgumentParser:
    ap = C.parser(PROG, description=launch.__doc__)
    C.add_study_arg(ap)
    ap.add_argument("--executor", choices=list(X.EXECUTORS), help="where the cells run (default: execution.executor)")
    ap.add_argument("--parallel", type=int, help="cells at a time (default: execution.parallel)")
    ap.add_argument("--threads", type=int, help="torch threads per cell (default: execution.threads or cores / parallel)")
    ap.add_argument("--nproc", type=int, help="processes per cell (default: execution.nproc_per_node)")
    ap.add_argument("--cluster", choices=["slurm", "local", "debug"], help="submitit cluster (default: execution.slurm.cluster)")
    ap.add_argument("--only-cells", action="store_true", help="run the cells only: no tokenizer, tokens, fit or figures")
    ap.add_argument("--prepare-here", action="store_true",
                    help="slurm executor: train the tokenizer and encode the tokens in this process, not as a job")
    ap.add_argument("--no-analysis", action="store_true", help="stop after the cells (no fit, no figures)")
    ap.add_argument("--cells", metavar="GLOB", help="only the cells whose run id matches (e.g. 'd2-*'; default: every cell)")
    ap.add_argument("--progress", choices=["auto", "on", "off"], default="auto",
                    help="progress bars (auto: only on a terminal)")
    return ap


def _interrupt_on_term(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@C.command(PROG)
def main(argv: list[str] | None = None) -> int:
    from varscale.grid.progress import Progress, say

    a = build_parser().parse_args(argv)
    for name in ("--parallel", "--threads", "--nproc"):
        C.positive(name, getattr(a, name[2:]))
    C.refuse_imported(a.study_dir)
    layout = C.study_dir(a.study_dir)
    cfg = C.load_study(a.study_dir)
    C.refuse_damaged(layout)
    ex = cfg.execution
    opts = X.Options(parallel=a.parallel or ex.parallel, threads=a.threads or ex.threads,
                     nproc=a.nproc or ex.nproc_per_node, cluster=a.cluster)
    # SIGTERM (a scheduler, `kill`) stops like Ctrl-C: the running cells are shut down cleanly
    old_term = signal.signal(signal.SIGTERM, _interrupt_on_term)
    progress = Progress(a.progress)
    t0 = time.time()
    try:
        return launch.run_study(cfg, layout, a.executor or ex.executor, opts, progress,
                                only_cells=a.only_cells, prepare_here=a.prepare_here,
                                no_analysis=a.no_analysis, cells_glob=a.cells, t0=t0)
    except KeyboardInterrupt:
        say("interrupted; 'varscale run' again resumes where this one stopped")
        return 130
    finally:
        progress.close()
        signal.signal(signal.SIGTERM, old_term)
