"""Calibration of ``analysis.predict`` on synthetic studies whose law is known.

Each study draws a Chinchilla law L = E + A/N^alpha + B/D^beta (E, alpha, beta, and A, B
scaled so that both terms are 20%-100% of E in the middle of the grid), trains nothing, and
"measures" every run of a ladder (``sizes`` model sizes x ``budgets`` token counts, as the
default study's 6 x 3) with multiplicative log-normal noise of a drawn size. The predictor is
fitted exactly as on a real study (Approach 3, whole-run bootstrap), then predicts a target
beyond the ladder (``x_N`` times the largest size at ``x_D`` times the largest token count).
The record per study: the truth there, the prediction, its 95% law interval (``ci``) and
new-run interval (``pi``, judged against a noisy observation). ``summary`` gives the
coverage and the point errors; ``tests/test_predict.py`` requires >= 90% coverage of the
truth over >= 200 studies, and ``python -m analysis.calibrate`` prints the table in
docs/prediction.md. Writes nothing.
"""
from __future__ import annotations

import argparse
import sys

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


def draw_studies(n_studies: int, seed: int = 0, x_N: float = 3.0, x_D: float = 2.0) -> dict:
    """The laws, the ladder's noisy losses (S, n), the target and its truth per study."""
    N, D = ladder()
    Nm, Dm = np.exp(np.log(N).mean()), np.exp(np.log(D).mean())
    laws, L, obs = [], [], []
    tN, tD = N.max() * x_N, D.max() * x_D
    for i in range(n_studies):
        rng = np.random.default_rng([seed, i])
        law = draw_law(rng)
        law["A"] = law["fN"] * law["E"] * Nm ** law["alpha"]
        law["B"] = law["fD"] * law["E"] * Dm ** law["beta"]
        law["truth"] = law["E"] + law["A"] / tN ** law["alpha"] + law["B"] / tD ** law["beta"]
        clean = law["E"] + law["A"] / N ** law["alpha"] + law["B"] / D ** law["beta"]
        L.append(clean * np.exp(rng.normal(0, law["noise"], N.size)))
        obs.append(law["truth"] * np.exp(rng.normal(0, law["noise"])))
        laws.append(law)
    return {"N": N, "D": D, "L": np.array(L), "laws": laws, "observed": np.array(obs), "target": (tN, tD)}


def study_frame(N, D, L) -> pd.DataFrame:
    """One synthetic study as the final rows ``fit_predictor`` reads."""
    return pd.DataFrame({"run_id": [f"r{j:02d}" for j in range(len(N))], "n_params": N, "tokens_seen": D,
                         "flops": 6 * N * D, METRIC: L, "is_final": True, "step": 1})


def one_study(i: int, seed: int = 0, n_boot: int = 200, starts=None, **kw) -> dict:
    """Study ``i`` through ``fit_predictor`` and ``predict`` themselves (what the batched
    :func:`calibrate` is checked against)."""
    d = draw_studies(i + 1, seed, **kw)
    study = Study.from_evaluations(study_frame(d["N"], d["D"], d["L"][i]), name=f"<synthetic {i}>")
    P = fit_predictor(study, n_boot=n_boot, seed=i, use_floor=False, metrics=[METRIC], starts=starts)
    tN, tD = d["target"]
    r = predict(P, {"n_params": tN, "tokens": tD}).iloc[0]
    return {"predicted": float(r["predicted"]), "ci": (float(r["ci_lo"]), float(r["ci_hi"])),
            "pi": (float(r["pi_lo"]), float(r["pi_hi"])), "truth": d["laws"][i]["truth"]}


def coarse_starts() -> np.ndarray:
    """A fifth of Hoffmann's grid (a, b in {0, 10, 20}; e in {-1, 0, 1}; alpha, beta in
    {0, .5, .., 2}): 675 starts, enough to find the basin of these 5-parameter fits."""
    g = hoffmann_grid()
    keep = np.isin(g[:, 0], [0, 10, 20]) & np.isin(g[:, 1], [0, 10, 20]) & np.isin(g[:, 2], [-1, 0, 1])
    return g[keep]


