"""Power laws in one variable: VAR's y = (k x)^alpha and the saturating y = E + (x0/x)^alpha.

VAR's form is what the paper fits (eqs. 9-16): least squares of log y on log x, so
log y = alpha log x + alpha log k, reported with Pearson's r of (log x, log y). The
saturating form (Henighan et al. 2020) adds an irreducible term; it is fitted by least
squares on log y with log E and log x0 as parameters, batched over starts and resamples.
Intervals resample whole runs (``groups``); with no groups every point is its own run.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .bootstrap import DEFAULT_BOOT, Fit, attach_ci, run_weights
from .optim import minimize_batched


def _clean_xy(x, y, groups):
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"x and y differ in length: {x.size} vs {y.size}")
    g = None if groups is None else np.asarray(groups).reshape(-1)
    if g is not None and g.size != x.size:
        raise ValueError("groups must have one entry per point")
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    dropped = int((~ok).sum())
    return x[ok], y[ok], (None if g is None else g[ok]), dropped


def _wls_loglog(lx: np.ndarray, ly: np.ndarray, W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least squares of ly on lx for every weight row of W (R, n): (slope, intercept)."""
    sw = W.sum(1)
    with np.errstate(all="ignore"):
        mx = (W @ lx) / sw
        my = (W @ ly) / sw
        dx = lx[None] - mx[:, None]
        sxx = (W * dx * dx).sum(1)
        sxy = (W * dx * (ly[None] - my[:, None])).sum(1)
        slope = np.where(sxx > 1e-12 * np.maximum(1.0, (W * lx * lx).sum(1)), sxy / sxx, np.nan)
    return slope, my - slope * mx


def fit_power_law(x: Sequence[float], y: Sequence[float], groups: Sequence | None = None,
                  n_boot: int = DEFAULT_BOOT, seed: int = 0, metric: str = "y",
                  xname: str = "x", group: str = "") -> Fit:
    """Fit y = (k x)^alpha by least squares in log-log space.

    Returns a :class:`Fit` with params ``k``, ``alpha`` (and ``b`` = log y at x = 1),
    ``r`` (Pearson of log x, log y), 95% percentile intervals from ``n_boot`` resamples of
    whole runs (``groups``: one run id per point; None: points are independent).
    """
    x, y, g, dropped = _clean_xy(x, y, groups)
    fit = Fit(form="power", metric=metric, x=xname, group=group, n=int(x.size),
              n_runs=int(len(np.unique(g)) if g is not None else x.size))
    if dropped:
        fit.warnings.append(f"{dropped} point(s) with non-positive or missing values dropped")
    lx, ly = np.log(x), np.log(y)
    if x.size < 2 or np.ptp(lx) == 0:
        fit.warnings.append("fewer than two distinct x values: not fitted")
        fit.params = {"k": float("nan"), "alpha": float("nan"), "b": float("nan")}
        return fit
    slope, icpt = _wls_loglog(lx, ly, np.ones((1, x.size)))
    alpha, b = float(slope[0]), float(icpt[0])
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        # k = exp(b / alpha) leaves float range when alpha ~ 0: then k is inf, alpha still holds
        fit.params = {"k": float(np.exp(b / alpha)) if alpha != 0 else float("nan"), "alpha": alpha, "b": b}
    fit.r = float(np.corrcoef(lx, ly)[0, 1]) if x.size > 2 or np.ptp(ly) > 0 else float("nan")
    resid = ly - (alpha * lx + b)
    fit.extra["rmse_log"] = float(np.sqrt(np.mean(resid ** 2)))
    if x.size < 3:
        fit.warnings.append("two points: the line passes through both, r is +-1 by construction")
    if fit.n_runs < 3 and n_boot:
        fit.warnings.append(f"only {fit.n_runs} runs: no bootstrap interval")
        n_boot = 0
    if n_boot:
        W = run_weights(g, x.size, n_boot, seed)
        sl, ic = _wls_loglog(lx, ly, W)
        with np.errstate(all="ignore"):
            k = np.exp(ic / sl)
        attach_ci(fit, ["k", "alpha", "b"], np.stack([k, sl, ic], 1))
    return fit


def predict_power(fit: Fit, x) -> np.ndarray:
    """The one-variable law of ``fit`` at x (same as ``fit.predict(x)``)."""
    return fit.predict(x)


# --------------------------------------------------------------------------- saturating


def _sat_objective(th: np.ndarray, lx: np.ndarray, ly: np.ndarray, W: np.ndarray):
    """Sum of squared log residuals of y = exp(e) + exp(alpha (l0 - log x)), with gradient."""
    e, al, l0 = th[:, 0:1], th[:, 1:2], th[:, 2:3]
    t = al * (l0 - lx)
    lhat = np.logaddexp(e, t)
    r = lhat - ly
    f = (W * r * r).sum(1)
    pE = np.exp(e - lhat)  # share of the prediction that is the floor
    c = 2 * W * r
    cr = c * (1 - pE)
    g = np.stack([(c * pE).sum(1), (cr * (l0 - lx)).sum(1), (cr * al).sum(1)], 1)
    return f, g


