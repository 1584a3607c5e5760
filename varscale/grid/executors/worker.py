"""The worker: the one process that owns a cell while it trains, whatever the executor.

Every cell runs in its own process through :func:`run_cell`. The worker takes the cell's
lock (pid + host, so a second launcher skips the cell), calls the trainer, keeps a traceback
in the cell folder if the trainer raises, and releases the lock. Because the lock names the
worker, not the launcher, a launcher killed with -9 does not leave a cell that looks free
while it still trains: local workers die with their launcher (Linux parent-death signal),
and a rerun takes over their stale locks; Slurm jobs keep running and keep their locks.

Writes to the cell folder: ``LOCK`` (while it runs), ``traceback.txt`` and ``status.json``
``state: failed`` when the trainer raised or returned 1 without saying why, ``train.log``
(a torchrun group's output). Everything else is the trainer's.

Command line (what executors spawn)::

    python -m varscale.grid.executors cell <cell_dir> [--nproc K] [--threads T] [--torchrun]
    python -m varscale.grid.executors rank <cell_dir>     # one torchrun rank

Exit codes: 0 done, 3 diverged, 1 failed, 75 the cell is locked by another live process
(skipped), 130/143 interrupted (Ctrl-C / SIGTERM), -N killed by signal N.

``VARSCALE_CELL_FN=module:function`` replaces the trainer (tests use a stub that writes
metrics in milliseconds); by default it is ``varscale.train.trainer:train_cell``.
"""
from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, Optional

from varscale.grid.executors.base import DIVERGED, DONE, FAILED, INTERRUPTED, LOCKED, die_with_parent, thread_env
from varscale.grid.lock import FileLock
from varscale.schema import CellLayout, atomic_write_bytes, atomic_write_json, read_json

DEFAULT_CELL_FN = "varscale.train.trainer:train_cell"
WORKER_MODULE = "varscale.grid.executors"  # `python -m` this runs worker_main (__main__.py)


def cell_fn() -> Callable[[str], int]:
    spec = os.environ.get("VARSCALE_CELL_FN", DEFAULT_CELL_FN)
    mod, _, name = spec.partition(":")
    return getattr(importlib.import_module(mod), name)


def worker_command(cell: CellLayout, nproc: int = 1, threads: Optional[int] = None,
                   torchrun: bool = False) -> list[str]:
    """The command line of a cell's worker process."""
    cmd = [sys.executable, "-m", WORKER_MODULE, "cell", str(cell.root), "--nproc", str(nproc)]
    if threads:
        cmd += ["--threads", str(threads)]
    if torchrun:
        cmd.append("--torchrun")
    return cmd


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


def mark_failed(cell: CellLayout, tb: str) -> None:
    """Keep ``tb`` as the cell's traceback.txt and say ``failed`` in its status.json."""
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
            return _run_torchrun(cell, nproc, threads)
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
            mark_failed(cell, traceback.format_exc())
            return FAILED
        if rc == FAILED and not cell.traceback.exists():
            mark_failed(cell, "the trainer returned 1 (failed) without a traceback\n")
        return rc
    finally:
        old = _shield_signals()  # a second Ctrl-C / SIGTERM must not cut the release short
        try:
            lock.release()
        finally:
            _restore_signals(old)


def _run_torchrun(cell: CellLayout, nproc: int, threads: Optional[int]) -> int:
    """A multi-process cell: torchrun runs ``nproc`` ranks of the cell function."""
    cmd = [sys.executable, "-m", "torch.distributed.run"]
    cmd += ["--standalone", f"--nproc_per_node={nproc}", "-m", WORKER_MODULE, "rank", str(cell.root)]
    env = {**os.environ, **thread_env(max(1, (threads or 0) // nproc) if threads else None)}
    with open(cell.log, "ab") as log:
        p = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
        try:
            rc = p.wait()
        except (KeyboardInterrupt, SystemExit):
            p.send_signal(signal.SIGTERM)
            p.wait()
            raise
    if rc not in (DONE, DIVERGED) and rc not in INTERRUPTED and not cell.traceback.exists():
        mark_failed(cell, f"torchrun exited with {rc}; see {cell.log}\n")
    return rc


def rank_main(cell_dir: str) -> int:
    """One torchrun rank: the cell function; rank 0 keeps a traceback if it raises."""
    try:
        return int(cell_fn()(cell_dir) or 0)
    except BaseException:  # noqa: BLE001
        if os.environ.get("RANK", "0") == "0":
            mark_failed(CellLayout(Path(cell_dir)), traceback.format_exc())
        raise


def worker_main(argv: list[str]) -> int:
    """``python -m varscale.grid.executors cell <dir> [--nproc K] [--threads T]``."""
    import argparse

    ap = argparse.ArgumentParser(prog=f"python -m {WORKER_MODULE}")
    ap.add_argument("mode", choices=["cell", "rank"])
    ap.add_argument("cell_dir")
    ap.add_argument("--nproc", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--torchrun", action="store_true", help="under torchrun even with one process")
    a = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, _term_as_exit)
    if a.mode == "rank":
        return rank_main(a.cell_dir)
    return run_cell(a.cell_dir, nproc=a.nproc, threads=a.threads, torchrun=a.torchrun)
