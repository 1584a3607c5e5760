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
    # row sums, not matrix products: BLAS blocks a product by the batch's size, so a problem's
    # rounding (and, in a flat valley, where its fit stops) would depend on the other problems
    g = np.stack([c1.sum(1), c2.sum(1), g3, -(c1 * logN).sum(1), -(c2 * logD).sum(1)], axis=1)
    return f, g


_POOL = None
_CPUS = os.cpu_count() or 1  # read once: os.cpu_count() cost 70 us per L-BFGS iteration here


def _threaded(fg1, th, rows, n_points: int, min_work: int = 200_000):
    """Split a large batch across the machine's cores (numpy releases the GIL in ufuncs)."""
    global _POOL
    nt = min(int(os.environ.get("VARSCALE_FIT_THREADS", _CPUS)), 8)
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

    The whole 4,500-start grid runs batched; the best five starts are then polished (the
    same objective, batched L-BFGS to a relative decrease of 1e-15) and the best kept.
    Bootstrap resamples (whole runs when ``groups`` is given, else points) restart from the
    best ``boot_starts`` distinct minima of the full-data fit rather than the whole grid.
    Result params: E, A, B, alpha, beta, plus a_opt = beta/(alpha+beta) and
    b_opt = alpha/(alpha+beta), the exponents of compute-optimal N and D in C.
    ``weights`` (n_boot, n) replaces the resamples by given ones (a ``StudyResample``'s, so
    that E moves with the laws fitted on L - E); bootstrap values land in ``fit.samples``.
    ``starts`` replaces Hoffmann's grid (e.g. a subset of it, for many small fits).
    This is :func:`fit_chinchilla_many` for one study.
    """
    N, D, L = (np.asarray(v, dtype=np.float64).reshape(-1) for v in (N, D, L))
    ok = np.isfinite(N) & np.isfinite(D) & np.isfinite(L) & (N > 0) & (D > 0) & (L > 0)
    if groups is not None:
        groups = np.asarray(groups)[ok]
    if weights is not None:
        weights = np.asarray(weights, dtype=np.float64)[:, ok]
    return fit_chinchilla_many(N[ok], D[ok], L[ok][None], groups=groups, n_boot=n_boot, seed=seed, delta=delta,
                               metric=metric, group=group, boot_starts=boot_starts, weights=weights,
                               starts=starts)[0]


POLISH = 5  # grid minima polished per study


def fit_chinchilla_many(N: np.ndarray, D: np.ndarray, L_Sn: np.ndarray, groups: Sequence | None = None,
                        n_boot: int = DEFAULT_BOOT, seed: int = 0, delta: float = HUBER_DELTA,
                        metric: str = "loss", group: str = "", boot_starts: int = 4,
                        weights: np.ndarray | None = None, starts: np.ndarray | None = None) -> list[Fit]:
    """:func:`fit_chinchilla` on S studies of one design at once: the same points (N, D)
    (n,), losses ``L_Sn`` (S, n), every value finite and positive. Every stage (grid,
    polish, bootstrap) runs all studies in one batch; problems never interact, so study s
    gets the numbers ``fit_chinchilla`` gives it alone. ``weights`` (n_boot, n): the same
    resamples for every study (default: ``run_weights(groups, ...)``)."""
    N, D = np.asarray(N, dtype=np.float64), np.asarray(D, dtype=np.float64)
    L_Sn = np.atleast_2d(np.asarray(L_Sn, dtype=np.float64))
    S, n = L_Sn.shape
    if weights is not None:
        n_boot = weights.shape[0]
    fits = [Fit(form="chinchilla", metric=metric, x="N, D", group=group, n=int(n),
                n_runs=int(len(np.unique(groups)) if groups is not None else n)) for _ in range(S)]
    if n < 5:
        for fit in fits:
            fit.warnings.append(f"only {n} points for 5 parameters: not fitted")
            fit.params = dict.fromkeys(DERIVED, float("nan"))
        return fits
    logN, logD, logL = np.log(N), np.log(D), np.log(L_Sn)
    # the grid only has to find the basin: the best five starts are polished below
    _, _, _, grid = approach3(N, D, L_Sn, starts=starts, delta=delta, maxiter=200, ftol=1e-9)
    K = grid.x.shape[0] // S
    gx, gf = grid.x.reshape(S, K, 5), np.where(np.isfinite(grid.f), grid.f, np.inf).reshape(S, K)
    order = np.argsort(gf, axis=1, kind="stable")
    P = min(POLISH, K)
    x0 = gx[np.arange(S)[:, None], order[:, :P]].reshape(S * P, 5)
    prow = np.repeat(np.arange(S), P)

    def fgp(th, rows):
        return _objective(th, logN, logD, logL[prow[rows]], None, delta)

    pol = minimize_batched(fgp, x0, maxiter=5000, ftol=1e-15, gtol=1e-12)
    pf = np.where(np.isfinite(pol.f), pol.f, np.inf).reshape(S, P)
    best = pf.argmin(1)
    TH = pol.x.reshape(S, P, 5)[np.arange(S), best]
    for s, fit in enumerate(fits):
        th, fbest = TH[s], float(pf[s, best[s]])
        j = s * P + best[s]
        # the Huber kinks can stop a line search at the optimum: accept a gradient a millionth
        # of what n points at the Huber slope delta could give (1e-8 on Chinchilla's data
        # against 2.4e-7)
        conv = bool(pol.converged[j] or np.abs(pol.g[j]).max() <= 1e-6 * delta * n)
        fit.params = dict(zip(DERIVED, map(float, _derived(th[None])[0])))
        fit.extra = {"objective": fbest, "delta": delta, "starts": int(K),
                     "starts_within_1pct": int((gf[s] <= fbest * 1.01 + 1e-12).sum()),
                     "theta": dict(zip(PARAMS, map(float, th)))}
        if not conv:
            fit.warnings.append("optimiser not converged")
        _flag_bounds(fit, th)
        resid = np.log(fit.predict(N, D)) - logL[s]
        fit.extra["rmse_log"] = float(np.sqrt(np.mean(resid ** 2)))
    if not n_boot:
        return fits
    # distinct minima of each study's grid, best first, as starts for every resample; a study
    # with fewer gets nan starts, which the optimiser drops before its first step
    bst = np.full((S, boot_starts, 5), np.nan)
    for s in range(S):
        chosen = [TH[s]]
        for i in order[s]:
            if len(chosen) >= boot_starts:
                break
            if all(np.abs(gx[s, i] - c).max() > 0.05 for c in chosen):
                chosen.append(gx[s, i])
        bst[s, :len(chosen)] = chosen
    W = run_weights(groups, n, n_boot, seed) if weights is None else np.asarray(weights, dtype=np.float64)
    B = W.shape[0]
    tb, fb, cb, _ = approach3(N, D, np.repeat(L_Sn, B, axis=0), weights=np.tile(W, (S, 1)),
                              starts=np.repeat(bst, B, axis=0), delta=delta)
    for s, fit in enumerate(fits):
        sl = slice(s * B, (s + 1) * B)
        samples = _derived(tb[sl])
        samples[~np.isfinite(fb[sl])] = np.nan
        attach_ci(fit, DERIVED, samples)
        nc = int((~cb[sl]).sum())
        if nc:
            fit.extra["boot_not_converged"] = nc
    return fits


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
