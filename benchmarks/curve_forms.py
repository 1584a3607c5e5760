"""Which loss-curve law: candidate forms compared on a study's every evaluation.

    .venv/bin/python benchmarks/curve_forms.py STUDY [--metric test_loss_avg] [--only NAME ...]
        [--csv PATH] [--tissue-variants] [--each]
    .venv/bin/python benchmarks/curve_forms.py STUDY --replicate OTHER   (the runs' reproducibility)
    .venv/bin/python benchmarks/curve_forms.py NEW_FOLDER --calibrate 12  (synthetic coverage)

For each candidate (``CANDIDATES`` below), on the study's curve points
(``analysis.curve.curve_points``: every evaluation of every run with its schedule's areas S1,
S2 in tokens), fitted by the product's code (``analysis.curve``: batched L-BFGS, complex-step
gradients; a law with per-size parameters in two stages, ``fit_sizes``):

- leave-one-branch-out (LOBO): each decay branch held out, its final loss predicted from the
  stable runs and the other branches (restarted from the full fit's two best minima); max
  and median |error|, and every error;
- leave-largest-out (LLO): every run of the largest model held out (nothing of it enters the
  fit or its starts), each of its decayed finals predicted; the worst signed error. A law with
  per-size parameters predicts a new size through its law in N, the candidate's ``global``
  law fitted on the other sizes (``Onset``: E + A N^-alpha and s0 N^-gamma; ``Tissue``); a
  candidate without one has no leave-largest-out ("-");
- the relative rms residual of the full fit and its number of parameters.

Rules, fixed before any held-out number was looked at: "W" fits every decayed run's final
evaluation and every other evaluation after the warmup (``analysis.curve.fitted``); "all"
fits every evaluation. Approach 3 (final evaluations only; ``analysis.chinchilla``) gets the
same two checks: LOBO from the other finals, LLO as ``varscale fit``'s extrapolation check.
``--tissue-variants`` adds the earlier comparison of Tissue-form variants (scipy's
least_squares, the same objective). docs/analysis.md, "The loss-curve law", quotes the output.
"""
from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis import curve as K  # noqa: E402
from analysis import curve_onset as O  # noqa: E402
from analysis.chinchilla import extrapolation_check_chinchilla, fit_chinchilla  # noqa: E402
from analysis.study import Study  # noqa: E402
from varscale.schedule import history, schedule_of_cell  # noqa: E402


# --------------------------------------------------------------------------- candidate laws


class Tissue(K.Law):
    """E + A (N/1e6)^-alpha + B (S1/1e6)^-beta - C S2/1e6 (the earlier registered law)."""

    name = "tissue"
    shared = ("e", "a", "alpha", "b", "beta", "c")

    def model(self, p, X):
        return (np.exp(p["e"]) + np.exp(p["a"] - p["alpha"] * X["ln"]) + np.exp(p["b"] - p["beta"] * X["ls"])
                - np.exp(p["c"]) * X["a"])

    def starts(self, X, y, w):
        return K.grid_starts(y[w > 0])


class TissueSizes(K.Law):
    """Tissue per size: E_N + B_N (S1/1e6)^-beta - C_N S2/1e6, beta shared."""

    name = "tissue per size"
    shared = ("beta",)
    local = ("e", "b", "c")

    def model(self, p, X):
        return np.exp(p["e"]) + np.exp(p["b"] - p["beta"] * X["ls"]) - np.exp(p["c"]) * X["a"]

    def starts(self, X, y, w):
        rows = []
        for beta, ef, lb, lc in itertools.product([0.3, 0.8], [0.5, 0.8], np.log([0.1, 1.0]), np.log([0.1, 1.0])):
            loc = _per_size(X, y, w, lambda yd, sd: np.log(ef * yd.min()))
            rows.append(np.concatenate([[beta], loc, np.full(X["D"], lb), np.full(X["D"], lc)]))
        return np.array(rows)


