"""Train one grid cell: VAR-d on the study's token cache through DeepSpeed ZeRO, to its budget.

``train_cell(cell_dir)`` reads the cell's ``config.json`` and runs ``total_steps`` AdamW steps
with the paper's lr schedule, evaluating on the held-out split at the cell's ``eval_steps``.
This module is the loop; its parts are ``batches`` (which rows a step reads, its seed),
``checkpoint`` (save, resume, the WSD branch start), ``records`` (metrics rows, status.json,
the run record) and ``model`` (the tokenizer and the VAR). Everything lands in the cell folder:

    ds_config.json        the DeepSpeed config it ran with (written here, at set-up)
    status.json           state (running/done/failed/diverged), step, loss, speed; atomic
    metrics/part-*.parquet  one row per evaluation (varscale.schema.METRICS_SCHEMA)
    checkpoints/          DeepSpeed checkpoints step<NNNNNNNN>/ (+ weights.pt), LATEST.json
    record.parquet        one RUN_SCHEMA row at the end (done, diverged or failed)
    DONE                  the final state, written last: the grid skips such cells
    traceback.txt         on failure
    monitor/<backend>/    live curves when the study has a ``monitor`` section (``monitor.py``)

Crash safety: a checkpoint counts only once its manifest is written, after every rank
finished writing, and ``checkpoints/LATEST.json`` is then replaced atomically. Rerunning an
interrupted cell resumes from the newest whole checkpoint (a damaged one is skipped for the
one before it; with none left the cell trains again from step 0); evaluations after it are
recomputed and overwrite their part files (the file name is the evaluation's index), and
damaged parts before it are written again from the checkpoint's copy of the rows, so rows
are never lost or duplicated. Data order and dropout randomness are functions of (seed,
step, rank), so a resumed run is the same run. A full disk fails the cell (``DiskFull``,
naming the file) and leaves it resumable.

Exit codes: 0 done, 3 diverged (non-finite loss), 1 failed. Runs as one process without a
launcher, or as several under torchrun / deepspeed / Slurm (gloo on CPU); under torchrun each
rank is ``python -m varscale.grid.executors rank <cell_dir>``.

Test hooks (never set in a study): ``VARSCALE_INJECT_NAN_AT=<k>`` makes the training loss of
step k non-finite; ``VARSCALE_TEST_STEP_DELAY=<seconds>`` sleeps after every step so a test can
SIGKILL a tiny run mid-way.
"""
from __future__ import annotations

import contextlib
import math
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Optional

from varscale.cell import CellConfig
from varscale.schema import CellLayout, DamagedFile, DiskFull, StudyLayout, atomic_write_json
from varscale.train.batches import Batches, TeacherForcing, precompute_plan, step_seed
from varscale.train.checkpoint import CheckpointMismatch, Checkpoints
from varscale.train.model import build_model, load_vae
from varscale.train.monitor import CellMonitor, ds_keys
from varscale.train.records import ModelSize, Progress, Records, Window, mark_failed, repair_finished

EXIT_DONE, EXIT_FAILED, EXIT_DIVERGED = 0, 1, 3
# failures that are one sentence naming the file and what to do (a full disk, a damaged input,
# a checkpoint of another world size): printed as that sentence, the traceback kept in the file
EXPECTED_FAILURES = (DamagedFile, DiskFull, CheckpointMismatch)


class Diverged(Exception):
    def __init__(self, step: int, loss: float):
        super().__init__(f"non-finite training loss {loss} at step {step}")
        self.step, self.loss = step, loss


