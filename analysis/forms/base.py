"""The protocol every fit form follows, and the slice of data it is fitted to."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..bootstrap import Fit, StudyResample
from ..results import Extrapolation, Report


@dataclass
class Slice:
    """One piece of a study a form is fitted to, with the settings of the report."""

    data: pd.DataFrame  # final rows of one budget ("budget"), evaluations ("frontier"), finals ("study"),
    # every evaluation with its schedule's areas ("curve")
    group: str = ""  # the slice's label in the report, e.g. "budget_tokens=6e+05"
    x_col: str = "n_params"
    c_col: str = "flops"
    n_boot: int = 0
    seed: int = 0
    floors: dict[str, float] = field(default_factory=dict)  # the study-wide floor E per loss metric
    axis: str = "budget_flops"  # what the budgets are written in
    report: Report | None = None  # the report being built: a form may add entries to its sections
    boot: StudyResample | None = None  # study-wide resamples of runs, for a form whose fit sets the floor


class FitForm:
    """A law the report can fit. Subclasses set ``name``, ``scope`` and ``metrics`` and
    implement ``fit``, ``predict`` and ``equation``; ``eligible`` and ``extrapolate`` have
    permissive defaults."""

    name: str = ""
    scope: str = "budget"  # "budget" | "frontier" | "study" | "curve"
    metrics: tuple[str, ...] = ("test_loss_last", "test_loss_avg", "test_err_last", "test_err_avg")

    def eligible(self, s: Slice) -> str | None:
        """None when ``s`` allows this form, else why not ("" for: not applicable, say nothing)."""
        return None if len(s.data) else "no rows"

    def fit(self, s: Slice, metric: str) -> list[Fit]:
        raise NotImplementedError

    def extrapolate(self, s: Slice, metric: str) -> list[Extrapolation]:
        """Leave-largest-out checks for the report's extrapolation section (default: none)."""
        return []

    def predict(self, params: dict[str, float], x, d=None) -> np.ndarray:
        raise NotImplementedError

    def equation(self, params: dict[str, float]) -> str:
        return ", ".join(f"{k}={v:.3g}" for k, v in params.items())


def as_extrapolation(d: dict[str, Any], floor: str | None = None) -> Extrapolation:
    """A leave-largest-out check's result (``extrapolation_check``'s dict) as a report entry;
    ``floor``: the study floor subtracted from the metric before the check (a loss's name)."""
    core = ("form", "metric", "x", "group")
    return Extrapolation(form=d["form"], metric=d["metric"], quantity="raw" if floor is None else "reducible",
                         floor=floor, x=d.get("x", ""), group=d.get("group", ""),
                         values={k: v for k, v in d.items() if k not in core})
