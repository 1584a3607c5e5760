"""The study's typed configuration: its sections, their value checks, its hashes, its loader.

A study file (``runs/<study>/study.yaml``) maps onto :class:`StudyConfig`, one dataclass per
section (``data``, ``tokenizer``, ``model``, ``budgets``, ``training``, ``evaluation``,
``execution``, ``monitor``), through the strict converter of the config kit
(``varscale.configkit``), the same one that reads a cell's ``cells/<run_id>/config.json``
into :class:`varscale.cell.CellConfig`: every unknown key and wrong type is an error naming
its path (``training.batch_size``). Then every impossible value is too, before anything
runs: each section checks its own values (``check(path) -> list[str]``, each error starting
with its key path), and :func:`_check_values` the few rules that span sections (the batch
against the world size, the resolution against the preset, ...).

Which fields enter which hash is declared on each field (``opt(default, hash=...)``; the kit's
docstring has the rules); removed options sit in a section's ``RETIRED`` table. The study's
hashes: ``StudyConfig.hash`` (study and data hashes) and :func:`tokenizer_config_hash`.

The data section's keys beyond ``kind``/``resolution``/``num_classes``/``seed`` belong to
the dataset kind (``varscale.data.DATASETS``); they stay flat under ``data:`` in the file.

Only the preset table (``varscale.models.presets``) and the dataset kinds' config classes
(``varscale.data``, numpy) are consulted here; no torch. The kit's public names (``opt``,
``Retired``, ``ConfigError``, ``from_plain``, ``hash_view``, ``digest``, ...) are importable
from here too.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional, Union

import yaml

from varscale.configkit import (SCOPES, ConfigError, HashRule, Retired, build, build_fields, did_you_mean,
                                digest, field_default, field_rule, file_key, from_plain, hash_view,
                                nearest, opt, show_value, to_plain)
from varscale.schema import StudyLayout

__all__ = [
    # the study
    "StudyConfig", "DataConfig", "TokenizerConfig", "ArchConfig", "ModelConfig", "BudgetRange", "BudgetConfig",
    "TrainingConfig", "EvaluationConfig", "SlurmConfig", "ExecutionConfig", "MonitorConfig",
    "MONITOR_BACKENDS", "MONITOR_MODULES", "monitor_problems", "tokenizer_config_hash", "expand_range",
    "from_dict", "study_file", "load_study", "read_study_yaml", "dump_yaml",
    # the kit's, re-exported (varscale.configkit)
    "ConfigError", "HashRule", "SCOPES", "Retired", "opt", "field_rule", "field_default", "hash_view", "digest",
    "to_plain", "from_plain", "nearest",
]


# --------------------------------------------------------------------------- sections


def _kinds() -> dict[str, type]:
    """Dataset kind -> its config dataclass (the registry lives in varscale.data)."""
    from varscale.data import DATASETS

    return {name: ds.Config for name, ds in DATASETS.items()}


@dataclass
class DataConfig:
    """The dataset: ``kind`` picks a registered kind (``varscale.data.DATASETS``), whose own
    keys (e.g. procedural ``train_images``, folder ``root``) sit flat beside these in the
    file and are held, typed, in ``options`` (that kind's ``Config``)."""

    kind: str = opt("procedural", hash="always")
    resolution: int = opt(32, hash="always")
    num_classes: int = opt(10, hash="always")
    seed: int = opt(0, hash="always")
    options: Any = opt(None, hash="never")  # filled from kind

    def __post_init__(self):
        kinds = _kinds()
        if self.kind in kinds and self.options is None:
            self.options = kinds[self.kind]()
        elif self.kind in kinds and not isinstance(self.options, kinds[self.kind]):
            raise TypeError(f"data.options: a {kinds[self.kind].__name__} for kind '{self.kind}', "
                            f"got {type(self.options).__name__}")

    def check(self, path: str) -> list[str]:
        """Value errors of this section, each starting with its key path (``path`` is the
        section's own, ``"data"`` in a study); the dataset kind checks its own keys."""
        e = []
        own = getattr(self.options, "check", None)  # optional on a kind's Config
        if own is not None:
            e.extend(own(path))
        if self.num_classes < 1:
            e.append(f"{path}.num_classes: must be >= 1, got {self.num_classes}")
        return e

    # one flat mapping in files and hashes: common keys + the kind's (+ every other kind's in hashes)
    def _plain(self) -> dict[str, Any]:
        out = {file_key(f): getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "options"}
        out.update(to_plain(self.options) if self.options is not None else {})
        return out

    def _hash_view(self, scope: str) -> dict[str, Any]:
        # every registered kind's keys enter, the inactive kinds' at their defaults: the
        # section's hash had that shape when procedural and folder were its only kinds, and a
        # kind added later declares its keys "when_set", so it adds nothing while inactive
        out = {}
        for f in dataclasses.fields(self):
            if f.name == "options":
                continue
            rule, v = field_rule(f, scope), getattr(self, f.name)
            if rule == "always" or (rule == "when_set" and v != field_default(f)):
                out[file_key(f)] = v
        for name, cls in _kinds().items():
            out.update(hash_view(self.options if name == self.kind else cls(), scope))
        return out

    @classmethod
    def _from_raw(cls, raw: dict, path: str, errors: list[str]) -> "DataConfig":
        kinds = _kinds()
        common = {file_key(f): f for f in dataclasses.fields(cls) if f.name != "options"}
        kind = raw.get("kind", common["kind"].default)
        if kind not in kinds:
            hint = did_you_mean(str(kind), list(kinds))
            errors.append(f"{path}.kind: {show_value(kind)} is not one of {', '.join(map(repr, kinds))}{hint}")
            return cls()
        owner: dict[str, str] = {}  # key -> the kind that uses it
        for name, kc in kinds.items():
            for k in [file_key(f) for f in dataclasses.fields(kc)] + list(getattr(kc, "RETIRED", {})):
                if k in common or k in owner:  # one flat namespace: a key has one owner
                    errors.append(f"{path}.{k}: declared by data kind '{name}' and by "
                                  f"{'the section itself' if k in common else repr(owner[k])}")
                owner.setdefault(k, name)
        top, own = {}, {}
        for k, v in raw.items():
            k = str(k)
            if k in common:
                top[k] = v
            elif owner.get(k) == kind:
                own[k] = v
            elif k in owner:  # another kind's key: harmless at that kind's default
                other = kinds[owner[k]]
                ref = other.RETIRED[k].value if k in getattr(other, "RETIRED", {}) else \
                    field_default(next(f for f in dataclasses.fields(other) if file_key(f) == k))
                if v != ref and not (v is None and ref is None):
                    errors.append(f"{path}.{k}: used by data kind '{owner[k]}', not by '{kind}' "
                                  f"(set {path}.kind: {owner[k]} or remove the key)")
            else:
                valid = sorted(set(common) | {n for n, o in owner.items() if o == kind
                                              and n not in getattr(kinds[kind], "RETIRED", {})})
                errors.append(f"{path}.{k}: unknown key '{k}'{did_you_mean(k, sorted(set(common) | set(owner)))}; "
                              f"valid keys in {path} (kind {kind}): {', '.join(valid)}")
        out = build_fields(cls, top, path, errors)
        if out is not None:
            out.options = build(kinds[kind], own, path, errors)
        return out


@dataclass
class TokenizerConfig:
    # an existing checkpoint (e.g. the official vae_ch160v4096z32.pth); skips training
    checkpoint: Optional[str] = opt(None, hash="always")
    steps: int = opt(2500, hash="always")
    batch_size: int = opt(16, hash="always")
    lr: float = opt(1e-3, hash="always")
    betas: tuple[float, float] = opt((0.9, 0.99), hash="always")
    l2_weight: float = opt(1.0, hash="always")
    l1_weight: float = opt(0.2, hash="always")
    beta: float = opt(0.25, hash="always")  # commitment weight
    revive_dead_codes: bool = opt(True, hash="always")
    # longer windows let the encoder shrink onto a few codes (docs/data.md)
    revive_every: int = opt(25, hash="always")
    # steps trained as a plain autoencoder (quantizer bypassed) before the codebook is
    # initialised from the encoder's residuals and quantization starts
    ae_warmup_steps: int = opt(0)
    # how the VQVAE's weights start (varscale.tokenizer.train.RECIPES; docs/data.md).
    # "original": PyTorch's default init, under which the cpu32 reconstruction depends on its
    # input at std 1e-5, so training first sits at the mean image for a number of steps that
    # float rounding decides. "unit_gain": every encoder/decoder conv variance-preserving and
    # every residual branch zero, so the reconstruction tracks the input from step 0
    recipe: Literal["original", "unit_gain"] = opt("original")
    # a tokenizer no better than the mean image stops the study (false: warn and go on);
    # what to do with the result, not how it is made: outside the tokenizer's hash
    fail_on_collapse: bool = opt(True, hash={"id": "when_set", "tokenizer": "never"})
    seed: int = opt(0, hash="always")
    # how many threads does not change what is learnt (nearly: float summation order)
    threads: Optional[int] = opt(None, hash={"id": "always", "tokenizer": "never"})

    RETIRED: ClassVar[dict[str, Retired]] = {
        "perceptual_weight": Retired(0.0, "the perceptual (LPIPS) loss needs pretrained VGG/LPIPS weights, "
                                          "which varscale does not ship and cannot download"),
        "adversarial_weight": Retired(0.0, "the adversarial loss needs a pretrained discriminator backbone "
                                           "of DINO / StyleGAN features, which varscale does not ship"),
    }

    def check(self, path: str) -> list[str]:
        e = []
        if not 0 <= self.ae_warmup_steps < max(self.steps, 1):
            e.append(f"{path}.ae_warmup_steps: must be >= 0 and below {path}.steps "
                     f"({self.steps}), got {self.ae_warmup_steps}")
        if self.steps < 0:
            e.append(f"{path}.steps: must be >= 0, got {self.steps}")
        return e


@dataclass
class ArchConfig:
    """One VAR's architecture options: a cell's ``model`` section (the study's, less ``depths``)."""

    preset: str = opt("cpu32", hash="always")
    head_dim: Optional[int] = opt(None, hash="always")  # None: the preset's (official: 64)
    class_dropout: float = opt(0.1, hash="always")
    # official code also drops labels at evaluation; off by default (see docs)
    class_dropout_in_eval: bool = opt(False, hash="always")
    drop_path: bool = opt(True, hash="always")  # max drop-path 0.1 * d / 24, as the official code
    attn_l2_norm: bool = opt(True, hash="always")
    shared_aln: bool = opt(False, hash="always")
    aln_gamma_init: float = opt(1e-3, hash="always")
    # pos_1LC init: "trunc_normal" (official) or "sincos2d" (a deviation; docs/models.md)
    pos_init: Literal["trunc_normal", "sincos2d"] = opt("trunc_normal")
    fused: bool = opt(True, hash="always")  # fused attention / kernels where available

    def check(self, path: str) -> list[str]:
        from varscale.models.presets import PRESETS  # torch-free module

        e = []
        if self.preset not in PRESETS:
            e.append(f"{path}.preset: unknown preset '{self.preset}'{did_you_mean(self.preset, list(PRESETS))}; "
                     f"valid: {', '.join(sorted(PRESETS))}")
        else:
            pn = list(PRESETS[self.preset].patch_nums)
            if any(b <= a for a, b in zip(pn, pn[1:])) or pn[0] < 1:
                e.append(f"{path}.preset: patch_nums must be positive and strictly increasing, got {pn}")
        if self.head_dim is not None and self.head_dim < 1:
            e.append(f"{path}.head_dim: must be >= 1, got {self.head_dim}")
        if not 0.0 <= self.class_dropout < 1.0:
            e.append(f"{path}.class_dropout: must be in [0, 1), got {self.class_dropout}")
        return e


@dataclass
class ModelConfig(ArchConfig):
    """The study's model section: the architecture options and the depths of the grid."""

    depths: list[int] = opt(factory=lambda: [1, 2, 3, 4, 6, 8], hash="always")

    def arch(self) -> ArchConfig:
        return ArchConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(ArchConfig)})

    def check(self, path: str) -> list[str]:
        e = super().check(path)
        if not self.depths:
            e.append(f"{path}.depths: needs at least one depth")
        for i, d in enumerate(self.depths):
            if isinstance(d, int) and d < 1:
                e.append(f"{path}.depths[{i}]: depth must be >= 1, got {d}")
        if len(set(self.depths)) != len(self.depths):
            e.append(f"{path}.depths: duplicate depths in {self.depths}")
        return e


