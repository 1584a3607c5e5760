"""Predictions for runs a study has not trained: losses and error rates at a model size N and
a token count D (or a compute C).

The laws, fitted once per study by :func:`fit_predictor` on every finished run's final
evaluation (``Study.final``: for a warmup-stable-decay study, the annealed branches):

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
  an observed held-out run is judged by (``varscale check``, analysis/check.py).

The floor used for the reducible values is the report's (``analysis.headline.choose_floors``:
token entropy where it lies below every loss, else Approach 3's E). A target more than 10x
beyond the fitted range in N or in C gets a warning. ``fit_hash`` identifies the data and
settings a predictor came from, so predictions written before a run can be traced to it.

Takes a :class:`~analysis.study.Study` (or what ``as_study`` reads) and opens no file;
``analysis.predictor_cache`` keeps a fitted predictor in the study's report folder,
``analysis.allocate`` splits a FLOP budget between N and D, and ``varscale predict`` /
``allocate`` / ``plan --predict-from`` / ``check`` print and write.
"""
from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from . import headline as H
from .bootstrap import CI_LEVEL, DEFAULT_BOOT, Fit, StudyResample, percentile_ci
from .chinchilla import fit_chinchilla
from .fitting import present_metrics, warning_notes
from .frontier import pareto_mask
from .load import LOSSES, METRICS
from .results import FloorEntry
from .study import Study, as_study

SHORT = H.SHORT
EXTRAPOLATION_WARN = 10.0  # a target beyond 10x the fitted range in N or C is flagged
PREDICT_VERSION = 1  # enters fit_hash: a change of method changes the hash
# the columns of the finished runs a predictor keeps (Predictor.runs), those present
RUN_COLUMNS = ("run_id", "depth", "n_params", "tokens_seen", "flops", *METRICS)


class PredictError(ValueError):
    """A study that cannot give predictions, or a target that makes no sense (one sentence)."""


@dataclass
class Predictor:
    """Every law a study's predictions come from, with its bootstrap samples."""

    study: str
    n_boot: int
    seed: int
    runs: pd.DataFrame  # the finished runs the laws were fitted on (RUN_COLUMNS), by run_id
    chin: dict[str, Fit]  # Approach 3 per metric
    floor: dict[str, FloorEntry]  # the report's floor per loss
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

    def floor_rows(self, m: str) -> np.ndarray:
        """(R,) the floor of metric m per resample (0 without a floor)."""
        fl = self.floor.get(m)
        return H._E_rows(None if fl is None else fl.E, self.E_samples.get(m), self.n_boot)

    def frontier_law(self, m: str, C) -> tuple[np.ndarray, np.ndarray]:
        """The frontier law's point (T,) and resampled (R, T) values of metric m at C."""
        fr = self.frontier.get(m)
        C = np.asarray(C, float)
        if not fr:
            return np.full(C.shape, np.nan), np.full((self.n_boot, C.size), np.nan)
        E = self.floor[m].E if m in self.floor else 0.0
        lc = np.log(C)
        point = E + np.exp(fr["b"] + fr["slope"] * lc)
        Eb = self.floor_rows(m)
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


def rows_hash(runs: pd.DataFrame) -> str:
    """16 hex digits of the exact rows a predictor was fitted on (``fitted_runs``): every
    column of ``RUN_COLUMNS`` present, each number by its exact value (``float.hex``), rows by
    run_id. Unlike :func:`fit_hash` (10 significant digits of the fitted columns, plus the
    resamples) it changes with any bit of any kept column, and it depends on no library's
    hashing, so a hash written into a committed predictions file can be recomputed years later."""
    cols = [c for c in RUN_COLUMNS if c in runs]
    rows = runs[cols].sort_values("run_id").to_dict("records")

    def exact(v):
        if isinstance(v, str):
            return v
        try:
            return float(v).hex()
        except (TypeError, ValueError):
            return str(v)

    view = {"columns": cols, "rows": [[str(r["run_id"]), *(exact(r[c]) for c in cols[1:])] for r in rows]}
    return hashlib.sha256(json.dumps(view, sort_keys=True).encode()).hexdigest()[:16]


