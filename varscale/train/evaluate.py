"""Held-out metrics of a VAR: test loss and token error rate, over all tokens and per scale.

The paper's numbers (and the official trainer's Lm/Lt, Accm/Acct): cross-entropy and
1 - argmax accuracy averaged over every token of every image (``avg``, a plain token mean, so
larger scales weigh more) and over the last scale only (``last``). The model runs in eval mode
(no drop-path, no class dropout unless the study asks for the official behaviour).

With several ranks each evaluates a contiguous part of every global batch and the sums are
all-reduced; every rank runs the same number of forwards (ZeRO-3 gathers parameters
collectively), feeding a zero-weight row when its part of the last batch is empty.
"""
from __future__ import annotations

import contextlib
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F


@torch.no_grad()
def evaluate(model: torch.nn.Module, cache, var_input: Callable[[np.ndarray], tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
             *, batch_size: int, max_images: int | None = None, rank: int = 0, world: int = 1,
             autocast: contextlib.AbstractContextManager | None = None,
             scale_slices: list[slice]) -> dict:
    """Metrics of ``model`` on ``cache`` (a TokenCache split).

    ``var_input(rows)`` returns (label_B, x_BlC, target_BL) for the given row indices.
    """
    N = len(cache) if max_images is None else min(len(cache), max_images)
    K = len(scale_slices)
    loss_K = torch.zeros(K, dtype=torch.float64)
    correct_K = torch.zeros(K, dtype=torch.float64)
    count_K = torch.zeros(K, dtype=torch.float64)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, N, batch_size):
            rows = np.arange(start, min(start + batch_size, N))
            part = np.array_split(rows, world)[rank]
            weight = 1.0
            if len(part) == 0:  # keep collective forwards in step; contributes nothing
                part, weight = rows[:1], 0.0
            label_B, x_BlC, target_BL = var_input(part)
            with autocast if autocast is not None else contextlib.nullcontext():
                logits_BLV = model(label_B, x_BlC)
            logits_BLV = logits_BLV.float()
            ce_BL = F.cross_entropy(logits_BLV.transpose(1, 2), target_BL, reduction="none")
            hit_BL = (logits_BLV.argmax(-1) == target_BL)
            # sums on the host: device-agnostic, and exact in float64
            loss_K += weight * torch.stack([ce_BL[:, sl].double().sum() for sl in scale_slices]).cpu()
            correct_K += weight * torch.stack([hit_BL[:, sl].double().sum() for sl in scale_slices]).cpu()
            count_K += weight * torch.tensor([float(ce_BL[:, sl].numel()) for sl in scale_slices], dtype=torch.float64)
    finally:
        model.train(was_training)
    if world > 1:
        buf = torch.stack([loss_K, correct_K, count_K])
        if torch.distributed.get_backend() == "nccl":
            buf = buf.cuda()
        torch.distributed.all_reduce(buf)
        loss_K, correct_K, count_K = buf.cpu()
    loss_by = (loss_K / count_K).tolist()
    err_by = (1.0 - correct_K / count_K).tolist()
    return {
        "test_loss_avg": float(loss_K.sum() / count_K.sum()),
        "test_loss_last": loss_by[-1],
        "test_err_avg": float(1.0 - correct_K.sum() / count_K.sum()),
        "test_err_last": err_by[-1],
        "test_loss_by_scale": loss_by,
        "test_err_by_scale": err_by,
        "eval_images": N,
    }
