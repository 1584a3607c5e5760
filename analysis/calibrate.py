"""Calibration of ``analysis.predict`` on synthetic studies whose law is known, through the
code users call: every study is fitted by ``fit_predictor`` and predicted by ``predict``.

Each study draws a Chinchilla law L = E + A/N^alpha + B/D^beta (E in [1, 4], alpha and beta
in [0.2, 0.6], A and B scaled so that each term is 20%-100% of E in the middle of the grid),
trains nothing, and "measures" every run of a ladder (6 model sizes x 3 token counts, the
default study's span) with multiplicative log-normal noise of a drawn size (0.2%-1.5%). The
study is a :class:`~analysis.study.Study` of those final evaluations; ``fit_predictor`` fits
it as any study (Approach 3 from Hoffmann's starts, or those given, the whole-run resamples,
the floor, the frontier law) and ``predict`` gives the value at a target beyond the ladder
(``x_N`` times the largest size at ``x_D`` times the largest token count) with its 95% law
interval (``ci``, judged against the noise-free truth) and new-run interval (``pi``, judged
against one fresh noisy run of the target, drawn with the study's own noise).

:func:`calibrate` runs ``n_studies`` of them and summarises coverage, half-widths and point
errors; ``python -m analysis.calibrate`` prints the table of docs/prediction.md, and
``tests/test_predict.py`` asserts coverage between 90% and 99% over 200 studies (a faster
subset in the default test run). Writes nothing.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import pandas as pd

from .chinchilla import hoffmann_grid
from .predict import fit_predictor, predict
from .study import Study

METRIC = "test_loss_avg"


def draw_law(rng) -> dict:
    E = rng.uniform(1.0, 4.0)
    alpha, beta = rng.uniform(0.2, 0.6, 2)
    return {"E": E, "alpha": alpha, "beta": beta, "fN": rng.uniform(0.2, 1.0), "fD": rng.uniform(0.2, 1.0),
            "noise": rng.uniform(0.002, 0.015)}


def ladder(sizes: int = 6, budgets: int = 3):
    N = np.geomspace(1.5e4, 2.5e6, sizes)  # the default study's span of sizes
    D = np.geomspace(6e5, 2.4e6, budgets)  # and of tokens
    return np.repeat(N, budgets), np.tile(D, sizes)


def draw_study(i: int, seed: int = 0, x_N: float = 3.0, x_D: float = 2.0) -> dict:
    """Study ``i`` of the series ``seed``: its law, the ladder's noisy final losses, the
    target (N, D), the truth there and one fresh noisy run of the target."""
    N, D = ladder()
    Nm, Dm = np.exp(np.log(N).mean()), np.exp(np.log(D).mean())
    tN, tD = N.max() * x_N, D.max() * x_D
    rng = np.random.default_rng([seed, i])
    law = draw_law(rng)
    law["A"] = law["fN"] * law["E"] * Nm ** law["alpha"]
    law["B"] = law["fD"] * law["E"] * Dm ** law["beta"]
    law["truth"] = law["E"] + law["A"] / tN ** law["alpha"] + law["B"] / tD ** law["beta"]
    clean = law["E"] + law["A"] / N ** law["alpha"] + law["B"] / D ** law["beta"]
    L = clean * np.exp(rng.normal(0, law["noise"], N.size))
    observed = law["truth"] * np.exp(rng.normal(0, law["noise"]))
    return {"N": N, "D": D, "L": L, "law": law, "observed": float(observed), "target": (tN, tD)}


def study_frame(N, D, L) -> pd.DataFrame:
    """One synthetic study as the final evaluations ``fit_predictor`` reads."""
    return pd.DataFrame({"run_id": [f"r{j:02d}" for j in range(len(N))], "n_params": N, "tokens_seen": D,
                         "flops": 6 * N * D, METRIC: L, "is_final": True, "step": 1})


def one_study(i: int, seed: int = 0, n_boot: int = 200, starts=None, x_N: float = 3.0,
              x_D: float = 2.0) -> dict:
    """Study ``i`` through ``fit_predictor`` and ``predict``, as a user calls them (one
    metric; ``starts``: Approach 3's starts, ``fit_predictor``'s option; None = Hoffmann's
    grid). The record: the law, the prediction, both intervals, the truth and the fresh run."""
    d = draw_study(i, seed, x_N, x_D)
    study = Study.from_evaluations(study_frame(d["N"], d["D"], d["L"]), name=f"<synthetic {seed}/{i}>")
    P = fit_predictor(study, n_boot=n_boot, seed=i, metrics=[METRIC], starts=starts)
    tN, tD = d["target"]
    r = predict(P, {"n_params": tN, "tokens": tD}).iloc[0]
    law = d["law"]
    return {**{k: law[k] for k in ("E", "A", "B", "alpha", "beta", "noise")}, "study": i,
            "truth": float(law["truth"]), "observed": d["observed"], "predicted": float(r["predicted"]),
            "ci_lo": float(r["ci_lo"]), "ci_hi": float(r["ci_hi"]), "pi_lo": float(r["pi_lo"]),
            "pi_hi": float(r["pi_hi"]), "E_fit": float(P.chin[METRIC].params["E"])}


def coarse_starts() -> np.ndarray:
    """675 of Hoffmann's 4,500 starts (a, b in {0, 10, 20}; e in {-1, 0, 1}; alpha, beta in
    {0, .5, .., 2}), for ``fit_predictor(starts=...)`` when many small studies
    are fitted."""
    g = hoffmann_grid()
    keep = np.isin(g[:, 0], [0, 10, 20]) & np.isin(g[:, 1], [0, 10, 20]) & np.isin(g[:, 2], [-1, 0, 1])
    return g[keep]


def summarise(recs: pd.DataFrame, n_boot: int) -> dict:
    """Coverage of both intervals, their median half-widths (relative to the prediction) and
    the point errors of a table of :func:`one_study` records."""
    truth, obs, pt = recs["truth"], recs["observed"], recs["predicted"]
    in_ci = (recs["ci_lo"] <= truth) & (truth <= recs["ci_hi"])
    in_pi = (recs["pi_lo"] <= obs) & (obs <= recs["pi_hi"])
    e = ((pt - truth) / truth).abs()
    return {"studies": int(len(recs)), "n_boot": int(n_boot),
            "coverage_ci": float(in_ci.mean()), "coverage_pi": float(in_pi.mean()),
            "median_ci_halfwidth": float(np.median((recs["ci_hi"] - recs["ci_lo"]) / 2 / pt)),
            "median_pi_halfwidth": float(np.median((recs["pi_hi"] - recs["pi_lo"]) / 2 / pt)),
            "median_abs_err": float(e.median()), "mean_abs_err": float(e.mean()),
            "p90_abs_err": float(e.quantile(0.9)), "max_abs_err": float(e.max())}


def calibrate(n_studies: int = 200, seed: int = 0, n_boot: int = 200, starts=None, x_N: float = 3.0,
              x_D: float = 2.0, first: int = 0) -> tuple[pd.DataFrame, dict]:
    """Studies ``first`` .. ``first + n_studies - 1`` of series ``seed``, each through
    :func:`one_study`: (one record per study, :func:`summarise`'s summary plus ``seconds``)."""
    t0 = time.perf_counter()
    recs = pd.DataFrame([one_study(i, seed, n_boot, starts, x_N, x_D) for i in range(first, first + n_studies)])
    recs["in_ci"] = (recs["ci_lo"] <= recs["truth"]) & (recs["truth"] <= recs["ci_hi"])
    recs["in_pi"] = (recs["pi_lo"] <= recs["observed"]) & (recs["observed"] <= recs["pi_hi"])
    recs["err"] = (recs["predicted"] - recs["truth"]) / recs["truth"]
    return recs, {**summarise(recs, n_boot), "seconds": time.perf_counter() - t0}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis.calibrate", description=__doc__.split("\n")[0])
    ap.add_argument("--studies", type=int, default=200)
    ap.add_argument("--n-boot", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--coarse-starts", action="store_true",
                    help="Approach 3 from 675 of Hoffmann's 4,500 starts (coarse_starts)")
    a = ap.parse_args(argv)
    _, s = calibrate(a.studies, a.seed, a.n_boot, starts=coarse_starts() if a.coarse_starts else None)
    print("| studies | resamples | truth in 95% law interval | fresh run in 95% new-run interval | "
          "median half-width, law | median half-width, new run | median abs error | 90th percentile | max |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| {s['studies']} | {s['n_boot']} | {100 * s['coverage_ci']:.1f}% | {100 * s['coverage_pi']:.1f}% | "
          f"{100 * s['median_ci_halfwidth']:.2f}% | {100 * s['median_pi_halfwidth']:.2f}% | "
          f"{100 * s['median_abs_err']:.2f}% | {100 * s['p90_abs_err']:.2f}% | {100 * s['max_abs_err']:.2f}% |")
    print(f"({s['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
