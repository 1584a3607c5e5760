"""The loss-curve law (analysis/curve.py) over every evaluation of every run whose schedule the
study knows (losses only). ``variant`` "onset", the registered one:

    L = P - (P - E_N) (1 - (1 + (S1 / s_N)^beta)^-g) (1 + k S2 / (S2 + tau)),
    E_N = E + A (N/1e6)^-alpha,  s_N = s0 (N/1e6)^-gamma

fitted on the evaluations ``analysis.curve.fitted`` keeps (warmup evaluations of a run left
out); its parameters are the law in N's, which predicts a new size; the same form with each
size's own E_N and s_N (the per-size law) gives leave-one-branch-out. ``variant`` "tissue":
the earlier E + A (N/1e6)^-alpha + B (S1/1e6)^-beta - C S2/1e6 on every evaluation.

Its Fit carries, in ``extra``: the law's name and the rule of the evaluations fitted, the
areas' decay lambda and units, the relative rms residual (and the per-size law's, with its
parameters per size), and ``lobo``, leave-one-branch-out (each decayed run's final evaluation
predicted from the stable runs and the other branches: every error, the largest and the
median in magnitude). ``extrapolate`` gives leave-largest-out entries, one per held-out
decayed run of the largest model, the same shape as Approach 3's (``fits.md`` lists them side
by side).
"""
from __future__ import annotations

import numpy as np

from .. import curve as K
from ..bootstrap import Fit, attach_ci
from .base import FitForm, Slice, as_extrapolation


def _lobo_extra(each: list[dict]) -> dict:
    ab = np.abs([e["rel_error"] for e in each])
    return {"max_abs": float(ab.max()), "median_abs": float(np.median(ab)), "within_0.5pct": bool(ab.max() <= 0.005),
            "each": each}


