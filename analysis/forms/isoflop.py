"""Chinchilla's Approach 2 (IsoFLOP parabolas) for FLOP budgets with several sizes: N_opt
and D_opt as power laws in C. Adds the parabolas to the report's "isoflop" section."""
from __future__ import annotations

from ..chinchilla import isoflop
from ..results import Isoflop
from .base import FitForm, Slice
from .power import predict_power


class IsoFLOP(FitForm):
    name = "isoflop"
    scope = "study"
    metrics = ("test_loss_last", "test_loss_avg")

    def eligible(self, s: Slice) -> str | None:
        # not applicable (nothing to say) unless FLOP budgets hold >= 3 sizes twice or more
        if s.axis != "budget_flops" or not len(s.data):
            return ""
        if (s.data.groupby("budget")[s.x_col].nunique() >= 3).sum() < 2:
            return ""
        return None

    def fit(self, s: Slice, metric: str):
        fr = s.data
        res = isoflop(fr[s.x_col], fr[s.c_col], fr[metric], budgets=fr["budget"], groups=fr["run_id"],
                      n_boot=s.n_boot, seed=s.seed, metric=metric)
        if s.report is not None:
            s.report.isoflop.append(Isoflop(metric=metric, parabolas=res["parabolas"], warning=res.get("warning")))
        fits = []
        for key in ("N_opt", "D_opt"):
            if key in res:
                res[key].group = metric
                fits.append(res[key])
        return fits

    predict = staticmethod(predict_power)
