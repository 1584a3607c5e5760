"""DeepSpeed plumbing: the distributed environment, the ZeRO config, the optimizer groups.

A cell runs as one plain process (``varscale train <cell>``) or as several under torchrun /
the deepspeed launcher / Slurm. DeepSpeed needs RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR
and MASTER_PORT; without them it falls back to mpi4py discovery, so a lone process sets them
itself (picking a free port). On CPU the backend is gloo.
"""
from __future__ import annotations

import os
import socket
from typing import Any, Optional

import torch

from varscale.models.memory import DS_REDUCE_BUCKET, bucket_elements  # noqa: F401  (re-exported)

# parameters the official code keeps out of weight decay (train.py / lr_control.py), besides
# every 1-D tensor and bias
NO_DECAY_KEYS = ("pos_1LC", "pos_start", "lvl_embed", "scale_mul", "ada_gss", "gamma", "beta")
# DeepSpeed's defaults (elements): the reduce and allgather buckets of ZeRO 1-3 (the reduce
# bucket is allocated whole, 2 GB of fp32 per rank, however small the model; the memory model
# counts what bucket_elements makes of it) and ZeRO-3's prefetch bucket
DS_BUCKET = DS_REDUCE_BUCKET
DS_PREFETCH_BUCKET = 50_000_000


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_dist_env() -> tuple[int, int, int]:
    """Fill in a single-process distributed environment if no launcher did; (rank, world, local)."""
    if "WORLD_SIZE" not in os.environ and "SLURM_PROCID" in os.environ and "SLURM_NTASKS" in os.environ:
        # plain srun without torchrun: Slurm's variables are the truth
        os.environ["RANK"] = os.environ["SLURM_PROCID"]
        os.environ["WORLD_SIZE"] = os.environ["SLURM_NTASKS"]
        os.environ.setdefault("LOCAL_RANK", os.environ.get("SLURM_LOCALID", "0"))
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    if os.environ.get("MASTER_PORT", "0") == "0":
        if os.environ["WORLD_SIZE"] != "1":
            # torchrun --master_port 0 hands port 0 to the ranks, which then wait forever
            raise RuntimeError("MASTER_PORT is unset or 0 in a multi-process run; give torchrun a real "
                               "--master_port (or use --standalone)")
        os.environ["MASTER_PORT"] = str(free_port())
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])


def pick_device(kind: str = "auto") -> torch.device:
    if kind == "cuda" or (kind == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def quiet_deepspeed() -> None:
    """DeepSpeed logs every config key at INFO; a cell's log keeps only warnings."""
    import logging
    import warnings

    from deepspeed.utils import logger

    logger.setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*(reduce_scatter_tensor|all_gather_into_tensor).*",
                            category=FutureWarning)


def init_distributed(device: torch.device) -> None:
    import deepspeed

    quiet_deepspeed()
    deepspeed.init_distributed(dist_backend="nccl" if device.type == "cuda" else "gloo",
                               verbose=False)


def is_no_decay(name: str, p: torch.nn.Parameter) -> bool:
    return p.ndim <= 1 or name.endswith(".bias") or any(k in name for k in NO_DECAY_KEYS)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if is_no_decay(name, p) else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def accumulation_steps(batch_size: int, world_size: int, micro_batch_size: Optional[int]) -> int:
    """Micro-batches per rank and step: the rank's share of the batch / ``micro_batch_size``."""
    if batch_size % world_size:
        raise ValueError(f"batch size {batch_size} is not divisible by world size {world_size}")
    share = batch_size // world_size
    mb = share if micro_batch_size is None else int(micro_batch_size)
    if mb < 1 or share % mb:
        raise ValueError(f"micro-batch size {mb} does not divide the per-rank batch {share}")
    return share // mb


def trainable_params(model: torch.nn.Module) -> int:
    """The elements DeepSpeed's buckets carry: every parameter with a gradient."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def ds_config(*, batch_size: int, world_size: int, zero_stage: int, lr: float,
              betas: tuple[float, float], weight_decay: float, grad_clip: float,
              precision: str = "fp32", device: str = "cpu",
              micro_batch_size: Optional[int] = None, n_params: Optional[int] = None) -> dict[str, Any]:
    """The DeepSpeed config of a cell (written to ``ds_config.json`` for the record).

    Precision: bf16 is applied by ``torch.autocast`` around the forward (see
    docs/training.md), so DeepSpeed keeps fp32 weights, gradients and Adam states at every
    ZeRO stage; DeepSpeed's own bf16 mode is not used.

    Batch: ``train_batch_size`` = ``train_micro_batch_size_per_gpu`` x
    ``gradient_accumulation_steps`` x world size, which DeepSpeed checks; ``micro_batch_size``
    None is one micro-batch per rank and step. DeepSpeed divides each micro-batch's loss by
    the accumulation steps in ``backward`` and steps the optimizer only at the boundary.

    Buckets: with ``n_params`` (the model's trainable parameters, ``trainable_params``) ZeRO
    1-3's ``reduce_bucket_size`` and ``allgather_bucket_size`` are ``bucket_elements(n_params)``
    and ZeRO-3's ``stage3_prefetch_bucket_size`` at most ``n_params``, in place of DeepSpeed's
    5e8 / 5e7 elements, whose reduce bucket is allocated whole (2 GB per rank in fp32) even for
    a model of 100k parameters. Buckets change where gradients wait, not their values, and
    enter no hash (the DeepSpeed config is written to ``ds_config.json`` only). Without
    ``n_params``: DeepSpeed's defaults.
    """
    gas = accumulation_steps(batch_size, world_size, micro_batch_size)
    cfg: dict[str, Any] = {
        "train_batch_size": batch_size,
        "train_micro_batch_size_per_gpu": batch_size // world_size // gas,
        "gradient_accumulation_steps": gas,
        "optimizer": {
            "type": "AdamW",
            "params": {"lr": lr, "betas": list(betas), "eps": 1e-8, "weight_decay": weight_decay,
                       # plain torch AdamW: no fused-Adam compile on CPU
                       "torch_adam": True, "adam_w_mode": True},
        },
        "gradient_clipping": grad_clip,
        "zero_optimization": {"stage": zero_stage},
        "steps_per_print": 2 ** 31 - 1,
        "wall_clock_breakdown": False,
        "dump_state": False,
    }
    if zero_stage and n_params is not None:
        b = bucket_elements(n_params)
        cfg["zero_optimization"].update(reduce_bucket_size=b, allgather_bucket_size=b)
        if zero_stage == 3:
            cfg["zero_optimization"]["stage3_prefetch_bucket_size"] = bucket_elements(n_params, DS_PREFETCH_BUCKET)
    if zero_stage == 3:
        # our own weights.pt snapshot gathers the full params anyway; keep DS from also doing it
        cfg["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] = False
    return cfg


def initialize(model: torch.nn.Module, config: dict[str, Any], weight_decay: float):
    """``deepspeed.initialize`` with the official no-decay groups; returns the engine."""
    import deepspeed

    engine, _, _, _ = deepspeed.initialize(
        model=model, model_parameters=param_groups(model, weight_decay), config=config)
    return engine


def set_lr(engine, lr: float) -> None:
    for g in engine.optimizer.param_groups:
        g["lr"] = lr
