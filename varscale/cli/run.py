"""``varscale run <study-dir>``: the whole chain of a study (``varscale.grid.launch.run_study``)."""
from __future__ import annotations

import argparse
import signal
import time
from typing import Any

from varscale.grid import executors as X
from varscale.grid import launch


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="varscale run", description=launch.__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("study", help="study folder (with study.yaml)")
    ap.add_argument("--executor", choices=list(X.EXECUTORS), help="default: execution.executor")
    ap.add_argument("--parallel", type=int, help="cells at a time (default: execution.parallel)")
    ap.add_argument("--threads", type=int, help="torch threads per cell (default: execution.threads or cores / parallel)")
    ap.add_argument("--nproc", type=int, help="processes per cell (default: execution.nproc_per_node)")
    ap.add_argument("--cluster", choices=["slurm", "local", "debug"], help="submitit cluster (default: execution.slurm.cluster)")
    ap.add_argument("--only-cells", action="store_true", help="run the cells only: no tokenizer, tokens, fit or figures")
    ap.add_argument("--prepare-here", action="store_true",
                    help="slurm executor: train the tokenizer and encode the tokens in this process, not as a job")
    ap.add_argument("--no-analysis", action="store_true", help="stop after the cells (no fit, no figures)")
    ap.add_argument("--cells", metavar="GLOB", help="only the cells whose run id matches (e.g. 'd2-*')")
    ap.add_argument("--progress", choices=["auto", "on", "off"], default="auto",
                    help="progress bars (auto: only on a terminal)")
    return ap


def _interrupt_on_term(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    from varscale.config import load_study_for_cli
    from varscale.grid.progress import Progress, say
    from varscale.schema import StudyLayout

    a = build_parser().parse_args(argv)
    cfg = load_study_for_cli(a.study)
    if cfg is None:
        return 2
    layout = StudyLayout.of(a.study)
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