class TissueSatSizes(TissueSizes):
    """Tissue per size with a saturating annealing term C_N S2 / (S2 + tau), tau shared."""

    name = "tissue per size, saturating S2"
    shared = ("beta", "lt")

    def model(self, p, X):
        return (np.exp(p["e"]) + np.exp(p["b"] - p["beta"] * X["ls"])
                - np.exp(p["c"]) * X["a"] / (X["a"] + np.exp(p["lt"])))

    def starts(self, X, y, w):
        s = super().starts(X, y, w)
        return np.concatenate([np.insert(s, 1, np.log(t), axis=1) for t in (0.02, 0.2)])


class PowerProgressSizes(K.Law):
    """A power law per size, E_N + B_N (S1/1e6)^-beta, with the onset law's annealing:
    L = L_st - kappa(S2) (P - L_st), kappa = k S2 / (S2 + tau); beta, P, k, tau shared."""

    name = "power per size x progress"
    shared = ("beta", "P", "lk", "lt")
    local = ("e", "b")

    def model(self, p, X):
        st = np.exp(p["e"]) + np.exp(p["b"] - p["beta"] * X["ls"])
        return st - np.exp(p["lk"]) * X["a"] / (X["a"] + np.exp(p["lt"])) * (p["P"] - st)

    def starts(self, X, y, w):
        P0 = float(np.max(y[w > 0]))
        rows = []
        for beta, ef, lb, lk, lt in itertools.product([0.3, 0.8], [0.5, 0.8], np.log([0.1, 1.0]), np.log([0.1, 0.4]),
                                                      np.log([0.01, 0.1])):
            loc = _per_size(X, y, w, lambda yd, sd: np.log(ef * yd.min()))
            rows.append(np.concatenate([[beta, P0, lk, lt], loc, np.full(X["D"], lb)]))
        return np.array(rows)


class Fixed(K.Law):
    """``base`` with some shared parameters held at given values (fitting scale)."""

    def __init__(self, base: K.Law, name: str, **fixed):
        self.base, self.name, self.fixed = base, name, fixed
        self.shared = tuple(k for k in base.shared if k not in fixed)
        self.local = base.local
        self._keep = [i for i, k in enumerate(base.shared) if k not in fixed]

    def model(self, p, X):
        ref = p[self.shared[0]]
        return self.base.model({**p, **{k: 0 * ref + v for k, v in self.fixed.items()}}, X)

    def starts(self, X, y, w):
        s = self.base.starts(X, y, w)
        for k, v in self.fixed.items():
            i = self.base.shared.index(k)
            s = s[np.isclose(s[:, i], v)] if np.isclose(s[:, i], v).any() else s
        ns = len(self.base.shared)
        return np.unique(np.concatenate([s[:, self._keep], s[:, ns:]], 1), axis=0)

    def report(self, th, X):
        full = np.insert(th, [self.base.shared.index(k) - j for j, k in enumerate(self.fixed)],
                         list(self.fixed.values()))
        return self.base.report(full, X) if not self.local else {k: float(v) for k, v in zip(self.shared, th)}


class SharedB(K.OnsetSizes):
    """The onset law per size with one steepness b for every size."""

    name = "onset per size, shared b"
    shared = ("P", "lb", "lg", "lk", "lt")
    local = ("lr", "lsd")

    def starts(self, X, y, w):
        s = super().starts(X, y, w)  # P, lg, lk, lt, lr.., lsd.., lb..
        D = X["D"]
        return np.concatenate([s[:, :1], s[:, 4 + 2 * D:5 + 2 * D], s[:, 1:4], s[:, 4:4 + 2 * D]], 1)

    def report(self, th, X):
        return {"P": float(th[0]), "beta": float(np.exp(th[1])), "g": float(np.exp(th[2])), "k": float(np.exp(th[3])),
                "tau": float(np.exp(th[4]))}


