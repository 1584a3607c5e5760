"""VAR's form on the compute frontier (C_min), raw and minus the floor. Its fits carry
``form="power"``: the law is the power form, the frontier is where its points come from."""
from __future__ import annotations

from ..frontier import fit_frontier
from .base import FitForm, Slice
from .power import power_equation, predict_power


class Frontier(FitForm):
    name = "frontier"
    scope = "frontier"

    def fit(self, s: Slice, metric: str):
        kw = dict(x=s.c_col, y=metric, n_boot=s.n_boot, seed=s.seed, group=s.group)
        fits = [fit_frontier(s.data, **kw)]
        if metric in s.floors:
            f = fit_frontier(s.data, floor=s.floors[metric], **kw)
            f.quantity, f.floor = "reducible", metric
            fits.append(f)
        return fits

    predict = staticmethod(predict_power)
    equation = staticmethod(power_equation)
