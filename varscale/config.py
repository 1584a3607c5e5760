"""Typed study configuration, its strict loader, and which fields enter which hash.

A study file (``runs/<study>/study.yaml``) maps onto :class:`StudyConfig`, and a cell's
``cells/<run_id>/config.json`` onto :class:`varscale.cell.CellConfig`, through the same
converter. Loading is strict on purpose: a misspelt key silently falling back to a default
would change a scaling-law study without anyone noticing, so every unknown key, wrong type
and impossible value is an error that names its path (``training.batch_size``) before
anything runs.

Hash participation is declared on each field (``opt(default, hash=...)``):

* ``"always"``: the field enters the hash with its value (every field that existed when the
  committed studies were run; their hashes and cell ids are pinned in
  ``tests/test_pinned_hashes.py``);
* ``"when_set"``: the field enters only while it differs from its default. This is the rule
  for a field declared without ``hash=`` (plain ``name: int = 3`` too), so **a field added
  later, at its default, leaves every existing hash unchanged by construction**: the study
  hash, the data hash (half of the token cache's key), the tokenizer's config hash and every
  cell's run id. Set to another value it changes them, as it should;
* ``"never"``: how a thing is run, not what it computes (paths, thread counts, the study's
  name in a cell).

``hash`` may also map each scope to a rule: ``"id"`` (``StudyConfig.hash``, the data hash
and cell run ids, which hash the same sections) and ``"tokenizer"`` (``tokenizer_config_hash``:
the data, tokenizer and preset sections). A field without a default always enters.

Removed options are declared in a section's ``RETIRED`` table (:class:`Retired`): a study
file or an old cell ``config.json`` that still carries one at its old value loads (the key
is ignored), any other value is an error saying the option was removed, and the old value
keeps entering the hashes it entered while it existed, so removing an option changes no hash.

The data section's keys beyond ``kind``/``resolution``/``num_classes``/``seed`` belong to
the dataset kind (``varscale.data.DATASETS``); they stay flat under ``data:`` in the file.

Only the preset table (``varscale.models.presets``) and the dataset kinds' config classes
(``varscale.data``, numpy) are consulted here; no torch.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import types
import typing
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional, Union

import yaml

from varscale.schema import StudyLayout


class ConfigError(ValueError):
    """One or more problems in a study file or cell config; ``errors`` lists them one per line."""

    def __init__(self, errors: list[str], source: str | None = None, what: str = "study file"):
        self.errors = list(errors)
        head = f"invalid {what} {source}" if source else "invalid study config"
        super().__init__(head + ":\n" + "\n".join(f"  - {e}" for e in self.errors))


# --------------------------------------------------------------------------- hash declarations

HashRule = Literal["always", "when_set", "never"]
SCOPES = ("id", "tokenizer")
_RULES = typing.get_args(HashRule)


def _rules(hash: Union[str, dict[str, str]]) -> dict[str, str]:
    rules = {s: hash for s in SCOPES} if isinstance(hash, str) else dict(hash)
    if set(rules) != set(SCOPES) or any(r not in _RULES for r in rules.values()):
        raise ValueError(f"hash must be one of {_RULES} or a mapping of every scope {SCOPES} to one, got {hash!r}")
    return rules


def opt(default: Any = MISSING, *, factory: Any = MISSING, hash: Union[str, dict[str, str]] = "when_set",
        key: Optional[str] = None) -> Any:
    """A config field whose hash participation is declared (see the module docstring).

    ``factory`` is a default factory (lists, nested sections); ``key`` the name in the file
    when it differs from the field's (``from`` is a Python keyword).
    """
    md: dict[str, Any] = {"hash": _rules(hash)}
    if key:
        md["key"] = key
    return field(default=default, default_factory=factory, metadata=md)


@dataclass(frozen=True)
class Retired:
    """A removed option: ``value`` is the only one still accepted (and ignored); ``reason``
    says why it went; ``hash`` is how it entered hashes while it existed (``"always"``: the
    old value keeps entering them, so no hash changes)."""

    value: Any
    reason: str
    hash: Union[str, dict[str, str]] = "always"


def field_rule(f: dataclasses.Field, scope: str) -> str:
    md = f.metadata.get("hash")
    if md is not None:
        return md[scope]
    if f.default is MISSING and f.default_factory is MISSING:
        return "always"  # nothing to compare with
    return "when_set"


def field_default(f: dataclasses.Field) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


def _key(f: dataclasses.Field) -> str:
    return f.metadata.get("key", f.name)


def hash_view(obj: Any, scope: str = "id") -> Any:
    """``obj`` as the plain data its hash is taken over in ``scope`` ("id" or "tokenizer").

    Fields enter by their declared rule; a section's retired options enter with their old
    value where they always did; a section may shape its own view (``DataConfig``: flat, every
    dataset kind's keys).
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        own = getattr(obj, "_hash_view", None)
        if own is not None:
            return own(scope)
        out = {}
        for f in dataclasses.fields(obj):
            rule = field_rule(f, scope)
            v = getattr(obj, f.name)
            if rule == "never" or (rule == "when_set" and v == field_default(f)):
                continue
            out[_key(f)] = hash_view(v, scope)
        for k, r in getattr(type(obj), "RETIRED", {}).items():
            if _rules(r.hash)[scope] == "always":
                out[k] = r.value
        return out
    if isinstance(obj, (list, tuple)):
        return [hash_view(v, scope) for v in obj]
    if isinstance(obj, dict):
        return {str(k): hash_view(v, scope) for k, v in obj.items()}
    return obj


def digest(view: Any, n: int = 8) -> str:
    """The first ``n`` hex digits of the SHA-256 of ``view`` as sorted-key JSON."""
    return hashlib.sha256(json.dumps(view, sort_keys=True, default=str).encode()).hexdigest()[:n]


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
    options: Any = field(default=None, metadata={"hash": _rules("never")})  # filled from kind

    def __post_init__(self):
        kinds = _kinds()
        if self.kind in kinds and self.options is None:
            self.options = kinds[self.kind]()
        elif self.kind in kinds and not isinstance(self.options, kinds[self.kind]):
            raise TypeError(f"data.options: a {kinds[self.kind].__name__} for kind '{self.kind}', "
                            f"got {type(self.options).__name__}")

    # one flat mapping in files and hashes: common keys + the kind's (+ every other kind's in hashes)
    def _plain(self) -> dict[str, Any]:
        out = {_key(f): getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "options"}
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
                out[_key(f)] = v
        for name, cls in _kinds().items():
            out.update(hash_view(self.options if name == self.kind else cls(), scope))
        return out

    @classmethod
    def _from_raw(cls, raw: dict, path: str, errors: list[str]) -> "DataConfig":
        kinds = _kinds()
        common = {_key(f): f for f in dataclasses.fields(cls) if f.name != "options"}
        kind = raw.get("kind", common["kind"].default)
        if kind not in kinds:
            hint = _did_you_mean(str(kind), list(kinds))
            errors.append(f"{path}.kind: {_show(kind)} is not one of {', '.join(map(repr, kinds))}{hint}")
            return cls()
        owner: dict[str, str] = {}  # key -> the kind that uses it
        for name, kc in kinds.items():
            for k in [_key(f) for f in dataclasses.fields(kc)] + list(getattr(kc, "RETIRED", {})):
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
                    field_default(next(f for f in dataclasses.fields(other) if _key(f) == k))
                if v != ref and not (v is None and ref is None):
                    errors.append(f"{path}.{k}: used by data kind '{owner[k]}', not by '{kind}' "
                                  f"(set {path}.kind: {owner[k]} or remove the key)")
            else:
                valid = sorted(set(common) | {n for n, o in owner.items() if o == kind
                                              and n not in getattr(kinds[kind], "RETIRED", {})})
                errors.append(f"{path}.{k}: unknown key '{k}'{_did_you_mean(k, sorted(set(common) | set(owner)))}; "
                              f"valid keys in {path} (kind {kind}): {', '.join(valid)}")
        out = _build_fields(cls, top, path, errors)
        if out is not None:
            out.options = _build(kinds[kind], own, path, errors)
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


@dataclass
class ModelConfig(ArchConfig):
    """The study's model section: the architecture options and the depths of the grid."""

    depths: list[int] = opt(factory=lambda: [1, 2, 3, 4, 6, 8], hash="always")

    def arch(self) -> ArchConfig:
        return ArchConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(ArchConfig)})


