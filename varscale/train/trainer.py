"""Train one grid cell: VAR-d on the study's token cache through DeepSpeed ZeRO, to its budget.

``varscale train runs/<study>/cells/<run_id>`` (or ``train_cell(cell_dir)``) reads the cell's
``config.json`` and runs ``total_steps`` AdamW steps with the paper's lr schedule, evaluating on
the held-out split at the cell's ``eval_steps``. Everything it writes lives in the cell folder:

    ds_config.json        the DeepSpeed config it ran with
    status.json           state (running/done/failed/diverged), step, loss, speed; atomic
    metrics/part-*.parquet  one row per evaluation (varscale.schema.METRICS_SCHEMA)
    checkpoints/          DeepSpeed checkpoints step<NNNNNNNN>/ (+ weights.pt), LATEST.json
    record.parquet        one RUN_SCHEMA row at the end (done, diverged or failed)
    DONE                  the final state, written last: the grid skips such cells
    traceback.txt         on failure

Crash safety: a checkpoint counts only once ``checkpoints/LATEST.json`` names it, and that
file is replaced atomically after every rank finished writing. Rerunning an interrupted cell
resumes from there; evaluations after it are recomputed and overwrite their part files (the
file name is the evaluation's index), so rows are never lost or duplicated. Data order and
dropout randomness are functions of (seed, step, rank), so a resumed run is the same run.

Exit codes: 0 done, 3 diverged (non-finite loss), 1 failed. Runs as one process without a
launcher, or as several under torchrun / deepspeed / Slurm (gloo on CPU).

Test hooks (never set in a study): ``VARSCALE_INJECT_NAN_AT=<k>`` makes the training loss of
step k non-finite; ``VARSCALE_TEST_STEP_DELAY=<seconds>`` sleeps after every step so a test can
SIGKILL a tiny run mid-way.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import math
import os
import shutil
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Optional

import numpy as np

from varscale.cell import CellConfig
from varscale.models import var_overrides
from varscale.schema import (CellLayout, StudyLayout, atomic_write_bytes, atomic_write_json, read_json, write_part,
                             write_record)

EXIT_DONE, EXIT_FAILED, EXIT_DIVERGED = 0, 1, 3
KEEP_CHECKPOINTS = 2
# Fig. 7 (samples at 20%, 60% and 100% of training): at these fractions of a run the model
# weights alone are kept (``checkpoints/step<N>/weights.pt``, no optimizer state), so that
# ``varscale sample --fig7`` has them without keeping full DeepSpeed checkpoints
SNAPSHOT_FRACTIONS = (0.2, 0.6)


def snapshot_steps(total_steps: int) -> set[int]:
    return {max(1, round(f * total_steps)) for f in SNAPSHOT_FRACTIONS} if total_steps >= 5 else set()


class Diverged(Exception):
    def __init__(self, step: int, loss: float):
        super().__init__(f"non-finite training loss {loss} at step {step}")
        self.step, self.loss = step, loss


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _threads(cell: CellConfig, local_world: int) -> int:
    env = os.environ.get("VARSCALE_THREADS")
    if env:
        return max(int(env), 1)
    t = cell.execution.threads
    if t:
        return int(t)
    cores = os.cpu_count() or 1
    return max(cores // max(int(cell.execution.parallel), 1) // max(local_world, 1), 1)


def _step_seed(seed: int, step: int, rank: int) -> int:
    # dropout / drop-path / class-dropout randomness as a function of (seed, step, rank)
    return (seed * 1_000_003 + step * 7919 + rank * 104_729) % (2 ** 63)


# --------------------------------------------------------------------------- data


class Batches:
    """The global batch of step s: rows ``perm_e[p % N]`` for positions p in [sB, (s+1)B).

    ``perm_e`` is a permutation of the train split drawn from (seed, epoch e = p // N), so the
    order is a pure function of the step (resumable) and of nothing about the world size; rank
    r takes the r-th contiguous slice of the global batch.
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        self.n, self.B, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self.b = batch_size // world
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            if len(self._perms) > 2:
                self._perms.pop(min(self._perms))
            self._perms[epoch] = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        return self._perms[epoch]

    def global_rows(self, step: int) -> np.ndarray:
        pos = np.arange(step * self.B, (step + 1) * self.B, dtype=np.int64)
        epochs = pos // self.n
        out = np.empty_like(pos)
        for e in np.unique(epochs):
            m = epochs == e
            out[m] = self._perm(int(e))[pos[m] % self.n]
        return out

    def rows(self, step: int) -> np.ndarray:
        return self.global_rows(step)[self.rank * self.b:(self.rank + 1) * self.b]


class TeacherForcing:
    """Token rows -> (label_B, x_BlC, target_BL): VAR's teacher-forcing input from the frozen VQVAE.

    With ``precompute`` the whole split's inputs are computed once (a (N, L-1, Cvae) fp32 array
    in memory) and batches are slices of it: at small depths the VQVAE's upsample + phi-conv
    pass otherwise costs a sizeable share of a step.
    """

    def __init__(self, vae, cache, device, precompute: bool = False, chunk: int = 1024,
                 limit: Optional[int] = None):
        import torch

        self.vae, self.cache, self.device = vae, cache, device
        self.slices = cache.scale_slices()
        self.x_NlC = None
        if precompute:
            parts = []
            n = len(cache) if limit is None else min(limit, len(cache))
            for s in range(0, n, chunk):
                rows = np.arange(s, min(s + chunk, n))
                parts.append(self._compute(cache.batch(rows)[0]).cpu())
            self.x_NlC = torch.cat(parts) if parts else None

    def _compute(self, idx_BL: np.ndarray):
        import torch

        with torch.no_grad():
            idx = torch.from_numpy(idx_BL).to(self.device)
            return self.vae.idx_to_var_input([idx[:, sl] for sl in self.slices]).float()

    def __call__(self, rows: np.ndarray):
        import torch

        idx_BL, label_B = self.cache.batch(rows)
        if self.x_NlC is not None and int(np.max(rows)) < len(self.x_NlC):
            x_BlC = self.x_NlC[torch.from_numpy(np.asarray(rows))].to(self.device)
        else:
            x_BlC = self._compute(idx_BL)
        return (torch.from_numpy(label_B).to(self.device), x_BlC,
                torch.from_numpy(idx_BL).to(self.device))


def load_vae(cell: CellConfig, device=None):
    """The study's frozen tokenizer (``varscale.train.tokenizer.load_tokenizer``)."""
    from varscale.train.tokenizer import load_tokenizer

    vae = load_tokenizer(cell.study_dir, cell.study_config())
    vae = vae.to(device) if device is not None else vae
    vae.eval()
    for p in vae.parameters():
        p.requires_grad_(False)
    return vae


def build_model(cell: CellConfig, device=None):
    from varscale.models import build_var

    return build_var(cell.preset, cell.depth, device=device, num_classes=cell.num_classes,
                     **var_overrides(cell.model))


# --------------------------------------------------------------------------- checkpoints


def _tag(step: int) -> str:
    return CellLayout.checkpoint_tag(step)


def read_latest(cell: CellLayout) -> Optional[dict]:
    return read_json(cell.latest_json)


def load_cell_model(cell_dir: str | os.PathLike, step: Optional[int] = None, device="cpu"):
    """(vae, var, cell) with the weights of the latest (or step ``step``) checkpoint, no DeepSpeed."""
    import torch

    cell_dir = Path(cell_dir)
    cell = CellConfig.load(cell_dir)
    ckpt = CellLayout(cell_dir).checkpoints
    if step is None:
        latest = read_latest(CellLayout(cell_dir))
        if latest is None:
            raise FileNotFoundError(f"no complete checkpoint in {ckpt}")
        step = int(latest["step"])
    path = CellLayout(cell_dir).weights(step)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint for step {step} in {ckpt}")
    vae = load_vae(cell, device)
    var = build_model(cell, device)
    var.load_state_dict(torch.load(path, map_location=device, weights_only=True))
    var.eval()
    return vae, var, cell


# --------------------------------------------------------------------------- the run


class CellRun:
    def __init__(self, cell_dir: Path):
        self.layout = CellLayout(Path(cell_dir))
        self.cell = CellConfig.load(cell_dir)
        self.rank = 0
        self.world = 1
        self.state: dict[str, Any] = {"state": "running", "step": 0, "total_steps": self.cell.total_steps}
        self.timing = {"compute": 0.0, "data": 0.0, "eval": 0.0, "checkpoint": 0.0, "log": 0.0,
                       "setup": 0.0}
        self.last_row: dict[str, Any] = {}

    # ------------------------------------------------------------------ io helpers
    @property
    def main(self) -> bool:
        return self.rank == 0

    def status(self, **kw) -> None:
        self.state.update(kw)
        if self.main:
            self.state.update(updated=_now(), pid=os.getpid(), host=socket.gethostname())
            atomic_write_json(self.layout.status_json, self.state)

    def log(self, msg: str) -> None:
        if self.main:
            print(f"[{self.cell.run_id}] {msg}", flush=True)

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        import torch

        from varscale.train import engine as E
        from varscale.train.schedule import Schedule, peak_lr
        from varscale.data.tokens import TokenCache

        t0 = time.perf_counter()
        c = self.cell
        tr, ev = c.training, c.evaluation
        self.rank, self.world, local = E.ensure_dist_env()
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

        torch.manual_seed(c.seed)  # identical initial weights on every rank and every rerun
        self.vae = load_vae(c, self.device)
        model = build_model(c, self.device)
        counts = model.param_counts()
        self.n_params = int(counts["n_params"])
        self.n_params_blocks = int(counts["n_params_blocks"])
        self.n_params_nonemb = int(counts["n_params_nonembedding"])
        self.width, self.heads = c.width, c.depth
        self.V = int(self.train_cache.vocab_size)

        self.peak = peak_lr(tr.base_lr, c.batch_size, self.width, tr.lr_width_ref, tr.lr_width_power)
        self.schedule = Schedule(self.peak, c.total_steps, tr.warmup_frac, tr.hold_frac,
                                 tr.final_lr_ratio, kind=c.schedule,
                                 decay_steps=c.decay_steps)
        self.ds_cfg = E.ds_config(batch_size=c.batch_size, world_size=self.world,
                                  zero_stage=int(tr.zero_stage), lr=self.peak * 0.005,
                                  betas=tuple(tr.betas), weight_decay=tr.weight_decay,
                                  grad_clip=tr.grad_clip, precision=tr.precision,
                                  device=self.device.type)
        if self.main:
            atomic_write_json(self.layout.ds_config_json, self.ds_cfg)
        self.engine = E.initialize(model, self.ds_cfg, tr.weight_decay)
        self.zero_stage = int(tr.zero_stage)
        self.bf16 = tr.precision == "bf16"
        self.autocast = (lambda: torch.autocast(self.device.type, dtype=torch.bfloat16)) if self.bf16 \
            else contextlib.nullcontext

        self.batches = Batches(len(self.train_cache), c.batch_size, c.seed, self.rank, self.world)
        pre_train, pre_val = self.precompute_plan()
        self.tf_train = TeacherForcing(self.vae, self.train_cache, self.device, pre_train)
        self.tf_val = TeacherForcing(self.vae, self.val_cache, self.device, pre_val,
                                     limit=c.evaluation.max_images)
        self.eval_at = {s: i for i, s in enumerate(c.eval_steps)}
        self.ckpt_at = set(c.checkpoint_steps) | set(c.keep_steps)
        self.snap_at = snapshot_steps(c.total_steps) - self.ckpt_at
        self.label_smoothing = float(tr.label_smoothing)
        self.log_every = max(int(tr.log_every), 1)

        from varscale.train.peak import peak_flops
        self.peak_flops = peak_flops(self.device.type, "bf16" if self.bf16 else "fp32", self.threads)
        nan_at = os.environ.get("VARSCALE_INJECT_NAN_AT")
        self.nan_at = int(nan_at) if nan_at else None
        self.step_delay = float(os.environ.get("VARSCALE_TEST_STEP_DELAY", "0") or 0)
        self.timing["setup"] = time.perf_counter() - t0

    def precompute_plan(self) -> tuple[bool, bool]:
        """Whether to precompute the teacher-forcing inputs of (train, val) once.

        The VQVAE's pass costs ~15-20% of a step at depth 1-2 on CPU (docs/training.md), so
        it is done once per image when that is cheaper than once per use (train: the run sees
        at least the whole split; val: always, it is evaluated repeatedly) and the array fits
        in ``VARSCALE_PRECOMPUTE_MAX_GB`` (default 2). ``VARSCALE_PRECOMPUTE_INPUT=0/1`` forces it.
        Decided from the cell's config only, so a resumed run decides the same way.
        """
        force = os.environ.get("VARSCALE_PRECOMPUTE_INPUT")
        if force in ("0", "1"):
            return force == "1", force == "1"
        c = self.cell
        cvae = int(self.vae.Cvae)
        cap = float(os.environ.get("VARSCALE_PRECOMPUTE_MAX_GB", "2")) * 2 ** 30
        size = lambda n: n * (c.seq_len - 1) * cvae * 4  # noqa: E731  (fp32 bytes, generous L-1)
        n_tr, n_val = len(self.train_cache), len(self.val_cache)
        ev = c.evaluation.max_images
        n_val = min(n_val, ev) if ev else n_val
        train = c.total_steps * c.batch_size >= n_tr and size(n_tr) + size(n_val) <= cap
        val = size(n_val) <= cap
        return train, val

    # ------------------------------------------------------------------ checkpoints
    def client_state(self) -> dict[str, Any]:
        return {"step": self.step, "acc": dict(self.acc), "wall_s": self.wall_s,
                "grad_norm": self.grad_norm, "last_lr": self.last_lr,
                "timing": dict(self.timing), "varscale_version": 1}

    def save(self) -> None:
        import torch
        import torch.distributed as dist

        t0 = time.perf_counter()
        ckpt = self.layout.checkpoints
        tag = _tag(self.step)
        if self.main:
            ckpt.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(ckpt / tag, ignore_errors=True)  # a half-written try from before a crash
        dist.barrier()
        self.engine.save_checkpoint(str(ckpt), tag=tag, client_state=self.client_state(), save_latest=False)
        sd = self.full_state_dict()
        if self.main:
            buf = _torch_bytes(sd)
            atomic_write_bytes(self.layout.weights(self.step), buf)
        dist.barrier()
        if self.main:
            prev = read_latest(self.layout) or {"tags": []}
            tags = [t for t in prev.get("tags", []) if t != tag] + [tag]
            atomic_write_json(self.layout.latest_json, {"step": self.step, "tag": tag, "tags": tags[-KEEP_CHECKPOINTS:],
                                                     "time": _now()})
            keep = set(tags[-KEEP_CHECKPOINTS:]) | {_tag(s) for s in self.cell.keep_steps} \
                | {_tag(s) for s in snapshot_steps(self.cell.total_steps)}
            for d in ckpt.iterdir():
                if d.is_dir() and d.name.startswith("step") and d.name not in keep:
                    shutil.rmtree(d, ignore_errors=True)
        self.timing["checkpoint"] += time.perf_counter() - t0

    def save_snapshot(self) -> None:
        """Model weights only at ``step<N>/weights.pt`` (for samples; never resumed from)."""
        t0 = time.perf_counter()
        sd = self.full_state_dict()  # a collective at ZeRO-3: every rank calls it
        if self.main:
            atomic_write_bytes(self.layout.weights(self.step), _torch_bytes(sd))
        self.timing["checkpoint"] += time.perf_counter() - t0

    def full_state_dict(self) -> Optional[dict]:
        """fp32 model weights on rank 0 (gathered from the partitions at ZeRO-3)."""
        module = self.engine.module
        if self.zero_stage == 3:
            import deepspeed

            with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
                return {k: v.detach().clone().cpu() for k, v in module.state_dict().items()} if self.main else None
        return {k: v.detach().clone().cpu() for k, v in module.state_dict().items()} if self.main else None

    def resume(self) -> None:
        ckpt = self.layout.checkpoints
        latest = read_latest(self.layout)
        src, tag = None, None
        if latest is not None:
            src, tag = ckpt, latest["tag"]
        elif self.cell.branch_from:  # WSD decay branch: start from the stable run's checkpoint
            stable = StudyLayout.of(self.cell.study_dir).cell(self.cell.branch_from)
            parent = stable.checkpoints
            tag = _tag(int(self.cell.branch_step))
            if not stable.weights(int(self.cell.branch_step)).exists():
                raise FileNotFoundError(f"stable run {self.cell.branch_from} has no checkpoint at step "
                                        f"{self.cell.branch_step} yet; run it first")
            src = parent
        if src is None:
            return
        _, client = self.engine.load_checkpoint(str(src), tag=tag, load_optimizer_states=True,
                                                load_lr_scheduler_states=False)
        if client is None:
            raise RuntimeError(f"could not load checkpoint {src / tag}")
        self.step = int(client["step"])
        if src == ckpt:
            self.acc = dict(client["acc"])
            self.wall_s = float(client["wall_s"])
            self.grad_norm = client["grad_norm"]
            self.last_lr = client["last_lr"]
            for k, v in client.get("timing", {}).items():
                if k != "setup":
                    self.timing[k] = v
            self.last_row = self._last_written_row()
            self.log(f"resumed from {tag}")
        else:
            self.log(f"branching from {self.cell.branch_from} at step {self.step}")

    def _last_written_row(self) -> dict[str, Any]:
        """The metrics row of the last evaluation at or before the resumed step, if written."""
        import pyarrow.parquet as pq

        done = [i for s, i in self.eval_at.items() if s <= self.step]
        if not done:
            return {}
        path = self.layout.metrics_part(max(done))
        try:
            return pq.read_table(path).to_pylist()[0]
        except (OSError, IndexError):
            return {}

    # ------------------------------------------------------------------ train loop
    def grad_norm_now(self) -> float:
        """Global pre-clipping gradient norm (DeepSpeed's is None at ZeRO-0)."""
        import torch

        if self.zero_stage == 0:
            grads = [p.grad for p in self.engine.module.parameters() if p.grad is not None]
            if not grads:
                return 0.0
            return float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))))
        return float("nan")

    def train_step(self) -> tuple[float, float]:
        import torch
        import torch.nn.functional as F

        from varscale.train.engine import set_lr

        t0 = time.perf_counter()
        step = self.step
        label_B, x_BlC, target_BL = self.tf_train(self.batches.rows(step))
        lr = self.schedule.lr_at(step)
        set_lr(self.engine, lr)
        torch.manual_seed(_step_seed(self.cell.seed, step, self.rank))
        t1 = time.perf_counter()
        with self.autocast():
            logits_BLV = self.engine(label_B, x_BlC)
        loss = F.cross_entropy(logits_BLV.float().reshape(-1, self.V), target_BL.reshape(-1),
                               label_smoothing=self.label_smoothing)
        if self.nan_at is not None and step + 1 == self.nan_at:
            loss = loss * float("nan")
        loss_val = loss.detach()
        if self.world > 1:  # every rank must agree on divergence; also the global mean loss
            loss_val = loss_val.clone()
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
        self.timing["data"] += t1 - t0
        self.timing["compute"] += t2 - t1
        self.wall_s += t2 - t0
        self.grad_norm, self.last_lr = gn, lr
        self.step += 1
        a = self.acc
        a["loss_sum"] += lv
        a["n"] += 1
        a["images"] += self.cell.batch_size
        a["time"] += t2 - t0
        return lv, t2 - t0

    def throughput(self, images: float, seconds: float) -> dict[str, float]:
        ips = images / seconds if seconds > 0 else float("nan")
        fps = ips * self.cell.flops_per_image
        return {"images_per_s": ips, "tokens_per_s": ips * self.cell.seq_len, "flops_per_s": fps,
                "mfu": fps / (self.peak_flops * self.world)}

    def evaluate_row(self, eval_index: int) -> dict[str, Any]:
        from varscale.train.evaluate import evaluate

        t0 = time.perf_counter()
        ev = self.cell.evaluation
        m = evaluate(self.engine.module, self.val_cache, self.tf_val, batch_size=int(ev.batch_size),
                     max_images=ev.max_images, rank=self.rank, world=self.world,
                     autocast=self.autocast() if self.bf16 else None, scale_slices=self.slices)
        c, a = self.cell, self.acc
        tokens = self.step * c.batch_size * c.seq_len
        row = {
            "study": c.study, "run_id": c.run_id, "depth": c.depth, "width": self.width,
            "heads": self.heads, "seed": c.seed, "budget_flops": c.budget_flops,
            "budget_tokens": c.budget_tokens, "budget_unit": c.budget_unit, "n_params": self.n_params,
            "n_params_blocks": self.n_params_blocks, "n_params_nonembedding": self.n_params_nonemb,
            "step": self.step, "total_steps": c.total_steps, "images_seen": self.step * c.batch_size,
            "tokens_seen": tokens, "flops": float(self.step * c.flops_per_step),
            "flops_6nd": 6.0 * self.n_params * tokens, "wall_s": self.wall_s, "lr": self.last_lr,
            **{k: v for k, v in m.items() if k != "eval_images"},
            "train_loss": a["loss_sum"] / a["n"] if a["n"] else None,
            "grad_norm": self.grad_norm,
            **self.throughput(a["images"], a["time"]),
            "time": _dt.datetime.now(_dt.timezone.utc),
        }
        if self.main:
            write_part(self.layout.metrics_dir, [row], eval_index)
        self.acc = {"loss_sum": 0.0, "n": 0, "images": 0, "time": 0.0}
        self.last_row = row
        self.timing["eval"] += time.perf_counter() - t0
        return row

    def log_line(self, loss: float) -> None:
        t0 = time.perf_counter()
        L = self.log_acc
        tp = self.throughput(L["images"], L["time"])
        self.log(f"step {self.step}/{self.cell.total_steps} loss {L['loss'] / max(L['n'], 1):.4f} "
                 f"lr {self.last_lr:.3g} gnorm {self.grad_norm:.3g} | {tp['images_per_s']:.0f} img/s "
                 f"{tp['tokens_per_s']:.0f} tok/s {tp['flops_per_s'] / 1e9:.2f} GFLOP/s mfu {100 * tp['mfu']:.1f}%")
        self.status(step=self.step, tokens_per_s=tp["tokens_per_s"], train_loss=L["loss"] / max(L["n"], 1))
        self.log_acc = {"loss": 0.0, "n": 0, "images": 0, "time": 0.0}
        self.timing["log"] += time.perf_counter() - t0

    def run(self) -> int:
        self.step = 0
        self.acc = {"loss_sum": 0.0, "n": 0, "images": 0, "time": 0.0}
        self.wall_s = 0.0
        self.grad_norm = float("nan")
        self.last_lr = 0.0
        self.setup()
        self.resume()
        c = self.cell
        self.status(state="running", step=self.step, total_steps=c.total_steps,
                    last_test_loss_avg=self.last_row.get("test_loss_avg"), tokens_per_s=None,
                    message=None, diverged_step=None, threads=self.threads, world_size=self.world,
                    zero_stage=self.zero_stage, precision=c.training.precision)
        self.log(f"depth {c.depth} width {self.width} params {self.n_params:,} | {c.total_steps} steps of "
                 f"{c.batch_size} images, {c.flops_per_step:.3g} FLOPs/step | ZeRO-{self.zero_stage} "
                 f"{c.training.precision} x{self.world} rank(s), {self.threads} thread(s)")
        self.log_acc = {"loss": 0.0, "n": 0, "images": 0, "time": 0.0}
        try:
            while self.step < c.total_steps:
                loss, dt = self.train_step()
                L = self.log_acc
                L["loss"] += loss
                L["n"] += 1
                L["images"] += c.batch_size
                L["time"] += dt
                if self.step in self.eval_at:
                    row = self.evaluate_row(self.eval_at[self.step])
                    self.status(last_test_loss_avg=row["test_loss_avg"], last_eval_step=self.step)
                    self.log(f"eval step {self.step}: test loss avg {row['test_loss_avg']:.4f} "
                             f"last {row['test_loss_last']:.4f} err avg {row['test_err_avg']:.4f} "
                             f"last {row['test_err_last']:.4f}")
                if self.step in self.ckpt_at:
                    self.save()
                elif self.step in self.snap_at:
                    self.save_snapshot()
                if self.step % self.log_every == 0 or self.step == c.total_steps:
                    self.log_line(loss)
                if self.step_delay:
                    time.sleep(self.step_delay)
        except Diverged as d:
            self.log(f"diverged: {d}")
            self.finish("diverged", diverged_step=d.step, message=str(d))
            return EXIT_DIVERGED
        if not self.last_row or self.last_row.get("step") != self.step:
            self.evaluate_row(len(c.eval_steps) - 1 if self.step in self.eval_at else len(c.eval_steps))
        self.finish("done")
        return EXIT_DONE

    def finish(self, state: str, diverged_step: Optional[int] = None, message: Optional[str] = None,
               mark_done: bool = True) -> None:
        c, r = self.cell, self.last_row
        total = self.wall_s
        tp = self.throughput(self.step * c.batch_size, self.timing["compute"] + self.timing["data"]) \
            if self.step else {"tokens_per_s": None, "flops_per_s": None, "mfu": None}
        record = {
            "study": c.study, "run_id": c.run_id, "depth": c.depth, "width": self.width,
            "heads": self.heads, "seed": c.seed, "budget_flops": c.budget_flops,
            "budget_tokens": c.budget_tokens, "budget_unit": c.budget_unit, "n_params": self.n_params,
            "n_params_blocks": self.n_params_blocks, "n_params_nonembedding": self.n_params_nonemb,
            "status": state, "steps": self.step, "tokens_seen": self.step * c.batch_size * c.seq_len,
            "flops": float(self.step * c.flops_per_step),
            "flops_6nd": 6.0 * self.n_params * self.step * c.batch_size * c.seq_len, "wall_s": total,
            "final_test_loss_avg": r.get("test_loss_avg"), "final_test_loss_last": r.get("test_loss_last"),
            "final_test_err_avg": r.get("test_err_avg"), "final_test_err_last": r.get("test_err_last"),
            "tokens_per_s": tp["tokens_per_s"], "flops_per_s": tp["flops_per_s"], "mfu": tp["mfu"],
            "diverged_step": diverged_step, "message": message,
        }
        if self.main:
            write_record(self.layout, record)
        self.status(state=state, step=self.step, diverged_step=diverged_step, message=message,
                    timing={k: round(v, 3) for k, v in self.timing.items()})
        if self.main and mark_done:
            atomic_write_bytes(self.layout.done, (state + "\n").encode())


