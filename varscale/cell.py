"""One grid cell, fully resolved: the type of ``cells/<run_id>/config.json``.

A cell's config is everything its training needs, so the trainer never re-reads
``study.yaml`` (editing the study later cannot change a planned cell). Its sections are the
study's own typed sections (``varscale.config``); ``CellConfig.load`` reads ``config.json``
back through the same strict converter as a study file, so an unknown or mistyped key is an
error naming its path, and an old ``config.json`` still carrying a removed option at its old
value loads. Planning (study -> cells, steps, run ids) lives in ``varscale.grid.cells``.

The run id's hash (``CellConfig.hash``) is taken over every field that changes the result
(data, tokenizer, model, training, evaluation, preset, depth, seed, budget, schedule) as
each field declares (``varscale.configkit.opt``), never over paths, the study's name or how the
cell is executed, so re-planning the same study finds the same cells.

Where the study is: a cell folder is ``<study>/cells/<run_id>/``, and ``CellConfig.load`` sets
``study_dir`` to the study folder the cell sits in, not to the path written in ``config.json``
when it was planned (``study_home``). A copied or moved study's cells read that study's own
tokenizer, tokens and WSD stable runs before it is planned again; ``varscale doctor`` says when
a ``config.json`` names another folder (stale: ``varscale run`` writes the path again). A
cell folder elsewhere (not under a ``cells/`` folder, or not named by its run id) keeps the
written path. ``study_dir`` enters no hash, so none of this changes a run id.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from varscale.config import (ArchConfig, DataConfig, EvaluationConfig, ExecutionConfig, MonitorConfig,
                             TokenizerConfig, TrainingConfig)
from varscale.configkit import ConfigError, digest, from_plain, hash_view, opt, to_plain
from varscale.schema import CellLayout

_NEVER = "never"  # how and where a cell runs, not what it computes
_REPLAN = "delete it: 'varscale run <study>' writes it again from study.yaml (the run id fixes its content)"


def read_config_json(path: str | os.PathLike) -> dict:
    """The mapping in a cell's ``config.json``; a file that is not one (unreadable, not text, not
    JSON, empty, a list) is a ``ConfigError`` of one line naming it and saying what to do."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:  # stays what it was: callers say "no cell" themselves
        raise
    except UnicodeDecodeError as e:
        raise ConfigError([f"not a text file (byte {e.start} is not UTF-8); {_REPLAN}"], str(p), "cell config") from None
    except OSError as e:
        raise ConfigError([f"cannot be read ({e.strerror or e})"], str(p), "cell config") from None
    if not text.strip():
        raise ConfigError([f"the file is empty; {_REPLAN}"], str(p), "cell config")
    try:
        raw = json.loads(text)
    except ValueError as e:
        raise ConfigError([f"not JSON ({e}); {_REPLAN}"], str(p), "cell config") from None
    if not isinstance(raw, dict):
        raise ConfigError([f"<root>: expected a JSON object, got {type(raw).__name__}; {_REPLAN}"],
                          str(p), "cell config")
    return raw


def study_home(cell_dir: str | os.PathLike, run_id: str) -> Optional[Path]:
    """The study folder of a cell folder ``<study>/cells/<run_id>/`` (absolute, symlinks kept as
    written); None for a folder that is not laid out so (a copy elsewhere, another name)."""
    d = Path(os.path.abspath(cell_dir))
    if d.name != run_id or d.parent.name != "cells":
        return None
    return d.parent.parent


def names_other_study(written: str, home: str | os.PathLike) -> bool:
    """Whether ``written`` (a ``config.json``'s ``study_dir``) names another folder than
    ``home``: an absolute path is compared resolved; a relative one (planned from some working
    directory) by its trailing components."""
    h = Path(home).resolve()
    w = Path(os.path.normpath(written))
    if w.is_absolute():
        return w.resolve() != h
    if ".." in w.parts:
        return Path(os.path.abspath(w)).resolve() != h
    return w.parts != h.parts[len(h.parts) - len(w.parts):] if w.parts else False


