"""Chinchilla's parametric law L(N, D) = E + A/N^alpha + B/D^beta (Hoffmann et al. 2022).

Approach 3 exactly as the paper and Epoch AI's replication (Besiroglu et al. 2024) do it:
parameters in log space (a = log A, b = log B, e = log E) so that
log L_hat = logsumexp(a - alpha log N, b - beta log D, e); a Huber loss (delta = 1e-3) on
log L_hat - log L summed over points; L-BFGS from every point of Hoffmann's grid of starts.
Gradients are analytic and every start (and every bootstrap resample) runs in one batch.

Approach 2 (IsoFLOP parabolas) lives here too: for each budget, a parabola of loss in
log N gives the loss-optimal size; N_opt and D_opt then follow power laws in C.
"""
from __future__ import annotations

import itertools
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np

from .bootstrap import DEFAULT_BOOT, Fit, attach_ci, run_weights
from .load import same_budgets
from .optim import minimize_batched
from .powerlaw import fit_power_law

HUBER_DELTA = 1e-3
PARAMS = ("a", "b", "e", "alpha", "beta")


def hoffmann_grid() -> np.ndarray:
    """Hoffmann et al.'s starts: alpha, beta in {0,.5,..,2}, e in {-1,-.5,..,1},
    a, b in {0,5,..,25}: 4,500 rows of (a, b, e, alpha, beta)."""
    ab = np.arange(0, 30, 5, dtype=float)
    ex = np.arange(-1, 1.5, 0.5)
    al = np.arange(0, 2.5, 0.5)
    return np.array(list(itertools.product(ab, ab, ex, al, al)))


def _objective(theta_bP: np.ndarray, logN: np.ndarray, logD: np.ndarray, logL: np.ndarray,
               w_bn: np.ndarray | None, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """Summed Huber loss of log-space residuals and its analytic gradient, per problem.

    The exponentials are taken directly (float64 holds exp(+-700)); the rare row that
    overflows is recomputed with the max-shifted logsumexp. ``w_bn=None`` means weight 1.
    """
    a, b, e, al, be = (theta_bP[:, i : i + 1] for i in range(5))
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        e1 = np.exp(a - al * logN)
        e2 = np.exp(b - be * logD)
        e3 = np.exp(e)
        s = e1 + e2
        s += e3
        r = np.log(s)
    bad = ~(np.abs(r) < 650).all(1)  # also catches nan, and s too small to divide by
    if bad.any():  # shift by the max term for the rows that left float range
        t1, t2 = (a - al * logN)[bad], (b - be * logD)[bad]
        mx = np.maximum(np.maximum(t1, t2), e[bad])
        u1, u2, u3 = np.exp(t1 - mx), np.exp(t2 - mx), np.exp(e[bad] - mx)
        ss = u1 + u2 + u3
        r[bad] = mx + np.log(ss)
        # below, e_i / s is then the softmax weight u_i / ss
        e1[bad], e2[bad], s[bad] = u1 / ss, u2 / ss, 1.0
        e3 = np.broadcast_to(e3, s.shape).copy()
        e3[bad] = u3 / ss
    r -= logL
    hc = np.clip(r, -delta, delta)  # dHuber/dr
    r -= 0.5 * hc
    r *= hc  # Huber value: hc * (r - hc / 2)
    if w_bn is None:
        f = r.sum(1)
        c = hc / s
    else:
        f = np.einsum("bn,bn->b", w_bn, r)
        c = w_bn * hc / s
    c1 = c * e1
    c2 = c * e2
    g3 = (c * e3).sum(1) if e3.ndim == 2 and e3.shape[1] > 1 else c.sum(1) * e3[:, 0]
    g = np.stack([c1.sum(1), c2.sum(1), g3, -(c1 @ logN), -(c2 @ logD)], axis=1)
    return f, g


_POOL = None


def _threaded(fg1, th, rows, n_points: int, min_work: int = 200_000):
    """Split a large batch across the machine's cores (numpy releases the GIL in ufuncs)."""
    global _POOL
    nt = min(int(os.environ.get("VARSCALE_FIT_THREADS", os.cpu_count() or 1)), 8)
    if nt < 2 or len(rows) * n_points < min_work:
        return fg1(th, rows)
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=nt)
    cuts = np.linspace(0, len(rows), nt + 1).astype(int)
    parts = list(_POOL.map(lambda i: fg1(th[cuts[i]:cuts[i + 1]], rows[cuts[i]:cuts[i + 1]]), range(nt)))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _to_params(th: np.ndarray) -> dict[str, float]:
    a, b, e, al, be = (float(v) for v in th)
    return {"E": float(np.exp(e)), "A": float(np.exp(a)), "B": float(np.exp(b)),
            "alpha": al, "beta": be}