class OnsetAbsSizes(SharedB):
    """The onset law per size (shared b), annealing an absolute gain per size: P - R_N u -
    C_N S2 / (S2 + tau)."""

    name = "onset per size, shared b, own annealing gain"
    shared = ("P", "lb", "lg", "lt")
    local = ("lr", "lsd", "lc")
    grads = None  # not OnsetSizes' model: complex-step gradients

    def model(self, p, X):
        u = 1.0 - np.exp(-np.exp(p["lg"]) * np.log1p(np.exp(np.exp(p["lb"]) * (X["ls"] - p["lsd"]))))
        return p["P"] - np.exp(p["lr"]) * u - np.exp(p["lc"]) * X["a"] / (X["a"] + np.exp(p["lt"]))

    def starts(self, X, y, w):
        s = np.delete(super().starts(X, y, w), 3, axis=1)
        return np.unique(np.concatenate([s, np.full((len(s), X["D"]), np.log(0.1))], 1), axis=0)


class MPLSizes(K.Law):
    """Luo et al.'s (2025) multi-power law per size: L0_N + A_N (S1/1e6)^-alpha - LD,
    LD = B_N sum_k (f_(k-1) - f_k) (1 - (C f_k^-gamma S_k + 1)^-beta), S_k the area (1e6
    tokens) from step k to the evaluation; alpha, C, beta, gamma shared. X needs "drop",
    "lneta", "Sk" (m, M) of the m points with a drop and "scatter" (m, n) (mpl_inputs)."""

    name = "multi-power per size"
    shared = ("alpha", "lC", "lbe", "gam")
    local = ("l0", "la", "lB")

    def model(self, p, X):
        x = np.exp(p["lC"][..., None] - p["gam"][..., None] * X["lneta"]) * X["Sk"]
        G = 1.0 - np.exp(-np.exp(p["lbe"][..., None]) * np.log1p(x))
        LD = (X["drop"] * G).sum(-1) @ X["scatter"]
        return p["l0"] + np.exp(p["la"] - p["alpha"] * X["ls"]) - np.exp(p["lB"]) * LD

    def starts(self, X, y, w):
        rows = []
        for al, lC, lbe, ef, lB in itertools.product([0.3, 0.8], np.log([3.0, 30.0]), np.log([0.5]), [0.5, 0.8],
                                                     np.log([0.1, 0.5])):
            l0 = _per_size(X, y, w, lambda yd, sd: ef * yd.min())
            la = _per_size(X, y, w, lambda yd, sd: np.log(max(yd.max() - yd.min(), 0.05)))
            rows.append(np.concatenate([[al, lC, lbe, 0.5], l0, la, np.full(X["D"], lB)]))
        return np.array(rows)


def _per_size(X, y, w, fn):
    out = np.zeros(X["D"])
    on = w > 0
    for d in range(X["D"]):
        m = on & (X["g"] == d)
        m = m if m.any() else on
        out[d] = fn(y[m], X["ls"][m])
    return out


REGISTERED = "onset per size (registered)"
# name, per-size law (None: a global law only), global law (None: per-size parameters linear
# in ln N), rule
CANDIDATES = [
    ("tissue (registered until now)", None, Tissue(), "all"),
    ("tissue", None, Tissue(), "W"),
    ("tissue per size", TissueSizes(), Tissue(), "W"),
    ("tissue per size, saturating S2", TissueSatSizes(), None, "W"),
    ("power per size x progress", PowerProgressSizes(), None, "W"),
    ("multi-power per size", MPLSizes(), None, "W"),
    ("onset, logistic (g = 1), one law", None, Fixed(K.Onset(), "onset, logistic", lg=0.0), "W"),
    ("onset per size, logistic (g = 1), shared b", Fixed(SharedB(), "onset per size, logistic", lg=0.0),
     Fixed(K.Onset(), "onset, logistic", lg=0.0), "W"),
    ("onset, one law", None, K.Onset(), "W"),
    ("onset per size, shared b", SharedB(), K.Onset(), "W"),
    ("onset per size, shared b, own annealing gain", OnsetAbsSizes(), None, "W"),
    (REGISTERED, K.OnsetSizes(), K.Onset(), "W"),
]


# --------------------------------------------------------------------------- checks