def _torch_bytes(obj) -> bytes:
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


# --------------------------------------------------------------------------- entry points


def train_cell(cell_dir: str | os.PathLike) -> int:
    """Train (or resume) one cell; 0 done, 3 diverged, 1 failed. Never raises for a failed run."""
    layout = CellLayout(Path(cell_dir))
    done = layout.done
    if done.exists():
        state = done.read_text().strip() or "done"
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
                atomic_write_bytes(layout.traceback, tb.encode())
                prev = read_json(layout.status_json, {}) or {}
                prev.update(state="failed", message=f"{type(e).__name__}: {e}", updated=_now(),
                            pid=os.getpid(), host=socket.gethostname())
                atomic_write_json(layout.status_json, prev)
                if run is not None and hasattr(run, "n_params"):
                    # no DONE: a failed cell is retried (resumed) by the grid
                    run.finish("failed", message=f"{type(e).__name__}: {e}", mark_done=False)
            except Exception:  # noqa: BLE001
                pass
        print(tb, file=sys.stderr)
        return EXIT_FAILED


def main(argv: Optional[list[str]] = None) -> int:
    import faulthandler
    import signal

    if hasattr(signal, "SIGUSR1"):  # `kill -USR1 <pid>` prints every thread's stack: for hung runs
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    ap = argparse.ArgumentParser(prog="varscale train", description="train one cell (a cells/<run_id> folder)")
    ap.add_argument("cell_dir")
    args = ap.parse_args(argv)
    if not CellLayout(Path(args.cell_dir)).config_json.exists():
        print(f"varscale train: no config.json in {args.cell_dir}", file=sys.stderr)
        return 2
    return train_cell(args.cell_dir)


if __name__ == "__main__":
    sys.exit(main())