@dataclass
class BudgetRange:
    start: float = opt(0.0, hash="always", key="from")
    to: float = opt(0.0, hash="always")
    per_decade: int = opt(3, hash="always")

    def check(self, path: str) -> list[str]:
        e = []
        if self.start <= 0 or self.to <= 0:
            e.append(f"{path}: range bounds must be > 0, got from={self.start} to={self.to}")
        elif self.to < self.start:
            e.append(f"{path}: 'to' ({self.to}) is below 'from' ({self.start})")
        if self.per_decade < 1:
            e.append(f"{path}.per_decade: must be >= 1, got {self.per_decade}")
        return e


@dataclass
class BudgetConfig:
    unit: Literal["flops", "tokens"] = opt("flops", hash="always")
    values: Union[list[float], BudgetRange] = opt(factory=lambda: [1e12, 3e12, 1e13], hash="always")
    # "independent": one run per (depth, budget) with the paper's schedule;
    # "wsd": one warmup-stable run per depth, a short decay branched per budget
    design: Literal["independent", "wsd"] = opt("independent", hash="always")
    wsd_decay_frac: float = opt(0.2, hash="always")
    # IsoFLOP studies: budget (as written) -> depths to train at that budget
    depths_per_budget: Optional[dict[str, list[int]]] = opt(None, hash="always")

    def check(self, path: str) -> list[str]:
        e = []
        if isinstance(self.values, BudgetRange):
            e.extend(self.values.check(f"{path}.values"))
        else:
            if not self.values:
                e.append(f"{path}.values: needs at least one budget")
            for i, v in enumerate(self.values):
                if isinstance(v, float) and not v > 0:
                    e.append(f"{path}.values[{i}]: budget must be > 0, got {v}")
        if not 0 < self.wsd_decay_frac < 1:
            e.append(f"{path}.wsd_decay_frac: must be in (0, 1), got {self.wsd_decay_frac}")
        for k in self.depths_per_budget or {}:
            try:
                float(k)
            except ValueError:
                e.append(f"{path}.depths_per_budget.{k}: key must be a budget number")
        return e