def mpl_inputs(study, d: pd.DataFrame, bins: int = 100) -> dict:
    """The multi-power law's inputs of the m points with a learning-rate drop: each drop
    f_(k-1) - f_k > 0, ln f_k and the area S_k from step k to the point (1e6 tokens), padded
    to the longest; a decay of more than ``bins`` steps summed into ``bins`` consecutive
    groups (drops added, ln f and S_k averaged); "scatter" (m, n) puts them back."""
    sch = study.schedules
    rows, where, M = [], [], 1
    memo = {}
    for i, (rid, step, tok) in enumerate(zip(d["run_id"], d["step"].astype(int), d["tokens_seen"].to_numpy(float))):
        cell = sch[rid]
        parent = sch.get(str(cell.get("branch_from"))) if cell.get("branch_from") else None
        if rid not in memo:
            memo[rid] = np.array(history(schedule_of_cell(cell), None if parent is None else schedule_of_cell(parent),
                                         cell.get("branch_step")))
        f = memo[rid][:step]
        drop = np.maximum(f[:-1] - f[1:], 0.0)
        k = np.flatnonzero(drop > 0) + 1
        if not k.size:
            continue
        tail = np.cumsum(f[::-1])[::-1]  # tail[k] = sum f[k:]
        a, b, c = drop[k - 1], np.log(f[k]), tail[k] * tok / step / K.S0
        if len(k) > bins:
            grp = np.array_split(np.arange(len(k)), bins)
            a, b, c = (np.array([a[j].sum() for j in grp]), np.array([b[j].mean() for j in grp]),
                       np.array([c[j].mean() for j in grp]))
        rows.append((a, b, c))
        where.append(i)
        M = max(M, len(a))
    m = len(rows)
    out = {"drop": np.zeros((m, M)), "lneta": np.zeros((m, M)), "Sk": np.zeros((m, M)),
           "scatter": np.zeros((m, len(d)))}
    for j, (a, b, c) in enumerate(rows):
        out["drop"][j, :len(a)], out["lneta"][j, :len(b)], out["Sk"][j, :len(c)] = a, b, c
        out["scatter"][j, where[j]] = 1.0
    return out


def candidate(study, pts, metric, name, sizes_law, global_law, rule):
    d = pts[pts[metric].notna()].reset_index(drop=True)
    if rule == "W":
        d = K.fitted(d)
    y = d[metric].to_numpy(float)
    X = K.inputs(d["n_params"], d["S1"], d["S2"])
    law = sizes_law or global_law
    if isinstance(law, MPLSizes):
        X.update(mpl_inputs(study, d))
    t0 = time.time()
    ends, fs = K.fit_sizes(law, X, y)
    best = ends[int(np.argmin(fs))]
    rms = float(np.sqrt(np.mean((law.predict(best[None], X)[0] / y - 1) ** 2)))
    ann = d["annealed"].to_numpy(bool)
    ids = d["run_id"].to_numpy()
    branches = sorted(set(ids[ann]))
    hold = np.array([ids == b for b in branches]).reshape(len(branches), len(ids))
    lobo = {e["run_id"]: e["rel_error"]
            for e in O._law_each(d, metric, O.held_out_law(law, X, y, ann, hold, K._distinct(ends, fs, 2)))}
    llo = {}
    N = d["n_params"].to_numpy(float)
    big = N == N.max()
    if len(np.unique(N)) >= 3 and global_law is not None:
        ge, gf = K.fit_sizes(global_law, X, y, (~big).astype(float))
        pred = global_law.predict(ge[int(np.argmin(gf))][None], X)[0]
        llo = {str(ids[i]): float(pred[i] / y[i] - 1) for i in np.flatnonzero(big & ann)}
    P = law.size(X["D"])
    return {"form": name, "rule": rule, "k": P, "rms": rms, "lobo": lobo, "llo": llo, "s": time.time() - t0,
            "params": law.report(best, X) if not law.local else {k: float(v) for k, v in
                                                                  zip(law.shared, best[:len(law.shared)])}}


