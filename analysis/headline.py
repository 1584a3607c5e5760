"""The report's headline: one study-wide floor E per loss, the power law on L - E per slice
with intervals that carry E's uncertainty, the raw r beside it, and a leave-largest-out
prediction error beside every r.

The floor rule (``choose_floors``): per loss metric, the token cache's entropy
(``tokens/meta.json``) where it lies below every observed loss; otherwise the E of the one
Approach-3 fit over all finished runs, where it lies below the smallest observed loss;
otherwise none (that loss is reported raw). Never a floor fitted per slice. Error rates are
always fitted raw.

Intervals: the resamples are a :class:`~analysis.bootstrap.StudyResample` of the whole
study's runs; the Approach-3 fit that gives E is refitted on each of them, and each slice's
law is refitted on the same resample's runs with that resample's E, so alpha's and r's
intervals on reducible loss include the floor's. Leave-largest-out: the same law fitted
without the largest model of a slice, or without the largest-compute point of a frontier,
predicts the held-out loss itself (floor added back); the signed relative error is
(predicted - observed) / observed. An Approach-3 floor is then the E of Approach 3 refitted
without the largest model (the fit of its own extrapolation check), so nothing of the
held-out model enters the prediction; a token-entropy or hand floor is a given number.

Nothing here writes files: ``analysis.fitting`` puts the rows into the typed report.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .bootstrap import CI_LEVEL, StudyResample, percentile_ci
from .frontier import pareto_mask
from .results import SHORT, BestLaw, Extrapolation, FloorEntry, HeadlineRow, LawError

FRONTIER_ALL = "frontier (all evaluations)"
FRONTIER_ANNEALED = "frontier (annealed runs)"
# The floor is "not resolved" when its 95% interval reaches below half of E, toward 0. On
# the default study a few percent of resamples put E at 0 (below 1% of E: 2.4% for L_last,
# 2.1% for L_avg, `varscale fit runs/v1/default`), right at the 2.5% quantile, so the interval's
# lower end is an interpolation between 0 and the bulk (0.2 and 0.85 nats against E = 2.26
# and 3.16): a test against 0 itself would call that resolved by luck of the draw.
UNRESOLVED_FRACTION = 0.5
AT_ZERO = 0.01  # a resample's E below this fraction of E counts as E at 0


# --------------------------------------------------------------------------- the floor


def choose_floors(entropy: dict, chin: dict, df: pd.DataFrame, rule: str = "auto",
                  hand: dict | None = None) -> tuple[dict[str, FloorEntry], dict[str, np.ndarray | None]]:
    """The study-wide floor per loss metric and, for an Approach-3 floor, E per resample:
    ({metric: FloorEntry}, {metric: samples or None}); metrics without a floor are left out.

    ``entropy``: usable token-entropy floors (already checked below every loss);
    ``chin``: Approach-3 fits per loss metric ({} when the study does not allow one);
    ``rule``: "auto" (entropy where usable, else Approach 3), "entropy", "chinchilla",
    "none"; ``hand``: floors given by hand, which win for their metric.
    """
    out: dict[str, FloorEntry] = {}
    samples: dict[str, np.ndarray | None] = {}
    for m in ("test_loss_last", "test_loss_avg"):
        if hand and m in hand:
            out[m] = FloorEntry(m, float(hand[m]), "hand", "given by hand", resolved=True)
            samples[m] = None
            continue
        if rule in ("auto", "entropy") and m in entropy:
            out[m] = FloorEntry(m, float(entropy[m]), "token entropy",
                                "unigram entropy of the token cache (tokens/meta.json), below every loss",
                                resolved=True)
            samples[m] = None
            continue
        if rule in ("auto", "chinchilla") and m in chin:
            f = chin[m]
            E = float(f.params.get("E", float("nan")))
            lo_obs = float(np.nanmin(df[m].to_numpy(float))) if m in df and len(df) else float("nan")
            if not (np.isfinite(E) and 0 < E < lo_obs):
                continue
            ci = f.ci.get("E")
            smp = f.samples.get("E")
            # None: no interval to judge by (no bootstrap)
            resolved = None if ci is None else bool(np.isfinite(ci).all() and ci[0] > UNRESOLVED_FRACTION * E
                                                    and ci[1] < lo_obs)
            at_zero = None
            if smp is not None and np.isfinite(smp).any():
                at_zero = float(np.mean(smp[np.isfinite(smp)] < AT_ZERO * E))
            out[m] = FloorEntry(m, E, "chinchilla", f"Chinchilla Approach 3 over {f.n_runs} finished runs",
                                ci=None if ci is None else [float(ci[0]), float(ci[1])], resolved=resolved,
                                share_at_zero=at_zero, has_share=True)
            samples[m] = smp
    return out, samples


def floor_line(m: str, fl: FloorEntry | None) -> str:
    """One line for a table's caption: the floor of ``m``, its source and interval."""
    if not fl:
        return f"{SHORT.get(m, m)}: no floor (reported raw)"
    s = f"{SHORT.get(m, m)}: E = {fl.E:.4g}"
    if fl.ci:
        s += f" [{fl.ci[0]:.3g}, {fl.ci[1]:.3g}]"
    s += f" from {fl.source}"
    if fl.resolved is False:
        s += " (floor not resolved" + (f": {100 * fl.share_at_zero:.1f}% of resamples put E at 0"
                                       if fl.share_at_zero else "") + ")"
    return s


