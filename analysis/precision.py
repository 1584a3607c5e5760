"""How decisive a planned study will be, before it trains: the 95% interval widths its fits
will report, by simulation.

A :class:`Prior` holds laws (Approach 3, L = E + A/N^alpha + B/D^beta, per loss) and the
noise about them (log residuals, split into a part shared by the runs of one trunk, i.e. one
warmup-stable run and its decay branches or one independent run, and a part of each run).
:func:`simulate` draws ``sims`` studies of a planned design (its finished runs' final
evaluations: what Approach 3 and ``predict`` are fitted on): every run's loss is the prior's
law times exp(trunk residual + run residual), residuals drawn with replacement from the
prior's pools (the same draw for both losses of a run, so their correlation is kept). Each
simulated study is then fitted by the code ``varscale fit`` and ``predict`` run:
``fit_chinchilla_many`` (``fit_chinchilla`` batched over studies, the same resamples of whole
runs a real study gets: ``StudyResample(run ids, n_boot, seed)``), the floor rule
(``headline.choose_floors``), ``predict.predictor_from_fits``, ``predict`` for the targets and
``allocate.optimal_allocation`` for N_opt. The starts of Approach 3 are the prior's law and
perturbations of it (:func:`prior_starts`): the truth of a simulated study is known, and
Hoffmann's 4,500 starts for every simulated study would cost ~80x more.

The result (:class:`Precision`) gives, per quantity, the median over simulated studies of the
95% interval width each one reports (what the study will print), the spread of the point
estimates across them, and per loss the share of studies whose floor is resolved and the mean
share of resamples that put E at 0. Nothing here reads or writes a file: ``varscale plan
--precision`` builds the design from the study file and prints.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import pandas as pd

from .bootstrap import StudyResample, percentile_ci
from .headline import AT_ZERO
from .chinchilla import fit_chinchilla, fit_chinchilla_many
from .load import LOSSES
from .results import SHORT
from .study import Study

LAW_KEYS = ("E", "A", "B", "alpha", "beta")
N_FIT_PARAMS = 5


@dataclass
class Prior:
    """Laws and noise a design is simulated from (see module doc). ``trunk`` and ``run``:
    per loss, pools of log residuals, index-aligned across losses (entry i of both losses
    came from the same trunk / run)."""

    source: str
    laws: dict[str, dict[str, float]]  # loss -> E, A, B, alpha, beta
    trunk: dict[str, list[float]]
    run: dict[str, list[float]]
    k_flops: float = 6.0  # FLOPs per parameter-token of the prior's study
    builtin: bool = False
    note: str = ""
    range_N: list[float] | None = None  # the model sizes and token counts the laws were fitted on
    range_D: list[float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Prior":
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})

    def law(self, m: str, N, D) -> np.ndarray:
        p = self.laws[m]
        N, D = np.asarray(N, float), np.asarray(D, float)
        return p["E"] + p["A"] / N ** p["alpha"] + p["B"] / D ** p["beta"]

    def theta(self, m: str) -> np.ndarray:
        """The law in Approach 3's parameters (log A, log B, log E, alpha, beta)."""
        p = self.laws[m]
        return np.array([np.log(p["A"]), np.log(p["B"]), np.log(p["E"]), p["alpha"], p["beta"]])

    @property
    def noise_sd(self) -> dict[str, float]:
        """Per loss: the sd of one run's log residual (trunk and run parts together)."""
        return {m: float(np.sqrt(np.var(self.trunk[m]) + np.var(self.run[m]))) for m in self.laws}