@dataclass
class TrainingConfig:
    batch_size: int = opt(64, hash="always")  # global batch (all ranks)
    base_lr: float = opt(1e-4, hash="always")  # peak lr = base_lr * batch_size / 256 (paper's tblr)
    # extra per-width scaling of the peak lr: lr *= (width_ref / width) ** lr_width_power
    lr_width_ref: Optional[int] = opt(None, hash="always")
    lr_width_power: float = opt(0.5, hash="always")
    warmup_frac: float = opt(0.02, hash="always")
    hold_frac: float = opt(0.05, hash="always")  # of the post-warmup steps ("lin0" schedule)
    final_lr_ratio: float = opt(0.01, hash="always")
    weight_decay: float = opt(0.05, hash="always")
    betas: tuple[float, float] = opt((0.9, 0.95), hash="always")
    grad_clip: float = opt(2.0, hash="always")
    label_smoothing: float = opt(0.0, hash="always")
    precision: Literal["fp32", "bf16"] = opt("fp32", hash="always")
    zero_stage: int = opt(2, hash="always")
    checkpoint_every: int = opt(200, hash="always")  # steps; also at the end
    log_every: int = opt(20, hash="always")
    # images per forward/backward on one rank; the rank's share of the batch is accumulated
    # over batch_size / world / micro_batch_size of them (DeepSpeed's gradient accumulation).
    # None: the whole share at once. Memory, not learning: the same global batch, lr and
    # steps (losses equal within 1e-5, tests/test_microbatch.py), so outside the run id and
    # study hash, and a study may turn it on to fit a GPU without re-running its cells
    micro_batch_size: Optional[int] = opt(None, hash="never")
    # recompute each transformer block's activations in the backward (torch.utils.checkpoint)
    # instead of keeping them: one more forward of every block (4 instead of 3 forward-equivalents
    # of block FLOPs), far less activation memory (docs/training.md, "Memory"), the same numbers
    # (tests/test_microbatch.py); outside the hashes for the same reason
    activation_checkpointing: bool = opt(False, hash="never")

    RETIRED: ClassVar[dict[str, Retired]] = {
        "stream_fresh": Retired(False, "streaming fresh images through the tokenizer was never built; "
                                       "raise data.train_images instead"),
        "compile": Retired(False, "torch.compile inside the DeepSpeed trainer was never built; "
                                  "benchmarks/bench_var_step.py --compile measures what it would give"),
    }

    def check(self, path: str) -> list[str]:
        """Value errors of this section; the batch against the world size is checked across
        sections (``_check_values``)."""
        e = []
        if self.batch_size < 1:
            e.append(f"{path}.batch_size: must be >= 1, got {self.batch_size}")
        mb = self.micro_batch_size
        if mb is not None and mb < 1:
            e.append(f"{path}.micro_batch_size: must be >= 1 (or null: the whole per-rank batch), got {mb}")
        if self.base_lr <= 0:
            e.append(f"{path}.base_lr: must be > 0, got {self.base_lr}")
        for name in ("warmup_frac", "hold_frac"):
            v = getattr(self, name)
            if not 0 <= v < 1:
                e.append(f"{path}.{name}: must be in [0, 1), got {v}")
        if not 0 <= self.final_lr_ratio <= 1:
            e.append(f"{path}.final_lr_ratio: must be in [0, 1], got {self.final_lr_ratio}")
        if self.zero_stage not in (0, 1, 2, 3):
            e.append(f"{path}.zero_stage: must be 0, 1, 2 or 3, got {self.zero_stage}")
        if self.grad_clip < 0:
            e.append(f"{path}.grad_clip: must be >= 0, got {self.grad_clip}")
        if self.checkpoint_every < 1:
            e.append(f"{path}.checkpoint_every: must be >= 1, got {self.checkpoint_every}")
        return e


