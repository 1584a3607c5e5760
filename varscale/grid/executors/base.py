"""What an executor is: the ``Executor`` protocol, the ``Handle`` of a submitted cell, exit codes.

An executor decides *where* a cell's worker process runs (a child process here, a torchrun
group, a Slurm job); the worker (``worker.py``) decides *how* a cell is owned and trained,
the same for every executor. The launcher (``varscale.grid.launch``) talks to executors
only through this protocol, so adding one is a new module plus one line in ``EXECUTORS``
(``varscale/grid/executors/__init__.py``); see docs/extending.md.

Nothing here writes to the study folder.
"""
from __future__ import annotations

import ctypes
import os
import signal
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Optional, Protocol, runtime_checkable

from varscale.schema import CellLayout, StudyLayout

if TYPE_CHECKING:
    from varscale.config import StudyConfig

# exit codes of a worker (and so of a Handle's poll)
DONE, FAILED, DIVERGED, LOCKED = 0, 1, 3, 75
INTERRUPTED = (130, 143, -2, -15)  # Ctrl-C / SIGTERM, as an exit status or a signal


@dataclass(frozen=True)
class Options:
    """What ``varscale run`` resolved from the study's ``execution`` section and its flags."""

    parallel: int = 1  # cells at a time
    threads: Optional[int] = None  # torch threads per cell (None: the executor's default)
    nproc: int = 1  # processes per cell
    cluster: Optional[str] = None  # submitit cluster override (slurm only)


@dataclass
class Handle:
    """A cell handed to an executor; ``poll()`` -> exit code or None while it runs."""

    cell: CellLayout
    started: float = field(default_factory=time.time)
    proc: Any = None  # subprocess.Popen | submitit.Job
    rc: Optional[int] = None

    def poll(self) -> Optional[int]:
        if self.rc is None:
            self.rc = self._poll()
        return self.rc

    def _poll(self) -> Optional[int]:
        return self.proc.poll()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> Optional[int]:
        t0 = time.monotonic()
        while self.poll() is None and time.monotonic() - t0 < timeout:
            time.sleep(0.1)
        return self.rc


@runtime_checkable
class Executor(Protocol):
    """Where cells run. The launcher calls, in order: ``from_study``, ``describe``,
    ``prepare`` (unless told to prepare in its own process), then ``submit`` whenever
    fewer than ``slots`` cells run, ``Handle.poll`` until each ends, and ``shutdown`` on
    Ctrl-C. Every cell must run as the worker (``worker.worker_command`` or
    ``worker.run_cell``), which owns the cell's lock and files."""

    name: ClassVar[str]  # the registry name: `varscale run --executor <name>`, execution.executor

    @classmethod
    def from_study(cls, cfg: "StudyConfig", layout: StudyLayout, opts: Options) -> "Executor":
        """Build from the study (``cfg.execution``) and the resolved options; a RuntimeError
        says this machine cannot run it (e.g. no Slurm here)."""
        ...

    @property
    def slots(self) -> int:
        """How many cells may run at once (the launcher submits no more)."""
        ...

    def describe(self) -> str:
        """One line for the launcher's log: where and how many at a time."""
        ...

    def prepare(self, layout: StudyLayout, cfg: "StudyConfig", log: Callable[[str], None]) -> bool:
        """Make the tokenizer and token cache (``varscale.grid.stages``) wherever the cells
        will need them; True if there was work to do."""
        ...

    def submit(self, cells: list[CellLayout]) -> list[Handle]:
        """Start the cells (one worker each); one Handle per cell, in order."""
        ...

    def shutdown(self, handles: list[Handle], grace_s: float = 30.0) -> None:
        """Stop the running cells this executor owns (the launcher was interrupted)."""
        ...


# --------------------------------------------------------------------------- child processes


def die_with_parent() -> None:
    """preexec_fn: have the kernel SIGTERM this child when the process that started it dies."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        return
    # the parent may have died between fork and prctl: then nobody would ever signal us
    if os.getppid() == 1:
        os.kill(os.getpid(), signal.SIGTERM)


def thread_env(threads: Optional[int]) -> dict[str, str]:
    if not threads:
        return {}
    t = str(max(int(threads), 1))
    return {"VARSCALE_THREADS": t, "OMP_NUM_THREADS": t, "MKL_NUM_THREADS": t}


def passthrough_env() -> dict[str, str]:
    """Environment a job must see as the launcher does (the stub trainer in tests, caches)."""
    keys = ("VARSCALE_CELL_FN", "VARSCALE_CACHE", "VARSCALE_PEAK_FLOPS", "PYTHONPATH")
    return {k: os.environ[k] for k in keys if k in os.environ}
