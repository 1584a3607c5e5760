"""A study read once into one typed object: every fit, prediction, figure and notebook takes a
:class:`Study` and none of them opens a study file itself.

``Study.load(study_dir)`` reads the folder (``analysis.load`` does the reading): every
evaluation row (metrics parts, unified schema), each cell's state, which runs are the stable
runs of a warmup-stable-decay design (from each cell's ``config.json``: ``schedule: wsd`` with
no decay and no branch), the budget axis (the rows' ``budget_unit``, else the cells'
``config.json``), and the token-entropy floors (``tokens/meta.json``). Damaged metrics parts
are left out, each with one sentence in ``damaged`` (and a :class:`DamagedPart` warning).
``Study.from_evaluations(df)`` wraps a table of evaluations from anywhere (a synthetic study,
another trainer's runs). Reads only; writes nothing.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pandas as pd

from varscale.schema import StudyLayout, read_json

from .load import budget_axis as _budget_axis
from .load import (DamagedPart, cells, same_budgets, final_rows, floors, load, load_quality, sample_images,
                   usable_floors)


@dataclass
class Study:
    """Everything the analysis half knows of one study, read once."""

    evaluations: pd.DataFrame  # one row per evaluation; columns of METRICS_SCHEMA + state, is_final, is_stable, budget
    root: Path | None = None  # the study folder (None: a table from elsewhere)
    name: str = ""
    cells: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["run_id", "state"]))
    budget_axis: str = "budget_flops"  # "budget_flops" | "budget_tokens": what the budgets are written in
    entropy: dict = field(default_factory=dict)  # token-entropy floors (nats): test_loss_last/avg, by_scale
    damaged: list[str] = field(default_factory=list)  # one sentence per metrics part left out

    # ------------------------------------------------------------------ reading
    @classmethod
    def load(cls, study_dir) -> "Study":
        """Read a study folder (partial studies too: running cells contribute their rows)."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", DamagedPart)
            info = cells(study_dir)
            df = load(study_dir, info=info)
        damaged = []
        for w in caught:
            if issubclass(w.category, DamagedPart):
                damaged.append(str(w.message))
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        layout = StudyLayout.of(study_dir)
        return cls(evaluations=df, root=layout.root, name=layout.root.name, cells=info,
                   budget_axis=df.attrs.get("budget_axis", "budget_flops"), entropy=floors(study_dir),
                   damaged=list(dict.fromkeys(damaged)))

    @classmethod
    def from_evaluations(cls, df: pd.DataFrame, name: str = "table", budget_axis: str | None = None,
                         entropy: dict | None = None) -> "Study":
        """A study from a table of evaluations (the METRICS_SCHEMA columns it has; ``run_id``,
        ``step`` and the metrics at least). Missing bookkeeping columns get their meaning for
        runs that all finished: every run's last row is final, no run is a stable run."""
        df = df.copy()
        if "state" not in df:
            df["state"] = "done"
        if "is_stable" not in df:
            df["is_stable"] = False
        if "is_final" not in df and len(df):
            last = df.groupby("run_id")["step"].transform("max") == df["step"] if "step" in df else True
            df["is_final"] = last & (df["state"] != "diverged") & ~df["is_stable"].astype(bool)
        axis = budget_axis or _budget_axis(df)
        if "budget" not in df and axis in df:
            df["budget"] = same_budgets(df[axis])
        df.attrs["budget_axis"] = axis
        return cls(evaluations=df.reset_index(drop=True), name=name, budget_axis=axis, entropy=dict(entropy or {}))

    # ------------------------------------------------------------------ views
    @property
    def layout(self) -> StudyLayout | None:
        return None if self.root is None else StudyLayout.of(self.root)

    @cached_property
    def final(self) -> pd.DataFrame:
        """Each finished run's last evaluation (what the laws vs N and D use): a WSD study's
        decayed branches, never its stable runs; no failed or diverged run."""
        return final_rows(self.evaluations) if len(self.evaluations) else self.evaluations.copy()

    @cached_property
    def annealed(self) -> pd.DataFrame | None:
        """A warmup-stable-decay study's decayed runs' final evaluations (None: not such a study)."""
        from .frontier import annealed_rows

        return annealed_rows(self.evaluations)

    @property
    def stable_runs(self) -> list[str]:
        df = self.evaluations
        return sorted(df.loc[df["is_stable"].astype(bool), "run_id"].unique()) if len(df) else []

    @cached_property
    def schedules(self) -> dict[str, dict]:
        """Each cell's learning-rate schedule as its ``config.json`` gives it (run_id -> the
        fields ``varscale.schedule.schedule_of_cell`` reads; the loss-curve law's input). A
        table from elsewhere, or a cell without that file: absent."""
        if "lr_schedule" not in self.cells:
            return {}
        return {str(r): s for r, s in zip(self.cells["run_id"], self.cells["lr_schedule"]) if isinstance(s, dict)}

    @property
    def states(self) -> dict[str, int]:
        return self.cells["state"].value_counts().to_dict() if len(self.cells) else {}

    def __len__(self) -> int:
        return len(self.evaluations)

    def usable_entropy(self) -> dict:
        """The token-entropy floors that lie below every observed loss of their metric (a
        warning for each that does not; ``analysis.load.usable_floors``)."""
        return usable_floors(self.entropy, self.evaluations) if len(self.evaluations) else {}

    def quality(self) -> pd.DataFrame | None:
        """Sample-quality rows (``quality/part-*.parquet``) when another stage wrote them."""
        return None if self.root is None else load_quality(self.root)

    def sample_images(self) -> pd.DataFrame:
        """Fig. 7's sample grids as rows (run_id, step, path, total_steps: the run's length from
        the JSON ``varscale sample`` writes beside each PNG, NaN where there is none)."""
        if self.root is None:
            return pd.DataFrame(columns=["run_id", "step", "path", "total_steps"])
        rows = sample_images(self.root)
        rows["total_steps"] = [_sample_total(p) for p in rows["path"]]
        return rows

    def slice_label(self, budget: float) -> str:
        """The label of one budget's slice in a report (``Fit.group``, ``HeadlineRow.slice``)."""
        return f"{self.budget_axis}={budget:.3g}"


def _sample_total(png: str) -> float:
    try:
        return float(read_json(Path(png).with_suffix(".json"), default={})["total_steps"])
    except (OSError, ValueError, KeyError, TypeError):
        return float("nan")


def as_study(study) -> Study:
    """A :class:`Study` from a Study, a study folder, or a table of evaluations."""
    if isinstance(study, Study):
        return study
    if isinstance(study, pd.DataFrame):
        return Study.from_evaluations(study)
    return Study.load(study)


__all__ = ["Study", "as_study"]
