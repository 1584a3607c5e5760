"""Which term of a checked law is at fault: the fixed rule of :func:`diagnose`
(docs/prediction.md, "Which term is at fault"), written and tested (tests/test_diagnose.py) on
synthetic target sets whose faulty term is known before it was applied to any real result.

:func:`diagnose` takes the signed errors of a set of targets with where they lie beyond the
pilot's fitted range (:func:`extrapolation`, in e-folds of N and of D, and log C) and a run's
own scatter; ``_diagnose`` applies it to the rows of ``analysis.check.check_predictions``.
Computes only; reads and writes nothing.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from .predict import SHORT

# the rule of diagnose(): each test at 95%
CHI2_LEVEL = 0.95
SIGN_Z = 2.0  # a curve's value counts as a sign beyond noise at 2 run scatters
TERMS = {
    "none": "none: the errors are a run's own scatter",
    "floor": "the floor E",
    "N": "the model-size term A/N^alpha",
    "D": "the data term B/D^beta",
    "curvature": "curvature: the law's shape",
    "unexplained": "no single term",
}



def extrapolation(x: float, lo: float | None, hi: float | None) -> float:
    """How far ``x`` lies beyond a fitted range, in e-folds: ln(x / hi) above it, ln(x / lo)
    (negative) below it, 0 inside."""
    if x is None or not (x > 0):
        return 0.0
    if hi is not None and x > hi:
        return math.log(x / hi)
    if lo is not None and x < lo:
        return math.log(x / lo)
    return 0.0


def _chi2(dof: int) -> float:
    from scipy.stats import chi2

    return float(chi2.ppf(CHI2_LEVEL, dof)) if dof > 0 else 0.0


def diagnose(err, observed, u, v, logC, sigma: float) -> dict[str, Any]:
    """Which term of L = E + A/N^alpha + B/D^beta the errors of a set of targets point to, by
    a fixed rule (docs/prediction.md, "Which term is at fault").

    ``err``: (predicted - observed) / observed per target; ``observed`` the observed values;
    ``u``, ``v``: how far each target lies beyond the pilot's sizes and token counts
    (:func:`extrapolation`, e-folds); ``logC`` its log compute; ``sigma``: a run's relative
    scatter about the law (the noise). With z = err / sigma, S0 = sum z^2 and chi2_95(k) the
    95% point of a chi-square with k degrees of freedom:

    - three patterns, each fitted to z by least squares with one coefficient: the **floor**
      (the same absolute offset on every target: err proportional to 1 / observed), the **N
      term** (err proportional to u: zero inside the fitted sizes, growing with N beyond
      them), the **D term** (proportional to v); a pattern that is zero at every target is not
      tried. S_p: the sum of squared residuals, gain_p = S0 - S_p. The **curve**: a quadratic
      in log C (3 coefficients), S_q; it "changes sign" when its values at the targets reach
      both +2 and -2 (in z) (n >= 4 targets);
    1. **none** when S0 <= chi2_95(n) and every gain_p <= chi2_95(1) (3.84): the errors are
       a run's scatter;
    2. **curvature** when the curve changes sign and lowers the squared residuals below the
       best pattern's by more than chi2_95(2) (5.99, its two more coefficients), or below S0
       by more than chi2_95(3) (7.81) when no pattern is significant;
    3. else the pattern with the largest gain, when that gain exceeds 3.84; the patterns whose
       S_p is within 3.84 of its are named beside it (these targets do not tell them apart),
       and ``rest_beyond_noise`` says whether its S_p exceeds chi2_95(n - 1);
    4. else **unexplained**: errors beyond a run's scatter that no term and no curve explain.

    Fewer than 3 targets, or no noise scale, give no diagnosis (term None).
    Returns {"term", "also", "rest_beyond_noise", "n", "sigma", "chi2", "chi2_limit", "gain",
    "coef" (err = coef x pattern), "floor_offset" (predicted - observed the floor pattern
    gives), "curve", "text"}."""
    e, obs = np.asarray(err, float), np.asarray(observed, float)
    u, v, w = np.asarray(u, float), np.asarray(v, float), np.asarray(logC, float)
    n = int(e.size)
    out: dict[str, Any] = {"term": None, "also": [], "rest_beyond_noise": False, "n": n, "sigma": sigma,
                           "chi2": None, "chi2_limit": None, "gain": {}, "coef": {}, "curve": None, "text": ""}
    if n < 3 or sigma is None or not (sigma > 0) or not np.isfinite(e).all():
        out["text"] = (f"too few targets ({n}) to name a term" if n < 3 else "no noise scale: no diagnosis")
        return out
    z = e / sigma
    S0 = float(z @ z)
    d1 = _chi2(1)
    pats = {"floor": obs.mean() / obs, "N": u, "D": v}
    S, coef = {}, {}
    for k, g in pats.items():
        gz = g / sigma
        if not (np.abs(gz) > 1e-12).any():
            continue
        c = float(z @ gz / (gz @ gz))
        S[k] = float(((z - c * gz) ** 2).sum())
        coef[k] = c  # err = c * pattern (z = c * pattern / sigma)
    gain = {k: S0 - s for k, s in S.items()}
    out.update(chi2=S0, chi2_limit=_chi2(n), gain=gain, coef=coef)
    if "floor" in coef:
        out["floor_offset"] = coef["floor"] * float(obs.mean())  # predicted - observed, in the metric's units
    if S0 <= _chi2(n) and all(g <= d1 for g in gain.values()):
        out["term"] = "none"
        return out
    best = max(gain, key=gain.get) if gain else None
    significant = best is not None and gain[best] > d1
    if n >= 4:
        wc = w - w.mean()
        X = np.stack([np.ones(n), wc, wc ** 2], 1) / sigma
        if np.linalg.matrix_rank(X) == 3:
            coefs, *_ = np.linalg.lstsq(X, z, rcond=None)
            fit = X @ coefs  # in z units
            Sq = float(((z - fit) ** 2).sum())
            signs = bool(fit.max() >= SIGN_Z and fit.min() <= -SIGN_Z)
            out["curve"] = {"chi2": Sq, "min_z": float(fit.min()), "max_z": float(fit.max()), "changes_sign": signs}
            better = (S[best] - Sq > _chi2(2)) if significant else (S0 - Sq > _chi2(3))
            if signs and better:
                out["term"] = "curvature"
                return out
    if significant:
        out["term"] = best
        out["also"] = [k for k in S if k != best and S[k] - S[best] <= d1]
        out["rest_beyond_noise"] = bool(S[best] > _chi2(n - 1))
        return out
    out["term"] = "unexplained"
    return out


def _noise(rec: dict, rows: list[dict], metric: str) -> tuple[float | None, str]:
    """A run's relative scatter for ``metric``: the record's ``run_sd`` (the pilot's
    residuals), else from the intervals (a new run's interval is the law's widened by it)."""
    sd = (rec.get("run_sd") or {}).get(metric)
    if sd is not None and sd > 0:
        return float(sd), "the pilot's residuals"
    s = []
    for r in rows:
        (plo, phi), (clo, chi) = r["pi"], r["ci"]
        if None in (plo, phi, clo, chi) or min(plo, clo) <= 0:
            continue
        hp, hc = math.log(phi / plo) / 2 / 1.96, math.log(chi / clo) / 2 / 1.96
        s.append(math.sqrt(max(hp * hp - hc * hc, 0.0)))
    return (float(np.median(s)), "the intervals") if s and np.median(s) > 0 else (None, "")


def _diagnose(rows: list[dict], metric: str, rec: dict | None = None) -> dict[str, Any]:
    """:func:`diagnose` on the finished targets of one metric, with its sentence."""
    rec = rec or {}
    r = [x for x in rows if x["metric"] == metric and x["err"] is not None]
    if not r:
        return {"term": None, "text": ""}
    rng = rec.get("fitted_range") or {}
    nlo, nhi = (rng.get("n_params") or [None, None])[:2]
    dlo, dhi = (rng.get("tokens") or [None, None])[:2]

    def v_of(x):
        if dhi is not None:
            return extrapolation(x["tokens"], dlo, dhi)
        # an older record: D over the largest fitted D is about x_C / x_N (the largest-C run
        # is the largest model at the largest budget in a grid)
        xd = (x["x_C"] / x["x_N"]) if x.get("x_C") and x.get("x_N") else None
        return math.log(xd) if xd and xd > 1 else 0.0

    u = [extrapolation(x["n_params"], nlo, nhi) if nhi is not None
         else (math.log(x["x_N"]) if x.get("x_N") and x["x_N"] > 1 else 0.0) for x in r]
    v = [v_of(x) for x in r]
    logC = [math.log(x["flops"]) if x.get("flops") else 0.0 for x in r]
    sigma, source = _noise(rec, r, metric)
    d = diagnose([x["err"] for x in r], [x["observed"] for x in r], u, v, logC, sigma)
    d["sigma_source"] = source
    errs = np.array([x["err"] for x in r])
    beyondN = np.array(u) != 0
    beyondD = (np.array(v) != 0) & ~beyondN
    parts = []
    if beyondN.any():
        xs = [x["n_params"] / nhi if nhi else x["x_N"] for x, b in zip(r, beyondN) if b]
        parts.append(f"beyond the pilot's sizes (N {min(xs):.2g}x-{max(xs):.2g}x its largest): mean "
                     f"{100 * errs[beyondN].mean():+.2f}%")
    if beyondD.any():
        parts.append(f"beyond its token counts at a fitted size: mean {100 * errs[beyondD].mean():+.2f}%")
    inside = ~beyondN & ~beyondD
    if inside.any():
        parts.append(f"inside the fitted range: mean {100 * errs[inside].mean():+.2f}%")
    d["text"] = f"{SHORT[metric]}: " + "; ".join(parts) + " -> " + _verdict(d)
    return d


def _verdict(d: dict) -> str:
    t = d["term"]
    if t is None:
        return d["text"] or "no diagnosis"
    sig = f"sigma {100 * d['sigma']:.2f}% from {d.get('sigma_source') or 'the caller'}"
    chi = f"chi2 {d['chi2']:.1f} over {d['n']} targets, noise alone <= {d['chi2_limit']:.1f}"
    side = lambda c: "higher" if c > 0 else "lower"  # noqa: E731 - predicted against observed
    if t == "none":
        return f"{TERMS['none']} [{chi}; {sig}]"
    if t == "floor":
        s = (f"{TERMS['floor']}: every prediction {side(d['coef']['floor'])} than observed by about the same "
             f"amount, {d['floor_offset']:+.3g}")
    elif t == "N":
        s = (f"{TERMS['N']}: the error changes by {100 * d['coef']['N']:+.2f}% per e-fold of N beyond the pilot's "
             f"sizes (larger models come out {side(d['coef']['N'])} than observed)")
    elif t == "D":
        s = (f"{TERMS['D']}: the error changes by {100 * d['coef']['D']:+.2f}% per e-fold of D beyond the pilot's "
             f"token counts (more tokens come out {side(d['coef']['D'])} than observed)")
    elif t == "curvature":
        s = f"{TERMS['curvature']}: the errors change sign across the range of compute, which no single term does"
    else:
        s = f"{TERMS['unexplained']}: the errors exceed a run's scatter but follow neither one term nor a curve in C"
    if d.get("also"):
        s += f"; or {', or '.join(TERMS[a] for a in d['also'])}: these targets do not tell them apart"
    if d.get("rest_beyond_noise"):
        s += "; what it leaves still exceeds a run's scatter"
    return f"{s} [{chi}; {sig}]"


