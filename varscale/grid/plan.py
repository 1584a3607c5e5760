"""``varscale plan <study-dir>``: the cells of a study and what they will cost, before anything runs.

Validates the study file, expands it into cells (``varscale.grid.cells.plan_cells``: depths x
budgets x seeds, ``budgets.depths_per_budget`` honoured) and prints one line per cell: run
id, depth, parameters, budget, steps, tokens, evaluations and estimated time. Infeasible
cells (a budget too small for the first evaluation) are errors here, all listed at once.

It also prices both ways of getting many budgets per depth:
  independent  one run per (depth, budget), each with the full schedule: cost = the sum
  wsd          one warmup-stable run per depth, plus a short decay (``wsd_decay_frac`` of
               each budget's steps) branched from its checkpoint per budget:
               cost ~ largest budget x (1 + decay_frac x (n_budgets - 1))

Time estimates use, in order: throughput measured by this study's own cells (status.json),
``--flops-per-s``, or a rough guess from this machine's matmul peak (CPU) or a nominal
GPU rate; the source is printed. Planning needs neither the dataset nor the tokenizer
checkpoint to exist, so a cluster study can be checked on a laptop.

Memory: per depth, what one rank holds at the peak of a training step (parameters, gradients
and optimizer state at the study's ZeRO stage, DeepSpeed's reduce bucket, the tokenizer, one
micro-batch's activations; ``varscale.models.memory``), DeepSpeed's own estimate beside it,
and with ``execution.gpu_mem_gb`` whether it fits and, if not, the micro-batch size,
activation checkpointing or ZeRO stage that does.

Writes ``plan.json`` into the study folder (``--no-write`` to skip).
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
from pathlib import Path
from typing import Any, Optional

from varscale.config import StudyConfig
from varscale.models.spec import param_counts, var_config_for
from varscale.schema import CellLayout, StudyLayout, atomic_write_json, read_json

ASSUMED_CPU_MFU = 0.25  # of the matmul peak; small models on CPU reach about this or less
# per GPU, calibrated on the official VAR-d16 run (200 epochs, 2.5 days on 16 A100s, VAR
# issue #26): about 22% of an A100's bf16 peak, all overheads included
ASSUMED_GPU_FLOPS = 7e13
# per cell on CPU, where small models are overhead-bound: process start + DeepSpeed set-up,
# and a fixed cost per optimizer step
GUESS_STARTUP_S = 8.0
GUESS_STEP_S = 0.004


# --------------------------------------------------------------------------- sizes and memory


def _var_config(cell: Any):
    """The cell's ``VARConfig`` (``varscale.models.spec``): its parameter counts and memory
    are taken from it, as its FLOPs were (``varscale.grid.cells.flops_per_image``)."""
    return var_config_for(cell.model, cell.depth, cell.num_classes)


def memory_setup(cfg: StudyConfig):
    """The study's ``varscale.models.memory.Setup`` (ZeRO stage, ranks, micro-batch, precision)."""
    from varscale.models.memory import Setup

    t, ex = cfg.training, cfg.execution
    world = ex.world_size
    share = t.batch_size // world
    mb = t.micro_batch_size or share
    nodes = ex.slurm.nodes if ex.executor == "slurm" else 1
    return Setup(zero_stage=int(t.zero_stage), world=world, micro_batch=mb, accumulation=share // mb,
                 precision=t.precision, checkpointing=bool(t.activation_checkpointing),
                 gpus_per_node=max(ex.nproc_per_node, 1), nodes=max(nodes, 1)), share


def cell_memory(cfg: StudyConfig, cell: Any) -> dict:
    """Per-rank memory of one cell at the study's settings (the shape of its ``VARConfig``
    and its preset's tokenizer), whether it fits ``execution.gpu_mem_gb``, and, when it does
    not, the setting that does."""
    from varscale.models import memory as M

    shape = M.Shape.of(_var_config(cell), cell.preset)
    setup, share = memory_setup(cfg)
    est = M.estimate(shape, setup)
    gb = cfg.execution.gpu_mem_gb
    out = {k: float(v) for k, v in est.items()}
    out["deepspeed_model_states"] = M.deepspeed_model_states(shape.n_params, shape.largest_layer, setup.zero_stage,
                                                             setup.gpus_per_node, setup.nodes)
    out["fits"] = M.fits(est["total"], gb)
    out["suggestion"] = M.suggest(shape, setup, share, gb) if out["fits"] is False else None
    return out


# --------------------------------------------------------------------------- costs


def cell_cost(c: Any) -> float:
    """Training FLOPs this cell itself spends (a WSD branch only pays for its decay)."""
    steps = c.decay_steps if getattr(c, "branch_from", None) else c.total_steps
    return float(steps) * float(c.flops_per_step)


