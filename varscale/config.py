"""Typed study configuration and its strict loader.

A study file (``runs/<study>/study.yaml``) maps onto :class:`StudyConfig`. Loading is strict
on purpose: a misspelt key silently falling back to a default would change a scaling-law
study without anyone noticing, so every unknown key, wrong type and impossible value is an
error that names its path (``training.batch_size``) before anything runs.

Only the preset table is consulted here (``varscale.models.presets``, plain Python).
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml


class ConfigError(ValueError):
    """One or more problems in a study file; ``errors`` lists them one per line."""

    def __init__(self, errors: list[str], source: str | None = None):
        self.errors = list(errors)
        head = f"invalid study file {source}" if source else "invalid study config"
        super().__init__(head + ":\n" + "\n".join(f"  - {e}" for e in self.errors))


# --------------------------------------------------------------------------- sections


@dataclass
class DataConfig:
    kind: Literal["procedural", "folder"] = "procedural"
    resolution: int = 32
    num_classes: int = 10
    # procedural: how many images each split has (generated deterministically from seed)
    train_images: int = 60000
    val_images: int = 5000
    seed: int = 0
    # procedural: 0 = every random factor continuous; n >= 2 = each snapped to n levels
    # (a lower irreducible token entropy; docs/data.md)
    factor_levels: int = 0
    # folder: ImageNet layout root/{train,val}/<class>/*.jpg
    root: Optional[str] = None
    # paper's resize-then-crop: shorter side to resolution * resize_ratio (Lanczos)
    resize_ratio: float = 1.125


@dataclass
class TokenizerConfig:
    # an existing checkpoint (e.g. the official vae_ch160v4096z32.pth); skips training
    checkpoint: Optional[str] = None
    steps: int = 2500
    batch_size: int = 16
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.99)
    l2_weight: float = 1.0
    l1_weight: float = 0.2
    beta: float = 0.25  # commitment weight
    perceptual_weight: float = 0.0  # needs pretrained LPIPS weights: off by default
    adversarial_weight: float = 0.0
    revive_dead_codes: bool = True
    revive_every: int = 25  # longer windows let the encoder shrink onto a few codes (docs/data.md)
    # steps trained as a plain autoencoder (quantizer bypassed) before the codebook is
    # initialised from the encoder's residuals and quantization starts
    ae_warmup_steps: int = 0
    # a tokenizer no better than the mean image stops the study (false: warn and go on)
    fail_on_collapse: bool = True
    seed: int = 0
    threads: Optional[int] = None


@dataclass
class ModelConfig:
    preset: str = "cpu32"
    depths: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 6, 8])
    head_dim: Optional[int] = None  # None: the preset's (official: 64)
    class_dropout: float = 0.1
    # official code also drops labels at evaluation; off by default (see docs)
    class_dropout_in_eval: bool = False
    drop_path: bool = True  # max drop-path 0.1 * d / 24, as the official code
    attn_l2_norm: bool = True
    shared_aln: bool = False
    aln_gamma_init: float = 1e-3
    # pos_1LC init: "trunc_normal" (official) or "sincos2d" (a deviation; docs/models.md)
    pos_init: Literal["trunc_normal", "sincos2d"] = "trunc_normal"
    fused: bool = True  # fused attention / kernels where available


@dataclass
class BudgetRange:
    start: float = 0.0  # yaml key "from"
    to: float = 0.0
    per_decade: int = 3


@dataclass
class BudgetConfig:
    unit: Literal["flops", "tokens"] = "flops"
    values: Union[list[float], BudgetRange] = field(default_factory=lambda: [1e12, 3e12, 1e13])
    # "independent": one run per (depth, budget) with the paper's schedule;
    # "wsd": one warmup-stable run per depth, a short decay branched per budget
    design: Literal["independent", "wsd"] = "independent"
    wsd_decay_frac: float = 0.2
    # IsoFLOP studies: budget (as written) -> depths to train at that budget
    depths_per_budget: Optional[dict[str, list[int]]] = None


@dataclass
class TrainingConfig:
    batch_size: int = 64  # global batch (all ranks)
    base_lr: float = 1e-4  # peak lr = base_lr * batch_size / 256 (paper's tblr)
    # extra per-width scaling of the peak lr: lr *= (width_ref / width) ** lr_width_power
    lr_width_ref: Optional[int] = None
    lr_width_power: float = 0.5
    warmup_frac: float = 0.02
    hold_frac: float = 0.05  # of the post-warmup steps ("lin0" schedule)
    final_lr_ratio: float = 0.01
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 2.0
    label_smoothing: float = 0.0
    precision: Literal["fp32", "bf16"] = "fp32"
    zero_stage: int = 2
    # stream fresh images through the tokenizer instead of repeating the cached epoch
    stream_fresh: bool = False
    checkpoint_every: int = 200  # steps; also at the end
    log_every: int = 20
    compile: bool = False


@dataclass
class EvaluationConfig:
    num_evals: int = 8  # log-spaced over the run, plus the final step
    min_step: int = 10  # first evaluation not before this step
    batch_size: int = 256
    max_images: Optional[int] = None  # None: the whole held-out split


@dataclass
class SlurmConfig:
    partition: Optional[str] = None
    time_min: int = 60
    nodes: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int = 2
    mem_gb: int = 16
    cluster: Literal["slurm", "local", "debug"] = "slurm"
    additional_parameters: dict[str, str] = field(default_factory=dict)


@dataclass
class ExecutionConfig:
    executor: Literal["local", "torchrun", "slurm"] = "local"
    parallel: int = 1  # cells at a time (local)
    threads: Optional[int] = None  # torch threads per cell; None: cores / parallel
    nproc_per_node: int = 1  # processes per cell (torchrun / slurm)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    slurm: SlurmConfig = field(default_factory=SlurmConfig)


@dataclass
class StudyConfig:
    name: str = "study"
    description: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    budgets: BudgetConfig = field(default_factory=BudgetConfig)
    seeds: list[int] = field(default_factory=lambda: [0])
    training: TrainingConfig = field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)

    # ------------------------------------------------------------------ helpers
    def to_dict(self) -> dict[str, Any]:
        return _to_plain(self)

    def budget_values(self) -> list[float]:
        """The budgets as a sorted list, with a range expanded log-spaced."""
        v = self.budgets.values
        if isinstance(v, BudgetRange):
            return expand_range(v)
        return sorted(float(x) for x in v)

    def hash(self, *sections: str) -> str:
        """Short stable hash of the named sections (all if none), for ids and cache keys."""
        d = {s: hash_view(s, v) for s, v in self.to_dict().items()}
        if sections:
            d = {s: d[s] for s in sections}
        blob = json.dumps(d, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:8]


# Options added after studies were already run: while at these values they stay out of every
# hash (study, tokenizer, token cache, cell ids), so upgrading varscale keeps a study's
# trained tokenizer, token cache and finished cells valid instead of silently retraining.
HASH_NEUTRAL_DEFAULTS: dict[str, dict[str, Any]] = {
    "data": {"factor_levels": 0},
    "model": {"pos_init": "trunc_normal"},
    "tokenizer": {"fail_on_collapse": True, "ae_warmup_steps": 0},
    "preset": {"vae_arch": "ldm"},  # models.presets.Preset, in the tokenizer's hash
}


def hash_view(section: str, d: Any) -> Any:
    """``d`` (a section as a plain dict) without the options that sit at a hash-neutral default."""
    neutral = HASH_NEUTRAL_DEFAULTS.get(section)
    if not neutral or not isinstance(d, dict):
        return d
    return {k: v for k, v in d.items() if not (k in neutral and v == neutral[k])}


def expand_range(r: BudgetRange) -> list[float]:
    lo, hi = math.log10(r.start), math.log10(r.to)
    n = max(int(round((hi - lo) * r.per_decade)), 0)
    return [float(f"{10 ** (lo + i / r.per_decade):.4g}") for i in range(n + 1)]


# ------------------------------------------------------------------ strict conversion

_RENAMES = {BudgetRange: {"from": "start"}}  # yaml key -> field name


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        s = " or ".join(_type_name(a) for a in args)
        return s + " or null" if len(args) < len(typing.get_args(tp)) else s
    if origin in (list, tuple):
        args = typing.get_args(tp)
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return "mapping"
    if dataclasses.is_dataclass(tp):
        return "mapping (" + tp.__name__ + ")"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, path: str, errors: list[str]) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            trial: list[str] = []
            out = _convert(value, a, path, trial)
            if not trial:
                return out
        errors.append(f"{path}: expected {_type_name(tp)}, got {_show(value)}")
        return None
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            hint = _did_you_mean(str(value), [str(a) for a in allowed])
            errors.append(f"{path}: {_show(value)} is not one of {', '.join(map(repr, allowed))}{hint}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            errors.append(f"{path}: expected {_type_name(tp)}, got {_show(value)}")
            return tp()
        return _build(tp, value, path, errors)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            errors.append(f"{path}: expected {_type_name(tp)}, got {_show(value)}")
            return value
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                errors.append(f"{path}: expected {len(args)} values, got {len(value)}")
                return tuple(value)
            return tuple(_convert(v, a, f"{path}[{i}]", errors) for i, (v, a) in enumerate(zip(value, args)))
        inner = args[0] if args else Any
        out = [_convert(v, inner, f"{path}[{i}]", errors) for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            errors.append(f"{path}: expected mapping, got {_show(value)}")
            return {}
        _, vt = typing.get_args(tp)
        return {str(k): _convert(v, vt, f"{path}.{k}", errors) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            errors.append(f"{path}: expected bool (true/false), got {_show(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            # 1e3 in YAML is a string or float; accept whole floats, nothing else
            if isinstance(value, float) and value.is_integer():
                return int(value)
            if isinstance(value, str):
                try:
                    f = float(value)
                    if f.is_integer():
                        return int(f)
                except ValueError:
                    pass
            errors.append(f"{path}: expected int, got {_show(value)}")
        return value
    if tp is float:
        if isinstance(value, bool):
            errors.append(f"{path}: expected float, got {_show(value)}")
            return value
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):  # PyYAML reads 1e12 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        errors.append(f"{path}: expected float, got {_show(value)}")
        return value
    if tp is str:
        if not isinstance(value, str):
            errors.append(f"{path}: expected str, got {_show(value)}")
        return value
    return value


def _show(v: Any) -> str:
    s = repr(v)
    return (s[:60] + "...") if len(s) > 60 else s + f" ({type(v).__name__})"


def _did_you_mean(key: str, valid: list[str]) -> str:
    m = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    return f" (did you mean '{m[0]}'?)" if m else ""


def _build(cls: type, raw: dict, path: str, errors: list[str]) -> Any:
    hints = typing.get_type_hints(cls)
    renames = _RENAMES.get(cls, {})
    names = {f.name for f in dataclasses.fields(cls)}
    yaml_names = sorted({renames.get(n, n) for n in names} | set(renames)) if renames else sorted(names)
    yaml_names = [n for n in yaml_names if n not in renames.values()] if renames else yaml_names
    kwargs = {}
    for k, v in raw.items():
        key = renames.get(str(k), str(k))
        where = f"{path}.{k}" if path else str(k)
        if key not in names:
            errors.append(
                f"{where}: unknown key '{k}'{_did_you_mean(str(k), yaml_names)}; "
                f"valid keys{' in ' + path if path else ''}: {', '.join(yaml_names)}"
            )
            continue
        kwargs[key] = _convert(v, hints[key], where, errors)
    try:
        return cls(**kwargs)
    except TypeError as e:  # only if a conversion error left a bad value behind
        errors.append(f"{path or '<root>'}: {e}")
        return cls()


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        out = {}
        for f in dataclasses.fields(obj):
            name = {"start": "from"}.get(f.name, f.name) if isinstance(obj, BudgetRange) else f.name
            out[name] = _to_plain(getattr(obj, f.name))
        return out
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    return obj


# ------------------------------------------------------------------ value checks


def _check_values(c: StudyConfig) -> list[str]:
    from varscale.models.presets import PRESETS  # torch-free module

    e: list[str] = []
    if c.model.preset not in PRESETS:
        e.append(f"model.preset: unknown preset '{c.model.preset}'{_did_you_mean(c.model.preset, list(PRESETS))}; "
                 f"valid: {', '.join(sorted(PRESETS))}")
    else:
        p = PRESETS[c.model.preset]
        pn = list(p.patch_nums)
        if any(b <= a for a, b in zip(pn, pn[1:])) or pn[0] < 1:
            e.append(f"model.preset: patch_nums must be positive and strictly increasing, got {pn}")
        if c.data.resolution != p.resolution:
            e.append(f"data.resolution: {c.data.resolution} does not match preset "
                     f"'{c.model.preset}' ({p.resolution})")
    if not c.model.depths:
        e.append("model.depths: needs at least one depth")
    for i, d in enumerate(c.model.depths):
        if isinstance(d, int) and d < 1:
            e.append(f"model.depths[{i}]: depth must be >= 1, got {d}")
    if len(set(c.model.depths)) != len(c.model.depths):
        e.append(f"model.depths: duplicate depths in {c.model.depths}")
    if c.model.head_dim is not None and c.model.head_dim < 1:
        e.append(f"model.head_dim: must be >= 1, got {c.model.head_dim}")
    if not 0.0 <= c.model.class_dropout < 1.0:
        e.append(f"model.class_dropout: must be in [0, 1), got {c.model.class_dropout}")

    b = c.budgets
    if isinstance(b.values, BudgetRange):
        r = b.values
        if r.start <= 0 or r.to <= 0:
            e.append(f"budgets.values: range bounds must be > 0, got from={r.start} to={r.to}")
        elif r.to < r.start:
            e.append(f"budgets.values: 'to' ({r.to}) is below 'from' ({r.start})")
        if r.per_decade < 1:
            e.append(f"budgets.values.per_decade: must be >= 1, got {r.per_decade}")
    else:
        if not b.values:
            e.append("budgets.values: needs at least one budget")
        for i, v in enumerate(b.values):
            if isinstance(v, float) and not v > 0:
                e.append(f"budgets.values[{i}]: budget must be > 0, got {v}")
    if not 0 < b.wsd_decay_frac < 1:
        e.append(f"budgets.wsd_decay_frac: must be in (0, 1), got {b.wsd_decay_frac}")
    if b.depths_per_budget:
        known = set(c.model.depths)
        for k, ds in b.depths_per_budget.items():
            try:
                float(k)
            except ValueError:
                e.append(f"budgets.depths_per_budget.{k}: key must be a budget number")
            for d in ds:
                if d not in known:
                    e.append(f"budgets.depths_per_budget.{k}: depth {d} not in model.depths {sorted(known)}")

    if not c.seeds:
        e.append("seeds: needs at least one seed")
    t = c.training
    ws = max(c.execution.nproc_per_node, 1) * max(c.execution.slurm.nodes if c.execution.executor == "slurm" else 1, 1)
    if t.batch_size < 1:
        e.append(f"training.batch_size: must be >= 1, got {t.batch_size}")
    elif t.batch_size % ws:
        e.append(f"training.batch_size: {t.batch_size} is not divisible by the world size {ws} "
                 f"(execution.nproc_per_node x nodes)")
    if t.base_lr <= 0:
        e.append(f"training.base_lr: must be > 0, got {t.base_lr}")
    for name in ("warmup_frac", "hold_frac"):
        v = getattr(t, name)
        if not 0 <= v < 1:
            e.append(f"training.{name}: must be in [0, 1), got {v}")
    if not 0 <= t.final_lr_ratio <= 1:
        e.append(f"training.final_lr_ratio: must be in [0, 1], got {t.final_lr_ratio}")
    if t.zero_stage not in (0, 1, 2, 3):
        e.append(f"training.zero_stage: must be 0, 1, 2 or 3, got {t.zero_stage}")
    if t.grad_clip < 0:
        e.append(f"training.grad_clip: must be >= 0, got {t.grad_clip}")
    # accepted keys whose feature is not built yet: refuse rather than silently ignore
    if t.stream_fresh:
        e.append("training.stream_fresh: streaming fresh images is not implemented yet; "
                 "raise data.train_images instead")
    if t.compile:
        e.append("training.compile: torch.compile inside the DeepSpeed trainer is not implemented yet "
                 "(benchmarks/bench_var_step.py --compile measures what it would give)")
    if t.checkpoint_every < 1:
        e.append(f"training.checkpoint_every: must be >= 1, got {t.checkpoint_every}")
    if c.evaluation.num_evals < 1:
        e.append(f"evaluation.num_evals: must be >= 1, got {c.evaluation.num_evals}")
    if c.data.kind == "folder" and not c.data.root:
        e.append("data.root: required when data.kind is 'folder'")
    if c.data.kind == "procedural":
        if c.data.train_images < 1 or c.data.val_images < 1:
            e.append("data.train_images / data.val_images: must be >= 1")
    if not 0 <= c.tokenizer.ae_warmup_steps < max(c.tokenizer.steps, 1):
        e.append(f"tokenizer.ae_warmup_steps: must be >= 0 and below tokenizer.steps "
                 f"({c.tokenizer.steps}), got {c.tokenizer.ae_warmup_steps}")
    if c.data.factor_levels < 0 or c.data.factor_levels == 1:
        e.append(f"data.factor_levels: must be 0 (continuous) or >= 2, got {c.data.factor_levels}")
    if c.data.num_classes < 1:
        e.append(f"data.num_classes: must be >= 1, got {c.data.num_classes}")
    if c.execution.parallel < 1:
        e.append(f"execution.parallel: must be >= 1, got {c.execution.parallel}")
    if c.tokenizer.steps < 0:
        e.append(f"tokenizer.steps: must be >= 0, got {c.tokenizer.steps}")
    return e


# ------------------------------------------------------------------ entry points


def from_dict(raw: Any, source: str | None = None) -> StudyConfig:
    errors: list[str] = []
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError([f"<root>: expected a mapping, got {_show(raw)}"], source)
    cfg = _build(StudyConfig, raw, "", errors)
    if errors:  # value checks on a half-converted config would only add noise
        raise ConfigError(errors, source)
    errors = _check_values(cfg)
    if errors:
        raise ConfigError(errors, source)
    return cfg


def study_file(path: str | Path) -> Path:
    p = Path(path)
    return p / "study.yaml" if p.is_dir() or p.suffix not in (".yaml", ".yml") else p


def load_study(path: str | Path) -> StudyConfig:
    """Load ``runs/<study>/study.yaml`` (or a yaml file) strictly."""
    f = study_file(path)
    if not f.exists():
        raise ConfigError([f"no study file at {f}"])
    try:
        raw = yaml.safe_load(f.read_text())
    except yaml.YAMLError as e:
        raise ConfigError([f"YAML syntax: {e}"], str(f)) from None
    cfg = from_dict(raw, str(f))
    if cfg.name == "study" and "name" not in (raw or {}):
        cfg.name = f.parent.name
    return cfg


def load_study_for_cli(path: str | Path) -> Optional[StudyConfig]:
    """``load_study`` for a command's ``main``: prints the errors and returns None on a bad file."""
    try:
        return load_study(path)
    except ConfigError as e:
        import sys

        print(e, file=sys.stderr)
        return None


def dump_yaml(cfg: StudyConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