@dataclass
class BudgetRange:
    start: float = opt(0.0, hash="always", key="from")
    to: float = opt(0.0, hash="always")
    per_decade: int = opt(3, hash="always")


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


@dataclass
class EvaluationConfig:
    num_evals: int = opt(8, hash="always")  # log-spaced over the run, plus the final step
    min_step: int = opt(10, hash="always")  # first evaluation not before this step
    batch_size: int = opt(256, hash="always")
    max_images: Optional[int] = opt(None, hash="always")  # None: the whole held-out split


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


# ------------------------------------------------------------------ strict conversion


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


def nearest(word: str, choices, cutoff: float = 0.6) -> Optional[str]:
    """The choice closest to a mistyped ``word`` (None when none is close): every did-you-mean."""
    m = difflib.get_close_matches(word, list(choices), n=1, cutoff=cutoff)
    return m[0] if m else None


def _did_you_mean(key: str, valid: list[str]) -> str:
    m = nearest(key, valid)
    return f" (did you mean '{m}'?)" if m else ""


def _build(cls: type, raw: dict, path: str, errors: list[str]) -> Any:
    own = getattr(cls, "_from_raw", None)
    if own is not None:
        return own(raw, path, errors)
    return _build_fields(cls, raw, path, errors)


def _build_fields(cls: type, raw: dict, path: str, errors: list[str]) -> Any:
    """``cls`` from the mapping ``raw``: every key converted to its field's type, unknown keys
    and removed options' other values reported under ``path``."""
    hints = typing.get_type_hints(cls)
    by_key = {_key(f): f for f in dataclasses.fields(cls) if f.init}
    retired = getattr(cls, "RETIRED", {})
    kwargs = {}
    for k, v in raw.items():
        k = str(k)
        where = f"{path}.{k}" if path else k
        if k in retired:
            r = retired[k]
            if v != r.value:
                errors.append(f"{where}: option removed: {r.reason}; only its old value "
                              f"{json.dumps(r.value)} still loads (remove the key)")
            continue
        if k not in by_key:
            valid = sorted(by_key)
            errors.append(f"{where}: unknown key '{k}'{_did_you_mean(k, valid)}; "
                          f"valid keys{' in ' + path if path else ''}: {', '.join(valid)}")
            continue
        f = by_key[k]
        kwargs[f.name] = _convert(v, hints[f.name], where, errors)
    try:
        return cls(**kwargs)
    except TypeError as e:  # a required field missing, or a bad value left by a conversion error
        errors.append(f"{path or '<root>'}: {e}")
        return None


