"""Fits recover known laws; intervals cover; Chinchilla's published data gives Epoch's numbers.

Tolerances are a few standard errors of the estimator at the noise used (computed in each
test's comment), so a failure means a bug, not bad luck; all seeds are fixed.
"""
import numpy as np
import pytest
from scipy.optimize import minimize

import analysis
from analysis import chinchilla as ch
from analysis.optim import minimize_batched


def test_power_law_recovers_var_form():
    # y = (k x)^alpha, 8 sizes over two decades, 2% log-normal noise: the slope's standard
    # error is 0.02 / sqrt(sum (log x - mean)^2) = 0.02 / 4.3 = 0.005; tolerance 0.02 = 4 se.
    rng = np.random.default_rng(0)
    x = np.geomspace(1e7, 1e9, 8)
    y = (2.0e-9 * x) ** -0.23 * np.exp(rng.normal(0, 0.02, x.size))
    f = analysis.fit_power_law(x, y, n_boot=1000)
    assert f.alpha == pytest.approx(-0.23, abs=0.02)
    # k = exp(b / alpha): its log error is (intercept error) / alpha, about 10x the slope's
    assert np.log(f.k) == pytest.approx(np.log(2.0e-9), abs=0.02 * abs(np.log(1e8)) / 0.23 + 0.2)
    assert f.r < -0.99 and f.n == 8 and f.n_boot == 1000
    lo, hi = f.ci["alpha"]
    assert lo < f.alpha < hi
    assert f.alpha_ci == f.ci["alpha"]


def test_power_law_exact_and_pearson():
    x = np.array([1.0, 10.0, 100.0, 1000.0])
    f = analysis.fit_power_law(x, (0.5 * x) ** -0.1, n_boot=0)
    assert f.alpha == pytest.approx(-0.1, abs=1e-12)
    assert f.k == pytest.approx(0.5, rel=1e-10)
    assert f.r == pytest.approx(-1.0, abs=1e-12)
    assert "k" not in f.ci  # no resamples asked for


def test_power_law_intervals_cover_about_95_percent():
    # 300 repeated experiments (10 sizes x 2 seeds, 3% noise), 1000 resamples each. The
    # case bootstrap's percentile interval is known to run slightly narrow at n = 20
    # (measured 0.92 here); the band allows that plus 3 binomial sd (0.016) either side.
    rng = np.random.default_rng(1)
    x = np.repeat(np.geomspace(1e6, 1e8, 10), 2)
    runs = np.arange(x.size)
    hits = 0
    T = 300
    for t in range(T):
        y = (2e-6 * x) ** -0.2 * np.exp(rng.normal(0, 0.03, x.size))
        f = analysis.fit_power_law(x, y, groups=runs, n_boot=1000, seed=t)
        lo, hi = f.ci["alpha"]
        hits += lo <= -0.2 <= hi
    assert 0.87 <= hits / T <= 0.99


def test_bootstrap_resamples_whole_runs():
    # 6 runs, each with its own slope, 30 evaluations each: resampling runs varies the mix
    # of slopes; resampling points keeps about 30 of each run and barely moves the fit
    rng = np.random.default_rng(5)
    slopes = rng.normal(-0.5, 0.05, 6)
    x = np.tile(np.geomspace(1, 100, 30), 6)
    runs = np.repeat(np.arange(6), 30)
    y = x ** slopes[runs] * np.exp(rng.normal(0, 0.002, x.size))
    by_run = analysis.fit_power_law(x, y, groups=runs, n_boot=500)
    by_point = analysis.fit_power_law(x, y, n_boot=500)
    assert by_run.n_runs == 6 and by_point.n_runs == 180
    w_run = np.diff(by_run.ci["alpha"])[0]
    w_point = np.diff(by_point.ci["alpha"])[0]
    assert w_run > 2 * w_point  # measured 2.6


def test_saturating_recovers_floor_and_exponent():
    # y = E + (x0/x)^alpha with 0.5% noise over 3 decades; tolerances from the bootstrap
    # spread at this noise (alpha sd ~0.02, E sd ~0.02)
    rng = np.random.default_rng(2)
    x = np.geomspace(1e6, 1e9, 12)
    y = (1.5 + (3e5 / x) ** 0.3) * np.exp(rng.normal(0, 0.005, x.size))
    f = analysis.fit_saturating(x, y, n_boot=200)
    assert f.E == pytest.approx(1.5, abs=0.08)
    assert f.alpha == pytest.approx(0.3, abs=0.06)
    assert f.ci["alpha"][0] <= 0.3 <= f.ci["alpha"][1]
    assert not [w for w in f.warnings if "converged" in w]


def test_saturating_warns_when_no_floor():
    x = np.geomspace(1e6, 1e9, 8)
    f = analysis.fit_saturating(x, (x / 1e3) ** -0.2, n_boot=0)
    assert any("bound 0" in w for w in f.warnings)


