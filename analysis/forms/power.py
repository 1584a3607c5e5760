"""VAR's form y = (k x)^alpha per budget vs N, on the raw metric and on loss minus the floor."""
from __future__ import annotations

import numpy as np

from ..powerlaw import extrapolation_check, fit_power_law
from .base import FitForm, Slice, as_extrapolation


def predict_power(params, x, d=None) -> np.ndarray:
    """y = exp(b) x^alpha (b = alpha log k: finite where k leaves float range)."""
    return np.exp(params["b"] + params["alpha"] * np.log(np.asarray(x, dtype=float)))


def power_equation(params) -> str:
    return f"y = ({params['k']:.3g} x)^{params['alpha']:.3g}"


class Power(FitForm):
    name = "power"
    scope = "budget"

    def eligible(self, s: Slice) -> str | None:
        sizes = s.data[s.x_col].nunique()
        return None if sizes >= 2 else f"{sizes} size(s) finished, no law vs N"

    def fit(self, s: Slice, metric: str):
        g = s.data
        y = g[metric].to_numpy(float)
        kw = dict(groups=g["run_id"], n_boot=s.n_boot, seed=s.seed, xname=s.x_col, group=s.group)
        fits = [fit_power_law(g[s.x_col], y, metric=metric, **kw)]
        if metric in s.floors:
            f = fit_power_law(g[s.x_col], y - s.floors[metric], metric=metric, **kw)
            f.quantity, f.floor = "reducible", metric
            fits.append(f)
        return fits

    def extrapolate(self, s: Slice, metric: str):
        g = s.data
        if g[s.x_col].nunique() < 3:
            return []
        y = g[metric].to_numpy(float)
        floor = metric if metric in s.floors else None
        if floor:
            y = y - s.floors[metric]
        return [as_extrapolation(extrapolation_check(g[s.x_col], y, "power", g["run_id"], metric, s.x_col, s.group),
                                 floor)]

    predict = staticmethod(predict_power)
    equation = staticmethod(power_equation)