@dataclass
class EvaluationConfig:
    num_evals: int = opt(8, hash="always")  # log-spaced over the run, plus the final step
    min_step: int = opt(10, hash="always")  # first evaluation not before this step
    batch_size: int = opt(256, hash="always")
    max_images: Optional[int] = opt(None, hash="always")  # None: the whole held-out split

    def check(self, path: str) -> list[str]:
        return [f"{path}.num_evals: must be >= 1, got {self.num_evals}"] if self.num_evals < 1 else []


@dataclass
class SlurmConfig:
    partition: Optional[str] = opt(None, hash="always")
    time_min: int = opt(60, hash="always")
    nodes: int = opt(1, hash="always")
    gpus_per_node: int = opt(0, hash="always")
    cpus_per_task: int = opt(2, hash="always")
    mem_gb: int = opt(16, hash="always")
    cluster: Literal["slurm", "local", "debug"] = opt("slurm", hash="always")
    additional_parameters: dict[str, str] = opt(factory=dict, hash="always")


@dataclass
class ExecutionConfig:
    executor: Literal["local", "torchrun", "slurm"] = opt("local", hash="always")
    parallel: int = opt(1, hash="always")  # cells at a time (local)
    threads: Optional[int] = opt(None, hash="always")  # torch threads per cell; None: cores / parallel
    nproc_per_node: int = opt(1, hash="always")  # processes per cell (torchrun / slurm)
    device: Literal["auto", "cpu", "cuda"] = opt("auto", hash="always")
    slurm: SlurmConfig = opt(factory=SlurmConfig, hash="always")
    # memory of one accelerator (GB, 1e9 bytes) that `varscale plan` checks every cell
    # against; None: no check. Planning only, so outside every hash
    gpu_mem_gb: Optional[float] = opt(None, hash="never")

    def check(self, path: str) -> list[str]:
        e = []
        if self.parallel < 1:
            e.append(f"{path}.parallel: must be >= 1, got {self.parallel}")
        if self.gpu_mem_gb is not None and not self.gpu_mem_gb > 0:
            e.append(f"{path}.gpu_mem_gb: must be > 0 (or null: no memory check), got {self.gpu_mem_gb}")
        return e

    @property
    def world_size(self) -> int:
        """Processes per cell: nproc_per_node x nodes (nodes only count under Slurm)."""
        nodes = self.slurm.nodes if self.executor == "slurm" else 1
        return max(self.nproc_per_node, 1) * max(nodes, 1)