def prior_from_study(study: Study, wsd: bool | None = None) -> Prior:
    """A prior from a trained study: Approach 3 per loss on its finished runs (Hoffmann's
    starts, no bootstrap) and the log residuals split by trunk (a WSD study's branches of one
    depth and seed share a trunk), each scaled by sqrt(n / (n - 5)) to undo the shrinkage of
    fitting 5 parameters to n runs."""
    fr = study.final.sort_values("run_id").reset_index(drop=True)
    wsd = bool(study.evaluations["is_stable"].any()) if wsd is None else wsd
    trunk = (fr["depth"].astype(str) + "/" + fr["seed"].astype(str)).to_numpy() if wsd else fr["run_id"].to_numpy()
    laws, tr, rn = {}, {}, {}
    n = len(fr)
    inflate = np.sqrt(n / max(n - N_FIT_PARAMS, 1))
    codes, tix = np.unique(trunk, return_inverse=True)
    one_each = len(codes) == n  # every trunk one run: all of the noise is the run's
    for m in LOSSES:
        if m not in fr or fr[m].isna().any():
            continue
        f = fit_chinchilla(fr["n_params"], fr["tokens_seen"], fr[m], n_boot=0, metric=m)
        laws[m] = {k: float(f.params[k]) for k in LAW_KEYS}
        r = np.log(fr[m].to_numpy(float)) - np.log(f.predict(fr["n_params"], fr["tokens_seen"]))
        if one_each:
            tr[m], rn[m] = [0.0], (inflate * r).tolist()
            continue
        mean_t = np.array([r[tix == t].mean() for t in range(len(codes))])
        tr[m] = (inflate * mean_t).tolist()
        rn[m] = (inflate * (r - mean_t[tix])).tolist()
    with np.errstate(all="ignore"):
        k = float(np.nanmedian(fr["flops"] / (fr["n_params"] * fr["tokens_seen"])))
    return Prior(source=str(study.root or study.name), laws=laws, trunk=tr, run=rn, k_flops=k,
                 note=f"{n} finished runs in {len(codes)} trunk(s)",
                 range_N=[float(fr["n_params"].min()), float(fr["n_params"].max())],
                 range_D=[float(fr["tokens_seen"].min()), float(fr["tokens_seen"].max())])


def prior_from_report(path) -> Prior:
    """A prior from a fits.json (or a study's report): its Approach-3 laws per loss, and,
    since a report keeps no residuals, normal noise of the fit's rms log residual (scaled by
    sqrt(n / (n - 5))) as a pool of 41 normal quantiles, all of it per run."""
    from scipy.stats import norm

    from .results import read_report

    rep = read_report(path)
    laws, tr, rn = {}, {}, {}
    q = norm.ppf((np.arange(41) + 0.5) / 41)
    for f in rep.fits:
        if f.form != "chinchilla" or f.metric not in LOSSES or f.metric in laws:
            continue
        if not all(np.isfinite(f.params.get(k, np.nan)) for k in LAW_KEYS):
            continue
        laws[f.metric] = {k: float(f.params[k]) for k in LAW_KEYS}
        sd = float(f.extra.get("rmse_log", 0.0)) * np.sqrt(f.n / max(f.n - N_FIT_PARAMS, 1))
        tr[f.metric] = [0.0]
        rn[f.metric] = (sd * q).tolist()
    if not laws:
        raise ValueError(f"{path}: no Approach-3 law of a loss in the report")
    return Prior(source=str(path), laws=laws, trunk=tr, run=rn, note="laws of a report; normal noise")


def prior_starts(prior: Prior, m: str) -> np.ndarray:
    """Approach 3's starts for simulated studies: the prior's law, each parameter moved
    either way (log A, log B, log E by 1; alpha, beta by 0.1), and a floor near 0."""
    th = prior.theta(m)
    out = [th]
    for i, step in enumerate((1.0, 1.0, 1.0, 0.1, 0.1)):
        for sgn in (-1, 1):
            t = th.copy()
            t[i] += sgn * step
            out.append(t)
    t = th.copy()
    t[2] = th[2] - 5.0  # E / 150: the basin where the floor goes to 0
    out.append(t)
    return np.array(out)


@dataclass
class Width:
    """One quantity's precision over the simulated studies."""

    quantity: str  # "E", "alpha", "beta", "a_opt", "N_opt", or a target's label
    metric: str
    truth: float  # the prior's value
    median: float  # median point estimate
    width: float  # median of the studies' 95% interval widths (upper - lower)
    spread: float  # 97.5th - 2.5th percentile of the point estimates across studies
    relative: bool = False  # width and spread are relative to truth (targets, N_opt as upper/lower)

    @property
    def rel_width(self) -> float:
        return self.width if self.relative else self.width / abs(self.truth)


