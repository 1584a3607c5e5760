"""Where a cell runs: executors by name (``local``, ``torchrun``, ``slurm``).

- ``base.py``      the ``Executor`` protocol, ``Handle``, ``Options``, the worker's exit codes
- ``worker.py``    the process that owns one cell (lock, trainer, traceback), the same for all
- ``local.py``     child processes of the launcher, ``parallel`` at a time, threads divided
- ``torchrun.py``  as local, every cell a torchrun group
- ``slurm.py``     Slurm jobs (a job array on a cluster) through submitit

``EXECUTORS`` is the registry: ``varscale run --executor`` offers its names, and
``execution.executor`` in a study must be one of them. Adding an executor is one module
with a class that follows ``Executor`` and one line below (docs/extending.md).
``python -m varscale.grid.executors cell <dir>`` is the worker (``__main__.py``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from varscale.grid.executors.base import (DIVERGED, DONE, FAILED, INTERRUPTED, LOCKED, Executor, Handle,
                                          Options)
from varscale.grid.executors.local import LocalExecutor
from varscale.grid.executors.slurm import SlurmExecutor
from varscale.grid.executors.torchrun import TorchrunExecutor
from varscale.grid.executors.worker import mark_failed, run_cell

if TYPE_CHECKING:
    from varscale.config import StudyConfig
    from varscale.schema import StudyLayout

EXECUTORS: dict[str, type[Executor]] = {
    LocalExecutor.name: LocalExecutor,
    TorchrunExecutor.name: TorchrunExecutor,
    SlurmExecutor.name: SlurmExecutor,
}


def make_executor(name: str, cfg: "StudyConfig", layout: "StudyLayout", opts: Options) -> Executor:
    """The executor registered as ``name``, built for this study."""
    try:
        cls = EXECUTORS[name]
    except KeyError:
        raise ValueError(f"unknown executor '{name}' (one of: {', '.join(EXECUTORS)})") from None
    return cls.from_study(cfg, layout, opts)


__all__ = ["EXECUTORS", "Executor", "Handle", "Options", "make_executor", "run_cell", "mark_failed",
           "DONE", "FAILED", "DIVERGED", "LOCKED", "INTERRUPTED",
           "LocalExecutor", "TorchrunExecutor", "SlurmExecutor"]
