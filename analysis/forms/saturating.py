"""The saturating form y = E + (x0/x)^alpha (Henighan et al. 2020) per budget vs N, losses only."""
from __future__ import annotations

import numpy as np

from ..powerlaw import extrapolation_check, fit_saturating
from .base import FitForm, Slice, as_extrapolation


class Saturating(FitForm):
    name = "saturating"
    scope = "budget"
    metrics = ("test_loss_last", "test_loss_avg")

    def eligible(self, s: Slice) -> str | None:
        # three parameters: a fourth size is the first that tests the law
        sizes = s.data[s.x_col].nunique()
        return None if sizes >= 4 else f"{sizes} size(s): the saturating law needs 4"

    def fit(self, s: Slice, metric: str):
        g = s.data
        return [fit_saturating(g[s.x_col], g[metric].to_numpy(float), groups=g["run_id"], n_boot=s.n_boot,
                               seed=s.seed, metric=metric, xname=s.x_col, group=s.group)]

    def extrapolate(self, s: Slice, metric: str):
        g = s.data
        if g[s.x_col].nunique() < 5:  # four sizes left to fit after holding out the largest
            return []
        return [as_extrapolation(extrapolation_check(g[s.x_col], g[metric].to_numpy(float), "saturating",
                                                     g["run_id"], metric, s.x_col, s.group))]

    def predict(self, params, x, d=None) -> np.ndarray:
        return params["E"] + (params["x0"] / np.asarray(x, dtype=float)) ** params["alpha"]

    def equation(self, params) -> str:
        return f"y = {params['E']:.3g} + ({params['x0']:.3g}/x)^{params['alpha']:.3g}"