def _threads(cell: CellConfig, local_world: int) -> int:
    env = os.environ.get("VARSCALE_THREADS")
    if env:
        return max(int(env), 1)
    t = cell.execution.threads
    if t:
        return int(t)
    cores = os.cpu_count() or 1
    return max(cores // max(int(cell.execution.parallel), 1) // max(local_world, 1), 1)


class CellRun:
    """One cell's training: ``setup`` (through ``deepspeed.initialize``), ``resume``, ``run``."""

    def __init__(self, cell_dir: Path):
        self.layout = CellLayout(Path(cell_dir))
        self.cell = CellConfig.load(cell_dir)
        self.rank, self.world = 0, 1
        self.p = Progress()
        self.last_row: dict[str, Any] = {}  # the latest metrics row (the run record's finals)
        self.records: Optional[Records] = None  # set once the model is built

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        import torch

        from varscale.tokenizer.cache import TokenCache
        from varscale.train import engine as E
        from varscale.train.peak import peak_flops
        from varscale.schedule import peak_lr, schedule_of_cell

        t0 = time.perf_counter()
        c = self.cell
        tr = c.training
        self.rank, self.world, _ = E.ensure_dist_env()
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", self.world))
        self.threads = _threads(c, local_world)
        torch.set_num_threads(self.threads)
        self.device = E.pick_device(c.execution.device)
        E.init_distributed(self.device)
        if c.batch_size % self.world:
            raise ValueError(f"batch size {c.batch_size} not divisible by world size {self.world}")

        tokens_dir = StudyLayout.of(c.study_dir).tokens_dir
        self.train_cache = TokenCache(tokens_dir, "train")
        self.val_cache = TokenCache(tokens_dir, "val")
        if self.train_cache.seq_len != c.seq_len:
            raise ValueError(f"token cache has L={self.train_cache.seq_len}, the cell expects {c.seq_len}")
        self.slices = self.train_cache.scale_slices()
        self.V = int(self.train_cache.vocab_size)

        torch.manual_seed(c.seed)  # identical initial weights on every rank and every rerun
        self.vae = load_vae(c, self.device)
        model = build_model(c, self.device)
        model.set_activation_checkpointing(bool(tr.activation_checkpointing))
        size = ModelSize.of(c, model.param_counts())
        # from here on a failure still leaves a run record (the matmul peak is measured below)
        self.records = Records(self.layout, c, size, main=self.rank == 0, world=self.world, peak_flops=math.nan)

        # the one mapping from a cell's config to its schedule (the loss-curve law reads the same)
        self.schedule = schedule_of_cell(c.to_dict(), peak_lr(tr.base_lr, c.batch_size, size.width,
                                                              tr.lr_width_ref, tr.lr_width_power))
        # the lr given here is overwritten before every step (set_lr); DeepSpeed's scheduler is unused
        ds_cfg = E.ds_config(batch_size=c.batch_size, world_size=self.world,
                             zero_stage=int(tr.zero_stage), lr=self.schedule.peak * 0.005,
                             betas=tuple(tr.betas), weight_decay=tr.weight_decay,
                             grad_clip=tr.grad_clip, precision=tr.precision, device=self.device.type,
                             micro_batch_size=tr.micro_batch_size, n_params=E.trainable_params(model))
        ds_cfg.update(ds_keys(c.monitor, self.layout, c.study, log=self.records.log))  # live curves
        if self.rank == 0:
            atomic_write_json(self.layout.ds_config_json, ds_cfg)
        self.engine = E.initialize(model, ds_cfg, tr.weight_decay)
        self.monitor = CellMonitor(self.engine, self.layout, c.batch_size, main=self.rank == 0)
        self.zero_stage = int(tr.zero_stage)
        self.bf16 = tr.precision == "bf16"
        self.autocast = (lambda: torch.autocast(self.device.type, dtype=torch.bfloat16)) if self.bf16 \
            else contextlib.nullcontext

        self.batches = Batches(len(self.train_cache), c.batch_size, c.seed, self.rank, self.world,
                               micro_batch_size=tr.micro_batch_size)
        if self.engine.gradient_accumulation_steps() != self.batches.accumulation_steps:
            raise RuntimeError(f"DeepSpeed accumulates {self.engine.gradient_accumulation_steps()} micro-batches, "
                               f"the batches are cut into {self.batches.accumulation_steps}")
        pre_train, pre_val = precompute_plan(c, len(self.train_cache), len(self.val_cache), int(self.vae.Cvae))
        self.tf_train = TeacherForcing(self.vae, self.train_cache, self.device, pre_train)
        self.tf_val = TeacherForcing(self.vae, self.val_cache, self.device, pre_val,
                                     limit=c.evaluation.max_images)
        self.eval_at = {s: i for i, s in enumerate(c.eval_steps)}
        self.ckpts = Checkpoints(self.layout, c, self.engine, zero_stage=self.zero_stage, main=self.rank == 0)
        self.label_smoothing = float(tr.label_smoothing)
        self.log_every = max(int(tr.log_every), 1)

        self.records.peak_flops = peak_flops(self.device.type, "bf16" if self.bf16 else "fp32", self.threads)
        nan_at = os.environ.get("VARSCALE_INJECT_NAN_AT")
        self.nan_at = int(nan_at) if nan_at else None
        self.step_delay = float(os.environ.get("VARSCALE_TEST_STEP_DELAY", "0") or 0)
        self.p.timing["setup"] = time.perf_counter() - t0

    def resume(self) -> None:
        """Continue from this run's newest whole checkpoint (a damaged one is skipped for the one
        before it, said in the log and in status.json's ``fallback``), or start a WSD branch
        from its stable run's."""
        loaded = self.ckpts.load()
        if loaded is None:
            return
        note = loaded.fallback_note()
        if note:
            self.records.log(note)
            self.records.status(fallback=note)
        if loaded.client is None:  # every checkpoint damaged: from step 0, every row recomputed
            return
        if loaded.own:
            self.p.restore(loaded.client)
            self.last_row = self.records.restore(self.p.step, self.records.log)
            self.records.log(f"resumed from {loaded.tag}")
            self.records.status(resumed_from=loaded.tag)
        else:  # only the weights, Adam state and step; counters start afresh
            self.p.step = int(loaded.client["step"])
            self.records.log(f"branching from {self.cell.branch_from} at step {self.p.step}")

    # ------------------------------------------------------------------ one step
    def grad_norm_now(self) -> float:
        """Global pre-clipping gradient norm (DeepSpeed's is None at ZeRO-0)."""
        import torch

        if self.zero_stage == 0:
            grads = [p.grad for p in self.engine.module.parameters() if p.grad is not None]
            if not grads:
                return 0.0
            return float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))))
        return float("nan")

    def micro_loss(self, batch, step: int):
        """Forward of one micro-batch (label_B, x_BlC, target_BL): its mean token cross-entropy."""
        import torch.nn.functional as F

        label_B, x_BlC, target_BL = batch
        with self.autocast():
            logits_BLV = self.engine(label_B, x_BlC)
        loss = F.cross_entropy(logits_BLV.float().reshape(-1, self.V), target_BL.reshape(-1),
                               label_smoothing=self.label_smoothing)
        if self.nan_at is not None and step + 1 == self.nan_at:
            loss = loss * float("nan")
        return loss

    def train_step(self) -> tuple[float, float]:
        """One update; (loss, seconds). Raises ``Diverged`` before the update on a non-finite loss.

        The rank's share of the batch runs as ``batches.accumulation_steps`` micro-batches, each
        forward + ``engine.backward`` + ``engine.step``; DeepSpeed scales every micro-batch's loss
        by 1 / accumulation steps and updates only at the boundary, the last one. Micro-batches
        are equal in size, so the mean of their losses is the global batch's token mean.
        """
        import torch

        from varscale.train.engine import set_lr

        t0 = time.perf_counter()
        step = self.p.step
        micro = self.batches.micro_rows(step)
        lr = self.schedule.lr_at(step)
        set_lr(self.engine, lr)
        torch.manual_seed(step_seed(self.cell.seed, step, self.rank))
        t_data = time.perf_counter() - t0
        loss_sum = None
        for i, rows in enumerate(micro):
            t1 = time.perf_counter()
            batch = self.tf_train(rows)
            t_data += time.perf_counter() - t1
            loss = self.micro_loss(batch, step)
            loss_sum = loss.detach().clone() if loss_sum is None else loss_sum + loss.detach()
            if i < len(micro) - 1:  # not the boundary: DeepSpeed accumulates, no update
                self.engine.backward(loss)
                self.engine.step()
        loss_val = loss_sum / len(micro)
        if self.world > 1:  # every rank must agree on divergence; also the global mean loss
            torch.distributed.all_reduce(loss_val)
            loss_val /= self.world
        lv = float(loss_val)
        if not math.isfinite(lv):
            raise Diverged(step + 1, lv)
        self.engine.backward(loss)
        gn = self.grad_norm_now()
        self.engine.step()
        if self.zero_stage != 0:
            g = self.engine.get_global_grad_norm()
            gn = float(g) if g is not None else gn
        t2 = time.perf_counter()
        p = self.p
        p.timing["data"] += t_data
        p.timing["compute"] += t2 - t0 - t_data
        p.wall_s += t2 - t0
        p.grad_norm, p.lr = gn, lr
        p.step += 1
        p.since_row.add(lv, self.cell.batch_size, t2 - t0)
        return lv, t2 - t0

    def evaluate(self, eval_index: int) -> dict[str, Any]:
        """Held-out metrics now, written as metrics part ``eval_index``; the row."""
        from varscale.train.evaluate import evaluate

        t0 = time.perf_counter()
        ev = self.cell.evaluation
        m = evaluate(self.engine.module, self.val_cache, self.tf_val, batch_size=int(ev.batch_size),
                     max_images=ev.max_images, rank=self.rank, world=self.world,
                     autocast=self.autocast() if self.bf16 else None, scale_slices=self.slices)
        row = self.records.write_row(eval_index, self.p, m)
        self.monitor.evaluation(self.p.step, row)
        self.p.since_row = Window()
        self.last_row = row
        self.p.timing["eval"] += time.perf_counter() - t0
        return row

    # ------------------------------------------------------------------ the loop
    def run(self) -> int:
        self.setup()
        self.resume()
        self.monitor.resumed_at(self.p.step)  # the CSV series end where this process starts
        c, p, rec = self.cell, self.p, self.records
        rec.status(state="running", step=p.step, total_steps=c.total_steps,
                   last_test_loss_avg=self.last_row.get("test_loss_avg"), tokens_per_s=None,
                   message=None, diverged_step=None, threads=self.threads, world_size=self.world,
                   zero_stage=self.zero_stage, precision=c.training.precision)
        rec.log(f"depth {c.depth} width {rec.size.width} params {rec.size.n_params:,} | {c.total_steps} steps of "
                f"{c.batch_size} images{self.micro_note()}, {c.flops_per_step:.3g} FLOPs/step | ZeRO-{self.zero_stage} "
                f"{c.training.precision} x{self.world} rank(s), {self.threads} thread(s)")
        try:
            while p.step < c.total_steps:
                loss, dt = self.train_step()
                p.since_log.add(loss, c.batch_size, dt)
                if p.step in self.eval_at:
                    row = self.evaluate(self.eval_at[p.step])
                    rec.status(last_test_loss_avg=row["test_loss_avg"], last_eval_step=p.step)
                    rec.log(f"eval step {p.step}: test loss avg {row['test_loss_avg']:.4f} "
                            f"last {row['test_loss_last']:.4f} err avg {row['test_err_avg']:.4f} "
                            f"last {row['test_err_last']:.4f}")
                if p.step in self.ckpts.full_at or p.step in self.ckpts.weights_at:
                    self.checkpoint()
                if p.step % self.log_every == 0 or p.step == c.total_steps:
                    self.log_line()
                if self.step_delay:
                    time.sleep(self.step_delay)
        except Diverged as d:
            rec.log(f"diverged: {d}")
            self.finish("diverged", diverged_step=d.step, message=str(d))
            return EXIT_DIVERGED
        if not self.last_row or self.last_row.get("step") != p.step:
            # a cell resumed at its last step, or one whose last step is no evaluation step
            self.evaluate(len(c.eval_steps) - 1 if p.step in self.eval_at else len(c.eval_steps))
        self.finish("done")
        return EXIT_DONE

    def micro_note(self) -> str:
        """' (4 x 12 per rank, activation checkpointing)' when a step is accumulated or recomputed."""
        b, tr = self.batches, self.cell.training
        parts = [f"{b.accumulation_steps} x {b.m} per rank"] if b.accumulation_steps > 1 else []
        if tr.activation_checkpointing:
            parts.append("activation checkpointing")
        return f" ({', '.join(parts)})" if parts else ""

    def checkpoint(self) -> None:
        t0 = time.perf_counter()
        if self.p.step in self.ckpts.full_at:
            self.ckpts.save(self.p.step, self.p.client_state(), rows=self.records.copy_rows())
        else:
            self.ckpts.save_weights(self.p.step)
        self.p.timing["checkpoint"] += time.perf_counter() - t0

    def log_line(self) -> None:
        t0 = time.perf_counter()
        w = self.p.since_log
        self.monitor.train(self.p.step, w.loss_sum / max(w.n, 1), self.p.grad_norm,
                           self.records.throughput(w.images, w.seconds)["tokens_per_s"])
        self.records.log_line(self.p)
        self.p.since_log = Window()
        self.p.timing["log"] += time.perf_counter() - t0

    def finish(self, state: str, diverged_step: Optional[int] = None, message: Optional[str] = None,
               mark_done: bool = True) -> None:
        self.records.finish(state, self.p, self.last_row, diverged_step=diverged_step, message=message,
                            mark_done=mark_done)


