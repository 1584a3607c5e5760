"""Chinchilla's Approach 3, L = E + A/N^alpha + B/D^beta, on every finished run's final
evaluation (losses only)."""
from __future__ import annotations

import numpy as np

from ..chinchilla import extrapolation_check_chinchilla, fit_chinchilla
from .base import FitForm, Slice, as_extrapolation


class Chinchilla(FitForm):
    name = "chinchilla"
    scope = "study"
    metrics = ("test_loss_last", "test_loss_avg")

    def eligible(self, s: Slice) -> str | None:
        fr = s.data
        if not len(fr) or fr[s.x_col].nunique() < 2 or fr["tokens_seen"].nunique() < 2 or len(fr) < 6:
            return "Approach 3 needs >= 6 finished runs with both N and D varying"
        return None

    def fit(self, s: Slice, metric: str):
        fr = s.data
        # with study-wide resamples, E (the floor) moves with the laws fitted on L - E
        W = s.boot.weights(fr["run_id"]) if s.boot is not None and s.n_boot else None
        return [fit_chinchilla(fr[s.x_col], fr["tokens_seen"], fr[metric], groups=fr["run_id"],
                               n_boot=s.n_boot, seed=s.seed, metric=metric, group=s.group, weights=W)]

    def extrapolate(self, s: Slice, metric: str):
        # one entry per held-out run: each sits at its own D, so a mean over them hides which
        # budget the law misses
        fr = s.data
        ex = extrapolation_check_chinchilla(fr[s.x_col], fr["tokens_seen"], fr[metric], metric=metric,
                                            group=s.group, run_ids=fr["run_id"])
        if "each" not in ex:
            return [as_extrapolation(ex)]
        each = ex.pop("each")
        out = []
        for e in each:
            out.append(as_extrapolation({**ex, "run_id": e["run_id"], "d_held_out": e["D"], "predicted": e["predicted"],
                                         "observed": e["observed"], "rel_error": e["rel_error"]}))
        return out

    def predict(self, params, x, d=None) -> np.ndarray:
        x, d = np.asarray(x, dtype=float), np.asarray(d, dtype=float)
        return params["E"] + params["A"] / x ** params["alpha"] + params["B"] / d ** params["beta"]

    def equation(self, params) -> str:
        return (f"L = {params['E']:.3g} + {params['A']:.4g}/N^{params['alpha']:.3g}"
                f" + {params['B']:.4g}/D^{params['beta']:.3g}")