def approach3(study, metric):
    fr = study.final
    N, D, L, ids = fr["n_params"].to_numpy(float), fr["tokens_seen"].to_numpy(float), fr[metric].to_numpy(float), \
        fr["run_id"].astype(str).to_numpy()
    lobo = {}
    for i, rid in enumerate(ids):
        k = ids != rid
        f = fit_chinchilla(N[k], D[k], L[k], n_boot=0)
        lobo[rid] = float(f.predict(N[i:i + 1], D[i:i + 1])[0] / L[i] - 1)
    ex = extrapolation_check_chinchilla(N, D, L, run_ids=ids)
    return {"form": "Approach 3 (final evaluations)", "rule": "", "k": 5, "rms": float("nan"), "lobo": lobo,
            "llo": {e["run_id"]: e["rel_error"] for e in ex.get("each", [])}, "s": float("nan")}


# --------------------------------------------------------------------------- the earlier Tissue variants


def _tissue_variants(pts, metric):
    """The Tissue-form variants compared before the per-size laws (scipy least_squares)."""
    from scipy.optimize import least_squares

    def law(name):
        base = ["e", "a", "alpha", "b", "beta"]

        def core(t, n, s):
            return np.exp(t[0]) + np.exp(t[1]) * n ** -t[2] + np.exp(t[3]) * s ** -t[4]

        if name == "no annealing term":
            return base, lambda t, n, s, s2: core(t, n, s)
        if name == "C(N) = C N^gamma":
            return base + ["c", "gamma"], lambda t, n, s, s2: core(t, n, s) - np.exp(t[5]) * n ** t[6] * s2
        if name == "annealing x reducible":
            return base + ["c"], lambda t, n, s, s2: (np.exp(t[0]) + (core(t, n, s) - np.exp(t[0]))
                                                      * np.exp(-np.exp(t[5]) * s2))
        return base + ["c", "tau"], lambda t, n, s, s2: core(t, n, s) - np.exp(t[5]) * s2 / (1 + s2 / np.exp(t[6]))

    def starts(names, y):
        lo = float(np.min(y))
        grid = {"e": np.log([0.3 * lo, 0.8 * lo]), "a": np.log([0.1, 1.0]), "alpha": [0.3, 0.8],
                "b": np.log([0.1, 1.0]), "beta": [0.3, 0.8], "c": np.log([0.1, 1.0]), "gamma": [0.0],
                "tau": np.log([0.05, 0.5])}
        return np.array(list(itertools.product(*(grid[k] for k in names))), float)

    def fit(model, st, n, s, s2, y, keep=1):
        out = []
        for x0 in st:
            with np.errstate(all="ignore"):
                r = least_squares(lambda t: model(t, n, s, s2) / y - 1, x0, method="lm", max_nfev=4000)
            if np.isfinite(r.cost):
                out.append((r.cost, r.x))
        out.sort(key=lambda t: t[0])
        return [x for _, x in out[:keep]]

    d = pts[pts[metric].notna()].reset_index(drop=True)
    n, s, s2, y = (d["n_params"].to_numpy(float) / 1e6, d["S1"].to_numpy(float) / 1e6,
                   d["S2"].to_numpy(float) / 1e6, d[metric].to_numpy(float))
    res = []
    for name in ("no annealing term", "C(N) = C N^gamma", "annealing x reducible", "saturating S2"):
        names, model = law(name)
        t0 = time.time()
        full = fit(model, starts(names, y), n, s, s2, y, keep=3)
        rms = float(np.sqrt(np.mean((model(full[0], n, s, s2) / y - 1) ** 2)))
        ann = d["annealed"].to_numpy(bool)
        lobo = {}
        for rid in sorted(set(d["run_id"][ann])):
            keep = (d["run_id"] != rid).to_numpy()
            t = fit(model, full, n[keep], s[keep], s2[keep], y[keep])[0]
            i = np.flatnonzero(~keep & ann)[0]
            lobo[rid] = float(model(t, n[i:i + 1], s[i:i + 1], s2[i:i + 1])[0] / y[i] - 1)
        big = n == n.max()
        t = fit(model, starts(names, y[~big]), n[~big], s[~big], s2[~big], y[~big])[0]
        llo = {str(r): float(model(t, n[i:i + 1], s[i:i + 1], s2[i:i + 1])[0] / y[i] - 1)
               for i, r in zip(np.flatnonzero(big & ann), d["run_id"][big & ann])}
        res.append({"form": name, "rule": "all", "k": len(names), "rms": rms, "lobo": lobo, "llo": llo,
                    "s": time.time() - t0})
    return res


