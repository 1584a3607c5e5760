"""Peak memory of real training steps on CPU against ``varscale.models.memory.estimate``.

For each case (preset, depth, batch, micro-batch, ZeRO stage, precision, checkpointing) it
fabricates a one-cell study (random token cache, random tokenizer: the values do not move
memory), runs the trainer's own ``CellRun.setup`` and two ``train_step`` calls in this
process under ``torch.profiler`` with ``profile_memory=True``, and reads the CPU allocator's
running total ("Total Allocated" of the trace's ``[memory]`` events) from the profiler's
start. The peak of the two training steps is what a GPU's ``torch.cuda.max_memory_allocated``
would show: everything allocated (parameters, DeepSpeed's states and buffers, the tokenizer,
activations), touched or not. Set-up itself is left out: on CPU it also holds the tokenizer's
state dict while loading it, which on a GPU stays in host memory.

    .venv/bin/python benchmarks/bench_memory.py            # the table in docs/training.md
    .venv/bin/python benchmarks/bench_memory.py --json

tests/test_memory_plan.py runs a few of these cases and checks the ratio (within 20%).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# (preset, depth, batch, micro_batch_size, zero_stage, precision, activation_checkpointing)
CASES = [
    ("cpu32", 4, 64, None, 0, "fp32", False),
    ("cpu64", 4, 16, None, 0, "fp32", False),
    ("cpu64", 8, 16, None, 0, "fp32", False),
    ("cpu64", 8, 32, 8, 0, "fp32", False),
    ("cpu64", 8, 16, None, 0, "fp32", True),
    ("cpu64", 8, 16, None, 0, "bf16", False),
    ("cpu64", 8, 16, None, 0, "bf16", True),
    ("cpu64", 8, 16, None, 1, "fp32", False),
    ("cpu64", 8, 16, None, 2, "fp32", False),
    ("cpu64", 8, 32, 8, 2, "fp32", False),
    ("cpu64", 8, 16, None, 3, "fp32", False),
    ("imagenet256", 2, 4, None, 0, "fp32", False),
    ("imagenet256", 2, 4, None, 2, "bf16", False),
    ("imagenet256", 2, 8, 4, 2, "fp32", True),
]


def fabricate(root: Path, preset: str, depth: int, batch: int, micro=None, stage=0, precision="fp32",
              ckpt=False) -> Path:
    """A one-cell study of ``preset`` at ``depth``; returns the cell folder."""
    import torch

    from varscale.config import from_dict
    from varscale.grid.cells import plan_cells, write_cell
    from varscale.models import build_vqvae, get_preset
    from varscale.schema import StudyLayout
    from varscale.tokenizer.cache import write_token_cache

    p = get_preset(preset)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    raw = {"name": "mem", "data": {"resolution": p.resolution, "num_classes": p.num_classes,
                                   "train_images": 64, "val_images": 16},
           "model": {"preset": preset, "depths": [depth]},
           "budgets": {"unit": "tokens", "values": [batch * p.seq_len * 4]},
           "training": {"batch_size": batch, "zero_stage": stage, "precision": precision,
                        "micro_batch_size": micro, "activation_checkpointing": ckpt,
                        "checkpoint_every": 10 ** 6},
           "evaluation": {"min_step": 1, "num_evals": 1, "batch_size": 16}}
    (root / "study.yaml").write_text(yaml.safe_dump(raw))
    cfg = from_dict(raw)
    rng = np.random.default_rng(0)

    def split(n):
        return rng.integers(0, p.vocab_size, (n, p.seq_len)), rng.integers(0, p.num_classes, n)

    write_token_cache(root / "tokens", train=split(64), val=split(16), patch_nums=p.patch_nums,
                      vocab_size=p.vocab_size, tokenizer_hash="fabricated")
    torch.manual_seed(0)
    ck = StudyLayout.of(root).tokenizer_ckpt
    ck.parent.mkdir(parents=True, exist_ok=True)
    torch.save(build_vqvae(preset).state_dict(), ck)
    (cell,) = plan_cells(cfg, root)
    write_cell(root, cell)
    return root / "cells" / cell.run_id


def measure(cell_dir: Path, steps: int = 2) -> dict:
    """Peak bytes of torch's CPU allocator during ``steps`` training steps (and set-up)."""
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    from varscale.train.trainer import CellRun

    run = CellRun(cell_dir)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run.setup()
        with record_function("mark:setup"):
            pass
        for _ in range(steps):
            run.train_step()
    with tempfile.TemporaryDirectory() as d:
        trace = Path(d) / "trace.json"
        prof.export_chrome_trace(str(trace))
        events = json.loads(trace.read_text())["traceEvents"]
    mark = min(float(e["ts"]) for e in events if e.get("name") == "mark:setup")
    mem = sorted((float(e["ts"]), int(e["args"]["Total Allocated"])) for e in events
                 if e.get("name") == "[memory]" and int(e["args"].get("Device Type", 0)) == 0)
    setup = [a for t, a in mem if t <= mark]
    train = [a for t, a in mem if t > mark]
    del run
    return {"setup_peak": max(setup, default=0), "step_peak": max(train, default=0)}


