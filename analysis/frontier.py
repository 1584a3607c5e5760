"""The compute frontier: the lowest loss reached at each compute over all cells' curves.

The paper's C_min law (Fig. 6) is fitted on the Pareto frontier of every evaluation of every
run: a point is on the frontier when no point at smaller or equal compute has a lower value.
Its bootstrap resamples whole runs and recomputes the frontier each time, because which
points are on it depends on which runs exist.

A warmup-stable-decay study has a second frontier: over the decayed runs' final evaluations
only (``annealed_rows``). Its stable runs' evaluations are taken at the peak learning rate,
above what the same model reaches once annealed, so on the all-evaluations frontier they
mix two regimes; the annealed points are each a finished training at its compute.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .bootstrap import DEFAULT_BOOT, Fit, attach_ci, run_weights
from .load import is_stable_run
from .powerlaw import _wls_loglog, fit_power_law


def pareto_mask(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """True where (x, y) is Pareto-optimal for minimising both (ties in x: lowest y)."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    mask = np.zeros(x.size, bool)
    idx = np.flatnonzero(ok)
    order = idx[np.lexsort((y[idx], x[idx]))]
    ys = y[order]
    prev = np.concatenate([[np.inf], np.minimum.accumulate(ys)[:-1]])
    mask[order] = ys < prev
    return mask


def frontier(df: pd.DataFrame, x: str = "flops", y: str = "test_loss_last") -> pd.DataFrame:
    """The frontier rows of ``df`` (all evaluations of all cells), sorted by ``x``."""
    m = pareto_mask(df[x].to_numpy(float), df[y].to_numpy(float))
    return df[m].sort_values(x).reset_index(drop=True)


def fit_frontier(df: pd.DataFrame, x: str = "flops", y: str = "test_loss_last",
                 floor: float | None = None, n_boot: int = DEFAULT_BOOT, seed: int = 0,
                 run_col: str = "run_id", min_x: float | None = None, group: str = "") -> Fit:
    """VAR's law y = (k C)^alpha on the compute frontier (``floor`` subtracted first).

    ``min_x`` drops evaluations below that compute (the first few evaluations of every run
    sit on the frontier only because nothing else was measured that early).
    """
    d = df[[x, y, run_col]].dropna()
    if min_x is not None:
        d = d[d[x] >= min_x]
    xv = d[x].to_numpy(float)
    yv = d[y].to_numpy(float) - (floor or 0.0)
    runs = d[run_col].to_numpy()
    keep = yv > 0
    dropped = int((~keep).sum())
    xv, yv, runs = xv[keep], yv[keep], runs[keep]
    m = pareto_mask(xv, yv)
    fit = fit_power_law(xv[m], yv[m], n_boot=0, metric=y, xname=f"{x} (frontier)")
    fit.group, fit.frontier = group, True
    fit.n_runs = int(len(np.unique(runs[m])))
    fit.extra["frontier_runs"] = sorted(map(str, np.unique(runs[m])))
    fit.extra["x_range"] = [float(xv[m].min()), float(xv[m].max())] if m.any() else []
    if dropped:
        fit.warnings.append(f"{dropped} evaluation(s) at or below the floor dropped")
    if n_boot and len(np.unique(runs)) < 3:
        fit.warnings.append(f"only {len(np.unique(runs))} runs: no bootstrap interval")
    elif n_boot and m.sum() >= 2:
        W = run_weights(runs, xv.size, n_boot, seed)
        lx, ly = np.log(xv), np.log(yv)
        smp = np.full((n_boot, 3), np.nan)
        for i in range(n_boot):
            sel = W[i] > 0
            mi = pareto_mask(xv[sel], yv[sel])
            if mi.sum() < 2:
                continue
            sl, ic = _wls_loglog(lx[sel][mi], ly[sel][mi], np.ones((1, int(mi.sum()))))
            if np.isfinite(sl[0]) and sl[0] != 0:
                smp[i] = (np.exp(ic[0] / sl[0]), sl[0], ic[0])
        attach_ci(fit, ["k", "alpha", "b"], smp)
    return fit


def annealed_rows(df: pd.DataFrame) -> pd.DataFrame | None:
    """The decayed runs' final evaluations of a warmup-stable-decay study, else None."""
    if "run_id" not in df or not is_stable_run(df).any():
        return None
    out = df[df["is_final"]] if "is_final" in df else df.iloc[:0]
    return out if len(out) >= 2 else None