def _derived(th_kP: np.ndarray) -> np.ndarray:
    """(E, A, B, alpha, beta, a_opt, b_opt) per row; N_opt ~ C^a_opt, D_opt ~ C^b_opt."""
    a, b, e, al, be = th_kP.T
    with np.errstate(all="ignore"):
        return np.stack([np.exp(e), np.exp(a), np.exp(b), al, be, be / (al + be), al / (al + be)], 1)


DERIVED = ("E", "A", "B", "alpha", "beta", "a_opt", "b_opt")


def approach3(N, D, L, weights: np.ndarray | None = None, starts: np.ndarray | None = None,
              delta: float = HUBER_DELTA, maxiter: int = 1000, ftol: float = 1e-12):
    """Batched Approach 3 without any polishing: returns (theta_best (R,5), f_best (R,),
    converged (R,), result of every start). ``weights`` (R, n) gives R weighted problems
    (bootstrap resamples); each is started from every row of ``starts``.

    Many studies on one design at once: ``L`` (R, n) gives problem r its own losses (with
    ``weights`` (R, n) or none), and ``starts`` (R, K, 5) its own starts."""
    logN, logD = (np.log(np.asarray(v, dtype=np.float64)) for v in (N, D))
    logL = np.log(np.asarray(L, dtype=np.float64))
    n = logL.shape[-1]
    W = None if weights is None else np.asarray(weights, dtype=np.float64)
    S = hoffmann_grid() if starts is None else np.asarray(starts, dtype=np.float64)
    R = W.shape[0] if W is not None else (logL.shape[0] if logL.ndim == 2 else 1)
    if S.ndim == 3:  # per-problem starts
        K = S.shape[1]
        x0 = S.reshape(R * K, 5)
    else:
        S = np.atleast_2d(S)
        K = S.shape[0]
        x0 = np.tile(S, (R, 1))  # problem j = resample j // K, start j % K
    wrow = np.repeat(np.arange(R), K)

    def fg1(th, rows):
        lL = logL[wrow[rows]] if logL.ndim == 2 else logL
        return _objective(th, logN, logD, lL, None if W is None else W[wrow[rows]], delta)

    def fg(th, rows):
        return _threaded(fg1, th, rows, n)

    res = minimize_batched(fg, x0, maxiter=maxiter, ftol=ftol)
    f = np.where(np.isfinite(res.f), res.f, np.inf).reshape(R, K)
    best = f.argmin(1)
    idx = np.arange(R) * K + best
    return res.x[idx], f[np.arange(R), best], res.converged[idx], res


