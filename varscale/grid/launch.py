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

import fnmatch
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from varscale.config import StudyConfig
from varscale.grid import executors as X
from varscale.grid.lock import FileLock, describe
from varscale.grid.progress import Progress, say
from varscale.grid.stages import ANALYSIS_STAGES, prepare_here as _prepare_here, stage_analysis
from varscale.grid.status import cell_state
from varscale.schema import CellLayout, StudyLayout, read_json

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


def run_cells(layout: StudyLayout, cells: list[Any], executor: X.Executor, progress: Progress,
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
            loss = f", L_avg {st.loss_avg:.4f}" if st.loss_avg is not None else ""
            say(f"[{progress.count()}] {rid}: done{dt}{loss}")
        else:
            if rc == X.DONE:  # exit 0 without DONE: do not call it finished
                X.mark_failed(cell, "the cell process exited 0 but left no DONE file\n")
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
                hs = executor.submit([layout.cell(r) for r in submit])
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


# --------------------------------------------------------------------------- the chain


def run_study(cfg: StudyConfig, layout: StudyLayout, executor: str, opts: X.Options, progress: Progress,
              *, only_cells: bool = False, prepare_here: bool = False, no_analysis: bool = False,
              cells_glob: Optional[str] = None, t0: Optional[float] = None) -> int:
    """Plan, prepare (tokenizer, tokens), run the cells, then fit and figures; the exit code.

    0: every selected cell finished (or diverged) and the analysis ran or was up to date;
    1: a cell or a stage failed; 2: the study cannot be planned or the executor cannot run
    here; 130: interrupted while the cells ran (they resume on the next run). ``cells_glob``
    runs only the matching cells and skips the analysis. A ``KeyboardInterrupt`` outside the
    cells (tokenizer, tokens, analysis) propagates; the caller says so and exits 130.
    """
    from varscale.grid.cells import PlanError, plan_cells, write_cell
    from varscale.grid.plan import write_plan

    t0 = time.time() if t0 is None else t0

    say(f"study {cfg.name} ({layout.root}): config {cfg.hash()}")
    try:
        cells = plan_cells(cfg, layout.root)
    except PlanError as e:
        print(f"varscale run: {e}", file=sys.stderr)
        return 2
    if cells_glob:
        cells = [c for c in cells if fnmatch.fnmatch(c.run_id, cells_glob)]
        if not cells:
            print(f"varscale run: no cell matches '{cells_glob}'", file=sys.stderr)
            return 2
    everything = cells if not cells_glob else plan_cells(cfg, layout.root)
    old_plan = read_json(layout.plan_json, {}) or {}
    if old_plan.get("config_hash") != cfg.hash() or \
            [c.get("run_id") for c in old_plan.get("cells", [])] != [c.run_id for c in everything]:
        write_plan(layout, cfg, everything)  # keep a richer plan.json from 'varscale plan' if current

    worked = False
    try:
        ex = X.make_executor(executor, cfg, layout, opts)
    except RuntimeError as e:  # submitit: no srun on this machine
        print(f"varscale run: cannot use the {executor} executor here: {e}\n"
              f"  (--cluster local runs the same submitit path on this machine; --executor local runs cells here)",
              file=sys.stderr)
        return 2
    if not only_cells:
        try:
            worked |= _prepare_here(layout, cfg) if prepare_here else ex.prepare(layout, cfg, say)
        except Exception as e:  # noqa: BLE001 - one line here, the whole story in a file
            import traceback

            tb = layout.prepare_traceback
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
    from varscale.train.records import repair_finished

    for c in cells:  # a finished cell's damaged metrics part: written again from its checkpoints' copy
        if _terminal(layout.cell(c.run_id)) is not None and repair_finished(layout.cell(c.run_id).root, log=say):
            worked = True
            for stage, _ in ANALYSIS_STAGES:  # fitted while the part was unreadable: fit again
                layout.stage_stamp(stage).unlink(missing_ok=True)
    res = run_cells(layout, cells, ex, progress)
    if res.interrupted:
        say("interrupted; 'varscale run' again resumes where this one stopped")
        return 130

    ok_analysis = True
    ids = [c.run_id for c in cells]
    n_done = len(res.done) + len(res.already)
    worked |= bool(res.done or res.failed or res.diverged)
    if only_cells or no_analysis or cells_glob:
        why = "--only-cells" if only_cells else "--no-analysis" if no_analysis else "--cells runs a subset"
        say(f"fit, figures: not run ({why})")
    else:
        if n_done:
            for stage, module in ANALYSIS_STAGES:
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
        partial = only_cells or no_analysis or cells_glob
        say("nothing to do: " + ("every selected cell is finished" if partial else "every stage of the study is complete"))
    return 0
