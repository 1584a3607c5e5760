"""A study's model family at any depth: parameters, training FLOPs per token and tokens per
step, each from the depth's ``VARConfig`` (``varscale.models.spec``; the same counts
``varscale plan`` prints), so a prediction or an allocation can name depths the study never
trained. No torch; reads nothing, writes nothing."""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

import pandas as pd

from .flops import var_train_flops
from .spec import param_counts, var_config_for

if TYPE_CHECKING:
    from varscale.config import StudyConfig


def model_family(cfg: "StudyConfig", depths: Iterable[int]) -> pd.DataFrame:
    """Rows of depth, n_params, flops_per_token (training: 3 x forward, per token of an
    image) and tokens_per_step (the study's global batch x tokens per image), one per
    distinct depth, in increasing order: the study's model section on its preset."""
    rows = []
    for d in sorted(set(int(x) for x in depths)):
        var = var_config_for(cfg.model, d, cfg.data.num_classes)
        L = var.seq_len
        rows.append({"depth": d, "n_params": float(param_counts(var)["n_params"]),
                     "flops_per_token": int(var_train_flops(var)) / L,
                     "tokens_per_step": float(cfg.training.batch_size * L)})
    return pd.DataFrame(rows)