def calibrate(n_studies: int = 200, seed: int = 0, n_boot: int = 200, x_N: float = 3.0,
              x_D: float = 2.0) -> tuple[pd.DataFrame, dict]:
    """Every study at once: the same objective, starts, resamples (a ``StudyResample`` of
    each study's runs, seeded by its index, as ``fit_predictor(seed=i)``) and intervals as
    ``analysis.predict``, batched over studies (one L-BFGS batch for all point fits, one for
    all resamples) so that 200 studies take seconds, not an hour. The point fit is refined
    from the best grid start alone (``fit_chinchilla`` polishes the best five with scipy);
    ``one_study`` runs the unbatched path for comparison (tests/test_predict.py)."""
    from .bootstrap import CI_LEVEL, StudyResample, percentile_ci
    from .chinchilla import approach3

    d = draw_studies(n_studies, seed, x_N, x_D)
    N, D, L = d["N"], d["D"], d["L"]
    S, n = L.shape
    th0, _, _, _ = approach3(N, D, L, starts=coarse_starts(), maxiter=200, ftol=1e-9)
    th, _, _, _ = approach3(N, D, L, starts=th0[:, None, :], maxiter=2000, ftol=1e-15)
    ids = [f"r{j:02d}" for j in range(n)]
    W = np.concatenate([StudyResample(ids, n_boot, i).weights(ids) for i in range(S)])
    tb, fb, _, _ = approach3(N, D, np.repeat(L, n_boot, axis=0), weights=W,
                             starts=np.repeat(th, n_boot, axis=0)[:, None, :])
    tN, tD = d["target"]

    def law(t, n_, d_):
        a, b, e, al, be = (t[..., k] for k in range(5))
        with np.errstate(all="ignore"):
            return np.exp(e) + np.exp(a) / n_ ** al + np.exp(b) / d_ ** be

    point = law(th, tN, tD)
    boot = law(tb, tN, tD).reshape(S, n_boot)
    boot[~np.isfinite(fb.reshape(S, n_boot))] = np.nan
    resid = np.log(L) - np.log(law(th[:, None, :], N[None], D[None]))
    rng = np.random.default_rng(1)
    eps = np.take_along_axis(resid, rng.integers(0, n, (S, n_boot)), 1)
    lo, hi = percentile_ci(boot.T, CI_LEVEL)
    plo, phi = percentile_ci((boot * np.exp(eps)).T, CI_LEVEL)
    truth = np.array([x["truth"] for x in d["laws"]])
    obs = d["observed"]
    recs = pd.DataFrame(d["laws"])
    recs["predicted"], recs["ci_lo"], recs["ci_hi"], recs["pi_lo"], recs["pi_hi"] = point, lo, hi, plo, phi
    recs["observed"] = obs
    recs["err"] = (point - truth) / truth
    recs["in_ci"] = (lo <= truth) & (truth <= hi)
    recs["in_pi"] = (plo <= obs) & (obs <= phi)
    recs["E_fit"] = np.exp(th[:, 2])
    e = recs["err"].abs()
    summary = {"studies": n_studies, "coverage_ci": float(recs["in_ci"].mean()),
               "coverage_pi": float(recs["in_pi"].mean()), "median_abs_err": float(e.median()),
               "mean_abs_err": float(e.mean()), "p90_abs_err": float(e.quantile(0.9)),
               "max_abs_err": float(e.max()), "n_boot": n_boot,
               "median_ci_halfwidth": float(np.median((hi - lo) / 2 / point))}
    return recs, summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis.calibrate", description=__doc__.split("\n")[0])
    ap.add_argument("--studies", type=int, default=200)
    ap.add_argument("--n-boot", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    _, s = calibrate(a.studies, a.seed, a.n_boot)
    print("| studies | resamples | truth in 95% law interval | noisy run in 95% new-run interval | "
          "median abs error | mean | 90th percentile | max |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {s['studies']} | {s['n_boot']} | {100 * s['coverage_ci']:.1f}% | {100 * s['coverage_pi']:.1f}% | "
          f"{100 * s['median_abs_err']:.2f}% | {100 * s['mean_abs_err']:.2f}% | {100 * s['p90_abs_err']:.2f}% | "
          f"{100 * s['max_abs_err']:.2f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