# --------------------------------------------------------------------------- main


def calibrate(n: int, root: str, n_boot: int = 200) -> None:
    """``n`` synthetic studies of the default design from the known onset law
    (``analysis.synthetic_curve``, 0.2% noise per run and per evaluation): how often each
    parameter's 95% interval (``n_boot`` resamples of runs) holds the truth, the median
    relative widths, and leave-one-branch-out of the per-size law beside the true law's own
    misses of the same finals (the noise floor)."""
    from analysis.bootstrap import StudyResample, percentile_ci
    from analysis.synthetic_curve import CurveLaw, make_curve_study

    law = CurveLaw()
    names = K.Onset.PARAMS
    truth = np.array([law.params()[k] for k in names])
    hits, widths, lobo, oracle = [], [], [], []
    for seed in range(n):
        st = Study.load(make_curve_study(Path(root) / f"s{seed}", law=law, rng_seed=seed))
        F = K.fit_onset(K.curve_points(st), "test_loss_avg")
        W = StudyResample(F.points["run_id"], n_boot, seed).weights(F.points["run_id"])
        lo, hi = percentile_ci(K.Onset().to_params(F.boot(W)))
        hits.append((lo <= truth) & (truth <= hi))
        widths.append((hi - lo) / np.abs(truth))
        lobo.append(max(abs(e["rel_error"]) for e in F.lobo()))
        d = F.points[F.points["annealed"]]
        oracle.append(np.abs(law.loss(d["n_params"], d["S1"], d["S2"]) / d["test_loss_avg"] - 1).max())
    print(f"{n} synthetic studies, {n_boot} resamples each: truth inside the 95% interval / median relative width")
    for k, c, w in zip(names, np.sum(hits, 0), np.median(widths, 0)):
        print(f"  {k:<6} {c:2d}/{n}  {100 * w:.1f}%")
    print(f"LOBO max of the per-size law: median {100 * np.median(lobo):.2f}% (range {100 * min(lobo):.2f}-"
          f"{100 * max(lobo):.2f}%); the true law's largest miss of the same finals: median "
          f"{100 * np.median(oracle):.2f}% (range {100 * min(oracle):.2f}-{100 * max(oracle):.2f}%)")


def replicate(a, b) -> dict:
    """|relative difference| of each evaluation the two studies share (same run id and step):
    the decayed finals and the other evaluations, per loss."""
    pa, pb = K.curve_points(a), K.curve_points(b)
    out = {}
    for m in ("test_loss_avg", "test_loss_last"):
        for kind, sel in (("decayed finals", True), ("other evaluations", False)):
            x = pa[pa["annealed"] == sel].set_index(["run_id", "step"])[m]
            y = pb[pb["annealed"] == sel].set_index(["run_id", "step"])[m]
            r = (y / x.reindex(y.index) - 1).dropna().abs()
            out[(m, kind)] = r
            print(f"{m:<15} {kind:<18} {len(r):3d} shared: |difference| max {100 * r.max():.2f}% median "
                  f"{100 * r.median():.2f}% rms {100 * np.sqrt((r ** 2).mean()):.2f}%")
    return out


def _worst(d):
    return max(d.values(), key=abs) if d else float("nan")


def _pct(v):
    return "-" if not np.isfinite(v) else f"{100 * v:+.2f}%"


