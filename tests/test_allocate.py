"""Compute allocation against known optima: ``analysis.allocate`` on synthetic studies whose
Approach-3 law is known finds N_opt, D_opt, the loss there and the exponent
a = beta / (alpha + beta) inside its 95% intervals, with intervals no wider than stated; the
best depth of a model family is the true best within one depth; the ``allocation`` section of
fits.json (``analysis.fitting``) covers the known exponent from Approach 3 and, on an IsoFLOP
design, Approach 2; the annealed-frontier check counts depths apart in depth units."""
from __future__ import annotations

import tempfile
import warnings

import numpy as np
import pandas as pd
import pytest

from analysis import allocate as AL
from analysis.allocate import allocate, frontier_check, optimal_allocation
from analysis.fitting import fit_study
from analysis.predict import fit_predictor
from analysis.study import Study
from analysis.synthetic import SyntheticLaw, make_study

# L = E + A/N^alpha + B/D^beta on C = 6 N D
E, A, ALPHA, B, BETA, K = 2.0, 400.0, 0.34, 900.0, 0.28, 6.0
G = (ALPHA * A / (BETA * B)) ** (1 / (ALPHA + BETA))
A_OPT = BETA / (ALPHA + BETA)  # N_opt ~ C^a


def law(N, D):
    return E + A / np.asarray(N, float) ** ALPHA + B / np.asarray(D, float) ** BETA


def truth(C: float) -> dict:
    N = G * (C / K) ** A_OPT
    D = (C / K) ** (1 - A_OPT) / G
    return {"N_opt": N, "D_opt": D, "loss_opt": float(law(N, D)), "a": A_OPT}


def known_study(seed: int, noise: float = 0.005) -> Study:
    """7 sizes (2e4..2e7) x 5 token counts (2e6..2e9), each run's final loss off the law by a
    log-normal factor of sd ``noise``."""
    N, D = np.meshgrid(np.geomspace(2e4, 2e7, 7), np.geomspace(2e6, 2e9, 5))
    N, D = N.ravel(), D.ravel()
    L = law(N, D) * np.exp(np.random.default_rng(seed).normal(0, noise, N.size))
    return Study.from_evaluations(pd.DataFrame({
        "run_id": [f"r{i:02d}" for i in range(N.size)], "n_params": N, "tokens_seen": D, "flops": K * N * D,
        "test_loss_avg": L, "is_final": True, "step": 1}), name=f"<known law {seed}>")


@pytest.fixture(scope="module")
def predictors():
    return [fit_predictor(known_study(s), n_boot=200, seed=s, metrics=["test_loss_avg"]) for s in range(3)]


# inside the grid's compute (up to 2.4e17), and 4x beyond it; the stated bound of the interval
# of the loss at the optimum: +-1% inside, +-2% beyond
@pytest.mark.parametrize("C,loss_bound", [(1e15, 0.01), (1e18, 0.02)])
def test_allocate_finds_the_known_optimum_inside_narrow_intervals(predictors, C, loss_bound):
    t = truth(C)
    for P in predictors:
        o = optimal_allocation(P, C)
        for k in ("N_opt", "D_opt", "loss_opt", "a"):
            lo, hi = o[k + "_ci"]
            assert lo <= t[k] <= hi, (k, o[k], o[k + "_ci"], t[k])
            assert lo <= o[k] <= hi
        # stated bounds: a to +-0.025, N_opt and D_opt to +-15%, the loss there to +-loss_bound
        assert o["a_ci"][1] - o["a_ci"][0] <= 0.05, o["a_ci"]
        for k in ("N_opt", "D_opt"):
            assert o[k + "_ci"][1] / o[k + "_ci"][0] <= 1.15 ** 2, (k, o[k + "_ci"])
        assert o["loss_opt_ci"][1] / o["loss_opt_ci"][0] <= (1 + loss_bound) ** 2, o["loss_opt_ci"]
        assert np.isclose(o["a"] + o["b"], 1.0)