def estimate_for(cell_dir: Path) -> dict:
    """``varscale plan``'s estimate for the cell (world size 1, as measured here)."""
    from varscale.cell import CellConfig
    from varscale.config import load_study
    from varscale.grid.plan import cell_memory

    cell = CellConfig.load(cell_dir)
    cfg = load_study(Path(cell.study_dir))
    return cell_memory(cfg, cell)


def one_case(case, workdir: Path) -> dict:
    """Measure and estimate one case in this process."""
    os.environ.setdefault("VARSCALE_THREADS", "1")
    os.environ.setdefault("VARSCALE_PEAK_FLOPS", "1e11")
    os.environ["VARSCALE_PRECOMPUTE_INPUT"] = "0"  # a precomputed split would sit in the same RAM
    preset, depth, batch, micro, stage, precision, ckpt = case
    cell = fabricate(workdir, preset, depth, batch, micro, stage, precision, ckpt)
    m = measure(cell)
    e = estimate_for(cell)
    return {"preset": preset, "depth": depth, "batch": batch, "micro_batch_size": micro,
            "zero_stage": stage, "precision": precision, "activation_checkpointing": ckpt,
            "measured": m["step_peak"], "setup_peak": m["setup_peak"], "estimate": e["total"],
            "buffers": e["buffers"], "activations": e["activations"],
            "ratio": e["total"] / m["step_peak"],
            "ratio_without_buffers": (e["total"] - e["buffers"]) / (m["step_peak"] - e["buffers"])}


def run_cases(cases, workdir: Path) -> list[dict]:
    """Every case in a fresh process: torch's CPU memory reporter is process-wide, so what an
    earlier case's engine frees later would blur the next one's totals."""
    import subprocess

    out = []
    for i, case in enumerate(cases):
        r = subprocess.run([sys.executable, __file__, "--case", json.dumps(list(case)), "--workdir",
                            str(workdir / f"case{i}")], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"case {case} failed:\n{r.stdout[-2000:]}{r.stderr[-3000:]}")
        out.append(json.loads(r.stdout.strip().splitlines()[-1]))
    return out


def table(rows: list[dict]) -> str:
    lines = ["| preset | d | batch | micro | ZeRO | precision | ckpt | measured MB | estimate MB | ratio | "
             "ratio less DS buffers |", "|" + "---|" * 11]
    for r in rows:
        lines.append(f"| {r['preset']} | {r['depth']} | {r['batch']} | {r['micro_batch_size'] or '-'} | "
                     f"{r['zero_stage']} | {r['precision']} | {'on' if r['activation_checkpointing'] else 'off'} | "
                     f"{r['measured'] / 1e6:.1f} | {r['estimate'] / 1e6:.1f} | {r['ratio']:.3f} | "
                     f"{r['ratio_without_buffers']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="print the rows as JSON")
    ap.add_argument("--case", help="one case as a JSON list (internal: run_cases starts one process per case)")
    ap.add_argument("--workdir", help="with --case: the study folder to fabricate")
    a = ap.parse_args()
    if a.case:
        print(json.dumps(one_case(tuple(json.loads(a.case)), Path(a.workdir))))
        return
    with tempfile.TemporaryDirectory() as d:
        rows = run_cases(CASES, Path(d))
    print(json.dumps(rows, indent=1) if a.json else table(rows))


if __name__ == "__main__":
    main()