# --------------------------------------------------------------------------- weighted laws


def _loglog_rows(lx: np.ndarray, LY: np.ndarray, W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted slope and Pearson r of LY (R, n) on lx (n,) for each row of weights W (R, n)."""
    with np.errstate(all="ignore"):
        sw = W.sum(1)
        mx = (W * lx).sum(1) / sw
        my = (W * LY).sum(1) / sw
        dx = lx[None] - mx[:, None]
        dy = LY - my[:, None]
        sxx = (W * dx * dx).sum(1)
        syy = (W * dy * dy).sum(1)
        sxy = (W * dx * dy).sum(1)
        ok = sxx > 1e-12 * np.maximum(1.0, (W * lx * lx).sum(1))
        slope = np.where(ok, sxy / sxx, np.nan)
        r = np.where(ok & (syy > 0), sxy / np.sqrt(sxx * syy), np.nan)
    return slope, r


def _E_rows(E: float | None, E_samples: np.ndarray | None, R: int) -> np.ndarray:
    if E is None:
        return np.zeros(R)
    if E_samples is None:
        return np.full(R, float(E))
    return np.asarray(E_samples, dtype=float)


def slice_intervals(x, y, run_ids, boot: StudyResample, E: float | None = None,
                    E_samples: np.ndarray | None = None) -> dict[str, Any]:
    """alpha and r intervals of log(y - E) on log x over the study's resamples of runs, with
    E refitted per resample where ``E_samples`` is given. {} without resamples or with fewer
    than 3 runs (as the slice's own fit: two runs give every resample the same line)."""
    if boot is None or not boot.n_boot or len(np.unique(np.asarray(run_ids).astype(str))) < 3:
        return {}
    x, y = np.asarray(x, float), np.asarray(y, float)
    W = boot.weights(run_ids)
    Eb = _E_rows(E, E_samples, boot.n_boot)
    red = y[None] - Eb[:, None]
    W = np.where(np.isfinite(red) & (red > 0), W, 0.0)
    LY = np.log(np.where(W > 0, red, 1.0))
    # a resample needs two sizes to draw a line through
    nx = np.array([len(np.unique(x[w > 0])) for w in W])
    slope, r = _loglog_rows(np.log(x), LY, W)
    bad = (nx < 2) | ~np.isfinite(Eb)
    slope[bad], r[bad] = np.nan, np.nan
    r[nx < 3] = np.nan  # two sizes give r = -1 by construction, which is no evidence for the law
    return _intervals(slope, r)


def frontier_intervals(x, y, run_ids, boot: StudyResample, E: float | None = None,
                       E_samples: np.ndarray | None = None) -> dict[str, Any]:
    """As ``slice_intervals`` for the compute frontier, recomputed from each resample's runs."""
    if boot is None or not boot.n_boot or len(np.unique(np.asarray(run_ids).astype(str))) < 3:
        return {}
    x, y = np.asarray(x, float), np.asarray(y, float)
    W = boot.weights(run_ids)
    Eb = _E_rows(E, E_samples, boot.n_boot)
    lx = np.log(x)
    slope, r = np.full(boot.n_boot, np.nan), np.full(boot.n_boot, np.nan)
    for i in range(boot.n_boot):
        red = y - Eb[i]
        sel = (W[i] > 0) & np.isfinite(red) & (red > 0)
        if sel.sum() < 2:
            continue
        m = pareto_mask(x[sel], red[sel])
        if m.sum() < 2:
            continue
        s, rr = _loglog_rows(lx[sel][m], np.log(red[sel][m])[None], np.ones((1, int(m.sum()))))
        slope[i], r[i] = s[0], rr[0]
    return _intervals(slope, r)


def _intervals(slope: np.ndarray, r: np.ndarray) -> dict[str, Any]:
    out: dict[str, Any] = {"n_boot": int(np.isfinite(slope).sum())}
    for name, v in (("alpha_ci", slope), ("r_ci", r)):
        ok = np.isfinite(v)
        if ok.any():
            lo, hi = percentile_ci(v[ok][:, None], CI_LEVEL)
            out[name] = [float(lo[0]), float(hi[0])]
    return out


# --------------------------------------------------------------------------- leave-largest-out


def _line(lx: np.ndarray, ly: np.ndarray) -> tuple[float, float]:
    s, _ = _loglog_rows(lx, ly[None], np.ones((1, lx.size)))
    slope = float(s[0])
    return slope, float(ly.mean() - slope * lx.mean())


def lolo_slice(x, y, run_ids, E: float | None = None) -> dict[str, Any] | None:
    """Fit log(y - E) on log x without the largest x (all its runs), predict y there (E added
    back): the signed relative error on y. None with fewer than 3 sizes."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ids = np.asarray(run_ids).astype(str)
    E0 = 0.0 if E is None else float(E)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0)
    x, y, ids = x[ok], y[ok], ids[ok]
    held = x == x.max() if x.size else np.zeros(0, bool)
    use = ~held & (y - E0 > 0)
    if len(np.unique(x[use])) < 2 or len(np.unique(x)) < 3:
        return None
    slope, b = _line(np.log(x[use]), np.log(y[use] - E0))
    pred = E0 + float(np.exp(b + slope * np.log(x.max())))
    obs = float(y[held].mean())
    return {"err": (pred - obs) / obs, "held_out": ", ".join(sorted(ids[held])), "x_held_out": float(x.max()),
            "observed": obs, "predicted": pred, "E": E}


def lolo_frontier(x, y, run_ids, E: float | None = None) -> dict[str, Any] | None:
    """Drop the largest-compute frontier point, fit the law on the rest of the frontier,
    predict that point's y (E added back). None with fewer than 3 frontier points."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ids = np.asarray(run_ids).astype(str)
    E0 = 0.0 if E is None else float(E)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0)
    x, y, ids = x[ok], y[ok], ids[ok]
    m = pareto_mask(x, y)  # the frontier of y - E for any constant E
    xf, yf, idf = x[m], y[m], ids[m]
    o = np.argsort(xf)
    xf, yf, idf = xf[o], yf[o], idf[o]
    use = yf[:-1] - E0 > 0
    if use.sum() < 2:
        return None
    slope, b = _line(np.log(xf[:-1][use]), np.log(yf[:-1][use] - E0))
    pred = E0 + float(np.exp(b + slope * np.log(xf[-1])))
    return {"err": (pred - yf[-1]) / yf[-1], "held_out": str(idf[-1]), "x_held_out": float(xf[-1]),
            "observed": float(yf[-1]), "predicted": pred, "E": E}


# --------------------------------------------------------------------------- best law


def best_laws(rows: list[HeadlineRow], extrapolation: list[Extrapolation],
              per_budget_raw: dict) -> dict[str, BestLaw]:
    """Per loss metric, the law whose prediction of the held-out largest model is best.

    Candidates: "power (reducible)" and "power (raw)" (per budget, leave-largest-out),
    "saturating" (per budget), "chinchilla" (every run of the largest model at its own D),
    "curve law" (the loss-curve law: each decayed run of the largest model at its own schedule).
    A law's error is its worst held-out prediction (signed; largest magnitude), so
    ``within_3pct`` means every held-out run is within 3%.
    """
    out: dict[str, BestLaw] = {}
    for m in ("test_loss_last", "test_loss_avg"):
        cands: dict[str, list[tuple[str, float]]] = {}
        for r in rows:
            if r.metric == m and r.kind == "N" and r.lolo and r.quantity == "reducible":
                cands.setdefault("power (reducible)", []).append((r.slice, r.lolo.err))
        for label, lo in per_budget_raw.get(m, []):
            cands.setdefault("power (raw)", []).append((label, lo["err"]))
        for e in extrapolation:
            # a raw law's check only (a reducible metric's check is not the loss's)
            if e.metric != m or e.quantity != "raw" or e.rel_error is None:
                continue
            if e.form == "saturating":
                cands.setdefault("saturating", []).append((e.group, e.rel_error))
            elif e.form == "chinchilla":
                cands.setdefault("chinchilla", []).append((e.run_id or e.group, e.rel_error))
            elif e.form == "curve":
                cands.setdefault("curve law", []).append((e.run_id or e.group, e.rel_error))
        laws = {}
        for law, errs in cands.items():
            worst = max(errs, key=lambda t: abs(t[1]))
            laws[law] = LawError(err=float(worst[1]), worst=worst[0], each={k: float(v) for k, v in errs})
        if not laws:
            continue
        best = min(laws, key=lambda k: abs(laws[k].err))
        out[m] = BestLaw(metric=m, law=best, err=laws[best].err, within_3pct=bool(abs(laws[best].err) <= 0.03),
                         laws=laws)
    return out
