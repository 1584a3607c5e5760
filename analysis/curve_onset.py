"""The onset law of the loss curve, fitted per model size and as one law in N (the form
``curve``; ``analysis/curve.py`` holds the schedule areas, the earlier Tissue et al. law and
the predictions, and re-exports everything here).

Why this form, and the numbers that chose it: docs/analysis.md, "The loss-curve law". Reads no
file.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .optim import minimize_batched

N0 = 1e6  # parameters: N's unit in the law
S0 = 1e6  # tokens: S1's and S2's unit in the law


def fitted(points: pd.DataFrame) -> pd.DataFrame:
    """The evaluations a per-size law is fitted on (the rule, fixed before any held-out number
    was looked at): every decayed run's final evaluation, and every other evaluation taken
    after the learning rate's warmup (step > the warmup steps of the schedule the run ran)."""
    keep = points["annealed"].to_numpy(bool) | ~points["in_warmup"].to_numpy(bool)
    return points[keep].reset_index(drop=True)


def _distinct(th_k: np.ndarray, f_k: np.ndarray, k: int = 2) -> np.ndarray:
    """Up to ``k`` distinct best minima (the restarts of a bootstrap or a held-out fit)."""
    out = []
    for i in np.argsort(f_k):
        if np.isfinite(f_k[i]) and all(np.abs(th_k[i] - o).max() > 1e-3 for o in out):
            out.append(th_k[i])
        if len(out) == k:
            break
    return np.array(out)


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
    below the plateau by 1 + kappa(S2), kappa saturating at k. (:func:`_onset_parts` is the
    same value with its derivatives' pieces; this form is kept apart for its rounding, which
    the documented fits were computed with.)"""
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