@dataclass
class CellConfig:
    study: str = opt(hash=_NEVER)
    study_dir: str = opt(hash=_NEVER)
    run_id: str = opt(hash=_NEVER)
    preset: str = opt(hash="always")
    depth: int = opt(hash="always")
    seed: int = opt(hash="always")
    budget_unit: str = opt(hash="always")  # "flops" | "tokens", as written in the study
    budget_value: float = opt(hash="always")  # the budget as written
    budget_flops: float = opt(hash="always")  # the budget converted to training FLOPs
    budget_tokens: float = opt(hash="always")  # the budget converted to training tokens
    num_classes: int = opt(hash="always")
    seq_len: int = opt(hash="always")  # L, tokens per image (all scales)
    batch_size: int = opt(hash="always")  # global
    flops_per_image: int = opt(hash="always")  # exact training FLOPs of one image (3 x forward)
    flops_per_step: int = opt(hash="always")  # flops_per_image * batch_size
    total_steps: int = opt(hash="always")
    eval_steps: list[int] = opt(hash="always")
    checkpoint_steps: list[int] = opt(hash="always")
    world_size: int = opt(1, hash=_NEVER)
    model: ArchConfig = opt(factory=ArchConfig, hash="always")
    training: TrainingConfig = opt(factory=TrainingConfig, hash="always")
    evaluation: EvaluationConfig = opt(factory=EvaluationConfig, hash="always")
    data: DataConfig = opt(factory=DataConfig, hash="always")
    tokenizer: TokenizerConfig = opt(factory=TokenizerConfig, hash="always")
    execution: ExecutionConfig = opt(factory=ExecutionConfig, hash=_NEVER)
    # warmup-stable-decay design: a decay branch starts from the stable run `branch_from`
    # at `branch_step` and decays over its last `decay_steps` steps; the stable run itself has
    # schedule "wsd" with decay_steps 0 and keeps the checkpoints listed in `keep_steps`
    schedule: str = opt("lin0", hash="always")
    decay_steps: int = opt(0, hash="always")
    branch_from: Optional[str] = opt(None, hash="always")
    branch_step: Optional[int] = opt(None, hash="always")
    keep_steps: list[int] = opt(factory=list, hash="always")
    # live curves (DeepSpeed's monitor): how the run is watched, not what it computes
    monitor: MonitorConfig = opt(factory=MonitorConfig, hash=_NEVER)

    # ------------------------------------------------------------------ io
    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: Optional[str] = None) -> "CellConfig":
        """Strict: an unknown key or a wrong type raises ``varscale.configkit.ConfigError`` naming its path."""
        return from_plain(cls, d, source, what="cell config")

    @classmethod
    def load(cls, cell_dir: str | os.PathLike) -> "CellConfig":
        """The cell in ``cell_dir``; its ``study_dir`` is the study folder it sits in
        (``study_home``), whatever path ``config.json`` was written with."""
        p = CellLayout(Path(cell_dir)).config_json
        cell = cls.from_dict(read_config_json(p), str(p))
        home = study_home(cell_dir, cell.run_id)
        if home is not None:
            cell.study_dir = str(home)
        return cell

    def study_config(self):
        """A StudyConfig with this cell's sections (for the tokenizer loader and friends)."""
        from varscale.config import ModelConfig, StudyConfig

        arch = {k: getattr(self.model, k) for k in self.model.__dataclass_fields__}
        return StudyConfig(name=self.study, data=self.data, tokenizer=self.tokenizer,
                           model=ModelConfig(**arch, depths=[self.depth]), training=self.training,
                           evaluation=self.evaluation, execution=self.execution)

    def hash(self) -> str:
        return digest(hash_view(self), 8)

    @property
    def is_stable_run(self) -> bool:
        """A warmup-stable-decay design's stable run: never decayed, not a branch (its last
        evaluation is no trained model of its size; analysis.load reads the same three fields)."""
        return self.schedule == "wsd" and not self.decay_steps and not self.branch_from

    @property
    def width(self) -> int:
        return self.depth * self.head_dim

    @property
    def head_dim(self) -> int:
        from varscale.models.presets import get_preset

        return self.model.head_dim or get_preset(self.preset).head_dim