@dataclass
class Precision:
    """What :func:`simulate` found (see module doc)."""

    prior: str
    builtin_prior: bool
    runs: int  # finished runs in the design
    sims: int
    n_boot: int
    seed: int
    at_flops: float  # the compute N_opt is stated at
    fitted: int = 0  # simulated studies whose fits gave a predictor (the widths are theirs)
    widths: list[Width] = field(default_factory=list)
    resolved: dict[str, float] = field(default_factory=dict)  # loss -> share of studies with E resolved
    at_zero: dict[str, float] = field(default_factory=dict)  # loss -> mean share of resamples with E at 0
    excludes_zero: dict[str, float] = field(default_factory=dict)  # loss -> share of studies whose E interval excludes 0
    at_zero_range: dict[str, list[float]] = field(default_factory=dict)  # loss -> 2.5th, 97.5th percentile of that share
    seconds: float = 0.0

    def get(self, quantity: str, metric: str) -> Width | None:
        return next((w for w in self.widths if w.quantity == quantity and w.metric == metric), None)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _frame(fin: pd.DataFrame, values: dict[str, np.ndarray]) -> pd.DataFrame:
    df = pd.DataFrame({"run_id": fin["run_id"].to_numpy(), "depth": fin["depth"].to_numpy(),
                       "n_params": fin["n_params"].to_numpy(float), "tokens_seen": fin["tokens"].to_numpy(float),
                       "flops": fin["flops"].to_numpy(float), "step": 1, "is_final": True})
    for m, v in values.items():
        df[m] = v
    return df