def fit_chinchilla(N: Sequence[float], D: Sequence[float], L: Sequence[float],
                   groups: Sequence | None = None, n_boot: int = DEFAULT_BOOT, seed: int = 0,
                   delta: float = HUBER_DELTA, metric: str = "loss", group: str = "",
                   boot_starts: int = 4, weights: np.ndarray | None = None,
                   starts: np.ndarray | None = None) -> Fit:
    """Fit L = E + A/N^alpha + B/D^beta by Hoffmann's Approach 3.

    The whole 4,500-start grid runs batched; the best few starts are then polished with
    scipy's L-BFGS-B (same objective, analytic gradient) and the best kept. Bootstrap
    resamples (whole runs when ``groups`` is given, else points) restart from the best
    ``boot_starts`` distinct minima of the full-data fit rather than the whole grid.
    Result params: E, A, B, alpha, beta, plus a_opt = beta/(alpha+beta) and
    b_opt = alpha/(alpha+beta), the exponents of compute-optimal N and D in C.
    ``weights`` (n_boot, n) replaces the resamples by given ones (a ``StudyResample``'s, so
    that E moves with the laws fitted on L - E); bootstrap values land in ``fit.samples``.
    ``starts`` replaces Hoffmann's grid (e.g. a subset of it, for many small fits).
    """
    N, D, L = (np.asarray(v, dtype=np.float64).reshape(-1) for v in (N, D, L))
    ok = np.isfinite(N) & np.isfinite(D) & np.isfinite(L) & (N > 0) & (D > 0) & (L > 0)
    N, D, L = N[ok], D[ok], L[ok]
    if groups is not None:
        groups = np.asarray(groups)[ok]
    if weights is not None:
        weights = np.asarray(weights, dtype=np.float64)[:, ok]
        n_boot = weights.shape[0]
    fit = Fit(form="chinchilla", metric=metric, x="N, D", group=group, n=int(L.size),
              n_runs=int(len(np.unique(groups)) if groups is not None else L.size))
    if L.size < 5:
        fit.warnings.append(f"only {L.size} points for 5 parameters: not fitted")
        fit.params = dict.fromkeys(DERIVED, float("nan"))
        return fit
    logN, logD, logL = np.log(N), np.log(D), np.log(L)

    def fg1(th):
        f, g = _objective(th[None], logN, logD, logL, None, delta)
        return float(f[0]), g[0]

    from scipy.optimize import minimize  # here: importing analysis needs no scipy

    # the grid only has to find the basin: the best five starts are polished below
    _, _, _, grid = approach3(N, D, L, starts=starts, delta=delta, maxiter=200, ftol=1e-9)
    order = np.argsort(np.where(np.isfinite(grid.f), grid.f, np.inf))
    polished = []
    for i in order[:5]:
        r = minimize(fg1, grid.x[i], jac=True, method="L-BFGS-B",
                     options={"maxiter": 5000, "ftol": 1e-15, "gtol": 1e-12})
        # scipy ends with ABNORMAL when the Huber kinks stop its line search at the optimum;
        # accept that when the gradient is a millionth of what n points at the Huber
        # slope delta could give (measured: 1e-8 on Chinchilla's data against 2.4e-7)
        small = np.abs(r.jac).max() <= 1e-6 * delta * L.size
        polished.append((r.fun, r.x, bool(r.success or small), r.message))
    fbest, th, conv, msg = min(polished, key=lambda t: t[0])
    d = _derived(th[None])[0]
    fit.params = dict(zip(DERIVED, map(float, d)))
    fit.extra = {"objective": float(fbest), "delta": delta,
                 "starts": int(len(grid.f)),
                 "starts_within_1pct": int((grid.f <= fbest * 1.01 + 1e-12).sum()),
                 "theta": dict(zip(PARAMS, map(float, th)))}
    if not conv:
        fit.warnings.append(f"optimiser not converged: {msg}")
    _flag_bounds(fit, th)
    resid = np.log(fit.predict(N, D)) - logL
    fit.extra["rmse_log"] = float(np.sqrt(np.mean(resid ** 2)))
    if n_boot:
        # distinct minima of the grid, best first, as starts for every resample
        starts = [th]
        for i in order:
            if len(starts) >= boot_starts:
                break
            if all(np.abs(grid.x[i] - s).max() > 0.05 for s in starts):
                starts.append(grid.x[i])
        W = run_weights(groups, L.size, n_boot, seed) if weights is None else weights
        tb, fb, cb, _ = approach3(N, D, L, weights=W, starts=np.array(starts), delta=delta)
        samples = _derived(tb)
        samples[~np.isfinite(fb)] = np.nan
        attach_ci(fit, DERIVED, samples)
        nc = int((~cb).sum())
        if nc:
            fit.extra["boot_not_converged"] = nc
    return fit


def _flag_bounds(fit: Fit, th: np.ndarray) -> None:
    a, b, e, al, be = th
    if al <= 1e-3 or be <= 1e-3:
        fit.warnings.append("an exponent is at its bound 0 (the law is flat in N or D)")
    if al > 3 or be > 3:
        fit.warnings.append("an exponent above 3: the fit is probably degenerate")
    if e < -10:
        fit.warnings.append("E at its bound 0: no irreducible loss resolved")


def extrapolation_check_chinchilla(N, D, L, metric: str = "loss", group: str = "", run_ids=None) -> dict:
    """Approach 3 without the largest model (every run at the largest N), then predict those
    runs: the mean signed relative error (predicted - observed) / observed, and under
    ``each`` every held-out run on its own (run_id, D, predicted, observed, rel_error)."""
    N, D, L = (np.asarray(v, dtype=float).reshape(-1) for v in (N, D, L))
    held = N == N.max()
    out = {"form": "chinchilla", "metric": metric, "x": "N, D", "group": group}
    if (~held).sum() < 6:
        return {**out, "warning": "fewer than 6 points without the largest model"}
    f = fit_chinchilla(N[~held], D[~held], L[~held], n_boot=0, metric=metric)
    pred = f.predict(N[held], D[held])
    rel = (pred - L[held]) / L[held]
    ids = [None] * int(held.sum()) if run_ids is None else [str(r) for r in np.asarray(run_ids)[held]]
    each = [{"run_id": i, "D": float(d), "predicted": float(p), "observed": float(o), "rel_error": float(e)}
            for i, d, p, o, e in zip(ids, D[held], pred, L[held], rel)]
    return {**out, "x_held_out": float(N.max()), "x_max_fitted": float(N[~held].max()),
            "n_fit": f.n, "predicted": float(pred.mean()), "observed": float(L[held].mean()),
            "rel_error": float(rel.mean()), "rel_error_each": rel.tolist(), "each": each,
            "fit": f.to_dict()}