def run_scatter(resid: np.ndarray, n_params: int = 5) -> float:
    """A run's own scatter about the law, relative (log units): the root mean square of the
    full fit's log residuals with the fit's ``n_params`` degrees of freedom taken out. NaN
    with fewer residuals than parameters + 1."""
    r = np.asarray(resid, float)
    r = r[np.isfinite(r)]
    if r.size <= n_params:
        return float("nan")
    return float(np.sqrt((r ** 2).sum() / (r.size - n_params)))


def fitted_runs(study: Study) -> pd.DataFrame:
    """The finished runs a predictor is fitted on: their final rows (``RUN_COLUMNS``) by
    run_id. Raises :class:`PredictError` when Approach 3 cannot be fitted on them."""
    fr = study.final
    if len(fr) < 6 or fr["n_params"].nunique() < 2 or fr["tokens_seen"].nunique() < 2:
        raise PredictError(f"{_name(study)}: predictions need >= 6 finished runs with both the model size and "
                           f"the token count varying (Approach 3); it has {len(fr)} finished run(s)")
    fr = fr[[c for c in RUN_COLUMNS if c in fr]].sort_values("run_id").reset_index(drop=True)
    fr.attrs = {}
    return fr


def entropy_floors(study: Study, use_floor: bool = True) -> dict[str, float]:
    """The token-entropy floors the predictor may use: those below every loss (quietly: a
    floor that is none is the floor's description, not a note)."""
    if not use_floor:
        return {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ent = study.usable_entropy()
    return {m: float(ent[m]) for m in LOSSES if m in ent}


def _name(study: Study) -> str:
    return str(study.root) if study.root is not None else study.name


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


def fit_predictor(study, n_boot: int = DEFAULT_BOOT, seed: int = 0, use_floor: bool = True,
                  metrics: Sequence[str] | None = None, starts: np.ndarray | None = None) -> Predictor:
    """Fit every law a prediction needs on a study's finished runs (see module doc).

    ``study``: a :class:`~analysis.study.Study`, a study folder or a table of evaluations
    (``as_study``); ``metrics``: the metrics to fit (default: those the study has values of,
    ``analysis.fitting.present_metrics``: all four for a trained study, one loss for an
    imported table that has one); ``starts``:
    Approach 3's starts (default Hoffmann's 4,500-point grid; the calibration uses a subset).
    Raises :class:`PredictError` (one sentence) when the study has too few finished runs.
    """
    study = as_study(study)
    metrics = present_metrics(study.evaluations) if metrics is None else metrics
    if not metrics:
        raise PredictError(f"{_name(study)}: no metric has values in the study: nothing to predict")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        P = _fit_predictor(study, n_boot, seed, use_floor, tuple(metrics), starts)
    P.notes += warning_notes(caught) + list(study.damaged)
    return P


def _fit_predictor(study: Study, n_boot: int, seed: int, use_floor: bool, metrics, starts) -> Predictor:
    fr = fitted_runs(study)
    if n_boot < 20:
        raise PredictError(f"n_boot {n_boot}: intervals need at least 20 resamples")
    W = StudyResample(fr["run_id"], n_boot, seed).weights(fr["run_id"])
    chin: dict[str, Fit] = {}
    for m in metrics:
        chin[m] = fit_chinchilla(fr["n_params"], fr["tokens_seen"], fr[m], groups=fr["run_id"], metric=m,
                                 group="final evaluations", weights=W, starts=starts)
    return predictor_from_fits(study, chin, n_boot, seed, use_floor)


def predictor_from_fits(study: Study, chin: dict[str, Fit], n_boot: int, seed: int = 0, use_floor: bool = True,
                        frontier: bool = True) -> Predictor:
    """The predictor of a study whose Approach-3 fits (one per metric, bootstrapped over
    ``StudyResample(runs, n_boot, seed)``) are given: the floor, the residuals and (unless
    ``frontier`` is False) the frontier law. :func:`fit_predictor` fits them one study at a
    time; ``analysis.precision`` fits many simulated studies in one batch
    (``fit_chinchilla_many``) and comes here for each."""
    fr = fitted_runs(study)
    boot = StudyResample(fr["run_id"], n_boot, seed)
    resid: dict[str, np.ndarray] = {}
    for m, f in chin.items():
        if not np.isfinite(f.params.get("E", np.nan)) or not f.samples:
            raise PredictError(f"{_name(study)}: Approach 3 did not fit {m}")
        with np.errstate(all="ignore"):
            resid[m] = np.log(fr[m].to_numpy(float)) - np.log(f.predict(fr["n_params"], fr["tokens_seen"]))
        resid[m] = resid[m][np.isfinite(resid[m])]
    floor, E_samples = H.choose_floors(entropy_floors(study, use_floor), {m: chin[m] for m in LOSSES if m in chin},
                                       fr, rule="auto" if use_floor else "none")
    front = {}
    for m in chin if frontier else ():
        E = floor[m].E if m in floor else None
        front[m] = _frontier_fit(fr["flops"], fr[m], fr["run_id"], boot, E, E_samples.get(m))
    with np.errstate(all="ignore"):
        k = np.nanmedian(fr["flops"].to_numpy(float) / (fr["n_params"].to_numpy(float)
                                                          * fr["tokens_seen"].to_numpy(float)))
    notes = []
    for m in chin:
        notes += [f"Approach 3 on {SHORT[m]}: {w}" for w in chin[m].warnings]
    return Predictor(study=_name(study), n_boot=n_boot, seed=seed, runs=fr, chin=chin, floor=floor,
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
    """Predicted metrics at ``targets`` (see :func:`targets_frame`) from a :class:`Predictor`
    or a study (fitted here: a Study, a folder or a table): one row per (target, metric) with

    ``predicted``, ``ci_lo``/``ci_hi`` (the law's 95% interval), ``pi_lo``/``pi_hi`` (one
    new run's), ``law`` ("approach3"), ``floor`` and ``reducible`` (+ interval) for losses
    with a floor, ``frontier`` (+ interval: the frontier law at the target's C),
    ``x_N``/``x_D``/``x_C`` (the target over the largest fitted N / D / C) and ``warning``.
    ``df.attrs`` holds the predictor's fit_hash, rows_hash (:func:`rows_hash`), floors
    (``FloorEntry`` per loss), notes, fitted ranges (``range_N``, ``range_D``, ``range_C``) and
    ``run_sd`` (per metric, a run's relative scatter about the law: :func:`run_scatter`).
    """
    P = study if isinstance(study, Predictor) else fit_predictor(study, n_boot=n_boot, seed=seed)
    metrics = list(P.chin) if metrics is None else list(metrics)
    t = targets_frame(targets, P.k_flops)
    N, D, C = t["n_params"].to_numpy(float), t["tokens"].to_numpy(float), t["flops"].to_numpy(float)
    range_D = (float(P.runs["tokens_seen"].min()), float(P.runs["tokens_seen"].max()))
    xN, xC, xD = N / P.range_N[1], C / P.range_C[1], D / range_D[1]
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
            E = P.floor[m].E
            rlo, rhi = percentile_ci(boot - P.floor_rows(m)[:, None])
        for i in range(len(t)):
            row = {"target": t["label"][i], "depth": t["depth"][i], "n_params": N[i], "tokens": D[i],
                   "flops": C[i], "metric": m, "short": SHORT[m], "law": "approach3",
                   "predicted": float(point[i]), "ci_lo": float(lo[i]), "ci_hi": float(hi[i]),
                   "pi_lo": float(plo[i]), "pi_hi": float(phi[i]),
                   "floor": E if has_floor else np.nan,
                   "reducible": float(point[i] - E) if has_floor else np.nan,
                   "reducible_lo": float(rlo[i]) if has_floor else np.nan,
                   "reducible_hi": float(rhi[i]) if has_floor else np.nan,
                   "frontier": float(fpt[i]), "frontier_lo": float(flo[i]), "frontier_hi": float(fhi[i]),
                   "x_N": float(xN[i]), "x_D": float(xD[i]), "x_C": float(xC[i]), "warning": warn[i]}
            rows.append(row)
    out = pd.DataFrame(rows)
    out.attrs.update({"fit_hash": P.fit_hash, "rows_hash": rows_hash(P.runs), "study": P.study,
                      "n_boot": P.n_boot, "seed": P.seed, "floor": dict(P.floor),
                      "notes": list(P.notes), "range_N": P.range_N, "range_D": range_D, "range_C": P.range_C,
                      "k_flops": P.k_flops, "run_sd": {m: run_scatter(P.resid.get(m, [])) for m in metrics}})
    return out