def test_extrapolation_check_on_exact_law():
    x = np.geomspace(1e6, 1e9, 6)
    e = analysis.extrapolation_check(x, (1e-3 * x) ** -0.2)
    assert e["x_held_out"] == pytest.approx(1e9)
    assert abs(e["rel_error"]) < 1e-10
    e = analysis.extrapolation_check(x, (1e-3 * x) ** -0.2 * np.array([1, 1, 1, 1, 1, 1.1]))
    assert e["rel_error"] == pytest.approx(1 / 1.1 - 1, rel=1e-6)


def test_batched_lbfgs_matches_scipy():
    # Rosenbrock-like problems in a batch against scipy's L-BFGS-B, one by one
    c = np.array([1.0, 2.0, 5.0, 10.0])

    def fg(th, rows):
        x, y = th[:, 0], th[:, 1]
        cc = c[rows]
        f = (1 - x) ** 2 + cc * (y - x * x) ** 2
        g = np.stack([-2 * (1 - x) - 4 * cc * x * (y - x * x), 2 * cc * (y - x * x)], 1)
        return f, g

    res = minimize_batched(fg, np.tile([-1.2, 1.0], (4, 1)))
    assert res.converged.all()
    np.testing.assert_allclose(res.x, 1.0, atol=1e-5)


def _chinchilla_points(shared_data):
    import pandas as pd

    df = pd.read_csv(shared_data / "chinchilla_svg_extracted.csv")
    df = df.sort_values("loss").iloc[:-5]  # Epoch AI drop the 5 highest-loss points
    N = df["Model Size"].to_numpy(float)
    D = df["Training FLOP"].to_numpy(float) / (6 * N)
    return N, D, df["loss"].to_numpy(float)


def test_chinchilla_reproduces_epoch(shared_data):
    N, D, L = _chinchilla_points(shared_data)
    assert L.size == 240
    f = analysis.fit_chinchilla(N, D, L, n_boot=0)
    assert f.E == pytest.approx(1.817, abs=0.01)
    assert f.alpha == pytest.approx(0.348, abs=0.01)
    assert f.beta == pytest.approx(0.366, abs=0.01)
    assert f.A == pytest.approx(482.0, rel=0.10)
    assert f.B == pytest.approx(2085.4, rel=0.10)
    assert not f.warnings
    assert f.extra["starts"] == 4500


def test_chinchilla_objective_gradient_is_analytic():
    rng = np.random.default_rng(3)
    N = np.geomspace(1e7, 1e10, 30)
    D = np.geomspace(1e9, 1e11, 30)[rng.permutation(30)]
    L = 1.7 + 400 / N ** 0.34 + 2000 / D ** 0.28 + rng.normal(0, 0.01, 30)
    lN, lD, lL = np.log(N), np.log(D), np.log(L)
    th = np.array([[6.0, 7.5, 0.5, 0.3, 0.3]])
    f0, g = ch._objective(th, lN, lD, lL, None, 1.0)  # a wide delta: smooth everywhere
    eps = 1e-6
    num = [(ch._objective(th + eps * np.eye(5)[i], lN, lD, lL, None, 1.0)[0]
            - ch._objective(th - eps * np.eye(5)[i], lN, lD, lL, None, 1.0)[0]) / (2 * eps)
           for i in range(5)]
    np.testing.assert_allclose(g[0], np.ravel(num), rtol=1e-5, atol=1e-9)


def test_chinchilla_recovers_synthetic_law_with_intervals():
    # a 6 x 6 grid of (N, D), 0.5% noise: alpha, beta within 0.03 (bootstrap sd ~0.01)
    rng = np.random.default_rng(4)
    N, D = (a.ravel() for a in np.meshgrid(np.geomspace(1e7, 3e9, 6), np.geomspace(1e9, 3e11, 6)))
    L = (1.8 + 450 / N ** 0.34 + 2000 / D ** 0.30) * np.exp(rng.normal(0, 0.005, N.size))
    f = analysis.fit_chinchilla(N, D, L, n_boot=200)
    assert f.alpha == pytest.approx(0.34, abs=0.03)
    assert f.beta == pytest.approx(0.30, abs=0.03)
    assert f.E == pytest.approx(1.8, abs=0.1)
    for k in ("E", "alpha", "beta", "a_opt"):
        lo, hi = f.ci[k]
        assert lo <= f.params[k] <= hi
    assert f.ci["alpha"][0] <= 0.34 <= f.ci["alpha"][1]