class Curve(FitForm):
    name = "curve"
    scope = "curve"
    metrics = ("test_loss_last", "test_loss_avg")

    def __init__(self, variant: str = "onset"):
        if variant not in ("onset", "tissue"):
            raise ValueError(f"Curve: variant {variant!r} is not 'onset' or 'tissue'")
        self.variant = variant

    def eligible(self, s: Slice) -> str | None:
        d = s.data
        if not len(d) or "annealed" not in d:
            return ""  # no schedules (a table from elsewhere, or no study cells): not applicable
        if d["n_params"].nunique() < 2 or not d["annealed"].any() or len(d) < 12:
            return ("the loss-curve law needs >= 12 evaluations of runs with known schedules, >= 2 sizes "
                    "and a decayed run")
        return None

    def fit(self, s: Slice, metric: str) -> list[Fit]:
        return self._fit_tissue(s, metric) if self.variant == "tissue" else self._fit_onset(s, metric)

    def _fit_onset(self, s: Slice, metric: str) -> list[Fit]:
        all_ = s.data[s.data[metric].notna()]
        F = K.fit_onset(s.data, metric)
        d = F.points
        p = F.params()
        sz = K.OnsetSizes()
        f = Fit(form=self.name, metric=metric, x="N, S1, S2", group=s.group, params=p, n=len(d),
                n_runs=int(d["run_id"].nunique()),
                extra={"law": "onset", "rule": K.RULE, "left_out_in_warmup": int(len(all_) - len(d)),
                       "objective": float(F.fs.min()), "rms_rel_resid": F.rms("N"),
                       "per_size": {"rms_rel_resid": F.rms("size"), **sz.report(F.best_sizes, F.X),
                                    "sizes": sz.per_size(F.best_sizes, F.X)},
                       "decay": K.DECAY, "units": "N in 1e6 parameters; S1, S2, s0, tau in 1e6 tokens",
                       "annealed_runs": int(d["annealed"].sum())})
        if s.boot is not None and s.n_boot:
            W = s.boot.weights(d["run_id"])
            bt = F.boot(W, "N")
            bt[~(W > 0).any(1)] = np.nan
            attach_ci(f, list(K.Onset.PARAMS), K.Onset().to_params(bt))
        each = F.lobo()
        if each:
            f.extra["lobo"] = _lobo_extra(each)
        if p["k"] <= 1e-6:
            f.warnings.append("annealing term k at 0: the decays show no gain the law can see")
        s2 = float(d.loc[d["annealed"], "S2"].min()) / 1e6
        if p["tau"] < 0.1 * s2:
            f.warnings.append(f"tau {p['tau']:.2g} is below a tenth of the shortest decay's S2 ({s2:.3g}): every decay "
                              "of the study's lengths gets the full gain k; tau and its interval are not measured")
        return [f]

    def _fit_tissue(self, s: Slice, metric: str) -> list[Fit]:
        d = s.data[s.data[metric].notna()].reset_index(drop=True)
        N, S1, S2, y = (d[c].to_numpy(float) for c in ("n_params", "S1", "S2", metric))
        ends, fs = K.fit_all_starts(N, S1, S2, y)
        best = int(np.argmin(fs))
        p = K.params_dict(ends[best][None])
        with np.errstate(all="ignore"):
            resid = K.predict_law(p, N, S1, S2) / y - 1
        f = Fit(form=self.name, metric=metric, x="N, S1, S2", group=s.group, params=p, n=len(d),
                n_runs=int(d["run_id"].nunique()),
                extra={"law": "tissue", "objective": float(fs[best]), "rms_rel_resid": float(np.sqrt(np.mean(resid ** 2))),
                       "decay": K.DECAY, "units": "N in 1e6 parameters; S1, S2 in 1e6 tokens",
                       "annealed_runs": int(d["annealed"].sum())})
        starts = K._distinct(ends, fs, 2)
        if s.boot is not None and s.n_boot:
            W = s.boot.weights(d["run_id"])
            bt, _ = K.fit_law(N, S1, S2, y, weights=W, starts=starts)
            bt[~(W > 0).any(1)] = np.nan
            attach_ci(f, list(K.PARAMS), K.to_params(bt))
        each = K.lobo(d, metric, starts)
        if each:
            f.extra["lobo"] = _lobo_extra(each)
        if p["C"] <= 1e-6 * p["B"]:
            f.warnings.append("annealing term C at 0: the decays show no gain the law can see")
        return [f]

    def extrapolate(self, s: Slice, metric: str):
        d = s.data[s.data[metric].notna()].reset_index(drop=True)
        each = K.leave_largest_out(d, metric) if self.variant == "tissue" else K.leave_largest_out_onset(d, metric)
        return [as_extrapolation({"form": self.name, "metric": metric, "x": "N, S1, S2", "group": s.group, **e})
                for e in each]

    def predict(self, params, x, d=None) -> np.ndarray:
        """The law at N = ``x`` and areas ``d`` = (S1, S2) in tokens (``analysis.curve.target_areas``);
        either variant's parameters."""
        S1, S2 = d
        return K.onset_law(params, x, S1, S2) if "P" in params else K.predict_law(params, x, S1, S2)

    def equation(self, params) -> str:
        if "P" not in params:
            return (f"L = {params['E']:.4g} + {params['A']:.4g} (N/1e6)^-{params['alpha']:.3g}"
                    f" + {params['B']:.4g} (S1/1e6)^-{params['beta']:.3g} - {params['C']:.4g} S2/1e6")
        P = params["P"]
        return (f"L = {P:.4g} - ({P:.4g} - E_N) (1 - (1 + (S1/s_N)^{params['beta']:.3g})^-{params['g']:.3g})"
                f" (1 + {params['k']:.3g} S2/(S2 + {params['tau']:.3g})); E_N = {params['E']:.4g} + "
                f"{params['A']:.4g} (N/1e6)^-{params['alpha']:.3g}; s_N = {params['s0']:.3g} "
                f"(N/1e6)^-{params['gamma']:.3g} (S1, S2, s_N, tau in 1e6 tokens)")