MONITOR_BACKENDS = ("tensorboard", "wandb", "csv")
# the module each backend needs (the `monitor` extra of pyproject.toml installs them); csv
# is DeepSpeed's own writer and needs nothing
MONITOR_MODULES = {"tensorboard": "tensorboard", "wandb": "wandb", "csv": None}


@dataclass
class MonitorConfig:
    """Live curves of every cell through DeepSpeed's monitor (``varscale.train.monitor``).

    How a run is watched, not what it learns: outside every hash, so a finished study may
    turn it on or off without re-running a cell. ``backends`` empty (the default) is off;
    the files land in ``cells/<run_id>/monitor/<backend>/``.
    """

    backends: list[Literal["tensorboard", "wandb", "csv"]] = opt(factory=list, hash="never")
    # W&B: "offline" writes runs to the cell folder (upload later with `wandb sync`);
    # "online" needs the network on the machine that trains
    wandb_mode: Literal["offline", "online"] = opt("offline", hash="never")
    wandb_project: Optional[str] = opt(None, hash="never")  # None: the study's name

    def check(self, path: str) -> list[str]:
        if len(set(self.backends)) != len(self.backends):
            return [f"{path}.backends: duplicate backends in {self.backends}"]
        return []


def monitor_problems(cfg: "StudyConfig") -> list[str]:
    """One sentence per monitor backend the study names that is not installed here (a cell
    trains without it; a cluster node may have it where the login node does not)."""
    import importlib.util

    out = []
    for b in cfg.monitor.backends:
        mod = MONITOR_MODULES.get(b)
        if mod and importlib.util.find_spec(mod) is None:
            out.append(f"monitor.backends: {b} is not installed here (pip install 'varscale[monitor]'); "
                       f"cells trained on this machine log to the other backends only")
    return out