def test_the_best_depth_is_the_true_best_within_one_depth(predictors):
    depth = np.arange(1, 25)
    fam = pd.DataFrame({"depth": depth, "n_params": 2e4 * depth ** 3.0, "flops_per_token": K * 2e4 * depth ** 3.0})
    for C in (1e14, 1e15, 1e16, 1e17):
        N = fam["n_params"].to_numpy()
        true_best = int(depth[np.argmin(law(N, C / (K * N)))])
        for P in predictors:
            al = allocate(P, C, family=fam, neighbours=1)
            assert abs(al["best"] - true_best) <= 1, (C, al["best"], true_best)
            best = next(d for d in al["depths"] if d["best"])
            assert abs(best["predicted"] / float(law(best["n_params"], best["tokens"])) - 1) < 0.005
            assert not al["edge"]


def _fits(**kw):
    with tempfile.TemporaryDirectory() as d, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fit_study(Study.load(make_study(d + "/s", law=SyntheticLaw(), **kw)), n_boot=100)


def test_fits_json_allocation_covers_the_known_exponent():
    law = SyntheticLaw()
    a_true = law.beta / (law.alpha + law.beta)  # 0.452
    rep = _fits(depths=(2, 3, 4, 6, 8, 12), budgets=(1e8, 3e8, 1e9, 3e9))
    for m in ("test_loss_last", "test_loss_avg"):
        a3 = rep.allocation[m].approach3
        assert a3.a_ci[0] <= a_true <= a3.a_ci[1] and a3.a_ci[1] - a3.a_ci[0] <= 0.15, a3
        assert np.isclose(a3.a + a3.b, 1.0)
        assert rep.allocation[m].approach2 is None  # token budgets: no IsoFLOP slices
    # an IsoFLOP design: Approach 2 too, wider (three budgets' parabolas)
    rep = _fits(depths=(2, 3, 4, 6, 8, 12), budgets=(1e16, 1e17, 1e18), unit="flops")
    for m in ("test_loss_last", "test_loss_avg"):
        a3, a2 = rep.allocation[m].approach3, rep.allocation[m].approach2
        assert a3.a_ci[0] <= a_true <= a3.a_ci[1] and a3.a_ci[1] - a3.a_ci[0] <= 0.15, a3
        assert a2.a_ci[0] <= a_true <= a2.a_ci[1] and a2.a_ci[1] - a2.a_ci[0] <= 0.4, a2


def test_the_frontier_check_counts_depth_units(predictors, monkeypatch):
    # frontier points trained at d1, d2, d4, d6, d8; the law recommends d1, d2, d2, d4, d6:
    # list steps apart 0, 0, 1, 1, 1 (every one "within one step"), depth units 0, 0, 2, 2, 2
    P = predictors[0]
    runs = pd.DataFrame({"run_id": [f"p{d}" for d in (1, 2, 4, 6, 8)], "depth": [1, 2, 4, 6, 8],
                         "n_params": [1e4, 2e4, 4e4, 6e4, 8e4], "tokens_seen": 1e6,
                         "flops": [1e10, 2e10, 4e10, 6e10, 8e10], "test_loss_avg": [5.0, 4.0, 3.0, 2.5, 2.2]})
    monkeypatch.setattr(P, "runs", runs)
    rec = {1e10: 1, 2e10: 2, 4e10: 2, 6e10: 4, 8e10: 6}
    monkeypatch.setattr(AL, "allocate", lambda P, C, **kw: {"best": rec[C]})
    fam = pd.DataFrame({"depth": [1, 2, 4, 6, 8]})
    out = frontier_check(P, fam, "test_loss_avg")
    assert [c["steps_apart"] for c in out] == [0, 0, 1, 1, 1]
    assert [c["depth_apart"] for c in out] == [0, 0, 2, 2, 2]
    assert sum(c["within_one"] for c in out) == 2
