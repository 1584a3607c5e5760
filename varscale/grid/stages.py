"""The one-off stages of a study: tokenizer, token cache, and the analysis stages (fit, figures).

Each runs under a study-wide lock of its own (``StudyLayout.stage_lock``: ``.lock-<stage>``),
so a second launcher waits and then finds the stage complete instead of doing it twice.
Every stage is idempotent: complete output is detected and skipped with one line, so a crash
mid-stage costs only that stage's work, redone by the next run.

The figures stage first samples Fig. 7 itself (``stage_fig7``): per depth, the finished cell
``varscale.fig7`` chooses, at its kept checkpoints nearest 20 / 60 / 100% of training, with
``varscale.sample.sample_cell``; a cell whose samples are current is skipped, and one whose
sampling fails is a warning (Fig. 7 is drawn without it, the other figures as always).

Used by ``varscale.grid.launch`` (the chain) and by the Slurm executor's preparation job
(the tokenizer and token cache run where the GPU and the dataset are). It imports neither,
so the launcher -> executors -> stages arrows all point one way.
"""
from __future__ import annotations

import hashlib
import json
import time
from typing import Any, Callable, Optional, TextIO

from varscale import fig7
from varscale.config import StudyConfig
from varscale.grid.lock import FileLock, describe
from varscale.grid.progress import say
from varscale.schema import StudyLayout, atomic_write_json, read_json


def stage_lock(layout: StudyLayout, stage: str) -> FileLock:
    return FileLock(layout.stage_lock(stage), purpose=f"stage {stage}")


