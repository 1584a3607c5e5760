"""The loss-curve law: a law over every evaluation of every run, schedule-aware.

Approach 3 sees one point per run (its final evaluation); a warmup-stable-decay study also
evaluates each stable run 8 times along a 50x span of tokens, at the peak learning rate, and
its decay branches end annealed. Each evaluation gets two areas under its learning-rate
schedule (Tissue et al. 2024, "Scaling Law with Learning Rate Annealing"):

- S1, the forward area: the sum over the first s updates of lr / peak, times the tokens of
  one step (tokens at the peak learning rate; a constant schedule gives S1 = D);
- S2, the annealing area: the sum over those updates of m, the momentum of the learning
  rate's drops (m_i = lambda m_(i-1) + (f_(i-1) - f_i), ``DECAY`` lambda = 0.999 per step,
  a rise adds nothing), in the same token units.

Both come from each cell's schedule (``Study.schedules``: its ``config.json``; a WSD branch
ran its stable run's first steps) through ``varscale.schedule``, the trainer's own code, so
a target run under another schedule (cosine, another decay fraction) has areas too.

The registered law, the onset law (``docs/analysis.md``, "The loss-curve law", says why this
form, with the numbers): every run sits on a plateau P first and leaves it at an onset that
comes earlier for a larger model; annealing multiplies what a run has gained below the
plateau (S1, S2, s, tau in 1e6 tokens):

    L = P - R_N (1 - (1 + (S1 / s_N)^beta_N)^-g) (1 + k S2 / (S2 + tau))

:class:`OnsetSizes` gives each model size its own R_N, s_N, beta_N (P, g, k, tau shared): the
per-size law, which predicts a held-out branch from its size's stable run and the other
branches (leave-one-branch-out), and a target at a trained size. :class:`Onset` writes them as
laws in N, R_N = P - E - A (N/1e6)^-alpha, s_N = s0 (N/1e6)^-gamma, one beta: the law in N, the
reported parameters, which predicts a new size (leave-largest-out). Both are fitted on the
evaluations :func:`fitted` keeps (a run's evaluations during its warmup left out). The
earlier law, E + A (N/1e6)^-alpha + B (S1/1e6)^-beta - C S2/1e6 on every evaluation, stays
as the variant "tissue" (``predict_law``, ``fit_law``).

Fitting: least squares of the relative residual (L_hat - L) / L, batched L-BFGS
(``analysis.optim``) from a grid of starts, analytic gradients (a :class:`Law` without them
gets complex-step ones); the bootstrap resamples whole runs (``StudyResample`` weights)
restarting from the full fit's two best minima. Reads no file.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd

from varscale.schedule import areas, history, schedule_of_cell

from .optim import minimize_batched

DECAY = 0.999  # lambda: the per-step decay of the annealing momentum (Tissue et al.'s)
N0 = 1e6  # parameters: N's unit in the law
S0 = 1e6  # tokens: S1's and S2's unit in the law
PARAMS = ("E", "A", "alpha", "B", "beta", "C")
_THETA = ("e", "a", "alpha", "b", "beta", "c")  # E, A, B, C in logs


# --------------------------------------------------------------------------- areas


def schedule_areas(cell: dict, parent: dict | None = None, decay: float = DECAY) -> tuple[np.ndarray, np.ndarray]:
    """(S1, S2) in steps at peak (index k - 1: after k updates) of a cell's whole run, from
    its schedule fields (``Study.schedules``); ``parent``: a WSD branch's stable run's."""
    sched = schedule_of_cell(cell)
    par = schedule_of_cell(parent) if parent is not None and cell.get("branch_step") else None
    s1, s2 = areas(history(sched, par, cell.get("branch_step")), decay)
    return np.asarray(s1), np.asarray(s2)


def target_areas(tokens: float, tokens_per_step: float, kind: str = "wsd", decay_frac: float = 0.2,
                 warmup_frac: float = 0.05, hold_frac: float = 0.0, final_ratio: float = 0.01,
                 decay: float = DECAY) -> tuple[float, float]:
    """(S1, S2) in tokens at the end of a run of ``tokens`` trained from scratch under one
    schedule (``kind`` "wsd" with a decay over its last ``decay_frac`` of the steps, "cosine"
    or "lin0"), for a prediction."""
    steps = max(int(round(tokens / tokens_per_step)), 1)
    cell = {"total_steps": steps, "schedule": kind,
            "decay_steps": max(1, int(round(decay_frac * steps))) if kind == "wsd" else 0,
            "training": {"warmup_frac": warmup_frac, "hold_frac": hold_frac, "final_lr_ratio": final_ratio}}
    s1, s2 = schedule_areas(cell, decay=decay)
    return float(s1[-1] * tokens_per_step), float(s2[-1] * tokens_per_step)


def curve_points(study, metrics=("test_loss_last", "test_loss_avg"), decay: float = DECAY) -> pd.DataFrame:
    """Every evaluation of every run whose schedule the study knows (not diverged), with its
    areas: run_id, n_params, step, tokens_seen, S1, S2 (tokens), is_stable, ``annealed`` (a
    decayed run's final evaluation: what leave-one-branch-out predicts) and the metrics."""
    df = study.evaluations
    sch = study.schedules
    cols = ["run_id", "n_params", "step", "tokens_seen", "is_stable", "is_final", "state", *metrics]
    if not len(df) or not sch or any(c not in df for c in cols):
        return pd.DataFrame(columns=[*cols, "S1", "S2", "annealed", "in_warmup"])
    d = df.loc[df["run_id"].isin(list(sch)) & (df["state"] != "diverged") & (df["step"] > 0), cols].copy()
    d = d.dropna(subset=list(metrics), how="all").reset_index(drop=True)
    S1 = np.full(len(d), np.nan)
    S2 = np.full(len(d), np.nan)
    warm = np.zeros(len(d), bool)
    memo: dict[str, tuple] = {}
    for rid, idx in d.groupby("run_id").indices.items():
        cell = sch[rid]
        parent = sch.get(str(cell.get("branch_from"))) if cell.get("branch_from") else None
        key = repr((sorted(cell.items()), None if parent is None else sorted(parent.items())))
        if key not in memo:
            memo[key] = schedule_areas(cell, parent, decay)
        a1, a2 = memo[key]
        steps = d["step"].to_numpy()[idx].astype(int)
        tps = d["tokens_seen"].to_numpy(float)[idx] / steps  # tokens per step of this run
        k = np.clip(steps, 1, len(a1)) - 1
        S1[idx], S2[idx] = a1[k] * tps, a2[k] * tps
        # the warmup the run saw (a branch's first steps are its stable run's)
        first = parent if parent is not None and cell.get("branch_step") else cell
        warm[idx] = steps <= schedule_of_cell(first).warmup_steps
    d["S1"], d["S2"] = S1, S2
    d["annealed"] = d["is_final"].astype(bool) & ~d["is_stable"].astype(bool) & (d["S2"] > 0)
    d["in_warmup"] = warm
    return d[np.isfinite(d["S1"]) & (d["S1"] > 0)].reset_index(drop=True)


def fitted(points: pd.DataFrame) -> pd.DataFrame:
    """The evaluations a per-size law is fitted on (the rule, fixed before any held-out number
    was looked at): every decayed run's final evaluation, and every other evaluation taken
    after the learning rate's warmup (step > the warmup steps of the schedule the run ran)."""
    keep = points["annealed"].to_numpy(bool) | ~points["in_warmup"].to_numpy(bool)
    return points[keep].reset_index(drop=True)


# --------------------------------------------------------------------------- the law


def predict_law(params: dict, N, S1, S2) -> np.ndarray:
    N, S1, S2 = (np.asarray(v, float) for v in (N, S1, S2))
    return (params["E"] + params["A"] * (N / N0) ** -params["alpha"] + params["B"] * (S1 / S0) ** -params["beta"]
            - params["C"] * S2 / S0)


def _fg(theta, ln, ls, s2, y, w):
    """Sum of w ((L_hat - y) / y)^2 per problem and its gradient in (e, a, alpha, b, beta, c)."""
    e, a, al, b, be, c = (theta[:, i:i + 1] for i in range(6))
    with np.errstate(over="ignore", invalid="ignore"):
        E = np.exp(e)
        tA = np.exp(a - al * ln)
        tB = np.exp(b - be * ls)
        tC = np.exp(c) * s2
        r = (E + tA + tB - tC - y) / y
        wr = r if w is None else w * r
        f = (wr * r).sum(1)
        q = 2 * wr / y
        g = np.stack([(q * E).sum(1), (q * tA).sum(1), -(q * tA * ln).sum(1), (q * tB).sum(1),
                      -(q * tB * ls).sum(1), -(q * tC).sum(1)], 1)
    return f, g


def grid_starts(y) -> np.ndarray:
    """The starts of a full fit: E at 0.3 / 0.8 of the smallest loss, alpha and beta 0.3 / 0.8,
    A and B 0.1 / 1 nat, C 0.1 / 1 nat per 1e6 tokens of annealing area (64 starts)."""
    lo = float(np.nanmin(y))
    g = itertools.product(np.log([0.3 * lo, 0.8 * lo]), np.log([0.1, 1.0]), [0.3, 0.8], np.log([0.1, 1.0]),
                          [0.3, 0.8], np.log([0.1, 1.0]))
    return np.array(list(g), float)


def fit_law(N, S1, S2, y, weights: np.ndarray | None = None, starts: np.ndarray | None = None,
            maxiter: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """Best theta (R, 6) and objective (R,) of R weighted problems (``weights`` (R, n);
    None: one unweighted), each started from every row of ``starts`` (default the grid)."""
    ln, ls = np.log(np.asarray(N, float) / N0), np.log(np.asarray(S1, float) / S0)
    s2, y = np.asarray(S2, float) / S0, np.asarray(y, float)
    starts = grid_starts(y) if starts is None else np.atleast_2d(starts)
    W = None if weights is None else np.asarray(weights, float)
    R, K = (1 if W is None else len(W)), len(starts)
    x0 = np.tile(starts, (R, 1))  # problem r, start k at row r * K + k
    Wx = None if W is None else np.repeat(W, K, axis=0)

    def fg(th, rows):
        return _fg(th, ln, ls, s2, y, None if Wx is None else Wx[rows])

    res = minimize_batched(fg, x0, maxiter=maxiter, gtol=1e-9, ftol=1e-11)
    f = np.where(np.isfinite(res.f), res.f, np.inf).reshape(R, K)
    best = f.argmin(1)
    th = res.x.reshape(R, K, -1)[np.arange(R), best]
    fb = f[np.arange(R), best]
    th[~np.isfinite(fb)] = np.nan
    return th, fb


def to_params(th: np.ndarray) -> np.ndarray:
    """(R, 6) theta -> (R, 6) (E, A, alpha, B, beta, C)."""
    th = np.atleast_2d(th)
    with np.errstate(over="ignore"):
        return np.stack([np.exp(th[:, 0]), np.exp(th[:, 1]), th[:, 2], np.exp(th[:, 3]), th[:, 4],
                         np.exp(th[:, 5])], 1)


def params_dict(th) -> dict[str, float]:
    return {k: float(v) for k, v in zip(PARAMS, to_params(th)[0])}


def _distinct(th_k: np.ndarray, f_k: np.ndarray, k: int = 2) -> np.ndarray:
    """Up to ``k`` distinct best minima (the restarts of a bootstrap or a held-out fit)."""
    out = []
    for i in np.argsort(f_k):
        if np.isfinite(f_k[i]) and all(np.abs(th_k[i] - o).max() > 1e-3 for o in out):
            out.append(th_k[i])
        if len(out) == k:
            break
    return np.array(out)


def fit_all_starts(N, S1, S2, y) -> tuple[np.ndarray, np.ndarray]:
    """Every grid start's end (K, 6) and objective (K,): the full fit keeps its best two."""
    ln, ls = np.log(np.asarray(N, float) / N0), np.log(np.asarray(S1, float) / S0)
    s2, y = np.asarray(S2, float) / S0, np.asarray(y, float)
    x0 = grid_starts(y)
    res = minimize_batched(lambda th, rows: _fg(th, ln, ls, s2, y, None), x0, maxiter=500, gtol=1e-9, ftol=1e-11)
    return res.x, np.where(np.isfinite(res.f), res.f, np.inf)


def held_out(points: pd.DataFrame, metric: str, hold: np.ndarray, starts: np.ndarray) -> list[dict]:
    """For each boolean row mask in ``hold`` (H, n): the law fitted without those rows predicts
    the held-out rows that are annealed finals; one dict per prediction (run_id, N, tokens,
    observed, predicted, rel_error)."""
    p = points
    y = p[metric].to_numpy(float)
    W = (~np.asarray(hold, bool)).astype(float) * np.isfinite(y)[None]
    th, _ = fit_law(p["n_params"], p["S1"], p["S2"], np.nan_to_num(y, nan=1.0), weights=W, starts=starts)
    out = []
    for h, t in zip(hold, th):
        rows = np.flatnonzero(h & p["annealed"].to_numpy(bool) & np.isfinite(y))
        if not rows.size or not np.isfinite(t).all():
            continue
        pr = predict_law(params_dict(t), p["n_params"].to_numpy(float)[rows], p["S1"].to_numpy(float)[rows],
                         p["S2"].to_numpy(float)[rows])
        for i, v in zip(rows, pr):
            out.append({"run_id": str(p["run_id"][i]), "x_held_out": float(p["n_params"][i]),
                        "d_held_out": float(p["tokens_seen"][i]), "observed": float(y[i]), "predicted": float(v),
                        "rel_error": float(v / y[i] - 1)})
    return out


def lobo(points: pd.DataFrame, metric: str, starts: np.ndarray) -> list[dict]:
    """Leave-one-branch-out: each decayed run (all its rows) held out in turn, its final
    evaluation predicted from the stable runs and the other branches."""
    ids = points["run_id"].to_numpy()
    branches = sorted(set(ids[points["annealed"].to_numpy(bool)]))
    return held_out(points, metric, np.array([ids == b for b in branches]).reshape(len(branches), len(ids)),
                    starts)


def leave_largest_out(points: pd.DataFrame, metric: str) -> list[dict]:
    """Every run of the largest model held out (fitted from the grid of starts, so nothing of
    it enters), each of its decayed finals predicted."""
    N = points["n_params"].to_numpy(float)
    if len(np.unique(N)) < 3:
        return []
    return held_out(points, metric, (N == N.max())[None], grid_starts(points[metric].dropna()))


# --------------------------------------------------------------------------- per-size laws
#
# A law is a function of theta and of each evaluation's inputs X ("ln" = ln(N / 1e6),
# "ls" = ln(S1 / 1e6), "a" = S2 / 1e6, "g" = the index of the point's model size among the
# study's distinct sizes, "D" = how many). Its ``shared`` parameters have one value per
# study; its ``local`` ones one value per model size, laid out after the shared ones,
# parameter-major: theta[:, len(shared) + j * D + g]. Gradients by the complex step
# (df = Im f(theta + i h e) / h, exact to rounding): one model evaluation per shared
# parameter and one per local parameter for every size at once (a point depends on its own
# size's value only). A law's model uses only operations analytic in theta.

_H = 1e-20  # the complex step


class Law:
    """A loss-curve law over evaluations; subclasses give ``model``, ``starts`` and ``report``."""

    name = ""
    shared: tuple[str, ...] = ()
    local: tuple[str, ...] = ()

    def model(self, p: dict, X: dict) -> np.ndarray:
        """The predicted loss (B, n); ``p[name]``: (B, 1) for a shared parameter, (B, n) for a
        local one (each point's own size's value)."""
        raise NotImplementedError

    def starts(self, X: dict, y: np.ndarray, w: np.ndarray) -> np.ndarray:
        """(K, P) starting points of a fit on the points with weight > 0."""
        raise NotImplementedError

    def report(self, th: np.ndarray, X: dict) -> dict[str, float]:
        """The reported parameters of one theta (P,)."""
        return {k: float(v) for k, v in zip(self.shared, th)}

    def size(self, D: int) -> int:
        return len(self.shared) + len(self.local) * D

    def unpack(self, th: np.ndarray, X: dict) -> dict:
        ns, D, g = len(self.shared), X["D"], X["g"]
        p = {k: th[:, i:i + 1] for i, k in enumerate(self.shared)}
        for j, k in enumerate(self.local):
            p[k] = th[:, ns + j * D: ns + (j + 1) * D][:, g]
        return p

    def predict(self, th: np.ndarray, X: dict) -> np.ndarray:
        """(B, n) at thetas (B, P)."""
        with np.errstate(all="ignore"):
            return np.real(self.model(self.unpack(np.atleast_2d(th), X), X))


def inputs(N, S1, S2, sizes=None) -> dict:
    """A law's X for points at (N, S1, S2); ``sizes``: the distinct sizes (default: N's)."""
    N, S1, S2 = (np.atleast_1d(np.asarray(v, float)) for v in (N, S1, S2))
    sizes = np.unique(N) if sizes is None else np.asarray(sizes, float)
    g = np.searchsorted(sizes, N).clip(0, len(sizes) - 1)
    return {"ln": np.log(N / N0), "ls": np.log(S1 / S0), "a": S2 / S0, "g": g, "D": len(sizes),
            "sizes": sizes}


def _objective(law: Law, X: dict, y: np.ndarray, W: np.ndarray | None):
    """fg(theta, rows) of sum w ((L_hat - y) / y)^2 for ``minimize_batched``; W (R, n). The
    gradient from the law's ``grads`` where it has one, else by the complex step."""
    ns, nl, D = len(law.shared), len(law.local), X["D"]
    onehot = np.eye(D)[X["g"]]
    y = np.asarray(y, float)
    names = (*law.shared, *law.local)
    cols = [slice(j, j + 1) if j < ns else slice(ns + (j - ns) * D, ns + (j - ns + 1) * D)
            for j in range(ns + nl)]

    def fg(th, rows):
        w = None if W is None else W[rows]
        with np.errstate(all="ignore"):
            grads = getattr(law, "grads", None)
            if grads is not None:
                L, dd = grads(law.unpack(th, X), X)
            else:
                L = np.real(law.model(law.unpack(th, X), X))
            r = (L - y) / y
            if w is None:
                wr = r
            else:
                wr = np.where(w > 0, w * r, 0.0)
                r = np.where(w > 0, r, 0.0)
            f = (wr * r).sum(1)
            q = 2 * wr / y
            used = q != 0
            G = np.zeros(th.shape)
            for j in range(ns + nl):
                if grads is not None:
                    dL = np.broadcast_to(dd[names[j]], q.shape)
                else:
                    t = th.astype(complex)
                    t[:, cols[j]] += 1j * _H
                    dL = np.imag(law.model(law.unpack(t, X), X)) / _H
                dL = np.where(used, q * dL, 0.0)
                G[:, cols[j]] = dL.sum(1, keepdims=True) if j < ns else dL @ onehot
        return f, G

    return fg


def fit_batched(law: Law, X: dict, y, W: np.ndarray | None = None, starts: np.ndarray | None = None,
                maxiter: int = 1000, ftol: float = 1e-11) -> tuple[np.ndarray, np.ndarray]:
    """Every start's end (R, K, P) and objective (R, K) of R weighted problems (``W`` (R, n);
    None: one unweighted), each started from every row of ``starts`` (K, P)."""
    y = np.asarray(y, float)
    starts = np.atleast_2d(law.starts(X, y, np.ones(len(y))) if starts is None else starts)
    R, K = (1 if W is None else len(W)), len(starts)
    x0 = np.tile(starts, (R, 1))
    Wx = None if W is None else np.repeat(np.asarray(W, float), K, axis=0)
    res = minimize_batched(_objective(law, X, y, Wx), x0, maxiter=maxiter, gtol=1e-9, ftol=ftol)
    f = np.where(np.isfinite(res.f), res.f, np.inf).reshape(R, K)
    return res.x.reshape(R, K, -1), f


def best_of(ends: np.ndarray, fs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The best end (R, P) and objective (R,) of fit_batched's (R, K, P), (R, K); nan where none."""
    b = fs.argmin(1)
    th = ends[np.arange(len(fs)), b].copy()
    fb = fs[np.arange(len(fs)), b]
    th[~np.isfinite(fb)] = np.nan
    return th, fb


def fit_sizes(law: Law, X: dict, y, w: np.ndarray | None = None, keep: int = 16,
              starts: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Every end (K, P) and objective (K,) of a fit of ``law`` on the points with weight > 0:
    from each start (default the law's) with a loose tolerance (300 iterations, relative
    decrease 1e-8), then the ``keep`` best distinct ends refined to the full tolerance
    (returned first, the other loose ends after them, at objective inf)."""
    y = np.asarray(y, float)
    w = np.ones(len(y)) if w is None else np.asarray(w, float)
    S = law.starts(X, y, w) if starts is None else np.atleast_2d(starts)
    ends, fs = fit_batched(law, X, y, w[None], S, maxiter=300, ftol=1e-8)
    best = _distinct(ends[0], fs[0], keep)
    if not len(best):
        return ends[0], fs[0]
    e2, f2 = fit_batched(law, X, y, w[None], best)
    return np.concatenate([e2[0], ends[0]]), np.concatenate([f2[0], np.full(len(fs[0]), np.inf)])


def held_out_law(law: Law, X: dict, y, annealed: np.ndarray, hold: np.ndarray, starts: np.ndarray) -> list:
    """For each boolean row mask in ``hold`` (H, n): ``law`` fitted without those rows from
    ``starts`` predicts the held-out annealed rows; (row, predicted) pairs per mask."""
    y = np.asarray(y, float)
    ok = np.isfinite(y)
    W = (~np.asarray(hold, bool)).astype(float) * ok[None]
    th, _ = best_of(*fit_batched(law, X, np.where(ok, y, 1.0), W, starts))
    out = []
    for h, t in zip(hold, th):
        rows = np.flatnonzero(h & annealed & ok)
        out.append([] if not rows.size or not np.isfinite(t).all()
                   else list(zip(rows, law.predict(t[None], X)[0, rows])))
    return out


def _law_each(points, metric, pairs) -> list[dict]:
    y = points[metric].to_numpy(float)
    return [{"run_id": str(points["run_id"][i]), "x_held_out": float(points["n_params"][i]),
             "d_held_out": float(points["tokens_seen"][i]), "observed": float(y[i]), "predicted": float(v),
             "rel_error": float(v / y[i] - 1)} for ps in pairs for i, v in ps]


# ---- the onset law: a plateau, then a drop whose onset and depth depend on N


def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _onset_parts(P, R, b, g, lsd, k, tau, X):
    """_onset's value and the pieces of its derivatives: (L, u, h, R h du/dz, z, du/dg,
    q = S2 / (S2 + tau)) with z = b (ln S1 - ln s)."""
    z = b * (X["ls"] - lsd)
    l1 = np.log1p(np.exp(z))
    e = np.exp(-g * l1)
    u = 1.0 - e
    q = X["a"] / (X["a"] + tau)
    h = 1.0 + k * q
    Rhuz = R * h * g * e * _sigmoid(z)
    return P - R * u * h, u, h, Rhuz, z, l1 * e, q


def _onset(P, R, b, g, lsd, k, tau, X):
    """P - R u (1 + k S2 / (S2 + tau)), u = 1 - (1 + (S1 / s)^beta)^-g: the stable curve leaves
    the plateau P near S1 = s (ln s = ``lsd``, S1 in 1e6 tokens) and falls towards P - R,
    as a power law of exponent beta g once S1 >> s; annealing multiplies what it has gained
    below the plateau by 1 + kappa(S2), kappa saturating at k."""
    u = 1.0 - np.exp(-g * np.log1p(np.exp(b * (X["ls"] - lsd))))
    return P - R * u * (1.0 + k * X["a"] / (X["a"] + tau))


class OnsetSizes(Law):
    """The onset law with each size's own curve: the depth of its drop R_N (``lr`` = ln R_N),
    its onset s_N (``lsd`` = ln s_N, 1e6 tokens) and steepness beta_N (``lb`` = ln beta_N); the
    plateau P, the tail g and the annealing k, tau shared (``lg``, ``lk``, ``lt``: logs)."""

    name = "onset per size"
    shared = ("P", "lg", "lk", "lt")
    local = ("lr", "lsd", "lb")

    def model(self, p, X):
        return _onset(p["P"], np.exp(p["lr"]), np.exp(p["lb"]), np.exp(p["lg"]), p["lsd"], np.exp(p["lk"]),
                      np.exp(p["lt"]), X)

    def starts(self, X, y, w):
        """P at the largest loss fitted and 0.3 above; beta 1 / 3; g 0.3 / 1; k 0.1 / 0.4; tau
        0.01 / 0.1 (1e6 tokens); per size R 1.5 / 4 x (P - its smallest loss) and s its
        median / largest S1 (128 starts)."""
        D, g = X["D"], X["g"]
        on = w > 0
        P0 = float(np.max(y[on]))
        rows = []
        for P, lb, lg, lk, lt, rf, q in itertools.product([P0, P0 + 0.3], np.log([1.0, 3.0]), np.log([0.3, 1.0]),
                                                          np.log([0.1, 0.4]), np.log([0.01, 0.1]), [1.5, 4.0],
                                                          [0.5, 1.0]):
            lr, lsd = np.zeros(D), np.zeros(D)
            for d in range(D):
                m = on & (g == d)
                m = m if m.any() else on
                lr[d] = np.log(max(P - y[m].min(), 0.05) * rf)
                lsd[d] = np.quantile(X["ls"][m], q)
            rows.append(np.concatenate([[P, lg, lk, lt], lr, lsd, np.full(D, lb)]))
        return np.array(rows)

    def grads(self, p, X):
        """The value (B, n) and dL / d(each parameter) (analytic; elementwise, so a parameter
        may be shared or per size)."""
        R, b, g, k, tau = (np.exp(p[c]) for c in ("lr", "lb", "lg", "lk", "lt"))
        L, u, h, Rhuz, z, ug, q = _onset_parts(p["P"], R, b, g, p["lsd"], k, tau, X)
        Ru = R * u
        return L, {"P": np.ones_like(L), "lb": -Rhuz * z, "lg": -R * h * ug * g, "lk": -Ru * k * q,
                   "lt": Ru * k * q * tau / (X["a"] + tau), "lr": -Ru * h, "lsd": Rhuz * b}

    def report(self, th, X):
        """The shared parameters: P, g, k, tau."""
        return {"P": float(th[0]), "g": float(np.exp(th[1])), "k": float(np.exp(th[2])), "tau": float(np.exp(th[3]))}

    def local_values(self, th, X) -> dict[str, np.ndarray]:
        D, ns = X["D"], len(self.shared)
        return {k: th[ns + j * D: ns + (j + 1) * D] for j, k in enumerate(self.local)}

    def per_size(self, th, X) -> list[dict]:
        """Each size's N, R_N, E_N = P - R_N, s_N (tokens) and beta_N."""
        v = self.local_values(th, X)
        return [{"n_params": float(n), "R": float(np.exp(lr)), "E": float(th[0] - np.exp(lr)),
                 "s": float(S0 * np.exp(lsd)), "beta": float(np.exp(lb))}
                for n, lr, lsd, lb in zip(X["sizes"], v["lr"], v["lsd"], v["lb"])]


class Onset(Law):
    """The onset law with its per-size parameters as laws in N: E_N = E + A (N/1e6)^-alpha
    (the stable curve's asymptote, R_N = P - E_N) and s_N = s0 (N/1e6)^-gamma."""

    name = "onset"
    shared = ("P", "lb", "lg", "lk", "lt", "le", "la", "alpha", "ls0", "gamma")
    PARAMS = ("P", "beta", "g", "k", "tau", "E", "A", "alpha", "s0", "gamma")

    def model(self, p, X):
        E = np.exp(p["le"]) + np.exp(p["la"] - p["alpha"] * X["ln"])
        return _onset(p["P"], p["P"] - E, np.exp(p["lb"]), np.exp(p["lg"]), p["ls0"] - p["gamma"] * X["ln"],
                      np.exp(p["lk"]), np.exp(p["lt"]), X)

    def grads(self, p, X):
        """The value (B, n) and dL / d(each parameter) (analytic)."""
        b, g, k, tau = (np.exp(p[c]) for c in ("lb", "lg", "lk", "lt"))
        tE, tA = np.exp(p["le"]), np.exp(p["la"] - p["alpha"] * X["ln"])
        R = p["P"] - tE - tA
        L, u, h, Rhuz, z, ug, q = _onset_parts(p["P"], R, b, g, p["ls0"] - p["gamma"] * X["ln"], k, tau, X)
        uh, Ru = u * h, R * u
        return L, {"P": 1.0 - uh, "lb": -Rhuz * z, "lg": -R * h * ug * g, "lk": -Ru * k * q,
                   "lt": Ru * k * q * tau / (X["a"] + tau), "le": uh * tE, "la": uh * tA,
                   "alpha": -uh * tA * X["ln"], "ls0": Rhuz * b, "gamma": -Rhuz * b * X["ln"]}

    def starts(self, X, y, w, sizes: np.ndarray | None = None):
        """A grid (P at the largest loss fitted; beta 1 / 3; g 0.3 / 1; k 0.2; tau 0.03; E 0.5 /
        0.8 x the smallest loss, A 0.2 / 1, alpha 0.3 / 0.8; s0 at the median / largest S1,
        gamma 0.15: 64 starts) and the starts from a per-size fit on the same points
        (``sizes``: its theta; default fitted here; :meth:`from_sizes`)."""
        on = w > 0
        if sizes is None:
            ends, fs = fit_sizes(OnsetSizes(), X, y, w)
            sizes = ends[int(np.argmin(fs))]
        lo, ls = float(np.min(y[on])), X["ls"][on]
        grid = itertools.product([float(np.max(y[on]))], np.log([1.0, 3.0]), np.log([0.3, 1.0]), [np.log(0.2)],
                                 [np.log(0.03)], np.log([0.5 * lo, 0.8 * lo]), np.log([0.2, 1.0]), [0.3, 0.8],
                                 [float(np.median(ls)), float(ls.max())], [0.15])
        return np.concatenate([self.from_sizes(sizes, X, w), np.array(list(grid), float)])

    def from_sizes(self, th, X, w) -> np.ndarray:
        """Starts from a per-size theta: its shared values and its sizes' median beta, E + A
        N^-alpha fitted to its sizes' E_N (alpha on a grid, E and A linear; the best three)
        and ln s0 - gamma ln N to their ln s_N (the sizes with weight > 0)."""
        D = X["D"]
        live = np.array([(w * (X["g"] == d)).sum() > 0 for d in range(D)])
        ln = np.log(X["sizes"] / N0)[live]
        v = OnsetSizes().local_values(th, X)
        E_d = th[0] - np.exp(v["lr"][live])
        lsd = v["lsd"][live]
        shared = [th[0], float(np.median(v["lb"][live])), *th[1:4]]  # P, lb, lg, lk, lt
        gam, ls0 = np.polyfit(-ln, lsd, 1) if live.sum() >= 2 else (0.0, float(lsd.mean()))
        fits = []
        for al in np.linspace(0.05, 2.0, 40):
            Z = np.stack([np.ones_like(ln), np.exp(-al * ln)], 1)
            coef, *_ = np.linalg.lstsq(Z, E_d, rcond=None)
            fits.append((float(((Z @ coef - E_d) ** 2).sum()), al, coef))
        fits.sort(key=lambda t: t[0])
        rows = [[*shared, np.log(max(E, 0.1)), np.log(max(A, 1e-3)), al, ls0, gam] for _, al, (E, A) in fits[:3]]
        # and each with the logistic shape (g = 1) at the same tail exponent beta g
        rows += [[r[0], r[1] + r[2], 0.0, *r[3:]] for r in rows]
        return np.array(rows)

    def to_params(self, th: np.ndarray) -> np.ndarray:
        """(R, 10) theta -> (R, 10) reported (``PARAMS``)."""
        th = np.atleast_2d(th)
        with np.errstate(over="ignore"):
            return np.stack([th[:, 0], *np.exp(th[:, 1:7].T), th[:, 7], np.exp(th[:, 8]), th[:, 9]], 1)

    def report(self, th, X=None):
        return {k: float(v) for k, v in zip(self.PARAMS, self.to_params(th)[0])}


def onset_law(params: dict, N, S1, S2) -> np.ndarray:
    """The onset law (:class:`Onset`) at reported ``params`` (P, beta, g, k, tau in 1e6 tokens,
    E, A, alpha, s0 in 1e6 tokens, gamma) for N, S1, S2 (tokens)."""
    N, S1, S2 = (np.asarray(v, float) for v in (N, S1, S2))
    n = N / N0
    E = params["E"] + params["A"] * n ** -params["alpha"]
    with np.errstate(all="ignore"):
        return _onset(params["P"], params["P"] - E, params["beta"], params["g"],
                      np.log(params["s0"]) - params["gamma"] * np.log(n), params["k"], params["tau"],
                      {"ls": np.log(S1 / S0), "a": S2 / S0})


# ---- fitting the onset law to a study


RULE = ("every decayed run's final evaluation, and every other evaluation after the learning rate's warmup "
        "(step > the warmup steps of the schedule the run ran)")


@dataclass
class OnsetFit:
    """The onset law fitted to one metric's curve points (:func:`fitted`'s rule applied):
    every end and objective of the per-size law (``sizes_ends`` (K, P), ``sizes_fs``) and
    of the law in N (``ends``, ``fs``), with the inputs they were fitted on."""

    points: pd.DataFrame
    metric: str
    X: dict
    y: np.ndarray
    sizes_ends: np.ndarray
    sizes_fs: np.ndarray
    ends: np.ndarray
    fs: np.ndarray

    @property
    def best_sizes(self) -> np.ndarray:
        return self.sizes_ends[int(np.argmin(self.sizes_fs))]

    @property
    def best(self) -> np.ndarray:
        return self.ends[int(np.argmin(self.fs))]

    def params(self) -> dict[str, float]:
        return Onset().report(self.best)

    def rms(self, law: str = "N") -> float:
        """The relative rms residual of the law in N ("N") or the per-size law ("size")."""
        lw, th = (Onset(), self.best) if law == "N" else (OnsetSizes(), self.best_sizes)
        return float(np.sqrt(np.mean((lw.predict(th[None], self.X)[0] / self.y - 1) ** 2)))

    def boot(self, W: np.ndarray, law: str = "N") -> np.ndarray:
        """Thetas (R, P) of the law refitted under the weights W (R, n) of the points, each
        restarted from the full fit's two best distinct minima (at most 300 iterations, to a
        relative decrease of 1e-9: a resample starts next to its minimum); nan where none
        converged."""
        lw, ends, fs = (Onset(), self.ends, self.fs) if law == "N" else (OnsetSizes(), self.sizes_ends, self.sizes_fs)
        return best_of(*fit_batched(lw, self.X, self.y, W, _distinct(ends, fs, 2), maxiter=300, ftol=1e-9))[0]

    def lobo(self) -> list[dict]:
        """Leave-one-branch-out with the per-size law: each decayed run held out, its final
        evaluation predicted from everything else (its size's stable run included)."""
        d = self.points
        ids = d["run_id"].to_numpy()
        ann = d["annealed"].to_numpy(bool)
        branches = sorted(set(ids[ann]))
        hold = np.array([ids == b for b in branches]).reshape(len(branches), len(ids))
        pairs = held_out_law(OnsetSizes(), self.X, self.y, ann, hold, _distinct(self.sizes_ends, self.sizes_fs, 2))
        return _law_each(d, self.metric, pairs)


def fit_onset(points: pd.DataFrame, metric: str) -> OnsetFit:
    """The per-size law (:func:`fit_sizes`), then the law in N (from a grid and from the
    per-size fit)."""
    d = fitted(points[points[metric].notna()].reset_index(drop=True))
    y = d[metric].to_numpy(float)
    X = inputs(d["n_params"], d["S1"], d["S2"])
    he, hf = fit_sizes(OnsetSizes(), X, y)
    gl = Onset()
    ge, gf = fit_sizes(gl, X, y, starts=gl.starts(X, y, np.ones(len(y)), sizes=he[int(np.argmin(hf))]))
    return OnsetFit(d, metric, X, y, he, hf, ge, gf)


def leave_largest_out_onset(points: pd.DataFrame, metric: str) -> list[dict]:
    """Every run of the largest model held out: the law in N fitted on the other sizes (its
    starts from their per-size fit, so nothing of the largest enters) predicts each of its
    decayed finals."""
    d = fitted(points[points[metric].notna()].reset_index(drop=True))
    N = d["n_params"].to_numpy(float)
    if len(np.unique(N)) < 3:
        return []
    y = d[metric].to_numpy(float)
    X = inputs(N, d["S1"], d["S2"])
    big = N == N.max()
    gl = Onset()
    ends, fs = fit_sizes(gl, X, y, (~big).astype(float))
    th = ends[int(np.argmin(fs))]
    rows = np.flatnonzero(big & d["annealed"].to_numpy(bool))
    if not rows.size or not np.isfinite(th).all():
        return []
    return _law_each(d, metric, [list(zip(rows, gl.predict(th[None], X)[0, rows]))])


# --------------------------------------------------------------------------- predictions


def study_schedule(study) -> dict:
    """The schedule settings of the study's runs (the first decayed run's, else any run's):
    kind, decay fraction, warmup / hold fractions and final ratio; what a target gets unless
    told otherwise."""
    sch = study.schedules
    branches = [c for c in sch.values() if c.get("decay_steps")]
    c = branches[0] if branches else next(iter(sch.values()), {})
    tr = c.get("training") or {}
    frac = c["decay_steps"] / c["total_steps"] if c.get("decay_steps") else 0.2
    return {"kind": c.get("schedule") or "lin0", "decay_frac": float(round(frac, 4)),
            "warmup_frac": float(tr.get("warmup_frac", 0.02)), "hold_frac": float(tr.get("hold_frac", 0.05)),
            "final_ratio": float(tr.get("final_lr_ratio", 0.01))}


def predict_curve(study, targets, kind: str | None = None, decay_frac: float | None = None, n_boot: int = 1000,
                  seed: int = 0, metrics=("test_loss_last", "test_loss_avg"), variant: str = "onset") -> pd.DataFrame:
    """Each target's final loss under a schedule from the loss-curve law fitted on every
    evaluation of ``study`` (a ``Study``): one row per (target, metric) with the target's
    areas, ``predicted`` and the law's 95% interval (``ci_lo``, ``ci_hi``: whole runs
    resampled). ``targets``: dicts with ``n_params`` and ``tokens`` (``label``, ``depth``
    optional). ``kind`` ("wsd", "cosine", "lin0") and ``decay_frac`` (wsd) default to the
    study's own (:func:`study_schedule`); warmup and the final ratio are the study's.
    ``variant`` "onset" (the registered law): a target at a size the study trained is
    predicted by that size's own curve (``curve`` "own size"), another by the law in N
    ("N law"); "tissue": the earlier law E + A N^-alpha + B S1^-beta - C S2. Raises
    ValueError (one sentence) when the study has no evaluations with known schedules."""
    from .bootstrap import StudyResample, percentile_ci

    sched = study_schedule(study)
    kind = kind or sched["kind"]
    frac = sched["decay_frac"] if decay_frac is None else float(decay_frac)
    pts = curve_points(study, tuple(metrics))
    if len(pts) < 12 or pts["n_params"].nunique() < 2 or not pts["annealed"].any():
        raise ValueError("the loss-curve law needs >= 12 evaluations of runs whose schedule the study's cells "
                         "give (config.json), >= 2 sizes and a decayed run")
    tps = float(np.median(pts["tokens_seen"] / pts["step"]))
    t = [dict(x) for x in ([targets] if isinstance(targets, dict) else targets)]
    A = np.array([target_areas(x["tokens"], tps, kind, frac, sched["warmup_frac"], sched["hold_frac"],
                               sched["final_ratio"]) for x in t]).reshape(len(t), 2)
    N = np.array([float(x["n_params"]) for x in t])
    s2_min = float(pts.loc[pts["annealed"], "S2"].min())
    warn = []
    for i in range(len(t)):  # the areas beyond what the study's evaluations span
        w = [f"{nm} {A[i, j]:.3g} is {A[i, j] / top:.1f}x the largest fitted ({top:.3g}): extrapolated"
             for j, nm, top in ((0, "S1", pts["S1"].max()), (1, "S2", pts["S2"].max())) if A[i, j] > 2 * top]
        if variant == "onset" and 0 < A[i, 1] < 0.5 * s2_min:
            w.append(f"S2 {A[i, 1]:.3g} is below half the shortest decay's ({s2_min:.3g}): the annealing gain "
                     "is not measured there")
        if N[i] > 2 * pts["n_params"].max():
            w.append(f"N {N[i]:.3g} is {N[i] / pts['n_params'].max():.1f}x the largest fitted")
        warn.append("; ".join(w))
    rows = []
    for m in metrics:
        if variant == "tissue":
            point, lo, hi, p, how = _predict_tissue(pts, m, N, A, n_boot, seed)
        else:
            F = fit_onset(pts, m)
            sizes = F.X["sizes"]
            own = np.array([int(np.argmin(np.abs(sizes - n))) if np.isclose(sizes, n, rtol=1e-9, atol=0).any() else -1
                            for n in N])  # the fitted size a target is at, -1: none
            Xt = inputs(N, A[:, 0], A[:, 1], sizes=sizes)
            Xt["g"] = np.where(own >= 0, own, 0)
            gl, sz = Onset(), OnsetSizes()
            p = F.params()
            point = np.where(own >= 0, sz.predict(F.best_sizes[None], Xt)[0], gl.predict(F.best[None], Xt)[0])
            how = np.where(own >= 0, "own size", "N law")
            lo = hi = np.full(len(t), np.nan)
            if n_boot:
                W = StudyResample(F.points["run_id"], n_boot, seed).weights(F.points["run_id"])
                boot = gl.predict(F.boot(W, "N"), Xt)
                if (own >= 0).any():
                    bs = sz.predict(F.boot(W, "size"), Xt)
                    seen = np.stack([(W * (F.X["g"] == d)).sum(1) > 0 for d in range(F.X["D"])], 1)  # (R, D)
                    bs = np.where(seen[:, Xt["g"]], bs, np.nan)  # a resample without the size says nothing
                    boot = np.where(own[None] >= 0, bs, boot)
                lo, hi = percentile_ci(boot[np.isfinite(boot).all(1)])
        for i, x in enumerate(t):
            size = f"d{int(x['depth'])}" if x.get("depth") is not None and np.isfinite(x["depth"]) else f"N={N[i]:.3g}"
            rows.append({"target": x.get("label") or f"{size} @ {x['tokens']:.3g} tokens",
                         "depth": x.get("depth"), "n_params": N[i], "tokens": float(x["tokens"]), "metric": m,
                         "law": "curve", "curve": str(how[i]), "schedule": kind + (f" decay {frac:g}" if kind == "wsd" else ""),
                         "S1": A[i, 0], "S2": A[i, 1], "predicted": float(point[i]), "ci_lo": float(lo[i]),
                         "ci_hi": float(hi[i]), "warning": warn[i], **{f"param_{k}": v for k, v in p.items()}})
    out = pd.DataFrame(rows)
    out.attrs.update({"study": str(study.root) if study.root is not None else study.name, "n_boot": n_boot,
                      "seed": seed, "tokens_per_step": tps, "schedule": {**sched, "kind": kind, "decay_frac": frac},
                      "range_N": (float(pts["n_params"].min()), float(pts["n_params"].max())), "variant": variant})
    return out


def _predict_tissue(pts, m, N, A, n_boot, seed):
    """The earlier law's point predictions, interval and parameters (``variant="tissue"``)."""
    from .bootstrap import StudyResample, percentile_ci

    d = pts[pts[m].notna()].reset_index(drop=True)
    args = [d[c].to_numpy(float) for c in ("n_params", "S1", "S2", m)]
    ends, fs = fit_all_starts(*args)
    p = params_dict(ends[int(np.argmin(fs))][None])
    point = predict_law(p, N, A[:, 0], A[:, 1])
    lo = hi = np.full(len(N), np.nan)
    if n_boot:
        W = StudyResample(d["run_id"], n_boot, seed).weights(d["run_id"])
        P = to_params(fit_law(*args, weights=W, starts=_distinct(ends, fs, 2))[0])
        with np.errstate(all="ignore"):
            boot = (P[:, :1] + P[:, 1:2] * (N[None] / N0) ** -P[:, 2:3] + P[:, 3:4] * (A[None, :, 0] / S0)
                    ** -P[:, 4:5] - P[:, 5:6] * A[None, :, 1] / S0)
        lo, hi = percentile_ci(boot[np.isfinite(boot).all(1)])
    return point, lo, hi, p, np.full(len(N), "N law")


__all__ = ["study_schedule", "predict_curve", "DECAY", "PARAMS", "RULE", "curve_points", "fitted", "target_areas",
           "schedule_areas", "predict_law", "onset_law", "fit_law", "fit_all_starts", "fit_onset", "lobo",
           "leave_largest_out", "leave_largest_out_onset", "params_dict", "to_params", "Law", "Onset", "OnsetSizes",
           "OnsetFit", "fit_sizes", "fit_batched", "inputs"]
