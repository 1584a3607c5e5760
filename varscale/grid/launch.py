"""``varscale run <study-dir>``: the whole chain of a study as one resumable command.

    tokenizer -> tokens -> cells -> fit -> figures

Every stage whose output is complete is skipped with a one-line message, so a second run
of a finished study does nothing and says so. Cells run in their own processes through an
executor (``local``, ``torchrun``, ``slurm`` via submitit); the study's ``execution``
section gives the defaults and the flags override them.

Safety: each cell is owned by the worker process that trains it (a pid + host lock, see
``varscale.grid.lock``), so two launchers on one study never train the same cell: the
second one skips it, waits for it, and runs it itself only if its owner went away without
finishing. The one-off stages (tokenizer, tokens, fit, figures) take a study-wide lock
each, so a second launcher waits and then finds them done. Ctrl-C or kill -9 of the
launcher loses nothing: metrics are written per evaluation, checkpoints atomically, and the
next run resumes every unfinished cell from its last checkpoint.

A failing cell keeps ``traceback.txt`` in its folder, the others go on, and the run exits 1
naming the failures. A diverged cell is terminal (not retried) and reported, but is not a
failure of the run.
"""
from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from varscale.config import StudyConfig, load_study_for_cli
from varscale.grid import executors as X
from varscale.grid.lock import FileLock, describe
from varscale.grid.progress import Progress
from varscale.grid.status import cell_state
from varscale.schema import CellLayout, StudyLayout, atomic_write_json, read_json

SKIPPED = "skipped"


def say(msg: str) -> None:
    Progress.write(msg)


# --------------------------------------------------------------------------- one-off stages


def _stage_lock(layout: StudyLayout, stage: str) -> FileLock:
    return FileLock(layout.root / f".lock-{stage}", purpose=f"stage {stage}")


