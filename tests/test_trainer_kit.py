"""Fabricated tiny studies for the trainer tests (no tests here; imported by test_trainer*.py).

A study on the ``tiny`` preset (L = 5 tokens, V = 64) whose token cache is made up so that the
codes depend on the class label and the position (a learnable signal plus noise), with a
randomly initialised tokenizer saved as a plain state dict.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
# one cell trained in a fresh process, as a torchrun rank would (no launcher, no lock)
TRAIN = [PY, "-m", "varscale.cli", "train"]  # `varscale train <cell_dir>`, what a user runs


def make_study(root: Path, **sections) -> tuple[object, list]:
    import torch

    from varscale.grid.cells import plan_cells, write_cell
    from varscale.config import from_dict
    from varscale.tokenizer.cache import write_token_cache
    from varscale.models import build_vqvae
    from varscale.schema import StudyLayout

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    raw = {
        "name": "tiny",
        "data": {"resolution": 16, "num_classes": 4, "train_images": 256, "val_images": 48},
        "model": {"preset": "tiny", "depths": [2]},
        "budgets": {"unit": "tokens", "values": [16 * 5 * 12]},  # 12 steps of 16 images
        "training": {"batch_size": 16, "checkpoint_every": 4, "log_every": 4, "base_lr": 0.05,
                     "zero_stage": 0},
        "evaluation": {"min_step": 2, "num_evals": 3, "batch_size": 32},
    }
    for k, v in sections.items():
        if isinstance(v, dict):
            raw.setdefault(k, {}).update(v)
        else:
            raw[k] = v
    (root / "study.yaml").write_text(yaml.safe_dump(raw))
    cfg = from_dict(raw)
    rng = np.random.default_rng(0)

    def split(n):
        label = rng.integers(0, 4, n)
        pos = np.arange(5)
        noise = (rng.random((n, 5)) < 0.3) * rng.integers(0, 64, (n, 5))
        return (label[:, None] * 13 + pos[None] * 5 + noise) % 64, label

    write_token_cache(root / "tokens", train=split(256), val=split(48), patch_nums=(1, 2),
                      vocab_size=64, tokenizer_hash="fabricated")
    torch.manual_seed(0)
    vae = build_vqvae("tiny")
    path = StudyLayout.of(root).tokenizer_ckpt
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(vae.state_dict(), path)
    cells = plan_cells(cfg, root)
    for c in cells:
        write_cell(root, c)
    return cfg, cells


def env(**extra) -> dict:
    e = dict(os.environ)
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE"):
        e.pop(k, None)
    e.update(VARSCALE_THREADS="1", OMP_NUM_THREADS="1", VARSCALE_PEAK_FLOPS="1e11",
             PYTHONPATH=str(ROOT) + os.pathsep + e.get("PYTHONPATH", ""))
    e.update({k: str(v) for k, v in extra.items()})
    return e


def train(cell_dir: Path, **extra_env) -> subprocess.CompletedProcess:
    return subprocess.run([*TRAIN, str(cell_dir)], env=env(**extra_env),
                          capture_output=True, text=True, timeout=600)


def metrics(cell_dir: Path):
    import pandas as pd

    return pd.read_parquet(Path(cell_dir) / "metrics").sort_values("step").reset_index(drop=True)


# columns that depend on the clock, not on the numbers
CLOCK_COLUMNS = ["wall_s", "images_per_s", "tokens_per_s", "flops_per_s", "mfu", "time"]


def assert_same_rows(a, b) -> None:
    """Two runs' metrics frames equal in every column but the clock's: floats within 1e-5,
    lists of floats (per-scale columns) elementwise, everything else exactly."""
    import numpy as np

    for c in a.columns:
        if c in CLOCK_COLUMNS:
            continue
        if a[c].dtype == object:
            x, y = np.stack(a[c].map(np.asarray)), np.stack(b[c].map(np.asarray))
            if x.dtype.kind == "f":
                np.testing.assert_allclose(y, x, rtol=0, atol=1e-5, err_msg=c)
            else:
                assert (x == y).all(), c
        elif a[c].dtype.kind == "f":
            np.testing.assert_allclose(b[c], a[c], rtol=1e-6, atol=1e-5, err_msg=c)
        else:
            assert (a[c] == b[c]).all(), c
