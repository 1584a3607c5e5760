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

import numpy as np
import pandas as pd

from varscale.schedule import areas, history, schedule_of_cell

from .curve_onset import (  # noqa: F401  (RULE, Law, OnsetFit, fit_batched, onset_law: re-exported, in __all__)
    N0, RULE, S0, Law, Onset, OnsetFit, OnsetSizes, _distinct, _law_each, fit_batched, fit_onset, fit_sizes, fitted,
    inputs, onset_law)
from .optim import minimize_batched

DECAY = 0.999  # lambda: the per-step decay of the annealing momentum (Tissue et al.'s)
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
