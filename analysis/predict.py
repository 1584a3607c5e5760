"""Predictions for runs a study has not trained: losses and error rates at a model size N and
a token count D (or a compute C), and the compute-optimal allocation of a FLOP budget.

The laws, fitted once per study by :func:`fit_predictor` on every finished run's final
evaluation (``final_rows``: for a warmup-stable-decay study, the annealed branches):

- **Approach 3 over N and D** (``analysis.chinchilla``), L = E + A/N^alpha + B/D^beta, one
  fit per metric (L_last, L_avg, Err_last, Err_avg). This is what a target (N, D) is
  predicted from.
- **The frontier law over C**: the power law of y - E on the compute frontier of the
  finished runs (E the study floor for a loss, 0 for an error rate): the metric of the
  compute-optimal run at C, whatever its size. Reported beside the Approach-3 value.

Intervals come from one :class:`~analysis.bootstrap.StudyResample` of the whole study's runs
(``n_boot`` resamples, whole runs): every law is refitted on each resample, so the floor's
uncertainty (E is a parameter of Approach 3; an Approach-3 floor is refitted per resample)
is inside every interval. Two intervals per value:

- ``ci``: where the law lies (the percentiles of the resamples' predictions). This is what
  covers the noise-free truth of a synthetic study (``tests/test_predict.py`` calibrates it).
- ``pi``: where one new run would land: each resample's prediction times one of the full
  fit's log residuals drawn at random (a run's own scatter about the law). This is the one
  an observed held-out run is judged by (``varscale fit --check-predictions``).

The floor used for the reducible values is the report's (``analysis.headline.choose_floors``:
token entropy where it lies below every loss, else Approach 3's E). A target more than 10x
beyond the fitted range in N or in C gets a warning. ``fit_hash`` identifies the data and
settings a predictor came from, so predictions written before a run can be traced to it.

Nothing here writes files; ``varscale predict`` / ``allocate`` / ``plan --predict-from`` and
``varscale fit --check-predictions`` (analysis/check.py) print and write.
"""
from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from . import headline as H
from .bootstrap import CI_LEVEL, DEFAULT_BOOT, Fit, StudyResample, percentile_ci
from .chinchilla import fit_chinchilla
from .frontier import pareto_mask
from .load import LOSSES, METRICS, final_rows, floors, load, usable_floors

SHORT = H.SHORT
EXTRAPOLATION_WARN = 10.0  # a target beyond 10x the fitted range in N or C is flagged
PREDICT_VERSION = 1  # enters fit_hash: a change of method changes the hash


class PredictError(ValueError):
    """A study that cannot give predictions, or a target that makes no sense (one sentence)."""


@dataclass
class Predictor:
    """Every law a study's predictions come from, with its bootstrap samples."""

    study: str
    n_boot: int
    seed: int
    runs: pd.DataFrame  # the finished runs' final rows the laws were fitted on
    chin: dict[str, Fit]  # Approach 3 per metric
    floor: dict[str, dict]  # the report's floor per loss (E, source, ...), no samples
    E_samples: dict[str, np.ndarray | None]  # the floor per resample (None: a fixed number)
    resid: dict[str, np.ndarray]  # log residuals of each Approach-3 fit
    frontier: dict[str, dict]  # per metric: slope, intercept (log-log) and their samples
    k_flops: float  # median of flops / (n_params * tokens): converts between D and C
    range_N: tuple[float, float]
    range_C: tuple[float, float]
    fit_hash: str
    notes: list[str] = field(default_factory=list)

    # ------------------------------------------------------------------ laws
    def _chin_samples(self, m: str) -> np.ndarray:
        """(R, 5) resampled (E, A, B, alpha, beta) of metric m's Approach-3 fit."""
        f = self.chin[m]
        return np.stack([f.samples[k] for k in ("E", "A", "B", "alpha", "beta")], 1)

    def approach3(self, m: str, N, D) -> tuple[np.ndarray, np.ndarray]:
        """Point predictions (T,) and resampled ones (R, T) of metric m at (N, D)."""
        f = self.chin[m]
        N, D = np.asarray(N, float), np.asarray(D, float)
        point = np.asarray(f.predict(N, D), float)
        s = self._chin_samples(m)
        with np.errstate(all="ignore"):
            boot = s[:, :1] + s[:, 1:2] / N[None] ** s[:, 3:4] + s[:, 2:3] / D[None] ** s[:, 4:5]
        return point, boot

    def frontier_law(self, m: str, C) -> tuple[np.ndarray, np.ndarray]:
        """The frontier law's point (T,) and resampled (R, T) values of metric m at C."""
        fr = self.frontier.get(m)
        C = np.asarray(C, float)
        if not fr:
            return np.full(C.shape, np.nan), np.full((self.n_boot, C.size), np.nan)
        E = self.floor[m]["E"] if m in self.floor else 0.0
        lc = np.log(C)
        point = E + np.exp(fr["b"] + fr["slope"] * lc)
        Eb = H._E_rows(E if m in self.floor else None, self.E_samples.get(m), self.n_boot)
        with np.errstate(all="ignore"):
            boot = Eb[:, None] + np.exp(fr["b_s"][:, None] + fr["slope_s"][:, None] * lc[None])
        return point, boot

    def observation(self, m: str, boot: np.ndarray, seed: int = 1) -> np.ndarray:
        """Resampled predictions times a log residual of the fit drawn per resample: where
        one new run lands (the prediction interval)."""
        r = self.resid.get(m)
        if r is None or not r.size:
            return boot
        rng = np.random.default_rng(seed)
        eps = rng.choice(r, size=boot.shape[0])
        return boot * np.exp(eps)[:, None]