def test_isoflop_finds_the_optimum_and_flags_edges():
    # L(N, D) with alpha = beta: the optimum N grows as C^0.5
    E, A, B, a, b = 1.7, 400.0, 400.0, 0.3, 0.3
    rows = []
    for C in (1e18, 1e19, 1e20):
        nopt = (C / 6) ** 0.5
        for N in nopt * np.geomspace(0.1, 10, 7):
            rows.append((N, C, E + A / N ** a + B / (C / (6 * N)) ** b))
    N, C, L = map(np.array, zip(*rows))
    res = analysis.isoflop(N, C, L, n_boot=100)
    assert res["N_opt"].alpha == pytest.approx(0.5, abs=0.03)
    assert res["D_opt"].alpha == pytest.approx(0.5, abs=0.03)
    # only the small half of the sizes: the vertex lies beyond the largest model trained
    small = N < np.array([(c / 6) ** 0.5 for c in C]) * 0.9
    res2 = analysis.isoflop(N[small], C[small], L[small], n_boot=0)
    assert any("edge" in (p["warning"] or "") for p in res2["parabolas"])


def test_chinchilla_extrapolation_check():
    N, D = (a.ravel() for a in np.meshgrid(np.geomspace(1e7, 3e9, 5), np.geomspace(1e9, 3e11, 4)))
    L = 1.8 + 450 / N ** 0.34 + 2000 / D ** 0.30
    e = analysis.extrapolation_check_chinchilla(N, D, L)
    assert e["x_held_out"] == pytest.approx(3e9) and e["n_fit"] == 16
    assert abs(e["rel_error"]) < 1e-3


@pytest.mark.slow
def test_chinchilla_intervals_cover():
    # 40 repeated 6 x 6 experiments, 1% noise, 300 resamples each: coverage of alpha and beta
    hits = np.zeros(2)
    T = 40
    N, D = (a.ravel() for a in np.meshgrid(np.geomspace(1e7, 3e9, 6), np.geomspace(1e9, 3e11, 6)))
    for t in range(T):
        rng = np.random.default_rng(100 + t)
        L = (1.8 + 450 / N ** 0.34 + 2000 / D ** 0.30) * np.exp(rng.normal(0, 0.01, N.size))
        f = analysis.fit_chinchilla(N, D, L, n_boot=300, seed=t)
        hits += [f.ci["alpha"][0] <= 0.34 <= f.ci["alpha"][1], f.ci["beta"][0] <= 0.30 <= f.ci["beta"][1]]
    assert (hits / T >= 0.8).all(), hits / T


@pytest.mark.slow
def test_saturating_intervals_cover():
    # 60 repeated experiments, 12 sizes, 1% noise, 1000 resamples: measured 0.95
    rng = np.random.default_rng(7)
    x = np.geomspace(1e6, 1e9, 12)
    hits = 0
    T = 60
    for t in range(T):
        y = (1.5 + (3e5 / x) ** 0.3) * np.exp(rng.normal(0, 0.01, x.size))
        f = analysis.fit_saturating(x, y, n_boot=1000, seed=t)
        hits += f.ci["alpha"][0] <= 0.3 <= f.ci["alpha"][1]
    assert 0.85 <= hits / T <= 1.0


def test_isoflop_groups_budgets_that_differ_by_float_noise(tmp_path):
    """fits.md's IsoFLOP table has one row per FLOP budget when the rows' budgets differ by 1e-12
    relative (the float rounding of C = 6 N D), each parabola through every size of its budget,
    and the laws vs N have one slice per budget; budgets 1e-7 apart stay two."""
    import pyarrow.parquet as pq

    from analysis import synthetic
    from analysis.chinchilla import same_budgets
    from analysis.fitting import fit_study
    from analysis.render import format_markdown
    from analysis.study import Study
    from varscale.schema import METRICS_SCHEMA, write_rows

    d = synthetic.make_study(tmp_path / "s", depths=(2, 3, 4, 6, 8), budgets=(1e14, 1e15), unit="flops")
    for part in sorted((d / "cells").glob("d[36]-*/metrics/part-*.parquet")):
        rows = pq.read_table(part).to_pylist()
        write_rows(part, [{**r, "budget_flops": r["budget_flops"] * (1 + 1e-12)} for r in rows], METRICS_SCHEMA)
    study = Study.load(d)
    assert study.final["budget_flops"].nunique() == 4  # the noise is in the rows: 2 budgets read as 4
    assert study.final["budget"].nunique() == 2  # and the study's budget axis makes them one slice each
    md = format_markdown(fit_study(study, n_boot=0, chinchilla_boot=0))
    table = md.split("## IsoFLOP parabolas (L_avg)")[1].split("\n\n")[1].splitlines()[2:]
    assert [ln.split(" | ")[0] for ln in table] == ["| 1e+14", "| 1e+15"], table
    assert "fewer than 3 sizes" not in md
    assert md.count("| L_avg | budget_flops=1e+14 | reducible |") == 1
    # the grouping itself: noise across a rounding edge is one budget, 1e-7 apart two
    b = same_budgets([1e15, 1e15 * (1 + 1e-12), 1e15 * (1 - 1e-12), 1.23456789995e15 * (1 - 1e-12),
                      1.23456789995e15 * (1 + 1e-12), 1e15 * (1 + 1e-7)])
    assert b[0] == b[1] == b[2] == 1e15 and b[3] == b[4] and b[5] == 1.0000001e15 and len(set(b)) == 3