def _line(r):
    lo = np.abs(list(r["lobo"].values())) if r["lobo"] else np.array([np.nan])
    return (f"{r['form']:<40} {r['rule']:<3} k={r['k']:<3} rms {100 * r['rms']:5.2f}%  LOBO max "
            f"{100 * lo.max():6.2f}% median {100 * np.median(lo):5.2f}%  LLO worst {_pct(_worst(r['llo'])):>7}"
            f"  ({r['s']:.1f} s)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("study")
    ap.add_argument("--metric", action="append", help="default: test_loss_avg and test_loss_last")
    ap.add_argument("--only", action="append", help="candidate names to run (default: all)")
    ap.add_argument("--csv", help="write every LOBO / LLO error here")
    ap.add_argument("--no-approach3", action="store_true")
    ap.add_argument("--tissue-variants", action="store_true")
    ap.add_argument("--each", action="store_true", help="print every LOBO / LLO error of every candidate")
    ap.add_argument("--replicate", help="another training of the same cells: print how far its evaluations are "
                                         "from STUDY's (the runs' own reproducibility) and stop")
    ap.add_argument("--calibrate", type=int, metavar="N", help="write N synthetic studies under STUDY (a new "
                                                                 "folder), report the intervals' coverage and stop")
    a = ap.parse_args(argv)
    if a.calibrate:
        return calibrate(a.calibrate, a.study)
    st = Study.load(a.study)
    if a.replicate:
        return replicate(st, Study.load(a.replicate))
    pts = K.curve_points(st)
    out = []
    for m in a.metric or ["test_loss_avg", "test_loss_last"]:
        res = []
        for name, sl, gl, rule in CANDIDATES:
            if a.only and name not in a.only:
                continue
            r = candidate(st, pts, m, name, sl, gl, rule)
            res.append(r)
            print(f"{m:<15} " + _line(r), flush=True)
            if r.get("params"):
                print("    params", {k: round(v, 4) for k, v in r["params"].items()})
        if a.tissue_variants:
            for r in _tissue_variants(pts, m):
                res.append(r)
                print(f"{m:<15} " + _line(r), flush=True)
        if not a.no_approach3:
            r = approach3(st, m)
            res.append(r)
            print(f"{m:<15} " + _line(r), flush=True)
        for r in res:
            r["metric"] = m
        out += res
    print(f"\nstudy {a.study}: {len(pts)} evaluations, {int(pts['annealed'].sum())} decayed finals, "
          f"{pts['n_params'].nunique()} sizes, {int(pts['in_warmup'].sum())} in warmup")
    print("\n| loss | form | rule | parameters | rms residual | LOBO max | LOBO median | leave-largest-out worst |")
    print("|---|---|---|---|---|---|---|---|")
    for r in out:
        lo = np.abs(list(r["lobo"].values())) if r["lobo"] else np.array([np.nan])
        rms = "" if not np.isfinite(r["rms"]) else f"{100 * r['rms']:.2f}%"
        print(f"| {'L_avg' if r['metric'] == 'test_loss_avg' else 'L_last'} | {r['form']} | {r['rule']} | {r['k']} | "
              f"{rms} | {100 * lo.max():.2f}% | {100 * np.median(lo):.2f}% | {_pct(_worst(r['llo']))} |")
    for r in out:
        if a.each or r["form"] == REGISTERED:
            print(f"\n{r['form']}, {r['metric']}: LOBO " + ", ".join(f"{k} {100 * v:+.2f}%" for k, v in
                                                                    sorted(r["lobo"].items())))
            print("  leave-largest-out " + ", ".join(f"{k} {100 * v:+.2f}%" for k, v in sorted(r["llo"].items())))
    if a.csv:
        rows = [{"metric": r["metric"], "form": r["form"], "rule": r["rule"], "check": chk, "run_id": k, "rel_error": v}
                for r in out for chk in ("lobo", "llo") for k, v in r[chk].items()]
        pd.DataFrame(rows).to_csv(a.csv, index=False)
    return out


if __name__ == "__main__":
    main()
