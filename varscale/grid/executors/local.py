"""``local``: cells as child processes of the launcher, ``parallel`` at a time.

Each cell's worker writes its output to the cell's ``train.log``; nothing else is written
here. Workers die with the launcher (parent-death signal), so a launcher killed with -9
leaves stale locks that the next run takes over, never a cell trained twice.
"""
from __future__ import annotations

import os
import subprocess
import time
from typing import TYPE_CHECKING, Callable, ClassVar, Optional

from varscale.grid.executors.base import Handle, Options, die_with_parent, thread_env
from varscale.grid.executors.worker import worker_command
from varscale.schema import CellLayout, StudyLayout

if TYPE_CHECKING:
    from varscale.config import StudyConfig


def visible_gpus(cfg: "StudyConfig") -> list[str]:
    """GPU ids the launcher may hand out, one per slot ([] on CPU)."""
    if cfg.execution.device == "cpu":
        return []
    vis = os.environ.get("CUDA_VISIBLE_DEVICES")
    if vis is not None:
        return [g for g in vis.split(",") if g.strip()]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001
        return []


class LocalExecutor:
    """Cells as child processes of this launcher, ``parallel`` at a time.

    Threads are divided: each cell gets ``threads`` (default: cores // parallel) through
    VARSCALE_THREADS / OMP_NUM_THREADS, so N cells do not oversubscribe the machine. With
    several GPUs visible, slot i gets GPU i (mod count) through CUDA_VISIBLE_DEVICES.
    ``nproc`` > 1 makes each cell a torchrun group.
    """

    name: ClassVar[str] = "local"
    torchrun: ClassVar[bool] = False  # run every cell under torchrun, even with one process

    def __init__(self, parallel: int = 1, threads: Optional[int] = None, nproc: int = 1,
                 gpus: Optional[list[str]] = None):
        self.parallel = max(int(parallel), 1)
        cores = os.cpu_count() or 1
        self.threads = threads or max(1, cores // self.parallel)
        self.nproc = max(int(nproc), 1)
        self.gpus = gpus or []
        self._slot = 0

    @classmethod
    def from_study(cls, cfg: "StudyConfig", layout: StudyLayout, opts: Options) -> "LocalExecutor":
        gpus = visible_gpus(cfg) if opts.parallel > 1 else []
        return cls(parallel=opts.parallel, threads=opts.threads, nproc=opts.nproc, gpus=gpus)

    @property
    def slots(self) -> int:
        return self.parallel

    def describe(self) -> str:
        extra = f", {self.nproc} process(es) per cell (torchrun)" if self.nproc > 1 or self.torchrun else ""
        return f"{self.name}: {self.parallel} cell(s) at a time, {self.threads} thread(s) each{extra}"

    def prepare(self, layout: StudyLayout, cfg: "StudyConfig", log: Callable[[str], None]) -> bool:
        from varscale.grid.stages import prepare_here

        return prepare_here(layout, cfg)

    def _start(self, cell: CellLayout) -> Handle:
        env = {**os.environ, **thread_env(self.threads)}
        if self.gpus and self.nproc == 1:
            env["CUDA_VISIBLE_DEVICES"] = self.gpus[self._slot % len(self.gpus)]
            self._slot += 1
        cmd = worker_command(cell, nproc=self.nproc, threads=self.threads, torchrun=self.torchrun)
        cell.root.mkdir(parents=True, exist_ok=True)
        with open(cell.log, "ab") as log:
            p = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)
        return Handle(cell, proc=p)

    def submit(self, cells: list[CellLayout]) -> list[Handle]:
        return [self._start(c) for c in cells]

    def shutdown(self, handles: list[Handle], grace_s: float = 30.0) -> None:
        # after Ctrl-C the workers got SIGINT too (same process group): give them a moment
        # to stop on their own, then SIGTERM (the launcher alone was signalled), then kill
        t0 = time.monotonic()
        while any(h.poll() is None for h in handles) and time.monotonic() - t0 < 3.0:
            time.sleep(0.05)
        for h in handles:
            h.stop()
        for h in handles:
            if h.wait(grace_s) is None:
                h.proc.kill()
                h.proc.wait()