def to_plain(obj: Any) -> Any:
    """Dataclasses -> the plain mappings of the file format (tuples as lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        own = getattr(obj, "_plain", None)
        if own is not None:
            return {k: to_plain(v) for k, v in own().items()}
        return {_key(f): to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    return obj


def from_plain(cls: type, raw: Any, source: str | None = None, what: str = "study file") -> Any:
    """``cls`` (a config dataclass) from plain data, strictly: ConfigError lists every problem."""
    if not isinstance(raw, dict):
        raise ConfigError([f"<root>: expected a mapping, got {_show(raw)}"], source, what)
    errors: list[str] = []
    out = _build(cls, raw, "", errors)
    if errors:
        raise ConfigError(errors, source, what)
    return out


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
    ws = c.execution.world_size
    if t.batch_size < 1:
        e.append(f"training.batch_size: must be >= 1, got {t.batch_size}")
    elif t.batch_size % ws:
        e.append(f"training.batch_size: {t.batch_size} is not divisible by the world size {ws} "
                 f"(execution.nproc_per_node x nodes)")
    mb = t.micro_batch_size
    if mb is not None and mb < 1:
        e.append(f"training.micro_batch_size: must be >= 1 (or null: the whole per-rank batch), got {mb}")
    elif mb is not None and t.batch_size >= 1 and t.batch_size % ws == 0 and (t.batch_size // ws) % mb:
        e.append(f"training.micro_batch_size: {mb} does not divide the per-rank batch {t.batch_size // ws} "
                 f"(training.batch_size {t.batch_size} / world size {ws})")
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
    if t.checkpoint_every < 1:
        e.append(f"training.checkpoint_every: must be >= 1, got {t.checkpoint_every}")
    if c.evaluation.num_evals < 1:
        e.append(f"evaluation.num_evals: must be >= 1, got {c.evaluation.num_evals}")
    e.extend(c.data.options.check("data"))  # the dataset kind's own keys
    if not 0 <= c.tokenizer.ae_warmup_steps < max(c.tokenizer.steps, 1):
        e.append(f"tokenizer.ae_warmup_steps: must be >= 0 and below tokenizer.steps "
                 f"({c.tokenizer.steps}), got {c.tokenizer.ae_warmup_steps}")
    if c.data.num_classes < 1:
        e.append(f"data.num_classes: must be >= 1, got {c.data.num_classes}")
    if c.execution.parallel < 1:
        e.append(f"execution.parallel: must be >= 1, got {c.execution.parallel}")
    if c.execution.gpu_mem_gb is not None and not c.execution.gpu_mem_gb > 0:
        e.append(f"execution.gpu_mem_gb: must be > 0 (or null: no memory check), got {c.execution.gpu_mem_gb}")
    if c.tokenizer.steps < 0:
        e.append(f"tokenizer.steps: must be >= 0, got {c.tokenizer.steps}")
    if len(set(c.monitor.backends)) != len(c.monitor.backends):
        e.append(f"monitor.backends: duplicate backends in {c.monitor.backends}")
    return e


# ------------------------------------------------------------------ entry points


def from_dict(raw: Any, source: str | None = None) -> StudyConfig:
    cfg = from_plain(StudyConfig, {} if raw is None else raw, source)
    errors = _check_values(cfg)
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