# --------------------------------------------------------------------------- Approach 2


def isoflop(N: Sequence[float], C: Sequence[float], L: Sequence[float],
            budgets: Sequence[float] | None = None, groups: Sequence | None = None,
            n_boot: int = DEFAULT_BOOT, seed: int = 0, tokens_per_flop=None,
            metric: str = "loss") -> dict:
    """Approach 2: per budget a parabola L = p2 u^2 + p1 u + p0 in u = log N, whose vertex is
    the loss-optimal N; then N_opt ~ C^a (and D_opt = C / (6 N_opt) ~ C^b unless
    ``tokens_per_flop`` is given) fitted across budgets.

    ``budgets`` labels which budget each point belongs to (default: C itself); budgets that
    differ by float noise (in the 10th significant digit or below) are one (``same_budgets``).
    Returns {"parabolas": [...], "N_opt": Fit, "D_opt": Fit}. Warnings flag budgets whose
    parabola opens downwards or whose vertex lies outside the sizes trained (an
    extrapolated optimum at the edge of the grid).
    """
    N, C, L = (np.asarray(v, dtype=float).reshape(-1) for v in (N, C, L))
    bud = same_budgets(C if budgets is None else budgets)
    grp = np.arange(L.size) if groups is None else np.asarray(groups)
    ubud = np.unique(bud)

    def vertices(w):
        out = []
        for c in ubud:
            m = (bud == c) & (w > 0)
            u = np.log(N[m])
            if len(np.unique(u)) < 3:
                out.append((c, np.nan, np.nan, "fewer than 3 sizes"))
                continue
            p2, p1, p0 = np.polyfit(u, L[m], 2, w=np.sqrt(w[m]))
            if p2 <= 0:
                out.append((c, np.nan, np.nan, "parabola opens downwards (no minimum)"))
                continue
            uo = -p1 / (2 * p2)
            flag = "" if u.min() <= uo <= u.max() else "minimum outside the sizes trained (grid edge)"
            out.append((c, np.exp(uo), p0 - p1 * p1 / (4 * p2), flag))
        return out

    base = vertices(np.ones(L.size))
    parab = [{"budget": c, "N_opt": n, "L_opt": l, "warning": fl} for c, n, l, fl in base]
    good = [(c, n) for c, n, _, fl in base if np.isfinite(n) and not fl]
    res: dict = {"parabolas": parab}
    if len(good) < 2:
        res["warning"] = "fewer than two budgets with an interior optimum: no N_opt(C) law"
        return res
    Cb = np.array([g[0] for g in good])
    No = np.array([g[1] for g in good])
    Do = Cb / (6 * No)
    fN = fit_power_law(Cb, No, n_boot=0, metric="N_opt", xname="budget C")
    fD = fit_power_law(Cb, Do, n_boot=0, metric="D_opt = C/(6 N_opt)", xname="budget C")
    for f in (fN, fD):
        f.form = "isoflop"
    edge = [p for p in parab if p["warning"]]
    for p in edge:
        fN.warnings.append(f"budget {p['budget']:.3g}: {p['warning']}")
    if n_boot:
        W = run_weights(grp, L.size, n_boot, seed)
        sa = np.full((n_boot, 2), np.nan)
        for i in range(n_boot):
            v = [(c, n) for c, n, _, fl in vertices(W[i]) if np.isfinite(n)]
            if len(v) >= 2:
                cb = np.log([x[0] for x in v])
                nb = np.log([x[1] for x in v])
                if np.ptp(cb) > 0:
                    sl = np.polyfit(cb, nb, 1)[0]
                    sa[i] = (sl, 1 - sl)
        attach_ci(fN, ["alpha"], sa[:, :1])
        attach_ci(fD, ["alpha"], sa[:, 1:])
    res["N_opt"], res["D_opt"] = fN, fD
    return res