@dataclass
class StudyConfig:
    name: str = opt("study", hash="always")
    description: str = opt("", hash="always")
    data: DataConfig = opt(factory=DataConfig, hash="always")
    tokenizer: TokenizerConfig = opt(factory=TokenizerConfig, hash="always")
    model: ModelConfig = opt(factory=ModelConfig, hash="always")
    budgets: BudgetConfig = opt(factory=BudgetConfig, hash="always")
    seeds: list[int] = opt(factory=lambda: [0], hash="always")
    training: TrainingConfig = opt(factory=TrainingConfig, hash="always")
    evaluation: EvaluationConfig = opt(factory=EvaluationConfig, hash="always")
    execution: ExecutionConfig = opt(factory=ExecutionConfig, hash="always")
    monitor: MonitorConfig = opt(factory=MonitorConfig, hash="never")

    # ------------------------------------------------------------------ helpers
    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)

    def check(self) -> list[str]:
        """Every value error of the study, each starting with its key path: each section's own
        (its ``check(path)``), in the order of the sections, then the study's own fields', then
        the checks across sections (:func:`_check_values`). Empty: the values are valid."""
        e = []
        for f in dataclasses.fields(self):
            section = getattr(self, f.name)
            if hasattr(section, "check"):
                e.extend(section.check(f.name))
        if not self.seeds:
            e.append("seeds: needs at least one seed")
        return e + _check_values(self)

    def budget_values(self) -> list[float]:
        """The budgets as a sorted list, with a range expanded log-spaced."""
        v = self.budgets.values
        if isinstance(v, BudgetRange):
            return expand_range(v)
        return sorted(float(x) for x in v)

    def hash(self, *sections: str) -> str:
        """Short stable hash of the named sections (all if none), for ids and cache keys."""
        names = [f.name for f in dataclasses.fields(self)]
        unknown = [s for s in sections if s not in names]
        if unknown:
            raise KeyError(f"no config section {unknown[0]!r}; sections: {', '.join(names)}")
        view = hash_view(self)
        if sections:
            view = {s: view[s] for s in sections if s in view}
        return digest(view, 8)


def tokenizer_config_hash(cfg: StudyConfig) -> str:
    """Hash (12 hex) of what a trained tokenizer depends on: the data, the tokenizer recipe,
    the VQVAE's shape (the preset); a trained ``vqvae.pt`` is reused only while it matches."""
    from varscale.models.presets import get_preset

    return digest({"data": hash_view(cfg.data, "tokenizer"), "tokenizer": hash_view(cfg.tokenizer, "tokenizer"),
                   "preset": hash_view(get_preset(cfg.model.preset), "tokenizer")}, 12)


