"""One grid cell, fully resolved: (depth, budget, seed) of a study -> steps, evals, run id.

``plan_cells`` expands a study into cells; ``write_cell`` puts each one's ``config.json`` into
``cells/<run_id>/``. A cell's config is everything its training needs, so the trainer never
re-reads ``study.yaml`` (editing the study later cannot change a planned cell).

Budgets become step counts from the exact per-step FLOPs of the model's shapes
(``varscale.models.flops``): a FLOP budget C gives ``floor(C / flops_per_step)`` steps, a
token budget T gives ``ceil(T / (batch * L))``. A budget too small for the first evaluation
(``evaluation.min_step``) is an error at plan time, not a silent one-step run.

The run id is ``d<depth>-<c|t><budget>-s<seed>-<hash8>``, the hash taken over everything
that changes the result (data, tokenizer, model, training, evaluation, preset, depth, seed,
budget) but not over paths, the study name or how it is executed, so re-planning the same
study finds the same cells.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from varscale.schema import StudyLayout, atomic_write_json

# fields of CellConfig that do not enter the run id's hash
_UNHASHED = ("study", "study_dir", "run_id", "world_size", "execution")


class PlanError(ValueError):
    """A study that cannot be planned (e.g. a budget below one evaluation interval)."""


@dataclass
class CellConfig:
    study: str
    study_dir: str
    run_id: str
    preset: str
    depth: int
    seed: int
    budget_unit: str  # "flops" | "tokens", as written in the study
    budget_value: float  # the budget as written
    budget_flops: float  # the budget converted to training FLOPs
    budget_tokens: float  # the budget converted to training tokens
    num_classes: int
    seq_len: int  # L, tokens per image (all scales)
    batch_size: int  # global
    flops_per_image: int  # exact training FLOPs of one image (3 x forward)
    flops_per_step: int  # flops_per_image * batch_size
    total_steps: int
    eval_steps: list[int]
    checkpoint_steps: list[int]
    world_size: int = 1
    model: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    tokenizer: dict[str, Any] = field(default_factory=dict)
    execution: dict[str, Any] = field(default_factory=dict)
    # warmup-stable-decay design: a decay branch starts from the stable run `branch_from`
    # at `branch_step` and decays over its last `decay_steps` steps; the stable run itself has
    # schedule "wsd" with decay_steps 0 and keeps the checkpoints listed in `keep_steps`
    schedule: str = "lin0"
    decay_steps: int = 0
    branch_from: Optional[str] = None
    branch_step: Optional[int] = None
    keep_steps: list[int] = field(default_factory=list)

    # ------------------------------------------------------------------ io
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CellConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown cell config keys: {sorted(unknown)}")
        return cls(**d)

    @classmethod
    def load(cls, cell_dir: str | os.PathLike) -> "CellConfig":
        p = Path(cell_dir) / "config.json"
        return cls.from_dict(json.loads(p.read_text()))

    def study_config(self):
        """A StudyConfig with this cell's sections (for the tokenizer loader and friends)."""
        from varscale.config import from_dict

        return from_dict({"name": self.study, "data": self.data, "tokenizer": self.tokenizer,
                          "model": {**self.model, "depths": [self.depth]},
                          "training": self.training, "evaluation": self.evaluation})

    def hash(self) -> str:
        from varscale.config import hash_view

        d = {k: hash_view(k, v) for k, v in self.to_dict().items() if k not in _UNHASHED}
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:8]

    @property
    def width(self) -> int:
        return self.depth * self.head_dim

    @property
    def head_dim(self) -> int:
        from varscale.models.presets import get_preset

        return self.model.get("head_dim") or get_preset(self.preset).head_dim


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


def flops_per_image(preset: str, depth: int, model: dict[str, Any], num_classes: int) -> int:
    """Exact training FLOPs (3 x forward) of one image through VAR-d of this preset."""
    from varscale.models import flops as F

    vcfg = var_config(preset, depth, model, num_classes)
    return int(F.var_train_flops(vcfg))


def var_overrides(model: dict[str, Any]) -> dict[str, Any]:
    """The study's model section (a plain dict here) as ``build_var`` / ``VARConfig`` overrides."""
    from varscale.config import ModelConfig
    from varscale.models import var_overrides as _from_model_config

    names = {f.name for f in dataclasses.fields(ModelConfig)}
    return _from_model_config(ModelConfig(**{k: v for k, v in model.items() if k in names}))


def var_config(preset: str, depth: int, model: dict[str, Any], num_classes: int):
    from varscale.models import var_config as _var_config

    return _var_config(preset, depth, num_classes=num_classes, **var_overrides(model))


# --------------------------------------------------------------------------- planning


def _world_size(cfg) -> int:
    ex = cfg.execution
    nodes = ex.slurm.nodes if ex.executor == "slurm" else 1
    return max(ex.nproc_per_node, 1) * max(nodes, 1)


def _depths_for(cfg, budget: float) -> list[int]:
    dpb = cfg.budgets.depths_per_budget
    if not dpb:
        return list(cfg.model.depths)
    for k, ds in dpb.items():
        if math.isclose(float(k), budget, rel_tol=1e-9):
            return list(ds)
    return list(cfg.model.depths)


def _steps_for(unit: str, value: float, fpi: int, batch: int, L: int) -> int:
    if unit == "flops":
        return int(value // (fpi * batch))
    return int(math.ceil(value / (batch * L)))


def plan_cells(cfg, study_dir: str | os.PathLike) -> list["CellConfig"]:
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
    model = dataclasses.asdict(cfg.model)
    model.pop("depths", None)
    sections = cfg.to_dict()
    common = dict(
        study=cfg.name, study_dir=str(Path(study_dir)), preset=cfg.model.preset,
        num_classes=num_classes, seq_len=L, batch_size=B, world_size=_world_size(cfg),
        model=model, training=sections["training"], evaluation=sections["evaluation"],
        data=sections["data"], tokenizer=sections["tokenizer"], execution=sections["execution"],
    )
    unit = cfg.budgets.unit
    ev = cfg.evaluation
    errors: list[str] = []
    fpi_cache: dict[int, int] = {}
    cells: list[CellConfig] = []
    for budget in cfg.budget_values():
        for depth in _depths_for(cfg, budget):
            if depth not in fpi_cache:
                fpi_cache[depth] = flops_per_image(cfg.model.preset, depth, model, num_classes)
            fpi = fpi_cache[depth]
            steps = _steps_for(unit, budget, fpi, B, L)
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


def _wsd(cells: list[CellConfig], cfg) -> list[CellConfig]:
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


def write_cell(study_dir: str | os.PathLike, cell: CellConfig) -> Path:
    """Write ``cells/<run_id>/config.json`` atomically; refuses to replace a different config."""
    layout = StudyLayout.of(study_dir).cell(cell.run_id)
    path = layout.config_json
    new = cell.to_dict()
    if path.exists():
        old = json.loads(path.read_text())
        # paths and execution may differ (a study folder moved, other threads): same cell
        strip = lambda d: {k: v for k, v in d.items() if k not in ("study_dir", "execution", "world_size")}  # noqa: E731
        if strip(old) != strip(new):
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise PlanError(f"cell {cell.run_id} already exists in {layout.root} with a different "
                            f"config (differs in: {', '.join(diff)}); remove it or re-plan")
        if old == new:
            return path
    atomic_write_json(path, new)
    return path
