"""Planning: a study's (depth, budget, seed) grid -> fully resolved cells, and their files.

``plan_cells`` expands a study into :class:`varscale.cell.CellConfig` s; ``write_cell`` puts
each one's ``config.json`` into ``cells/<run_id>/`` (atomically: a dot-file renamed, so a
crash leaves the old file or the new one, never half of one).

Budgets become step counts from the exact per-step FLOPs of the model's ``VARConfig``
(``varscale.models.spec``, ``varscale.models.flops``): a FLOP budget C gives
``floor(C / flops_per_step)`` steps, a token budget T gives ``ceil(T / (batch * L))``. A
budget too small for the first evaluation (``evaluation.min_step``) is an error at plan
time, not a silent one-step run.

The run id is ``d<depth>-<c|t><budget>-s<seed>[-stable]-<hash8>`` with ``CellConfig.hash``,
so re-planning the same study finds the same cells.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

from varscale.cell import CellConfig
from varscale.config import ArchConfig, ConfigError, StudyConfig
from varscale.schema import StudyLayout, atomic_write_json


class PlanError(ValueError):
    """A study that cannot be planned (e.g. a budget below one evaluation interval)."""


# --------------------------------------------------------------------------- helpers


def budget_tag(unit: str, value: float) -> str:
    """1e13 -> 'c1e13', 3.16e12 -> 'c3.16e12', tokens 2e6 -> 't2e6'."""
    s = f"{value:.3g}"  # '1e+13', '3.16e+12', '500'
    if "e" in s:
        mant, exp = s.split("e")
        s = f"{mant}e{int(exp)}"
    return ("c" if unit == "flops" else "t") + s


def eval_steps(total_steps: int, min_step: int, num_evals: int) -> list[int]:
    """``num_evals`` log-spaced steps from ``min_step`` to ``total_steps`` (deduplicated), last included."""
    if total_steps < 1:
        return []
    lo = min(max(min_step, 1), total_steps)
    if num_evals <= 1 or lo == total_steps:
        return [total_steps]
    r = math.log(total_steps / lo)
    steps = {int(round(lo * math.exp(r * i / (num_evals - 1)))) for i in range(num_evals)}
    steps = {min(max(s, lo), total_steps) for s in steps}
    steps.add(total_steps)
    return sorted(steps)


def checkpoint_steps(total_steps: int, every: int) -> list[int]:
    out = list(range(every, total_steps, every))
    return out + [total_steps]


def flops_per_image(model: ArchConfig, depth: int, num_classes: int) -> int:
    """Exact training FLOPs (3 x forward) of one image through VAR-d with these options
    (``varscale.models.flops`` of the model's ``VARConfig``)."""
    from varscale.models.flops import var_train_flops
    from varscale.models.spec import var_config_for

    return int(var_train_flops(var_config_for(model, depth, num_classes)))


def steps_for(unit: str, value: float, fpi: int, batch: int, L: int) -> int:
    """Training steps a budget buys: FLOPs rounded down, tokens rounded up."""
    if unit == "flops":
        return int(value // (fpi * batch))
    return int(math.ceil(value / (batch * L)))


def _depths_for(cfg: StudyConfig, budget: float) -> list[int]:
    dpb = cfg.budgets.depths_per_budget
    if not dpb:
        return list(cfg.model.depths)
    for k, ds in dpb.items():
        if math.isclose(float(k), budget, rel_tol=1e-9):
            return list(ds)
    return list(cfg.model.depths)


# --------------------------------------------------------------------------- planning


def plan_cells(cfg: StudyConfig, study_dir: str | os.PathLike) -> list[CellConfig]:
    """Every cell of a study: depths x budgets x seeds (``budgets.depths_per_budget`` honoured).

    With ``budgets.design == "wsd"`` each (depth, seed) also gets one stable run (warmup then
    constant lr, as long as its largest budget's branch point) and every budget becomes a
    decay branch of it; the stable run comes first in the list.
    """
    from varscale.models.presets import get_preset

    preset = get_preset(cfg.model.preset)
    L = preset.seq_len
    B = cfg.training.batch_size
    num_classes = cfg.data.num_classes
    model = cfg.model.arch()
    common = dict(
        study=cfg.name, study_dir=str(Path(study_dir)), preset=cfg.model.preset,
        num_classes=num_classes, seq_len=L, batch_size=B, world_size=cfg.execution.world_size,
        model=model, training=cfg.training, evaluation=cfg.evaluation,
        data=cfg.data, tokenizer=cfg.tokenizer, execution=cfg.execution, monitor=cfg.monitor,
    )
    unit = cfg.budgets.unit
    ev = cfg.evaluation
    errors: list[str] = []
    fpi_cache: dict[int, int] = {}
    cells: list[CellConfig] = []
    for budget in cfg.budget_values():
        for depth in _depths_for(cfg, budget):
            if depth not in fpi_cache:
                fpi_cache[depth] = flops_per_image(model, depth, num_classes)
            fpi = fpi_cache[depth]
            steps = steps_for(unit, budget, fpi, B, L)
            if steps < max(ev.min_step, 1):
                per = f"{fpi * B:.3g} FLOPs" if unit == "flops" else f"{B * L} tokens"
                errors.append(
                    f"depth {depth}, budget {budget:g} {unit}: only {steps} steps at {per} per step, "
                    f"fewer than evaluation.min_step={ev.min_step}; raise the budget, lower the "
                    f"batch size or min_step, or drop this depth for this budget")
                continue
            for seed in cfg.seeds:
                bf = budget if unit == "flops" else budget / L * fpi
                bt = budget if unit == "tokens" else budget / fpi * L
                c = CellConfig(
                    **common, run_id="", depth=depth, seed=seed, budget_unit=unit,
                    budget_value=float(budget), budget_flops=float(bf), budget_tokens=float(bt),
                    flops_per_image=fpi, flops_per_step=fpi * B, total_steps=steps,
                    eval_steps=eval_steps(steps, ev.min_step, ev.num_evals),
                    checkpoint_steps=checkpoint_steps(steps, cfg.training.checkpoint_every),
                )
                cells.append(c)
    if errors:
        raise PlanError("cannot plan study '" + cfg.name + "':\n" + "\n".join("  - " + e for e in errors))
    if cfg.budgets.design == "wsd":
        cells = _wsd(cells, cfg)
    for c in cells:
        c.run_id = make_run_id(c)
    return _link_branches(cells)  # branches name their stable run by id, known only now


def _wsd(cells: list[CellConfig], cfg: StudyConfig) -> list[CellConfig]:
    frac = cfg.budgets.wsd_decay_frac
    out: list[CellConfig] = []
    groups: dict[tuple[int, int], list[CellConfig]] = {}
    for c in cells:
        groups.setdefault((c.depth, c.seed), []).append(c)
    for (depth, seed), branches in groups.items():
        for b in branches:
            b.schedule = "wsd"
            b.decay_steps = max(1, int(round(frac * b.total_steps)))
            b.branch_step = b.total_steps - b.decay_steps
            b.branch_from = "<stable>"
        longest = max(branches, key=lambda b: b.total_steps)
        stable = dataclasses.replace(
            longest, schedule="wsd", decay_steps=0, branch_from=None, branch_step=None,
            total_steps=max(b.branch_step for b in branches),
            budget_unit=longest.budget_unit, keep_steps=sorted({b.branch_step for b in branches}))
        T = stable.total_steps
        stable.budget_flops = float(T * stable.flops_per_step)
        stable.budget_tokens = float(T * stable.batch_size * stable.seq_len)
        stable.budget_value = stable.budget_flops if stable.budget_unit == "flops" else stable.budget_tokens
        stable.eval_steps = eval_steps(T, cfg.evaluation.min_step, cfg.evaluation.num_evals) if T else []
        stable.checkpoint_steps = sorted(set(checkpoint_steps(T, cfg.training.checkpoint_every)) | set(stable.keep_steps)) if T else []
        out.append(stable)
        out.extend(branches)
    return out


def _link_branches(cells: list[CellConfig]) -> list[CellConfig]:
    stable = {(c.depth, c.seed): c.run_id for c in cells if c.schedule == "wsd" and c.branch_from is None}
    for c in cells:
        if c.branch_from == "<stable>":
            c.branch_from = stable[(c.depth, c.seed)]
            c.run_id = make_run_id(c)  # the parent's id is part of what the branch is
    return cells


def make_run_id(c: CellConfig) -> str:
    kind = "-stable" if c.schedule == "wsd" and c.branch_from is None else ""
    return f"d{c.depth}-{budget_tag(c.budget_unit, c.budget_value)}-s{c.seed}{kind}-{c.hash()}"


# --------------------------------------------------------------------------- files

_RUN_PLACE = ("study_dir", "execution", "world_size", "monitor")  # may differ for the same cell


def same_cell(old: CellConfig, new: CellConfig) -> bool:
    """Whether ``old`` and ``new`` are one cell: equal but for where and how it runs (the
    place, and the training options that enter no run id: ``micro_batch_size``,
    ``activation_checkpointing``, memory rather than results), so a study may turn those on
    for a smaller GPU and keep its cells."""
    from varscale.config import field_rule

    how = {f.name: getattr(new.training, f.name) for f in dataclasses.fields(new.training)
           if field_rule(f, "id") == "never"}
    moved = dataclasses.replace(old, training=dataclasses.replace(old.training, **how),
                                **{k: getattr(new, k) for k in _RUN_PLACE})
    return moved == new


def write_cell(study_dir: str | os.PathLike, cell: CellConfig) -> Path:
    """Write ``cells/<run_id>/config.json`` atomically; refuses to replace a different config.

    The existing file is read back through the strict loader and compared as typed configs,
    so a file written before an option was removed (still carrying it at its old value) is
    the same cell; only where and how it runs (paths, execution) may differ.
    """
    layout = StudyLayout.of(study_dir).cell(cell.run_id)
    path = layout.config_json
    new = cell.to_dict()
    if path.exists():
        raw = json.loads(path.read_text())
        try:
            old = CellConfig.from_dict(raw, str(path))
        except ConfigError as e:
            raise PlanError(f"cell {cell.run_id} already exists in {layout.root} with a config this "
                            f"version cannot read ({'; '.join(e.errors)}); remove it or re-plan") from None
        if not same_cell(old, cell):
            a, b = old.to_dict(), new
            diff = sorted(k for k in set(a) | set(b) if k not in _RUN_PLACE and a.get(k) != b.get(k))
            raise PlanError(f"cell {cell.run_id} already exists in {layout.root} with a different "
                            f"config (differs in: {', '.join(diff)}); remove it or re-plan")
        if raw == new:
            return path
    atomic_write_json(path, new)
    return path
