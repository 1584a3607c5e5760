"""Where a cell's wall time goes: forward/backward/optimizer vs everything else.

Builds a default-study-like study (cpu32 preset, batch 64, 60k train / 5k val images, 8
evaluations, a checkpoint every 200 steps, ZeRO-2, fp32) with a fabricated token cache and a
random tokenizer (the tokens' values do not change the cost), trains one cell in a
subprocess, and reads the trainer's own timing breakdown from status.json. It then projects
the breakdown onto every cell of the default grid from the measured per-step, per-evaluation
and per-checkpoint costs.

    .venv/bin/python benchmarks/bench_trainer_overhead.py --depth 2 --steps 300
    .venv/bin/python benchmarks/bench_trainer_overhead.py --depth 2 --steps 300 --compare-bf16

Overhead = data + evaluation + checkpointing + logging + setup (DeepSpeed init, loading,
precomputing teacher-forcing inputs) + process start-up, as a share of the cell's wall time.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]


def make_study(root: Path, depth: int, steps: int, train_n: int, val_n: int, precision: str,
               zero: int, budget_unit_tokens: bool = True) -> Path:
    import torch

    from varscale.grid.cells import plan_cells, write_cell
    from varscale.config import from_dict
    from varscale.tokenizer.cache import write_token_cache
    from varscale.models import build_vqvae
    from varscale.models.presets import get_preset
    from varscale.schema import StudyLayout

    p = get_preset("cpu32")
    L = p.seq_len
    raw = {"name": "bench", "data": {"resolution": 32, "num_classes": 10, "train_images": train_n,
                                     "val_images": val_n},
           "model": {"preset": "cpu32", "depths": [depth]},
           "budgets": {"unit": "tokens", "values": [64 * L * steps]},
           "training": {"batch_size": 64, "zero_stage": zero, "precision": precision,
                        "checkpoint_every": 200, "log_every": 20},
           "evaluation": {"num_evals": 8, "min_step": 10, "batch_size": 256}}
    root.mkdir(parents=True, exist_ok=True)
    (root / "study.yaml").write_text(yaml.safe_dump(raw))
    cfg = from_dict(raw)
    tokens = root / "tokens"
    if not (tokens / "meta.json").exists():
        rng = np.random.default_rng(0)

        def split(n):
            lab = rng.integers(0, 10, n)
            pos = np.arange(L)
            noise = (rng.random((n, L)) < 0.5) * rng.integers(0, p.vocab_size, (n, L))
            return (lab[:, None] * 37 + pos[None] * 11 + noise) % p.vocab_size, lab

        write_token_cache(tokens, train=split(train_n), val=split(val_n), patch_nums=p.patch_nums,
                          vocab_size=p.vocab_size, tokenizer_hash="bench")
        torch.manual_seed(0)
        ck = StudyLayout.of(root).tokenizer_ckpt
        ck.parent.mkdir(parents=True, exist_ok=True)
        torch.save(build_vqvae("cpu32").state_dict(), ck)
    (cell,) = plan_cells(cfg, root)
    write_cell(root, cell)
    return root / "cells" / cell.run_id


def run_cell(cell_dir: Path, threads: int) -> dict:
    env = dict(os.environ, VARSCALE_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "varscale.cli", "train", str(cell_dir)], env=env,
                       capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(r.stdout[-2000:] + r.stderr[-4000:])
    status = json.loads((cell_dir / "status.json").read_text())
    cfg = json.loads((cell_dir / "config.json").read_text())
    return {"wall": wall, "timing": status["timing"], "cfg": cfg, "stdout": r.stdout}


def report(res: dict) -> dict:
    t, wall, cfg = res["timing"], res["wall"], res["cfg"]
    startup = wall - sum(t.values())
    parts = {**t, "startup": startup}
    over = wall - t["compute"]
    print(f"cell d{cfg['depth']}, {cfg['total_steps']} steps, {len(cfg['eval_steps'])} evals, "
          f"{len(cfg['checkpoint_steps'])} checkpoints: wall {wall:.1f} s")
    for k, v in sorted(parts.items(), key=lambda kv: -kv[1]):
        print(f"  {k:<11} {v:8.2f} s  {100 * v / wall:5.1f}%")
    print(f"  overhead (all but compute): {100 * over / wall:.1f}%")
    n_steps, n_ev, n_ck = cfg["total_steps"], len(cfg["eval_steps"]), len(cfg["checkpoint_steps"])
    return {"step": t["compute"] / n_steps, "data_step": t["data"] / n_steps, "eval": t["eval"] / n_ev,
            "ckpt": t["checkpoint"] / n_ck, "log_step": t["log"] / n_steps,
            "fixed": t["setup"] + startup, "depth": cfg["depth"]}


def project(unit: dict, depth_costs: dict) -> None:
    """Overhead share of each default-grid cell from measured unit costs (per depth)."""
    from varscale.grid.cells import plan_cells
    from varscale.config import from_dict

    cells = plan_cells(from_dict({}), "/tmp/x")
    print("\nprojected onto the default grid (cpu32, budgets 1e12/3e12/1e13, 8 evals of 5000 images):")
    print(f"  {'cell':<22}{'steps':>7}{'compute h':>11}{'overhead':>10}")
    for c in cells:
        u = depth_costs.get(c.depth)
        if u is None:
            continue
        comp = u["step"] * c.total_steps
        # the measured cell computed teacher-forcing inputs per batch (fewer steps than an
        # epoch); a cell that sees the whole split precomputes them once instead (~= one epoch
        # of per-batch data cost) and then only gathers rows
        n_train = 60000
        if c.total_steps * c.batch_size >= n_train:
            data = u["data_step"] * n_train / c.batch_size + 0.002 * c.total_steps
        else:
            data = u["data_step"] * c.total_steps
        other = data + u["log_step"] * c.total_steps + u["eval"] * len(c.eval_steps) \
            + u["ckpt"] * len(c.checkpoint_steps) + u["fixed"]
        print(f"  {c.run_id[:20]:<22}{c.total_steps:>7}{comp / 3600:>11.2f}{100 * other / (comp + other):>9.1f}%")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--depth", type=int, nargs="+", default=[2])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--train-images", type=int, default=60000)
    ap.add_argument("--val-images", type=int, default=5000)
    ap.add_argument("--zero", type=int, default=2)
    ap.add_argument("--compare-bf16", action="store_true")
    ap.add_argument("--workdir", default=None)
    a = ap.parse_args()
    work = Path(a.workdir or tempfile.mkdtemp(prefix="varscale-bench-"))
    costs = {}
    for d in a.depth:
        cell = make_study(work / f"fp32-d{d}", d, a.steps, a.train_images, a.val_images, "fp32", a.zero)
        res = run_cell(cell, a.threads)
        costs[d] = report(res)
        if a.compare_bf16:
            cb = make_study(work / f"bf16-d{d}", d, a.steps, a.train_images, a.val_images, "bf16", a.zero)
            rb = run_cell(cb, a.threads)
            print("bf16 autocast:")
            ub = report(rb)
            import pandas as pd

            f = pd.read_parquet(cell / "metrics").sort_values("step")
            b = pd.read_parquet(cb / "metrics").sort_values("step")
            dl = (b["test_loss_avg"].values - f["test_loss_avg"].values)
            print(f"  step time fp32 {1e3 * costs[d]['step']:.1f} ms, bf16 {1e3 * ub['step']:.1f} ms "
                  f"(x{costs[d]['step'] / ub['step']:.2f})")
            print(f"  test loss avg fp32 {f['test_loss_avg'].iloc[-1]:.4f}, bf16 {b['test_loss_avg'].iloc[-1]:.4f}; "
                  f"max |diff| over evals {np.abs(dl).max():.4f}")
    project(costs[min(costs)], costs)
    print(f"\n(work dir {work}; the machine's other load skews absolute numbers)")


if __name__ == "__main__":
    main()
