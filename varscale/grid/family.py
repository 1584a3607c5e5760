"""A study's model family at any depth: parameters, training FLOPs per token and tokens per
step, from the models' shapes (the same counts ``varscale plan`` prints), so a prediction or
an allocation can name depths the study never trained. Reads nothing, writes nothing."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Iterable

import pandas as pd

from varscale.config import StudyConfig


def model_family(cfg: StudyConfig, depths: Iterable[int]) -> pd.DataFrame:
    """Rows of depth, n_params, flops_per_token (training: 3 x forward, per token of an
    image) and tokens_per_step (the study's global batch x tokens per image)."""
    from varscale.grid.cells import flops_per_image
    from varscale.grid.plan import param_counts
    from varscale.models.presets import get_preset

    preset = get_preset(cfg.model.preset)
    L = preset.seq_len
    arch = cfg.model.arch()
    rows = []
    for d in sorted(set(int(x) for x in depths)):
        cell = SimpleNamespace(model=arch, depth=d, num_classes=cfg.data.num_classes, preset=cfg.model.preset)
        n = param_counts(cell)["n_params"]
        rows.append({"depth": d, "n_params": float(n),
                     "flops_per_token": flops_per_image(arch, d, cfg.data.num_classes) / L,
                     "tokens_per_step": float(cfg.training.batch_size * L)})
    return pd.DataFrame(rows)