def locked_stage(layout: StudyLayout, stage: str, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` holding the study-wide lock of ``stage`` (waits for another launcher)."""
    lock = stage_lock(layout, stage)
    lock.wait(on_wait=lambda info: say(f"{stage}: another launcher ({describe(info)}) is on it; waiting"))
    try:
        return fn()
    finally:
        lock.release()


def stage_tokenizer(layout: StudyLayout, cfg: StudyConfig) -> bool:
    """Train (or load and measure) the study's tokenizer; True if there was work to do."""
    from varscale.tokenizer.checkpoint import existing_complete
    from varscale.tokenizer.train import train_tokenizer

    def work() -> bool:
        if cfg.tokenizer.checkpoint:
            if layout.tokenizer_metrics.exists():
                say(f"tokenizer: using the checkpoint {cfg.tokenizer.checkpoint} (already measured); skipped")
                return False
            train_tokenizer(layout.root, cfg, log=say)  # loads and measures it, never trains
            return True
        done = existing_complete(layout.root, cfg)
        if done is not None:
            say(f"tokenizer: complete ({layout.tokenizer_ckpt}); skipped")
            return False
        say(f"tokenizer: training ({cfg.tokenizer.steps} steps) into {layout.tokenizer_dir}")
        t0 = time.time()
        train_tokenizer(layout.root, cfg, log=say)
        say(f"tokenizer: trained in {time.time() - t0:.1f} s")
        return True

    return locked_stage(layout, "tokenizer", work)


def stage_tokens(layout: StudyLayout, cfg: StudyConfig) -> bool:
    """Build the token cache if missing or stale; True if there was work to do."""
    from varscale.tokenizer.cache import build_token_cache

    meta = layout.tokens_meta

    def stamp() -> Optional[int]:
        return meta.stat().st_mtime_ns if meta.exists() else None

    before = stamp()
    # build_token_cache checks the cache against the tokenizer and data hashes and says
    # "skipping" itself when it is complete
    locked_stage(layout, "tokens", lambda: build_token_cache(layout.root, cfg, log=say))
    return stamp() != before


def prepare_here(layout: StudyLayout, cfg: StudyConfig) -> bool:
    """Tokenizer, then token cache, in this process; True if either did work."""
    worked = stage_tokenizer(layout, cfg)
    return stage_tokens(layout, cfg) or worked


def inputs_ready(layout: StudyLayout, cfg: StudyConfig) -> bool:
    """Tokenizer and token cache look complete (cheap check, before sending a job for them)."""
    from varscale.tokenizer.cache import cache_damage

    if cache_damage(layout.tokens_dir):  # encoded again by the preparation job
        return False
    meta = read_json(layout.tokens_meta)
    if not meta or meta.get("data_hash") != cfg.hash("data"):
        return False
    if cfg.tokenizer.checkpoint:
        return layout.tokenizer_metrics.exists()
    from varscale.tokenizer.checkpoint import existing_complete

    return existing_complete(layout.root, cfg) is not None


def _done_fingerprint(layout: StudyLayout, run_ids: list[str]) -> str:
    """Identity of the finished cells an analysis stage saw (ids and DONE times)."""
    items = []
    for r in sorted(run_ids):
        c = layout.cell(r)
        if c.done.exists():
            items.append((r, c.done.stat().st_mtime_ns))
    return hashlib.sha256(json.dumps(items).encode()).hexdigest()[:16]


# the analysis stages in the order the chain runs them: (stage, module with main(argv) -> int)
ANALYSIS_STAGES = (("fit", "varscale.cli.fit"), ("figures", "varscale.cli.figures"))


def stage_fig7(layout: StudyLayout, todo: list, log: TextIO) -> list[str]:
    """Sample Fig. 7 for the cells ``todo`` (``varscale.fig7.pending``), one line per cell;
    returns the run ids whose sampling failed (each a warning, its traceback in ``log``).
    ``sample_cell``'s own lines go to ``log``. Runs in this process, on the study's device
    with a cell's torch threads (``execution.threads``; on a busy 2-core machine two threads
    made the default study's sampling 10x slower than one, docs/grid.md)."""
    import contextlib
    import traceback

    if not todo:
        return []
    try:
        import torch

        from varscale.sample import resolve_device, sample_cell
    except ImportError as e:  # no torch here: the figure is drawn from the samples there are
        say(f"figures: Fig. 7 not sampled ({e}); drawn from the samples already there")
        return [c.run_id for c in todo]
    say(f"figures: sampling Fig. 7 (20/60/100% of training) for {len(todo)} run(s), one per depth")
    failed = []
    for i, c in enumerate(todo, 1):
        t0 = time.time()
        threads = torch.get_num_threads()
        try:
            if c.threads:
                torch.set_num_threads(c.threads)
            with contextlib.redirect_stderr(log):
                written = sample_cell(layout.root, c.run_id, classes=c.classes, n=1, fig7=True,
                                      device=resolve_device(c.device), log=lambda m: print(m, file=log, flush=True))
        except Exception as e:  # noqa: BLE001 - one cell's samples; the figures go on without it
            log.write(f"Fig. 7 samples of {c.run_id} failed:\n{traceback.format_exc()}")
            log.flush()
            failed.append(c.run_id)
            say(f"figures: WARNING: Fig. 7 samples of {c.run_id} failed ({type(e).__name__}: {e}); Fig. 7 is "
                f"drawn without d{c.depth}'s samples and the next 'varscale run' tries again (traceback in "
                f"{getattr(log, 'name', 'the stage log')})")
            continue
        finally:
            torch.set_num_threads(threads)
        say(f"figures: Fig. 7 [{i}/{len(todo)}] d{c.depth} {c.run_id} ({c.stale}): steps "
            f"{', '.join(str(s) for s in sorted(written))} of {c.total_steps} sampled in {time.time() - t0:.1f} s")
    return failed


def stage_analysis(layout: StudyLayout, stage: str, module: str, run_ids: list[str]) -> tuple[bool, bool]:
    """``fit`` / ``figures``: rerun only when the set of finished cells changed, and figures
    also when Fig. 7 lacks a depth's current samples (``varscale.fig7.pending``), which it
    samples first (``stage_fig7``).

    Returns (ok, worked); a failed Fig. 7 sample is a warning, not a failure. Their printed
    output goes to ``report/<stage>.log``; the report itself (fits.md, figures) is where
    they write it.
    """
    import contextlib
    import importlib

    stamp = layout.stage_stamp(stage)
    log = layout.stage_log(stage)

    def work() -> tuple[bool, bool]:
        fp = _done_fingerprint(layout, run_ids)
        old = read_json(stamp, {}) or {}
        todo = fig7.pending(layout, run_ids) if stage == "figures" else []
        if old.get("fingerprint") == fp and not todo:
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
        sampled = ""
        with open(log, "w") as f:
            if todo:
                t1 = time.time()
                failed = stage_fig7(layout, todo, f)
                sampled = (f" (Fig. 7: {len(todo) - len(failed)} of {len(todo)} run(s) sampled in "
                           f"{time.time() - t1:.1f} s)")
            f.flush()
            with contextlib.redirect_stdout(f):
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
        say(f"{stage}: done in {time.time() - t0:.1f} s on {n} finished cells{sampled}; output in {layout.report_dir} "
            f"(log {log.name})")
        return True, True

    return locked_stage(layout, stage, work)