def _locked_stage(layout: StudyLayout, stage: str, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` holding the study-wide lock of ``stage`` (waits for another launcher)."""
    lock = _stage_lock(layout, stage)
    lock.wait(on_wait=lambda info: say(f"{stage}: another launcher ({describe(info)}) is on it; waiting"))
    try:
        return fn()
    finally:
        lock.release()


def stage_tokenizer(layout: StudyLayout, cfg: StudyConfig) -> bool:
    """Train (or load and measure) the study's tokenizer; True if there was work to do."""
    from varscale.train import tokenizer as T

    def work() -> bool:
        if cfg.tokenizer.checkpoint:
            if (layout.tokenizer_dir / "metrics.json").exists():
                say(f"tokenizer: using the checkpoint {cfg.tokenizer.checkpoint} (already measured); skipped")
                return False
            T.train_tokenizer(layout.root, cfg, log=say)  # loads and measures it, never trains
            return True
        done = T.existing_complete(layout.root, cfg)
        if done is not None:
            say(f"tokenizer: complete ({layout.tokenizer_ckpt}); skipped")
            return False
        say(f"tokenizer: training ({cfg.tokenizer.steps} steps) into {layout.tokenizer_dir}")
        t0 = time.time()
        T.train_tokenizer(layout.root, cfg, log=say)
        say(f"tokenizer: trained in {time.time() - t0:.1f} s")
        return True

    return _locked_stage(layout, "tokenizer", work)


def stage_tokens(layout: StudyLayout, cfg: StudyConfig) -> bool:
    """Build the token cache if missing or stale; True if there was work to do."""
    from varscale.data.tokens import build_token_cache

    meta = layout.tokens_dir / "meta.json"

    def stamp() -> Optional[int]:
        return meta.stat().st_mtime_ns if meta.exists() else None

    before = stamp()
    # build_token_cache checks the cache against the tokenizer and data hashes and says
    # "skipping" itself when it is complete
    _locked_stage(layout, "tokens", lambda: build_token_cache(layout.root, cfg, log=say))
    return stamp() != before


def _done_fingerprint(layout: StudyLayout, run_ids: list[str]) -> str:
    """Identity of the finished cells an analysis stage saw (ids and DONE times)."""
    items = []
    for r in sorted(run_ids):
        c = layout.cell(r)
        if c.done.exists():
            items.append((r, c.done.stat().st_mtime_ns))
    return hashlib.sha256(json.dumps(items).encode()).hexdigest()[:16]


def stage_analysis(layout: StudyLayout, stage: str, module: str, run_ids: list[str]) -> tuple[bool, bool]:
    """``fit`` / ``figures``: rerun only when the set of finished cells changed.

    Returns (ok, worked). Their printed output goes to ``report/<stage>.log``; the report
    itself (fits.md, figures) is where they write it.
    """
    import contextlib
    import importlib

    stamp = layout.report_dir / f".{stage}.stamp"
    log = layout.report_dir / f"{stage}.log"

    def work() -> tuple[bool, bool]:
        fp = _done_fingerprint(layout, run_ids)
        old = read_json(stamp, {}) or {}
        if old.get("fingerprint") == fp:
            say(f"{stage}: up to date with the {old.get('cells', '?')} finished cells; skipped")
            return True, False
        try:
            mod = importlib.import_module(module)
        except ImportError as e:
            say(f"{stage}: {module} is not available ({e}); skipped")
            return True, False
        t0 = time.time()
        layout.report_dir.mkdir(parents=True, exist_ok=True)
        rc: Any = 0
        with open(log, "w") as f, contextlib.redirect_stdout(f):
            try:
                rc = int(mod.main([str(layout.root)]) or 0)
            except SystemExit as e:
                rc = e.code if isinstance(e.code, int) else 1
            except Exception as e:  # noqa: BLE001 - report it, keep what the cells produced
                import traceback

                f.write(traceback.format_exc())
                rc = f"{type(e).__name__}: {e}"
        if rc != 0:
            say(f"{stage}: FAILED ({rc if isinstance(rc, str) else 'exit ' + str(rc)}); see {log}")
            return False, True
        n = sum(layout.cell(r).done.exists() for r in run_ids)
        atomic_write_json(stamp, {"fingerprint": fp, "cells": n, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        say(f"{stage}: done in {time.time() - t0:.1f} s on {n} finished cells; output in {layout.report_dir} (log {log.name})")
        return True, True

    return _locked_stage(layout, stage, work)


# --------------------------------------------------------------------------- the cells


@dataclass
class CellsResult:
    done: list[str] = field(default_factory=list)  # finished by this launcher
    already: list[str] = field(default_factory=list)  # finished before (or by another launcher)
    diverged: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)  # a WSD branch whose stable run did not finish
    interrupted: bool = False


def _terminal(cell: CellLayout) -> Optional[str]:
    """'done' / 'diverged' if the cell needs no more work, else None."""
    st = read_json(cell.status_json, {}) or {}
    if isinstance(st, dict) and st.get("state") == "diverged":
        return "diverged"
    try:
        text = cell.done.read_text().strip()
    except FileNotFoundError:
        return None
    return "diverged" if text == "diverged" else "done"


def run_cells(layout: StudyLayout, cells: list[Any], executor: Any, progress: Progress,
              poll_s: float = 0.2) -> CellsResult:
    """Run every unfinished cell through ``executor``; returns what happened to each."""
    res = CellsResult()
    by_id = {c.run_id: c for c in cells}
    todo: list[str] = []
    for c in cells:
        t = _terminal(layout.cell(c.run_id))
        if t == "diverged":
            res.diverged.append(c.run_id)
        elif t == "done":
            res.already.append(c.run_id)
        else:
            todo.append(c.run_id)
    # longest first (LPT): with N slots the study ends soonest when the biggest cells (and
    # the stable runs that WSD branches wait for) start first
    todo.sort(key=lambda r: (by_id[r].branch_from is not None, -float(by_id[r].budget_flops or 0)))
    progress.start(cells, layout, done=[*res.already, *res.diverged])
    if not todo:
        say(f"cells: {len(cells)}/{len(cells)} finished; nothing to run")
        return res
    resumed = [r for r in todo if (read_json(layout.cell(r).status_json, {}) or {}).get("step")]
    say(f"cells: {len(todo)} of {len(cells)} to run"
        + (f" ({len(resumed)} resume from checkpoints)" if resumed else "")
        + f"; {executor.describe()}")

    running: dict[str, X.Handle] = {}
    elsewhere: dict[str, dict] = {}  # run_id -> lock owner, for cells another process trains
    told_elsewhere: set[str] = set()

    def parent_state(rid: str) -> Optional[str]:
        parent = getattr(by_id[rid], "branch_from", None)
        if not parent:
            return "done"
        if parent in res.failed or parent in res.blocked:
            return "blocked"
        t = _terminal(layout.cell(parent))
        return "blocked" if t == "diverged" else t

    def finish(rid: str, rc: int, h: Optional[X.Handle]) -> None:
        cell = layout.cell(rid)
        dt = f" in {time.time() - h.started:.1f} s" if h else ""
        if rc == X.LOCKED:
            elsewhere[rid] = FileLock(cell.lock).owner() or {}
            return
        if rc in X.INTERRUPTED:
            res.interrupted = True
            return
        t = _terminal(cell)
        if t == "diverged" or rc == X.DIVERGED:
            res.diverged.append(rid)
            progress.finished(rid)
            st = cell_state(cell)
            say(f"[{progress.count()}] {rid}: DIVERGED{dt} ({st.note}); the grid goes on")
        elif rc == X.DONE and t == "done":
            res.done.append(rid)
            progress.finished(rid)
            st = cell_state(cell)
            loss = f", test loss {st.test_loss:.4f}" if st.test_loss is not None else ""
            say(f"[{progress.count()}] {rid}: done{dt}{loss}")
        else:
            if rc == X.DONE:  # exit 0 without DONE: do not call it finished
                X._mark_failed(cell, "the cell process exited 0 but left no DONE file\n")
            res.failed.append(rid)
            progress.finished(rid, ok=False)
            say(f"[{progress.count()}] {rid}: FAILED (exit {rc}){dt}; see {cell.traceback}")

    try:
        while todo or running or elsewhere:
            # cells others were training: done now, or free again (their owner stopped)
            for rid in list(elsewhere):
                cell = layout.cell(rid)
                t = _terminal(cell)
                if t is not None:
                    del elsewhere[rid]
                    (res.already if t == "done" else res.diverged).append(rid)
                    progress.finished(rid)
                    say(f"[{progress.count()}] {rid}: {t} (by another launcher)")
                elif FileLock(cell.lock).held_by_other() is None:
                    del elsewhere[rid]
                    todo.insert(0, rid)
                elif rid not in told_elsewhere:
                    told_elsewhere.add(rid)
                    say(f"{rid}: trained by another process ({describe(elsewhere[rid])}); waiting for it")
            # reap
            for rid, h in list(running.items()):
                rc = h.poll()
                if rc is not None:
                    del running[rid]
                    progress.stopped(rid)
                    finish(rid, rc, h)
            # start what is ready
            ready, submit = [], []
            for rid in list(todo):
                ps = parent_state(rid)
                if ps == "blocked":
                    todo.remove(rid)
                    res.blocked.append(rid)
                    say(f"{rid}: not run, its stable run {by_id[rid].branch_from} did not finish")
                    continue
                if ps != "done":
                    continue  # waits for its stable run
                cell = layout.cell(rid)
                t = _terminal(cell)
                if t is not None:  # finished meanwhile by another launcher
                    todo.remove(rid)
                    (res.already if t == "done" else res.diverged).append(rid)
                    progress.finished(rid)
                    say(f"[{progress.count()}] {rid}: {t} (by another launcher)")
                    continue
                owner = FileLock(cell.lock).held_by_other()
                if owner is not None:
                    todo.remove(rid)
                    elsewhere[rid] = owner
                    continue
                ready.append(rid)
            free = executor.slots - len(running)
            for rid in ready[:max(free, 0)]:
                todo.remove(rid)
                submit.append(rid)
            if submit:
                cl = [layout.cell(r) for r in submit]
                hs = executor.submit_many(cl) if hasattr(executor, "submit_many") and executor.batch \
                    else [executor.submit(c) for c in cl]
                for rid, h in zip(submit, hs):
                    running[rid] = h
                    progress.started(rid)
            if not running and not elsewhere and todo and not submit:
                # only branches whose parents are not done and not running: nothing can move
                for rid in todo:
                    res.blocked.append(rid)
                    say(f"{rid}: not run, its stable run {by_id[rid].branch_from} is not finished")
                todo.clear()
            progress.tick(running)
            if running or elsewhere:
                time.sleep(poll_s)
    except KeyboardInterrupt:
        res.interrupted = True
        say(f"interrupted: stopping {len(running)} running cell(s); 'varscale run' again resumes them")
        executor.shutdown(list(running.values()))
    return res


# --------------------------------------------------------------------------- entry point


def make_executor(name: str, cfg: StudyConfig, layout: StudyLayout, parallel: int,
                  threads: Optional[int], nproc: int, cluster: Optional[str]) -> Any:
    if name == "slurm":
        return X.SlurmExecutor(layout.root, cfg.execution.slurm, parallel=parallel, threads=threads,
                               nproc=nproc, cluster=cluster)
    gpus = _visible_gpus(cfg) if parallel > 1 else []
    cls = X.TorchrunExecutor if name == "torchrun" else X.LocalExecutor
    return cls(parallel=parallel, threads=threads, nproc=nproc, gpus=gpus)


def _visible_gpus(cfg: StudyConfig) -> list[str]:
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


def _inputs_ready(layout: StudyLayout, cfg: StudyConfig) -> bool:
    """Tokenizer and token cache look complete (cheap check, before sending a job for them)."""
    meta = read_json(layout.tokens_dir / "meta.json")
    if not meta or meta.get("data_hash") != cfg.hash("data"):
        return False
    if cfg.tokenizer.checkpoint:
        return (layout.tokenizer_dir / "metrics.json").exists()
    from varscale.train.tokenizer import existing_complete

    return existing_complete(layout.root, cfg) is not None


def _interrupt_on_term(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="varscale run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("study", help="study folder (with study.yaml)")
    ap.add_argument("--executor", choices=["local", "torchrun", "slurm"], help="default: execution.executor")
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
    a = ap.parse_args(argv)

    cfg = load_study_for_cli(a.study)
    if cfg is None:
        return 2
    layout = StudyLayout.of(a.study)
    ex = cfg.execution
    name = a.executor or ex.executor
    parallel = a.parallel or ex.parallel
    nproc = a.nproc or ex.nproc_per_node
    threads = a.threads or ex.threads
    old_term = signal.signal(signal.SIGTERM, _interrupt_on_term)
    progress = Progress(a.progress)
    t0 = time.time()
    try:
        return _run(a, cfg, layout, name, parallel, threads, nproc, progress, t0)
    except KeyboardInterrupt:
        say("interrupted; 'varscale run' again resumes where this one stopped")
        return 130
    finally:
        progress.close()
        signal.signal(signal.SIGTERM, old_term)


def _run(a: argparse.Namespace, cfg: StudyConfig, layout: StudyLayout, name: str, parallel: int,
         threads: Optional[int], nproc: int, progress: Progress, t0: float) -> int:
    from varscale.grid.cells import PlanError, plan_cells, write_cell
    from varscale.grid.plan import write_plan

    say(f"study {cfg.name} ({layout.root}): config {cfg.hash()}")
    try:
        cells = plan_cells(cfg, layout.root)
    except PlanError as e:
        print(f"varscale run: {e}", file=sys.stderr)
        return 2
    if a.cells:
        cells = [c for c in cells if fnmatch.fnmatch(c.run_id, a.cells)]
        if not cells:
            print(f"varscale run: no cell matches '{a.cells}'", file=sys.stderr)
            return 2
    everything = cells if not a.cells else plan_cells(cfg, layout.root)
    old_plan = read_json(layout.plan_json, {}) or {}
    if old_plan.get("config_hash") != cfg.hash() or \
            [c.get("run_id") for c in old_plan.get("cells", [])] != [c.run_id for c in everything]:
        write_plan(layout, cfg, everything)  # keep a richer plan.json from 'varscale plan' if current

    worked = False
    try:
        executor = make_executor(name, cfg, layout, parallel, threads, nproc, a.cluster)
    except RuntimeError as e:  # submitit: no srun on this machine
        print(f"varscale run: cannot use the {name} executor here: {e}\n"
              f"  (--cluster local runs the same submitit path on this machine; --executor local runs cells here)",
              file=sys.stderr)
        return 2
    if not a.only_cells:
        try:
            if isinstance(executor, X.SlurmExecutor) and not a.prepare_here and not _inputs_ready(layout, cfg):
                worked |= executor.prepare(layout.root, say)
            else:
                worked |= stage_tokenizer(layout, cfg)
                worked |= stage_tokens(layout, cfg)
        except Exception as e:  # noqa: BLE001 - one line here, the whole story in a file
            import traceback

            tb = layout.root / "prepare.traceback.txt"
            tb.write_text(traceback.format_exc())
            print(f"varscale run: preparing the tokenizer / token cache FAILED: {type(e).__name__}: {e}\n"
                  f"  (traceback in {tb}); no cell was started", file=sys.stderr)
            return 1
    try:
        for c in cells:
            write_cell(layout.root, c)
    except PlanError as e:
        print(f"varscale run: {e}", file=sys.stderr)
        return 2
    res = run_cells(layout, cells, executor, progress)
    if res.interrupted:
        say("interrupted; 'varscale run' again resumes where this one stopped")
        return 130

    ok_analysis = True
    ids = [c.run_id for c in cells]
    n_done = len(res.done) + len(res.already)
    worked |= bool(res.done or res.failed or res.diverged)
    if a.only_cells or a.no_analysis or a.cells:
        why = "--only-cells" if a.only_cells else "--no-analysis" if a.no_analysis else "--cells runs a subset"
        say(f"fit, figures: not run ({why})")
    else:
        if n_done:
            for stage, module in (("fit", "analysis.report"), ("figures", "analysis.figures")):
                ok, w = stage_analysis(layout, stage, module, ids)
                ok_analysis &= ok
                worked |= w
        else:
            say("fit, figures: no finished cell to analyse; skipped")

    summary = f"{n_done}/{len(cells)} cells done"
    if res.diverged:
        summary += f", {len(res.diverged)} diverged ({', '.join(res.diverged)})"
    if res.blocked:
        summary += f", {len(res.blocked)} not run (stable run unfinished)"
    say(f"summary: {summary}; {time.time() - t0:.1f} s")
    if res.failed or res.blocked:
        say("FAILED cells: " + ", ".join(res.failed + res.blocked)
            + f" (tracebacks in {layout.cells_dir}/<run_id>/traceback.txt); "
              "'varscale run' again retries them")
        return 1
    if not ok_analysis:
        return 1
    if not worked:
        partial = a.only_cells or a.no_analysis or a.cells
        say("nothing to do: " + ("every selected cell is finished" if partial else "every stage of the study is complete"))
    return 0