def expand_range(r: BudgetRange) -> list[float]:
    lo, hi = math.log10(r.start), math.log10(r.to)
    n = max(int(round((hi - lo) * r.per_decade)), 0)
    return [float(f"{10 ** (lo + i / r.per_decade):.4g}") for i in range(n + 1)]


# ------------------------------------------------------------------ value checks


def _check_values(c: StudyConfig) -> list[str]:
    """The value errors that span sections (each section checks its own: ``check(path)``)."""
    from varscale.models.presets import PRESETS  # torch-free module

    e: list[str] = []
    if c.model.preset in PRESETS and c.data.resolution != PRESETS[c.model.preset].resolution:
        e.append(f"data.resolution: {c.data.resolution} does not match preset "
                 f"'{c.model.preset}' ({PRESETS[c.model.preset].resolution})")
    if c.budgets.depths_per_budget:
        known = set(c.model.depths)
        for k, ds in c.budgets.depths_per_budget.items():
            for d in ds:
                if d not in known:
                    e.append(f"budgets.depths_per_budget.{k}: depth {d} not in model.depths {sorted(known)}")
    t, ws = c.training, c.execution.world_size
    if t.batch_size >= 1 and t.batch_size % ws:
        e.append(f"training.batch_size: {t.batch_size} is not divisible by the world size {ws} "
                 f"(execution.nproc_per_node x nodes)")
    mb = t.micro_batch_size
    if mb is not None and mb >= 1 and t.batch_size >= 1 and t.batch_size % ws == 0 and (t.batch_size // ws) % mb:
        e.append(f"training.micro_batch_size: {mb} does not divide the per-rank batch {t.batch_size // ws} "
                 f"(training.batch_size {t.batch_size} / world size {ws})")
    return e


# ------------------------------------------------------------------ entry points


def from_dict(raw: Any, source: str | None = None) -> StudyConfig:
    """A StudyConfig from the plain mapping of a study file, strictly: a ConfigError lists
    every unknown key, wrong type and impossible value (``StudyConfig.check``)."""
    cfg = from_plain(StudyConfig, {} if raw is None else raw, source)
    errors = cfg.check()
    if errors:
        raise ConfigError(errors, source)
    return cfg


def study_file(path: str | Path) -> Path:
    p = Path(path)
    return StudyLayout(p).study_yaml if p.is_dir() or p.suffix not in (".yaml", ".yml") else p


def load_study(path: str | Path) -> StudyConfig:
    """Load ``runs/<study>/study.yaml`` (or a yaml file) strictly."""
    f = study_file(path)
    if not f.exists():
        raise ConfigError([f"no study file at {f}"])
    raw = read_study_yaml(f)
    cfg = from_dict(raw, str(f))
    if cfg.name == "study" and "name" not in (raw or {}):
        cfg.name = f.parent.name
    return cfg


_RESTORE = "restore it from version control or rewrite it (runs/README.md describes the format)"


def read_study_yaml(f: Path) -> dict:
    """The top-level mapping of a study file; a file that is not one (unreadable, not text,
    not YAML, empty, a list) is a ConfigError of one line that names it and says what to do."""
    try:
        text = f.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError([f"not a text file (byte {e.start} is not UTF-8); {_RESTORE}"], str(f)) from None
    except OSError as e:
        raise ConfigError([f"cannot be read ({e.strerror or e}); check that it is a file you may read"],
                          str(f)) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        # PyYAML's own message spans several lines (context, marks); one line is enough here
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError([f"YAML syntax: {what}{where}; fix it or {_RESTORE}"], str(f)) from None
    if raw is None:
        raise ConfigError([f"the file is empty; {_RESTORE}"], str(f))
    if not isinstance(raw, dict):
        raise ConfigError([f"<root>: expected a mapping of sections (data:, model:, budgets:, ...), got "
                           f"{type(raw).__name__}; {_RESTORE}"], str(f))
    return raw


def dump_yaml(cfg: StudyConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