def design_costs(cfg: StudyConfig, study_dir: Path, cells: list[Any]) -> dict[str, float]:
    """Total training FLOPs of the study under each design (its own and the other)."""
    from varscale.grid.cells import plan_cells

    out = {cfg.budgets.design: sum(cell_cost(c) for c in cells)}
    other = "wsd" if cfg.budgets.design == "independent" else "independent"
    alt = dataclasses.replace(cfg, budgets=dataclasses.replace(cfg.budgets, design=other))
    try:
        out[other] = sum(cell_cost(c) for c in plan_cells(alt, study_dir))
    except Exception:  # noqa: BLE001 - the other design may be infeasible; say nothing about it
        pass
    return out


def wsd_formula(cfg: StudyConfig, cells: list[Any]) -> float:
    """The closed form: per (depth, seed), largest budget x (1 + f x (n_budgets - 1))."""
    f = cfg.budgets.wsd_decay_frac
    groups: dict[tuple, list[float]] = {}
    for c in cells:
        if c.is_stable_run:
            continue
        groups.setdefault((c.depth, c.seed), []).append(float(c.total_steps * c.flops_per_step))
    return sum(max(v) * (1 + f * (len(v) - 1)) for v in groups.values())


# --------------------------------------------------------------------------- throughput


def measured_rates(layout: StudyLayout) -> tuple[dict[int, float], float]:
    """Training FLOP/s per depth measured by this study's cells (from status.json), and the
    mean fixed cost of a cell besides its training steps (set-up, evaluations, checkpoints)."""
    rates: dict[int, list[float]] = {}
    fixed: list[float] = []
    if not layout.cells_dir.is_dir():
        return {}, 0.0
    for d in layout.cells_dir.iterdir():
        st = read_json(CellLayout(d).status_json, {}) or {}
        cfg = read_json(CellLayout(d).config_json, {}) or {}
        tps = st.get("tokens_per_s")
        if not tps or not cfg.get("depth") or not cfg.get("seq_len"):
            continue
        fpt = float(cfg["flops_per_image"]) / float(cfg["seq_len"])
        rates.setdefault(int(cfg["depth"]), []).append(float(tps) * fpt)
        timing = st.get("timing")
        if isinstance(timing, dict) and st.get("state") == "done":
            fixed.append(sum(float(timing.get(k) or 0.0) for k in ("setup", "eval", "checkpoint")))
    return {k: sum(v) / len(v) for k, v in rates.items()}, (sum(fixed) / len(fixed) if fixed else 0.0)


def guessed_rate(cfg: StudyConfig, threads: int) -> tuple[float, str]:
    """A FLOP/s guess for one cell when nothing was measured yet."""
    dev = cfg.execution.device
    gpus = max(cfg.execution.slurm.gpus_per_node, 0) if cfg.execution.executor == "slurm" else 0
    if dev == "cuda" or gpus:
        n = max(cfg.execution.nproc_per_node, 1) * max(cfg.execution.slurm.nodes if cfg.execution.executor == "slurm" else 1, 1)
        return ASSUMED_GPU_FLOPS * n, f"assumed {ASSUMED_GPU_FLOPS:.2g} FLOP/s per GPU x {n}"
    try:
        import torch

        if dev == "auto" and torch.cuda.is_available():
            return ASSUMED_GPU_FLOPS, f"assumed {ASSUMED_GPU_FLOPS:.2g} FLOP/s per GPU"
        from varscale.train.peak import peak_flops

        old = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            dtype = "bf16" if cfg.training.precision == "bf16" else "fp32"
            peak = peak_flops("cpu", dtype, threads)
        finally:
            torch.set_num_threads(old)
        return peak * ASSUMED_CPU_MFU, (f"guessed: {ASSUMED_CPU_MFU:.0%} of this CPU's measured matmul peak "
                                        f"{peak:.3g} FLOP/s ({threads} thread(s))")
    except Exception:  # noqa: BLE001
        return 1e10, "guessed 1e10 FLOP/s"


def _fmt_time(s: Optional[float]) -> str:
    if s is None or not math.isfinite(s):
        return "?"
    if s < 90:
        return f"{s:.0f}s"
    if s < 5400:
        return f"{s / 60:.0f}m"
    if s < 3 * 86400:
        return f"{s / 3600:.1f}h"
    return f"{s / 86400:.1f}d"


def _fmt_n(n: float) -> str:
    for unit, k in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= k:
            return f"{n / k:.3g}{unit}"
    return str(int(n))


# --------------------------------------------------------------------------- the plan