# --------------------------------------------------------------------------- fitting


def fit_hash(runs: pd.DataFrame, n_boot: int, seed: int) -> str:
    """12 hex digits of what a predictor depends on: each finished run's (id, N, D, C and
    final metrics, to 10 significant digits), the resamples and the method's version."""
    cols = ["run_id", "n_params", "tokens_seen", "flops", *(m for m in METRICS if m in runs)]
    rows = runs[cols].sort_values("run_id").to_dict("records")
    view = {"v": PREDICT_VERSION, "n_boot": int(n_boot), "seed": int(seed),
            "runs": [[str(r["run_id"]), *(f"{float(r[c]):.10g}" for c in cols[1:])] for r in rows]}
    return hashlib.sha256(json.dumps(view, sort_keys=True).encode()).hexdigest()[:12]


def _frontier_fit(x, y, ids, boot: StudyResample, E: float | None, Es) -> dict:
    """log(y - E) on log C over the Pareto frontier of the finished runs, and per resample."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    E0 = 0.0 if E is None else float(E)
    red = y - E0
    ok = red > 0
    m = pareto_mask(x[ok], red[ok])
    if m.sum() < 2:
        return {}
    slope, b = H._line(np.log(x[ok][m]), np.log(red[ok][m]))
    R = boot.n_boot
    W = boot.weights(ids)
    Eb = H._E_rows(E, Es, R)
    ss, bs = np.full(R, np.nan), np.full(R, np.nan)
    for i in range(R):
        rr = y - Eb[i]
        sel = (W[i] > 0) & np.isfinite(rr) & (rr > 0)
        if sel.sum() < 2:
            continue
        mi = pareto_mask(x[sel], rr[sel])
        if mi.sum() < 2 or np.ptp(np.log(x[sel][mi])) <= 0:
            continue
        ss[i], bs[i] = H._line(np.log(x[sel][mi]), np.log(rr[sel][mi]))
    return {"slope": slope, "b": b, "slope_s": ss, "b_s": bs, "n": int(m.sum())}


def fit_predictor(study_dir, n_boot: int = DEFAULT_BOOT, seed: int = 0, df: pd.DataFrame | None = None,
                  use_floor: bool = True, metrics: Sequence[str] = METRICS,
                  starts: np.ndarray | None = None) -> Predictor:
    """Fit every law a prediction needs on a study's finished runs (see module doc).

    ``df``: the study's evaluations when already loaded (``analysis.load.load``);
    ``metrics``: the metrics to fit (all four by default); ``starts``: Approach 3's starts
    (default Hoffmann's 4,500-point grid; the calibration uses a subset).
    Raises :class:`PredictError` (one sentence) when the study has too few finished runs.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        P = _fit_predictor(Path(study_dir), n_boot, seed, df, use_floor, tuple(metrics), starts)
    from .report import _warning_notes

    P.notes += _warning_notes(caught)
    return P


def _fit_predictor(study_dir: Path, n_boot: int, seed: int, df, use_floor: bool, metrics, starts) -> Predictor:
    if df is None:
        df = load(study_dir)
    fr = final_rows(df) if len(df) else df
    if len(fr) < 6 or fr["n_params"].nunique() < 2 or fr["tokens_seen"].nunique() < 2:
        raise PredictError(f"{study_dir}: predictions need >= 6 finished runs with both the model size and "
                           f"the token count varying (Approach 3); it has {len(fr)} finished run(s)")
    if n_boot < 20:
        raise PredictError(f"n_boot {n_boot}: intervals need at least 20 resamples")
    fr = fr.sort_values("run_id").reset_index(drop=True)
    boot = StudyResample(fr["run_id"], n_boot, seed)
    W = boot.weights(fr["run_id"])
    chin: dict[str, Fit] = {}
    resid: dict[str, np.ndarray] = {}
    for m in metrics:
        f = fit_chinchilla(fr["n_params"], fr["tokens_seen"], fr[m], groups=fr["run_id"], metric=m,
                           group="final evaluations", weights=W, starts=starts)
        if not np.isfinite(f.params.get("E", np.nan)) or not f.samples:
            raise PredictError(f"{study_dir}: Approach 3 did not fit {m}")
        chin[m] = f
        with np.errstate(all="ignore"):
            resid[m] = np.log(fr[m].to_numpy(float)) - np.log(f.predict(fr["n_params"], fr["tokens_seen"]))
        resid[m] = resid[m][np.isfinite(resid[m])]
    ent = usable_floors(floors(study_dir), df) if use_floor else {}
    floor = H.choose_floors(ent, {m: chin[m] for m in LOSSES if m in chin}, fr,
                            rule="auto" if use_floor else "none")
    E_samples = {m: d.pop("samples", None) for m, d in floor.items()}
    front = {}
    for m in metrics:
        E = floor[m]["E"] if m in floor else None
        front[m] = _frontier_fit(fr["flops"], fr[m], fr["run_id"], boot, E, E_samples.get(m))
    with np.errstate(all="ignore"):
        k = np.nanmedian(fr["flops"].to_numpy(float) / (fr["n_params"].to_numpy(float)
                                                          * fr["tokens_seen"].to_numpy(float)))
    notes = []
    for m in metrics:
        notes += [f"Approach 3 on {SHORT[m]}: {w}" for w in chin[m].warnings]
    return Predictor(study=str(study_dir), n_boot=n_boot, seed=seed, runs=fr, chin=chin, floor=floor,
                     E_samples=E_samples, resid=resid, frontier=front, k_flops=float(k),
                     range_N=(float(fr["n_params"].min()), float(fr["n_params"].max())),
                     range_C=(float(fr["flops"].min()), float(fr["flops"].max())),
                     fit_hash=fit_hash(fr, n_boot, seed), notes=notes)


# --------------------------------------------------------------------------- targets


def targets_frame(targets: Any, k_flops: float) -> pd.DataFrame:
    """Targets as rows of (label, depth, n_params, tokens, flops): from a DataFrame, a list of
    dicts or one dict. Each needs ``n_params`` and one of ``tokens`` / ``flops``; the missing
    one follows from the study's FLOPs per parameter-token ``k_flops`` (C = k N D)."""
    if isinstance(targets, dict):
        targets = [targets]
    t = pd.DataFrame(targets).copy()
    if "n_params" not in t:
        raise PredictError("targets: each needs a model size (n_params; the command line also takes --depth)")
    for c in ("tokens", "flops", "depth", "label"):
        if c not in t:
            t[c] = np.nan if c != "label" else None
    t["n_params"] = t["n_params"].astype(float)
    t["tokens"] = t["tokens"].astype(float)
    t["flops"] = t["flops"].astype(float)
    miss = t["tokens"].isna() & t["flops"].isna()
    if miss.any():
        raise PredictError(f"target {int(np.flatnonzero(miss)[0]) + 1}: needs a token count or a compute "
                           "(tokens / flops)")
    bad = ~(t["n_params"] > 0) | (t["tokens"].notna() & ~(t["tokens"] > 0)) | (t["flops"].notna() & ~(t["flops"] > 0))
    if bad.any():
        raise PredictError(f"target {int(np.flatnonzero(bad)[0]) + 1}: sizes, tokens and FLOPs must be > 0")
    t.loc[t["tokens"].isna(), "tokens"] = t["flops"] / (k_flops * t["n_params"])
    t.loc[t["flops"].isna(), "flops"] = k_flops * t["n_params"] * t["tokens"]
    t["label"] = [lab if isinstance(lab, str) and lab else _label(r) for lab, (_, r) in zip(t["label"], t.iterrows())]
    return t.reset_index(drop=True)


def _label(r) -> str:
    size = f"d{int(r['depth'])}" if pd.notna(r.get("depth")) else f"N={r['n_params']:.3g}"
    return f"{size} @ {r['tokens']:.3g} tokens"


def predict(study: Any, targets: Any, n_boot: int = DEFAULT_BOOT, seed: int = 0,
            metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """Predicted metrics at ``targets`` (see :func:`targets_frame`) from a study folder or a
    :class:`Predictor`: one row per (target, metric) with

    ``predicted``, ``ci_lo``/``ci_hi`` (the law's 95% interval), ``pi_lo``/``pi_hi`` (one
    new run's), ``law`` ("approach3"), ``floor`` and ``reducible`` (+ interval) for losses
    with a floor, ``frontier`` (+ interval: the frontier law at the target's C),
    ``x_N``/``x_C`` (the target over the largest fitted N / C) and ``warning``.
    ``df.attrs`` holds the predictor's fit_hash, floors and notes.
    """
    P = study if isinstance(study, Predictor) else fit_predictor(study, n_boot=n_boot, seed=seed)
    metrics = list(P.chin) if metrics is None else list(metrics)
    t = targets_frame(targets, P.k_flops)
    N, D, C = t["n_params"].to_numpy(float), t["tokens"].to_numpy(float), t["flops"].to_numpy(float)
    xN, xC = N / P.range_N[1], C / P.range_C[1]
    xN_lo, xC_lo = P.range_N[0] / N, P.range_C[0] / C
    warn = []
    for i in range(len(t)):
        w = []
        if xN[i] > EXTRAPOLATION_WARN or xN_lo[i] > EXTRAPOLATION_WARN:
            w.append(f"N {N[i]:.3g} is more than {EXTRAPOLATION_WARN:g}x beyond the fitted range "
                     f"{P.range_N[0]:.3g}..{P.range_N[1]:.3g}")
        if xC[i] > EXTRAPOLATION_WARN or xC_lo[i] > EXTRAPOLATION_WARN:
            w.append(f"C {C[i]:.3g} is more than {EXTRAPOLATION_WARN:g}x beyond the fitted range "
                     f"{P.range_C[0]:.3g}..{P.range_C[1]:.3g}")
        warn.append("; ".join(w))
    rows = []
    for m in metrics:
        point, boot = P.approach3(m, N, D)
        lo, hi = percentile_ci(boot, CI_LEVEL)
        plo, phi = percentile_ci(P.observation(m, boot))
        fpt, fboot = P.frontier_law(m, C)
        flo, fhi = percentile_ci(fboot) if np.isfinite(fboot).any() else (np.full(len(t), np.nan),) * 2
        has_floor = m in P.floor
        if has_floor:
            Eb = H._E_rows(P.floor[m]["E"], P.E_samples.get(m), P.n_boot)
            rlo, rhi = percentile_ci(boot - Eb[:, None])
        for i in range(len(t)):
            row = {"target": t["label"][i], "depth": t["depth"][i], "n_params": N[i], "tokens": D[i],
                   "flops": C[i], "metric": m, "short": SHORT[m], "law": "approach3",
                   "predicted": float(point[i]), "ci_lo": float(lo[i]), "ci_hi": float(hi[i]),
                   "pi_lo": float(plo[i]), "pi_hi": float(phi[i]),
                   "floor": P.floor[m]["E"] if has_floor else np.nan,
                   "reducible": float(point[i] - P.floor[m]["E"]) if has_floor else np.nan,
                   "reducible_lo": float(rlo[i]) if has_floor else np.nan,
                   "reducible_hi": float(rhi[i]) if has_floor else np.nan,
                   "frontier": float(fpt[i]), "frontier_lo": float(flo[i]), "frontier_hi": float(fhi[i]),
                   "x_N": float(xN[i]), "x_C": float(xC[i]), "warning": warn[i]}
            rows.append(row)
    out = pd.DataFrame(rows)
    out.attrs.update({"fit_hash": P.fit_hash, "study": P.study, "n_boot": P.n_boot, "seed": P.seed,
                      "floor": {m: {k: v for k, v in d.items()} for m, d in P.floor.items()},
                      "notes": list(P.notes), "range_N": P.range_N, "range_C": P.range_C,
                      "k_flops": P.k_flops})
    return out


# --------------------------------------------------------------------------- allocation


def optimal_allocation(P: Predictor, C: float, metric: str = "test_loss_avg") -> dict[str, Any]:
    """Compute-optimal N and D at compute C (continuous) from Approach 3 on ``metric``:
    minimise E + A/N^alpha + B/D^beta on C = k N D (k the study's FLOPs per parameter-token),
    N_opt = G (C/k)^a, D_opt = (C/k)^b / G, G = (alpha A / (beta B))^(1/(alpha+beta)),
    a = beta/(alpha+beta), b = alpha/(alpha+beta); point and 95% interval over the resamples."""
    s = np.stack([P.chin[metric].params[k] for k in ("E", "A", "B", "alpha", "beta")])[None]
    s = np.concatenate([s, P._chin_samples(metric)], 0)
    E, A, B, al, be = s.T
    with np.errstate(all="ignore"):
        G = (al * A / (be * B)) ** (1 / (al + be))
        a, b = be / (al + be), al / (al + be)
        X = C / P.k_flops
        No = G * X ** a
        Do = X ** b / G
        Lo = E + A / No ** al + B / Do ** be
    out: dict[str, Any] = {"flops": float(C), "metric": metric, "k_flops": P.k_flops}
    for name, v in (("N_opt", No), ("D_opt", Do), ("loss_opt", Lo), ("a", a), ("b", b)):
        ok = np.isfinite(v[1:])
        ci = percentile_ci(v[1:][ok][:, None], CI_LEVEL) if ok.any() else (np.array([np.nan]),) * 2
        out[name] = float(v[0])
        out[name + "_ci"] = [float(ci[0][0]), float(ci[1][0])]
    return out


def allocate(study: Any, C: float, family: pd.DataFrame | None = None, metric: str = "test_loss_avg",
             n_boot: int = DEFAULT_BOOT, seed: int = 0, neighbours: int = 1) -> dict[str, Any]:
    """The compute-optimal allocation of C: the continuous optimum (:func:`optimal_allocation`)
    and, over a model family (rows of depth, n_params, flops_per_token; default: the depths
    the study trained), the depth whose predicted ``metric`` at D = C / flops_per_token is
    lowest, with ``neighbours`` depths on either side and their predictions (how flat the
    optimum is). Returns {"continuous": {...}, "depths": DataFrame-as-records, "best": depth}."""
    P = study if isinstance(study, Predictor) else fit_predictor(study, n_boot=n_boot, seed=seed)
    if not (C > 0):
        raise PredictError(f"--flops {C}: a compute budget must be > 0")
    fam = family_of(P) if family is None else family.sort_values("depth").reset_index(drop=True)
    tg = pd.DataFrame({"depth": fam["depth"], "n_params": fam["n_params"].astype(float),
                       "tokens": C / fam["flops_per_token"].astype(float), "flops": float(C)})
    allp = predict(P, tg)
    pr = allp[allp["metric"] == metric].reset_index(drop=True)
    best_i = int(np.nanargmin(pr["predicted"].to_numpy(float)))
    lo, hi = max(0, best_i - neighbours), min(len(pr), best_i + neighbours + 1)
    depths = []
    for i in range(lo, hi):
        r = pr.iloc[i]
        each = allp[allp["target"] == r["target"]]
        depths.append({"depth": int(fam["depth"][i]), "n_params": float(r["n_params"]), "tokens": float(r["tokens"]),
                       "steps": (float(r["tokens"]) / float(fam["tokens_per_step"][i])
                                 if "tokens_per_step" in fam and pd.notna(fam["tokens_per_step"][i]) else None),
                       "predicted": float(r["predicted"]), "ci": [float(r["ci_lo"]), float(r["ci_hi"])],
                       "metrics": {e["short"]: {"predicted": float(e["predicted"]), "ci": [float(e["ci_lo"]), float(e["ci_hi"])]}
                                   for _, e in each.iterrows()},
                       "best": i == best_i, "warning": r["warning"]})
    return {"continuous": optimal_allocation(P, C, metric), "depths": depths,
            "best": int(fam["depth"][best_i]), "metric": metric, "fit_hash": P.fit_hash,
            "edge": best_i in (0, len(pr) - 1)}


def family_of(P: Predictor) -> pd.DataFrame:
    """The depths a study trained: depth, n_params, flops_per_token (from its runs)."""
    r = P.runs
    return pd.DataFrame({"n_params": r.groupby("depth")["n_params"].first(),
                         "flops_per_token": (r["flops"] / r["tokens_seen"]).groupby(r["depth"]).median()}
                        ).reset_index().sort_values("depth").reset_index(drop=True)