def simulate(prior: Prior, design: pd.DataFrame, sims: int = 100, n_boot: int = 100, seed: int = 0,
             targets: list[dict] | None = None, at_flops: float | None = None) -> Precision:
    """Simulate ``sims`` studies of ``design`` (rows: the planned runs with ``run_id``,
    ``trunk``, ``depth``, ``n_params``, ``tokens``, ``flops`` at the final evaluation and
    ``is_final``; only final rows are fitted) from ``prior`` and fit each (module doc).
    ``targets``: dicts as ``predict`` takes (``label``, ``n_params``, ``tokens``);
    ``at_flops``: the compute N_opt is stated at (default 10x the design's largest)."""
    from .allocate import optimal_allocation
    from .predict import PredictError, predict, predictor_from_fits

    t0 = time.perf_counter()
    fin = design[design["is_final"]].sort_values("run_id").reset_index(drop=True)
    N, D = fin["n_params"].to_numpy(float), fin["tokens"].to_numpy(float)
    k_design = float(np.nanmedian(fin["flops"].to_numpy(float) / (N * D)))  # what the fits' N_opt uses
    if len(fin) < 6 or len(np.unique(N)) < 2 or len(np.unique(D)) < 2:
        raise PredictError(f"the design has {len(fin)} finished run(s): Approach 3 needs >= 6 with both the "
                           "model size and the token count varying")
    C = float(at_flops) if at_flops else 10.0 * float(fin["flops"].max())
    rng = np.random.default_rng(seed)
    losses = [m for m in LOSSES if m in prior.laws]
    _, tix = np.unique(fin["trunk"].astype(str).to_numpy(), return_inverse=True)
    n_tr = len(prior.trunk[losses[0]])
    n_rn = len(prior.run[losses[0]])
    jt = rng.integers(0, n_tr, (sims, tix.max() + 1))
    kr = rng.integers(0, n_rn, (sims, len(fin)))
    L = {m: prior.law(m, N, D)[None] * np.exp(np.asarray(prior.trunk[m])[jt][:, tix] + np.asarray(prior.run[m])[kr])
         for m in losses}
    W = StudyResample(fin["run_id"], n_boot, seed).weights(fin["run_id"])
    fits = {m: fit_chinchilla_many(N, D, L[m], groups=fin["run_id"].to_numpy(), weights=W, metric=m,
                                   group="final evaluations", starts=prior_starts(prior, m)) for m in losses}
    rec: dict[tuple[str, str], list[tuple[float, float, float]]] = {}  # (quantity, metric) -> (estimate, lo, hi)
    resolved = {m: [] for m in losses}
    at_zero = {m: [] for m in losses}
    excl = {m: [] for m in losses}
    fitted = 0

    def put(q, m, est, ci):
        rec.setdefault((q, m), []).append((est, *(ci if ci is not None else (np.nan, np.nan))))

    for s in range(sims):
        st = Study.from_evaluations(_frame(fin, {m: L[m][s] for m in losses}), name=f"<simulated {s}>")
        try:
            P = predictor_from_fits(st, {m: fits[m][s] for m in losses}, n_boot, seed, frontier=False)
        except PredictError:
            continue
        fitted += 1
        for m in losses:
            f = fits[m][s]
            fl = P.floor.get(m)
            resolved[m].append(bool(fl is not None and fl.resolved))
            smp = f.samples.get("E")
            at_zero[m].append(float(np.mean(smp[np.isfinite(smp)] < AT_ZERO * f.params["E"])) if smp is not None else np.nan)
            lo_E = f.ci.get("E", (np.nan,))[0]
            excl[m].append(bool(np.isfinite(lo_E) and lo_E > AT_ZERO * f.params["E"]))
            for q in ("E", "alpha", "beta", "a_opt"):
                put(q, m, f.params[q], f.ci.get(q))
            al = optimal_allocation(P, C, m)
            put("N_opt", m, al["N_opt"], al["N_opt_ci"])
        if targets:
            pr = predict(P, targets, metrics=losses)
            for _, r in pr.iterrows():
                put(r["target"], r["metric"], r["predicted"], (r["pi_lo"], r["pi_hi"]))
    out = Precision(prior=prior.source, builtin_prior=prior.builtin, runs=len(fin), sims=sims, n_boot=n_boot,
                    seed=seed, at_flops=C, fitted=fitted)
    truth_t = {}
    for t in targets or []:
        for m in losses:
            truth_t[(t.get("label"), m)] = float(prior.law(m, t["n_params"], t["tokens"]))
    for (q, m), v in rec.items():
        a = np.array(v, float)
        est, lo, hi = a[:, 0], a[:, 1], a[:, 2]
        ok = np.isfinite(est)
        if q in ("E", "alpha", "beta", "a_opt"):
            p = prior.laws[m]
            truth = p[q] if q in p else p["beta"] / (p["alpha"] + p["beta"])
            w = Width(q, m, truth, float(np.median(est[ok])), float(np.nanmedian(hi - lo)),
                      _spread(est[ok]))
        elif q == "N_opt":  # a size: its interval as upper / lower
            p = prior.laws[m]
            G = (p["alpha"] * p["A"] / (p["beta"] * p["B"])) ** (1 / (p["alpha"] + p["beta"]))
            truth = G * (C / k_design) ** (p["beta"] / (p["alpha"] + p["beta"]))
            with np.errstate(all="ignore"):
                ratio = np.where(lo > 0, hi / lo, np.inf)
            w = Width(q, m, truth, float(np.median(est[ok])), float(np.nanmedian(ratio)),
                      float(np.exp(_spread(np.log(est[ok & (est > 0)])))), relative=True)
        else:  # a target's new-run interval, relative to the prediction
            truth = truth_t.get((q, m), float("nan"))
            w = Width(q, m, truth, float(np.median(est[ok])), float(np.nanmedian((hi - lo) / est)),
                      _spread(est[ok]) / truth, relative=True)
        out.widths.append(w)
    out.resolved = {m: float(np.mean(v)) for m, v in resolved.items() if v}
    out.at_zero = {m: float(np.nanmean(v)) for m, v in at_zero.items() if v}
    out.excludes_zero = {m: float(np.mean(v)) for m, v in excl.items() if v}
    out.at_zero_range = {m: [float(x) for x in np.nanpercentile(v, [2.5, 97.5])] for m, v in at_zero.items() if v}
    out.seconds = time.perf_counter() - t0
    return out


def _pct_range(r) -> str:
    return "n/a" if not r else f"{100 * r[0]:.1f}% to {100 * r[1]:.1f}%"


def _spread(x: np.ndarray) -> float:
    if not len(x):
        return float("nan")
    lo, hi = percentile_ci(np.asarray(x, float)[:, None])
    return float(hi[0] - lo[0])


