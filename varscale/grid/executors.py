"""Where a cell runs: a local subprocess, a torchrun group, or a Slurm job (submitit).

Every cell runs in its own process through one *worker* (:func:`run_cell`), whatever the
executor. The worker owns the cell: it takes the cell's lock (pid + host, so a second
launcher skips the cell), calls the trainer, keeps a traceback in the cell folder if the
trainer raises, and releases the lock. Because the lock names the worker, not the launcher,
a launcher killed with -9 does not leave a cell that looks free while it still trains:
local workers die with their launcher (Linux parent-death signal), and a rerun takes over
their stale locks; Slurm jobs keep running and keep their locks.

Exit codes of a worker: 0 done, 3 diverged, 1 failed, 75 the cell is locked by another
live process (skipped), 130/143 interrupted (Ctrl-C / SIGTERM), -N killed by signal N.

``VARSCALE_CELL_FN=module:function`` replaces the trainer (tests use a stub that writes
metrics in milliseconds); by default it is ``varscale.train.trainer:train_cell``.
"""
from __future__ import annotations

import ctypes
import importlib
import os
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from varscale.grid.lock import FileLock
from varscale.schema import CellLayout, atomic_write_bytes, atomic_write_json, read_json

DONE, FAILED, DIVERGED, LOCKED = 0, 1, 3, 75
INTERRUPTED = (130, 143, -2, -15)
DEFAULT_CELL_FN = "varscale.train.trainer:train_cell"


def cell_fn() -> Callable[[str], int]:
    spec = os.environ.get("VARSCALE_CELL_FN", DEFAULT_CELL_FN)
    mod, _, name = spec.partition(":")
    return getattr(importlib.import_module(mod), name)


# --------------------------------------------------------------------------- child processes


def _die_with_parent() -> None:
    """preexec_fn: have the kernel SIGTERM this child when the process that started it dies."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        return
    # the parent may have died between fork and prctl: then nobody would ever signal us
    if os.getppid() == 1:
        os.kill(os.getpid(), signal.SIGTERM)


def _term_as_exit(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def _shield_signals() -> Optional[tuple]:
    """Ignore SIGINT/SIGTERM for a moment; returns the handlers to restore."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    return (signal.signal(signal.SIGINT, signal.SIG_IGN), signal.signal(signal.SIGTERM, signal.SIG_IGN))


def _restore_signals(old: Optional[tuple]) -> None:
    if old is not None:
        signal.signal(signal.SIGINT, old[0])
        signal.signal(signal.SIGTERM, old[1])


def thread_env(threads: Optional[int]) -> dict[str, str]:
    if not threads:
        return {}
    t = str(max(int(threads), 1))
    return {"VARSCALE_THREADS": t, "OMP_NUM_THREADS": t, "MKL_NUM_THREADS": t}


# --------------------------------------------------------------------------- the worker


def _mark_failed(cell: CellLayout, tb: str) -> None:
    atomic_write_bytes(cell.traceback, tb.encode())
    st = read_json(cell.status_json, {}) or {}
    st.update(state="failed", pid=os.getpid(), message=tb.strip().splitlines()[-1][:500] if tb.strip() else "")
    atomic_write_json(cell.status_json, st)


def run_cell(cell_dir: str | os.PathLike, nproc: int = 1, threads: Optional[int] = None,
             torchrun: bool = False) -> int:
    """Own one cell for its whole training: lock, train (in-process or torchrun), unlock."""
    cell = CellLayout(Path(cell_dir))
    if cell.done.exists():
        return DONE
    lock = FileLock(cell.lock, purpose=f"cell {cell.run_id}")
    if not lock.acquire():
        return LOCKED
    try:
        if lock.took_over:
            print(f"[worker] took over the stale lock of {cell.run_id} "
                  f"(pid {lock.took_over.get('pid')} on {lock.took_over.get('host')})", flush=True)
        if cell.done.exists():  # finished between our check and the lock
            return DONE
        # a previous failure's traceback would make the cell look failed while it retries
        cell.traceback.unlink(missing_ok=True)
        if nproc > 1 or torchrun:
            return _run_torchrun(cell, nproc, threads, torchrun)
        if threads:  # read by torch when the trainer imports it (no torch import here: stubs)
            os.environ.update(thread_env(threads))
            if "torch" in sys.modules:
                sys.modules["torch"].set_num_threads(int(threads))
        try:
            rc = int(cell_fn()(str(cell.root)) or 0)
        except (KeyboardInterrupt, SystemExit) as e:
            code = getattr(e, "code", None)
            return int(code) if isinstance(code, int) and code else 130
        except BaseException:  # noqa: BLE001 - whatever the trainer raised, keep it
            _mark_failed(cell, traceback.format_exc())
            return FAILED
        if rc == FAILED and not cell.traceback.exists():
            _mark_failed(cell, "the trainer returned 1 (failed) without a traceback\n")
        return rc
    finally:
        old = _shield_signals()  # a second Ctrl-C / SIGTERM must not cut the release short
        try:
            lock.release()
        finally:
            _restore_signals(old)