def build_plan(cfg: StudyConfig, layout: StudyLayout, cells: list[Any],
               flops_per_s: Optional[float] = None, threads: Optional[int] = None) -> dict:
    """Everything ``plan`` prints, as plain data (also what plan.json holds)."""
    ex = cfg.execution
    parallel = max(ex.parallel, 1)
    threads = threads or ex.threads or max(1, (os.cpu_count() or 1) // parallel)
    measured, fixed_s = measured_rates(layout)
    guessed_cpu = False
    if flops_per_s:
        default_rate, source = float(flops_per_s), f"given: {flops_per_s:.3g} FLOP/s per cell"
    elif measured:
        default_rate = sum(measured.values()) / len(measured)
        source = "measured by this study's cells (status.json), per depth where known"
        if fixed_s:
            source += f", plus {fixed_s:.1f} s per cell for set-up, evaluations and checkpoints"
    else:
        default_rate, source = guessed_rate(cfg, threads)
        guessed_cpu = "CPU" in source
        if guessed_cpu:
            source += f", plus {GUESS_STARTUP_S:g} s start-up and {GUESS_STEP_S * 1e3:g} ms per step"
    counts: dict[int, dict] = {}
    memory: dict[int, dict] = {}
    rows = []
    for c in cells:
        if c.depth not in counts:
            counts[c.depth] = param_counts(_var_config(c))
            memory[c.depth] = cell_memory(cfg, c)
        rate = measured.get(c.depth, default_rate) if not flops_per_s else default_rate
        cost = cell_cost(c)
        est = cost / rate if rate > 0 else None
        if est is not None and guessed_cpu and c.depth not in measured:
            est += GUESS_STARTUP_S + GUESS_STEP_S * (cost / c.flops_per_step)
        elif est is not None and not flops_per_s:
            est += fixed_s
        rows.append({
            "run_id": c.run_id, "depth": c.depth, "seed": c.seed, **counts[c.depth],
            "budget_unit": c.budget_unit, "budget_value": c.budget_value,
            "budget_flops": c.budget_flops, "budget_tokens": c.budget_tokens,
            "flops_per_step": c.flops_per_step, "total_steps": c.total_steps,
            "tokens": c.total_steps * c.batch_size * c.seq_len, "eval_steps": list(c.eval_steps),
            "schedule": getattr(c, "schedule", "lin0"), "branch_from": getattr(c, "branch_from", None),
            "decay_steps": getattr(c, "decay_steps", 0), "stable": c.is_stable_run, "cost_flops": cost,
            "est_seconds": est,
            "mem_total_bytes": memory[c.depth]["total"], "mem_fits": memory[c.depth]["fits"],
        })
    costs = design_costs(cfg, layout.root, cells)
    total_s = sum(r["est_seconds"] or 0.0 for r in rows)
    return {
        "study": cfg.name, "config_hash": cfg.hash(), "design": cfg.budgets.design,
        "budget_unit": cfg.budgets.unit, "budgets": cfg.budget_values(), "depths": list(cfg.model.depths),
        "seeds": list(cfg.seeds), "cells": rows,
        "totals": {"cells": len(rows), "flops": sum(r["cost_flops"] for r in rows),
                   "est_seconds_serial": total_s, "parallel": parallel,
                   "est_seconds_wall": total_s / parallel if ex.executor != "slurm" else
                   max((r["est_seconds"] or 0.0 for r in rows), default=0.0)},
        "design_costs": costs, "wsd_formula_flops": wsd_formula(cfg, cells),
        "memory": memory_summary(cfg, memory),
        "throughput_source": source,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def memory_summary(cfg: StudyConfig, by_depth: dict[int, dict]) -> dict:
    """plan.json's ``memory``: the settings it was computed at and bytes per rank per depth."""
    setup, share = memory_setup(cfg)
    return {"gpu_mem_gb": cfg.execution.gpu_mem_gb, "zero_stage": setup.zero_stage, "world_size": setup.world,
            "per_rank_batch": share, "micro_batch_size": setup.micro_batch, "accumulation_steps": setup.accumulation,
            "activation_checkpointing": setup.checkpointing, "precision": setup.precision,
            "by_depth": {str(d): m for d, m in sorted(by_depth.items())}}


def write_plan(layout: StudyLayout, cfg: StudyConfig, cells: list[Any], plan: Optional[dict] = None) -> dict:
    """Write plan.json (the launcher calls this with a cheap plan: no throughput guess)."""
    if plan is None:
        plan = {
            "study": cfg.name, "config_hash": cfg.hash(), "design": cfg.budgets.design,
            "cells": [{"run_id": c.run_id, "depth": c.depth, "seed": c.seed, "budget_flops": c.budget_flops,
                       "budget_tokens": c.budget_tokens, "total_steps": c.total_steps,
                       "flops_per_step": c.flops_per_step, "cost_flops": cell_cost(c),
                       "branch_from": getattr(c, "branch_from", None)} for c in cells],
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    atomic_write_json(layout.plan_json, plan)
    return plan


def format_plan(plan: dict) -> str:
    head = ("run_id", "depth", "params", "budget", "steps", "tokens", "evals", "est.time")
    rows = [head]
    for r in plan["cells"]:
        unit = "tok" if r["budget_unit"] == "tokens" else "FLOP"
        budget = f"{r['budget_value']:.3g} {unit}"
        if r.get("branch_from"):
            budget += f" (decay {r['decay_steps']})"
        elif r.get("schedule") == "wsd":
            budget = f"stable {r['cost_flops']:.3g} FLOP"
        rows.append((r["run_id"], str(r["depth"]), _fmt_n(r["n_params"]), budget, str(r["total_steps"]),
                     f"{r['tokens']:.3g}", str(len(r["eval_steps"])), _fmt_time(r["est_seconds"])))
    w = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(x.rjust(w[i]) if 0 < i else x.ljust(w[i]) for i, x in enumerate(row)) for row in rows]
    t = plan["totals"]
    lines.append("")
    lines.append(f"{t['cells']} cells, {t['flops']:.3g} training FLOPs; est. {_fmt_time(t['est_seconds_serial'])} "
                 f"of compute, {_fmt_time(t['est_seconds_wall'])} wall at {t['parallel']} cell(s) at a time "
                 f"(throughput {plan['throughput_source']})")
    costs = plan["design_costs"]
    ind, wsd = costs.get("independent"), costs.get("wsd")
    parts = []
    if ind is not None:
        parts.append(f"independent runs {ind:.3g} FLOPs")
    if wsd is not None:
        rel = f" ({wsd / ind:.2f}x)" if ind else ""
        parts.append(f"warmup-stable-decay {wsd:.3g} FLOPs{rel}")
    lines.append("designs: " + "; ".join(parts) + f"  [this study: {plan['design']}]")
    if plan.get("memory"):
        lines.append("")
        lines.append(format_memory(plan["memory"]))
    return "\n".join(lines)


def _gb(b: Optional[float], unit: float = 1e9) -> str:
    if b is None:
        return "-"
    v = b / unit
    return f"{v:.0f}" if v >= 1000 else f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def format_memory(m: dict) -> str:
    """Per depth: bytes per rank by part, the total, and whether it fits (varscale.models.memory)."""
    from varscale.models.memory import HEADROOM

    ck = ", activation checkpointing" if m["activation_checkpointing"] else ""
    # MB when every total is small (CPU presets), so the parts do not all read 0.00
    small = max((r["total"] for r in m["by_depth"].values()), default=0.0) < 10e9
    name, unit = ("MB", 1e6) if small else ("GB", 1e9)
    head = (f"memory per rank, {name} (ZeRO-{m['zero_stage']}, {m['world_size']} rank(s), {m['precision']}, "
            f"micro-batch {m['micro_batch_size']} x {m['accumulation_steps']} of {m['per_rank_batch']} per rank{ck})")
    gb = m.get("gpu_mem_gb")
    cols = ("depth", "params", "grads", "optim", "buffers", "tokenizer", "activations", "total", "DS est.")
    if gb is not None:
        cols += (f"fits {gb:g} GB",)
    rows = [cols]
    for d, r in m["by_depth"].items():
        row = (d,) + tuple(_gb(r.get(k), unit) for k in ("params", "grads", "optimizer", "buffers", "tokenizer",
                                                          "activations", "total", "deepspeed_model_states"))
        if gb is not None:
            row += ("yes" if r["fits"] else "NO",)
        rows.append(row)
    w = [max(len(row[i]) for row in rows) for i in range(len(cols))]
    lines = [head] + ["  ".join(x.rjust(w[i]) for i, x in enumerate(row)) for row in rows]
    if gb is not None:
        lines.append(f"(fits: total <= {1 - HEADROOM:.0%} of {gb:g} GB, the rest left for the CUDA context and "
                     f"the allocator; DS est.: DeepSpeed's estimate of params + grads + optimizer, 16-bit weights)")
        for d, r in m["by_depth"].items():
            if r["fits"] is False:
                s = r.get("suggestion")
                if s is None:
                    lines.append(f"d{d} does not fit at any micro-batch, ZeRO stage or with activation checkpointing")
                else:
                    lines.append(f"d{d} does not fit: training.micro_batch_size {s['micro_batch_size']}"
                                 f"{', activation_checkpointing true' if s['activation_checkpointing'] else ''}"
                                 f"{', zero_stage ' + str(s['zero_stage']) if s['zero_stage'] != m['zero_stage'] else ''}"
                                 f" fits ({_gb(s['total'])} GB)")
    else:
        lines.append("(DS est.: DeepSpeed's estimate of params + grads + optimizer, 16-bit weights; "
                     "set execution.gpu_mem_gb to check a fit)")
    return "\n".join(lines)