def format_precision(p: Precision) -> str:
    """The precision table ``varscale plan --precision`` prints (docs/design.md reads it)."""
    src = f"the built-in prior ({p.prior})" if p.builtin_prior else f"the prior {p.prior}"
    out = [f"precision of this design: {p.sims} simulated studies from {src}, each fitted as `varscale fit` "
           f"does ({p.runs} finished runs, {p.n_boot} resamples of whole runs; {p.seconds:.0f} s)"]
    if p.fitted < p.sims:
        out.append(f"only {p.fitted} of the {p.sims} simulated studies gave a fit (Approach 3 failed on the rest): "
                   "the widths are theirs")
    head = ["quantity", "loss", "prior", "median fit", "95% interval width", "relative", "spread of fits"]
    rows = []
    for w in p.widths:
        if w.relative:
            wtxt = f"x{w.width:.3g}" if w.quantity == "N_opt" else f"+-{50 * w.width:.2f}%"
            rel = wtxt
            spread = f"x{w.spread:.3g}" if w.quantity == "N_opt" else f"{100 * w.spread:.2f}%"
        else:
            wtxt, rel, spread = f"{w.width:.3g}", f"{100 * w.rel_width:.0f}%", f"{w.spread:.3g}"
        q = f"N_opt at {p.at_flops:.3g} FLOPs" if w.quantity == "N_opt" else w.quantity
        rows.append([q, SHORT.get(w.metric, w.metric), f"{w.truth:.4g}", f"{w.median:.4g}", wtxt, rel, spread])
    cols = [max(len(x) for x in col) for col in zip(head, *rows)]
    out.append("  ".join(h.ljust(n) for h, n in zip(head, cols)))
    out += ["  ".join(c.ljust(n) for c, n in zip(r, cols)) for r in rows]
    for m, share in p.resolved.items():
        out.append(f"{SHORT[m]}: floor resolved in {100 * share:.0f}% of simulated studies (95% interval of E above "
                   f"E/2 and below every loss), its interval excluding 0 in {100 * p.excludes_zero.get(m, 0):.0f}%; "
                   f"on average {100 * p.at_zero.get(m, float('nan')):.1f}% of a study's resamples put E at 0 "
                   f"(95% of studies: {_pct_range(p.at_zero_range.get(m))})")
    out.append("N_opt's width is upper / lower end of its interval; a target's is its 95% new-run interval, "
               "+- half of it relative to the prediction.")
    return "\n".join(out)


def prior_module(prior: Prior, command: str) -> str:
    """The source of ``analysis/prior_default.py`` holding ``prior`` as the built-in one."""
    import pprint

    d = prior.to_dict()
    d["builtin"] = False
    d["laws"] = {m: {k: float(f"{v:.6g}") for k, v in p.items()} for m, p in d["laws"].items()}
    for k in ("trunk", "run"):
        d[k] = {m: [float(f"{x:.6g}") for x in v] for m, v in d[k].items()}
    return (f'"""The built-in prior of ``varscale plan --precision``: the default study\'s Approach-3 laws and\n'
            f'log residuals (``analysis.precision.prior_from_study``), written by\n\n    {command}\n"""\n'
            "from __future__ import annotations\n\nfrom .precision import Prior\n\n"
            f"DEFAULT: dict = {pprint.pformat(d, width=100, sort_dicts=True)}\n\n\n"
            "def builtin_prior() -> Prior:\n"
            "    return Prior.from_dict({**DEFAULT, \"builtin\": True})\n")


def main(argv=None) -> int:
    """``python -m analysis.precision <trained study>``: print the prior module of that study."""
    import sys

    from .study import Study

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m analysis.precision <trained study>  (prints analysis/prior_default.py)")
        return 2
    pr = prior_from_study(Study.load(args[0]))
    pr.source = "the default study (runs/default), " + pr.note
    print(prior_module(pr, f"python -m analysis.precision {args[0]} > analysis/prior_default.py"), end="")
    return 0


__all__ = ["Prior", "Precision", "Width", "prior_from_study", "prior_starts", "simulate", "format_precision",
           "prior_from_report", "prior_module"]


if __name__ == "__main__":
    raise SystemExit(main())