def _run_torchrun(cell: CellLayout, nproc: int, threads: Optional[int], torchrun: bool) -> int:
    """A multi-process cell: torchrun runs ``nproc`` ranks of the cell function."""
    cmd = [sys.executable, "-m", "torch.distributed.run"]
    cmd += ["--standalone", f"--nproc_per_node={nproc}", "-m", "varscale.grid.executors", "rank", str(cell.root)]
    env = {**os.environ, **thread_env(max(1, (threads or 0) // nproc) if threads else None)}
    with open(cell.log, "ab") as log:
        p = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        try:
            rc = p.wait()
        except (KeyboardInterrupt, SystemExit):
            p.send_signal(signal.SIGTERM)
            p.wait()
            raise
    if rc not in (DONE, DIVERGED) and rc not in INTERRUPTED and not cell.traceback.exists():
        _mark_failed(cell, f"torchrun exited with {rc}; see {cell.log}\n")
    return rc


def _rank_main(cell_dir: str) -> int:
    """One torchrun rank: the cell function; rank 0 keeps a traceback if it raises."""
    try:
        return int(cell_fn()(cell_dir) or 0)
    except BaseException:  # noqa: BLE001
        if os.environ.get("RANK", "0") == "0":
            _mark_failed(CellLayout(Path(cell_dir)), traceback.format_exc())
        raise


def worker_main(argv: list[str]) -> int:
    """``python -m varscale.grid.executors cell <dir> [--nproc K] [--threads T]``."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m varscale.grid.executors")
    ap.add_argument("mode", choices=["cell", "rank"])
    ap.add_argument("cell_dir")
    ap.add_argument("--nproc", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--torchrun", action="store_true", help="under torchrun even with one process")
    a = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, _term_as_exit)
    if a.mode == "rank":
        return _rank_main(a.cell_dir)
    return run_cell(a.cell_dir, nproc=a.nproc, threads=a.threads, torchrun=a.torchrun)


# --------------------------------------------------------------------------- executors


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


class LocalExecutor:
    """Cells as child processes of this launcher, ``parallel`` at a time.

    Threads are divided: each cell gets ``threads`` (default: cores // parallel) through
    VARSCALE_THREADS / OMP_NUM_THREADS, so N cells do not oversubscribe the machine. With
    several GPUs visible, slot i gets GPU i (mod count) through CUDA_VISIBLE_DEVICES.
    ``nproc`` > 1 makes each cell a torchrun group (the ``torchrun`` executor).
    """

    name = "local"

    def __init__(self, parallel: int = 1, threads: Optional[int] = None, nproc: int = 1,
                 gpus: Optional[list[str]] = None):
        self.parallel = max(int(parallel), 1)
        cores = os.cpu_count() or 1
        self.threads = threads or max(1, cores // self.parallel)
        self.nproc = max(int(nproc), 1)
        self.gpus = gpus or []
        self._slot = 0

    @property
    def slots(self) -> int:
        return self.parallel

    def describe(self) -> str:
        extra = f", {self.nproc} process(es) per cell (torchrun)" if self.nproc > 1 or self.name == "torchrun" else ""
        return f"{self.name}: {self.parallel} cell(s) at a time, {self.threads} thread(s) each{extra}"

    def submit(self, cell: CellLayout) -> Handle:
        env = {**os.environ, **thread_env(self.threads)}
        if self.gpus and self.nproc == 1:
            env["CUDA_VISIBLE_DEVICES"] = self.gpus[self._slot % len(self.gpus)]
            self._slot += 1
        cmd = [sys.executable, "-m", "varscale.grid.executors", "cell", str(cell.root),
               "--nproc", str(self.nproc), "--threads", str(self.threads)]
        if self.name == "torchrun":
            cmd.append("--torchrun")
        cell.root.mkdir(parents=True, exist_ok=True)
        with open(cell.log, "ab") as log:
            p = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        return Handle(cell, proc=p)

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


class TorchrunExecutor(LocalExecutor):
    name = "torchrun"


class _SubmititHandle(Handle):
    def _poll(self) -> Optional[int]:
        job = self.proc
        if not job.done():
            return None
        try:
            return int(job.result())
        except Exception as e:  # noqa: BLE001 - the job died outside our worker (timeout, OOM kill)
            cell = self.cell
            if not cell.done.exists() and not cell.traceback.exists():
                _mark_failed(cell, f"submitit job {job.job_id} failed:\n{e}\n")
            return FAILED

    def stop(self) -> None:
        try:
            self.proc.cancel(check=False)
        except Exception:  # noqa: BLE001
            pass


class SlurmCellJob:
    """The callable a Slurm job runs: the worker, requeued by submitit on preemption/timeout.

    With ``nodes`` > 1 each task is one rank (submitit exports the torch distributed
    environment) and only global rank 0 takes the cell's lock.
    """

    def __init__(self, cell_dir: str, nproc: int, threads: Optional[int], nodes: int, env: dict[str, str]):
        self.cell_dir, self.nproc, self.threads, self.nodes, self.env = cell_dir, nproc, threads, nodes, env

    def __call__(self) -> int:
        os.environ.update(self.env)
        if self.nodes > 1:
            import submitit

            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
            if os.environ.get("RANK") == "0":
                return run_cell(self.cell_dir, threads=self.threads, nproc=1)
            return _rank_main(self.cell_dir)
        return run_cell(self.cell_dir, nproc=self.nproc, threads=self.threads)

    def checkpoint(self, *args: Any, **kwargs: Any):
        # the trainer checkpoints on its own schedule; a requeued job resumes from the last one
        import submitit

        return submitit.helpers.DelayedSubmission(self)


class SlurmExecutor:
    """Cells as Slurm jobs through submitit (``cluster: local`` runs the same path locally).

    On a real cluster all cells go in at once as one job array (``parallel`` caps how many
    run together, Slurm's array throttle); on the local/debug cluster they are started
    ``parallel`` at a time like the local executor, since there is no queue to hold them.
    """

    name = "slurm"

    def __init__(self, study_dir: Path, slurm: Any, parallel: int = 1, threads: Optional[int] = None,
                 nproc: int = 1, cluster: Optional[str] = None):
        import submitit

        self.cluster = cluster or slurm.cluster
        self.slurm = slurm
        self.nproc = max(int(nproc), 1)
        self.parallel = max(int(parallel), 1)
        self.threads = threads or max(1, slurm.cpus_per_task // max(self.nproc if slurm.nodes == 1 else 1, 1))
        self.folder = Path(study_dir) / "slurm"
        self.ex = submitit.AutoExecutor(folder=self.folder / "%j", cluster=self.cluster)
        multinode = slurm.nodes > 1
        params: dict[str, Any] = dict(
            timeout_min=int(slurm.time_min), nodes=int(slurm.nodes),
            tasks_per_node=self.nproc if multinode else 1,
            cpus_per_task=int(slurm.cpus_per_task) * (1 if multinode else self.nproc),
            mem_gb=int(slurm.mem_gb), name=f"varscale-{Path(study_dir).name}",
        )
        if slurm.gpus_per_node:
            params["gpus_per_node"] = int(slurm.gpus_per_node)
        if slurm.partition:
            params["slurm_partition"] = slurm.partition
        if slurm.additional_parameters:
            params["slurm_additional_parameters"] = dict(slurm.additional_parameters)
        params["slurm_array_parallelism"] = self.parallel
        self.ex.update_parameters(**params)
        self._multinode = multinode

    @property
    def batch(self) -> bool:
        return self.cluster == "slurm"

    @property
    def slots(self) -> int:
        return 10**9 if self.batch else self.parallel

    def describe(self) -> str:
        s = self.slurm
        return (f"slurm via submitit (cluster={self.cluster}): {s.nodes} node(s) x {self.nproc} process(es), "
                f"{s.gpus_per_node} GPU(s)/node, {s.time_min} min, partition {s.partition or 'default'}, "
                f"{self.parallel} job(s) at a time; logs in {self.folder}")

    def prepare(self, study_dir: Path, log: Callable[[str], None], poll_s: float = 2.0) -> bool:
        """Run tokenizer + tokens as one single-node job and wait for it; True if it did work."""
        import submitit

        s = self.slurm
        ex = submitit.AutoExecutor(folder=self.folder / "%j", cluster=self.cluster)
        params: dict[str, Any] = dict(timeout_min=int(s.time_min), nodes=1, tasks_per_node=1,
                                      cpus_per_task=int(s.cpus_per_task), mem_gb=int(s.mem_gb),
                                      name=f"varscale-prepare-{Path(study_dir).name}")
        if s.gpus_per_node:
            params["gpus_per_node"] = 1
        if s.partition:
            params["slurm_partition"] = s.partition
        if s.additional_parameters:
            params["slurm_additional_parameters"] = dict(s.additional_parameters)
        ex.update_parameters(**params)
        job = ex.submit(PrepareJob(str(Path(study_dir).resolve()), {**thread_env(self.threads), **_passthrough_env()}))
        log(f"tokenizer, tokens: running as job {job.job_id} ({self.cluster}); log {job.paths.stdout}")
        while not job.done():
            time.sleep(poll_s)
        out = job.result()  # raises with the job's traceback if it failed
        for line in (job.stdout() or "").splitlines():
            if line.startswith(("tokenizer:", "tokens:")):
                log("  " + line)
        return bool(out)

    def _job(self, cell: CellLayout) -> SlurmCellJob:
        return SlurmCellJob(str(cell.root.resolve()), self.nproc, self.threads, int(self.slurm.nodes),
                            {**thread_env(self.threads), **_passthrough_env()})

    def submit(self, cell: CellLayout) -> Handle:
        return _SubmititHandle(cell, proc=self.ex.submit(self._job(cell)))

    def submit_many(self, cells: list[CellLayout]) -> list[Handle]:
        if not cells:
            return []
        with self.ex.batch():
            jobs = [self.ex.submit(self._job(c)) for c in cells]
        return [_SubmititHandle(c, proc=j) for c, j in zip(cells, jobs)]

    def shutdown(self, handles: list[Handle], grace_s: float = 0.0) -> None:
        # Slurm jobs outlive the launcher on purpose; only the local cluster's are ours to stop
        if self.cluster != "slurm":
            for h in handles:
                h.stop()


class PrepareJob:
    """A Slurm job for the one-off stages (tokenizer, token cache): they need the GPU and the
    dataset, which a login node running the launcher may not have."""

    def __init__(self, study_dir: str, env: dict[str, str]):
        self.study_dir, self.env = study_dir, env

    def __call__(self) -> bool:
        os.environ.update(self.env)
        from varscale.config import load_study
        from varscale.grid.launch import stage_tokenizer, stage_tokens
        from varscale.schema import StudyLayout

        cfg = load_study(self.study_dir)
        layout = StudyLayout.of(self.study_dir)
        worked = stage_tokenizer(layout, cfg)
        return stage_tokens(layout, cfg) or worked

    def checkpoint(self, *args: Any, **kwargs: Any):
        import submitit

        return submitit.helpers.DelayedSubmission(self)


def _passthrough_env() -> dict[str, str]:
    """Environment a job must see as the launcher does (the stub trainer in tests, caches)."""
    keys = ("VARSCALE_CELL_FN", "VARSCALE_CACHE", "VARSCALE_PEAK_FLOPS", "PYTHONPATH")
    return {k: os.environ[k] for k in keys if k in os.environ}


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1:]))