def _sat_starts(lx: np.ndarray, ly: np.ndarray) -> np.ndarray:
    y = np.exp(ly)
    ymin = y.min()
    ymed, lxm = np.median(y), np.median(lx)
    starts = []
    for frac in (1e-3, 0.3, 0.6, 0.8, 0.9, 0.97):
        E = frac * ymin
        red = max(ymed - E, 1e-3 * ymed)
        for al in (0.05, 0.2, 0.5, 1.0):
            starts.append((np.log(E), al, lxm + np.log(red) / al))
    return np.array(starts)


def fit_saturating(x: Sequence[float], y: Sequence[float], groups: Sequence | None = None,
                   n_boot: int = DEFAULT_BOOT, seed: int = 0, metric: str = "y",
                   xname: str = "x", group: str = "") -> Fit:
    """Fit y = E + (x0 / x)^alpha (least squares on log y; E > 0 and x0 > 0 by construction).

    Params: E, x0, alpha. Warnings: fewer than 4 points, E pinned near 0 (the data show no
    floor: the law is a pure power law), E within 1% of min(y) (the floor is not resolved),
    alpha <= 0, optimiser not converged.
    """
    x, y, g, dropped = _clean_xy(x, y, groups)
    fit = Fit(form="saturating", metric=metric, x=xname, group=group, n=int(x.size),
              n_runs=int(len(np.unique(g)) if g is not None else x.size))
    if dropped:
        fit.warnings.append(f"{dropped} point(s) with non-positive or missing values dropped")
    names = ("E", "x0", "alpha")
    if x.size < 3 or len(np.unique(x)) < 3:
        fit.warnings.append("fewer than three distinct x values: not fitted")
        fit.params = dict.fromkeys(names, float("nan"))
        return fit
    if x.size < 4:
        fit.warnings.append("three parameters from three points: exact, not a test of the law")
    lx, ly = np.log(x), np.log(y)
    S = _sat_starts(lx, ly)
    one = np.ones((1, x.size))
    # starts only need to find the basin (E -> 0 drifts forever): scipy polishes the best
    res = minimize_batched(lambda th, rows: _sat_objective(th, lx, ly, one), S, maxiter=300, ftol=1e-10)
    from scipy.optimize import minimize  # here: importing analysis needs no scipy

    i = int(np.nanargmin(np.where(np.isfinite(res.f), res.f, np.inf)))

    def fg1(th):
        f, gr = _sat_objective(th[None], lx, ly, one)
        return float(f[0]), gr[0]

    r = minimize(fg1, res.x[i], jac=True, method="L-BFGS-B",
                 options={"maxiter": 5000, "ftol": 1e-15, "gtol": 1e-10})
    th = r.x if r.fun <= res.f[i] else res.x[i]
    e, al, l0 = th
    fit.params = {"E": float(np.exp(e)), "x0": float(np.exp(l0)), "alpha": float(al)}
    fit.extra["rmse_log"] = float(np.sqrt(max(min(r.fun, res.f[i]), 0) / x.size))
    if not (r.success or np.abs(r.jac).max() < 1e-7):
        fit.warnings.append(f"optimiser not converged: {r.message}")
    if np.exp(e) < 1e-3 * y.min():
        fit.warnings.append("E at its bound 0: no floor resolved (a pure power law fits as well)")
    elif np.exp(e) > 0.99 * y.min():
        fit.warnings.append("E within 1% of the smallest y: floor not resolved")
    if al <= 0:
        fit.warnings.append("alpha <= 0: y does not fall with x")
    if n_boot:
        W = run_weights(g, x.size, n_boot, seed)
        start = np.tile(th, (n_boot, 1))
        rb = minimize_batched(lambda t, rows: _sat_objective(t, lx, ly, W[rows]), start,
                              maxiter=300, ftol=1e-10)
        smp = np.stack([np.exp(rb.x[:, 0]), np.exp(rb.x[:, 2]), rb.x[:, 1]], 1)
        smp[~np.isfinite(rb.f)] = np.nan
        attach_ci(fit, names, smp)
    return fit


# --------------------------------------------------------------------------- extrapolation


def extrapolation_check(x: Sequence[float], y: Sequence[float], form: str = "power",
                        groups: Sequence | None = None, metric: str = "y", xname: str = "x",
                        group: str = "") -> dict:
    """Fit without the largest x (all its runs), predict it, report the signed relative error
    (predicted - observed) / observed of the mean observation there."""
    x = np.asarray(x, dtype=float).reshape(-1)
    y = np.asarray(y, dtype=float).reshape(-1)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    x, y = x[ok], y[ok]
    out = {"form": form, "metric": metric, "x": xname, "group": group}
    if x.size == 0:
        return {**out, "warning": "no points"}
    xmax = x.max()
    held = x == xmax
    fitter = fit_saturating if form == "saturating" else fit_power_law
    f = fitter(x[~held], y[~held], groups=None if groups is None else np.asarray(groups)[ok][~held],
               n_boot=0, metric=metric, xname=xname)
    if not np.isfinite(list(f.params.values())).all():
        return {**out, "warning": "too few points without the largest x", "n_fit": f.n}
    pred = float(predict_power(f, xmax))
    obs = float(y[held].mean())
    return {**out, "x_held_out": float(xmax), "x_max_fitted": float(x[~held].max()),
            "n_fit": f.n, "predicted": pred, "observed": obs,
            "rel_error": (pred - obs) / obs, "fit": f.to_dict()}
