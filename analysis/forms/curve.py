"""The loss-curve law (analysis/curve.py) over every evaluation of every run whose schedule the
study knows: L = E + A (N/1e6)^-alpha + B (S1/1e6)^-beta - C S2/1e6 (losses only).

Its Fit carries, in ``extra``: the areas' decay lambda and units, the relative rms residual,
and ``lobo``, leave-one-branch-out (each decayed run's final evaluation predicted from the
stable runs and the other branches: every error, the largest and the median in magnitude).
``extrapolate`` gives leave-largest-out entries, one per held-out decayed run of the largest
model, the same shape as Approach 3's (``fits.md`` lists them side by side).
"""
from __future__ import annotations

import numpy as np

from .. import curve as K
from ..bootstrap import Fit, attach_ci
from .base import FitForm, Slice, as_extrapolation


class Curve(FitForm):
    name = "curve"
    scope = "curve"
    metrics = ("test_loss_last", "test_loss_avg")

    def eligible(self, s: Slice) -> str | None:
        d = s.data
        if not len(d) or "annealed" not in d:
            return ""  # no schedules (a table from elsewhere, or no study cells): not applicable
        if d["n_params"].nunique() < 2 or not d["annealed"].any() or len(d) < 12:
            return ("the loss-curve law needs >= 12 evaluations of runs with known schedules, >= 2 sizes "
                    "and a decayed run")
        return None

    def fit(self, s: Slice, metric: str) -> list[Fit]:
        d = s.data[s.data[metric].notna()].reset_index(drop=True)
        N, S1, S2, y = (d[c].to_numpy(float) for c in ("n_params", "S1", "S2", metric))
        ends, fs = K.fit_all_starts(N, S1, S2, y)
        best = int(np.argmin(fs))
        th = ends[best][None]
        p = K.params_dict(th)
        with np.errstate(all="ignore"):
            resid = K.predict_law(p, N, S1, S2) / y - 1
        f = Fit(form=self.name, metric=metric, x="N, S1, S2", group=s.group, params=p, n=len(d),
                n_runs=int(d["run_id"].nunique()),
                extra={"objective": float(fs[best]), "rms_rel_resid": float(np.sqrt(np.mean(resid ** 2))),
                       "decay": K.DECAY, "units": "N in 1e6 parameters; S1, S2 in 1e6 tokens",
                       "annealed_runs": int(d["annealed"].sum())})
        starts = K._distinct(ends, fs, 2)
        if s.boot is not None and s.n_boot:
            W = s.boot.weights(d["run_id"])
            bt, _ = K.fit_law(N, S1, S2, y, weights=W, starts=starts)
            ok = (W > 0).any(1)
            bt[~ok] = np.nan
            attach_ci(f, list(K.PARAMS), K.to_params(bt))
        each = K.lobo(d, metric, starts)
        if each:
            ab = np.abs([e["rel_error"] for e in each])
            f.extra["lobo"] = {"max_abs": float(ab.max()), "median_abs": float(np.median(ab)),
                               "within_0.5pct": bool(ab.max() <= 0.005), "each": each}
        if p["C"] <= 1e-6 * p["B"]:
            f.warnings.append("annealing term C at 0: the decays show no gain the law can see")
        return [f]

    def extrapolate(self, s: Slice, metric: str):
        d = s.data[s.data[metric].notna()].reset_index(drop=True)
        out = []
        for e in K.leave_largest_out(d, metric):
            out.append(as_extrapolation({"form": self.name, "metric": metric, "x": "N, S1, S2",
                                         "group": s.group, **e}))
        return out

    def predict(self, params, x, d=None) -> np.ndarray:
        """The law at N = ``x`` and areas ``d`` = (S1, S2) in tokens (``analysis.curve.target_areas``)."""
        S1, S2 = d
        return K.predict_law(params, x, S1, S2)

    def equation(self, params) -> str:
        return (f"L = {params['E']:.4g} + {params['A']:.4g} (N/1e6)^-{params['alpha']:.3g}"
                f" + {params['B']:.4g} (S1/1e6)^-{params['beta']:.3g} - {params['C']:.4g} S2/1e6")