def train_cell(cell_dir: str | os.PathLike) -> int:
    """Train (or resume) one cell; 0 done, 3 diverged, 1 failed. Never raises for a failed run."""
    layout = CellLayout(Path(cell_dir))
    done = layout.done
    if done.exists():
        state = done.read_text().strip() or "done"
        if int(os.environ.get("RANK", "0")) == 0:
            repair_finished(layout.root)  # a damaged metrics part, from the checkpoints' copies
        return EXIT_DIVERGED if state == "diverged" else EXIT_DONE
    run = None
    try:
        run = CellRun(Path(cell_dir))
        return run.run()
    except Exception as e:  # noqa: BLE001  (a grid must carry on past a failed cell)
        tb = traceback.format_exc()
        rank = int(os.environ.get("RANK", "0"))
        if rank == 0:
            try:
                message = str(e) if isinstance(e, EXPECTED_FAILURES) else f"{type(e).__name__}: {e}"
                mark_failed(layout, message, tb)
                if run is not None and run.records is not None:
                    # no DONE: a failed cell is retried (resumed) by the grid
                    run.finish("failed", message=message, mark_done=False)
            except Exception:  # noqa: BLE001
                pass
        if isinstance(e, EXPECTED_FAILURES):  # its sentence says it all; the traceback is in the file
            print(f"[{layout.run_id}] failed: {e}", file=sys.stderr)
        else:
            print(tb, file=sys.stderr)
        return EXIT_FAILED
