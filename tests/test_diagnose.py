"""The rule that names the faulty term of a checked law (analysis.diagnose.diagnose, documented in
docs/prediction.md, "Which term is at fault"), on synthetic target sets where the fault is
known: the N term (targets at larger N off by a factor growing with N), the D term (growing
with D), the floor (one absolute offset on every loss), curvature (errors changing sign across
the range of compute) and none (errors within a run's scatter). Each set is drawn with 40
noise seeds; the rule must name the planted term (and, for none, no term) in most of them and
a wrong single term in few."""
from __future__ import annotations

import math

import numpy as np
import pytest

from analysis.diagnose import _diagnose, diagnose, extrapolation

# a pilot like the default study: sizes 1.5e4..2.5e6, tokens 6e5..2.4e6
RANGE = {"n_params": [1.5e4, 2.5e6], "tokens": [6e5, 2.4e6], "flops": [6 * 1.5e4 * 6e5, 6 * 2.5e6 * 2.4e6]}
TARGETS = [(7.5e6, 6e5), (7.5e6, 1.2e6), (7.5e6, 2.4e6), (2.5e7, 1.2e6),  # larger models at fitted D
           (2.5e6, 3.6e6), (2.5e6, 4.8e6), (2.5e6, 9.6e6), (1e6, 4.8e6),  # more tokens at fitted N
           (7.5e6, 4.8e6),  # both
           (1e6, 1.2e6)]  # inside the fitted range
SIGMA = 0.004  # a run's scatter, relative
SEEDS = range(40)


def law(N, D):
    return 2.0 + 60.0 / N ** 0.3 + 300.0 / D ** 0.35


def u_v_logC():
    u = np.array([extrapolation(n, *RANGE["n_params"]) for n, _ in TARGETS])
    v = np.array([extrapolation(d, *RANGE["tokens"]) for _, d in TARGETS])
    return u, v, np.log([6 * n * d for n, d in TARGETS])


def target_set(kind: str, seed: int, size: float = 1.0):
    """(predicted, observed) per target: the prediction is the law; the observation is the
    truth, which departs from the law as ``kind`` says, times a run's noise."""
    N = np.array([t[0] for t in TARGETS])
    D = np.array([t[1] for t in TARGETS])
    pred = law(N, D)
    u, v, w = u_v_logC()
    if kind == "none":
        truth = pred
    elif kind == "N":  # predictions too high by a factor growing with N beyond the pilot's sizes
        truth = pred * np.exp(-0.012 * size * u)
    elif kind == "D":  # too low by a factor growing with D beyond the pilot's token counts
        truth = pred * np.exp(0.02 * size * v)
    elif kind == "floor":  # the floor E is 0.05 nats too high: every loss off by the same amount
        truth = pred - 0.05 * size
    elif kind == "curvature":  # the law's shape: too high in the middle of the range of C, too low at its ends
        t = (w - (w.max() + w.min()) / 2) / (np.ptp(w) / 2)  # -1 .. 1
        truth = pred * np.exp(0.03 * size * (t ** 2 - 0.5))
    else:
        raise ValueError(kind)
    obs = truth * np.exp(np.random.default_rng(seed).normal(0, SIGMA, len(TARGETS)))
    return pred, obs


def rows_of(pred, obs, metric="test_loss_avg"):
    """Rows as analysis.check.check_predictions makes them."""
    out = []
    for (n, d), p, o in zip(TARGETS, pred, obs):
        out.append({"run_id": f"N{n:.2g}-D{d:.2g}", "metric": metric, "n_params": n, "tokens": d, "flops": 6 * n * d,
                    "x_N": n / RANGE["n_params"][1], "x_D": d / RANGE["tokens"][1],
                    "x_C": 6 * n * d / RANGE["flops"][1], "predicted": p, "observed": o, "err": (p - o) / o,
                    "pi": [p * 0.97, p * 1.03], "ci": [p * 0.98, p * 1.02]})
    return out


REC = {"fitted_range": RANGE, "run_sd": {"test_loss_avg": SIGMA}}


def terms(kind: str, size: float = 1.0) -> list[str]:
    return [_diagnose(rows_of(*target_set(kind, s, size)), "test_loss_avg", REC)["term"] for s in SEEDS]


def share(ts, term) -> float:
    return sum(t == term for t in ts) / len(ts)


def test_the_planted_sets_are_what_they_claim():
    # the sets themselves: the fault is large against the noise where it acts and absent where it does not
    u, v, _ = u_v_logC()
    pred, obs = target_set("N", 0)
    err = (pred - obs) / obs
    assert err[u > 0].mean() > 3 * SIGMA and abs(err[u == 0]).max() < 3 * SIGMA
    pred, obs = target_set("D", 0)
    err = (pred - obs) / obs
    assert err[v > 0].mean() < -3 * SIGMA and abs(err[v == 0]).max() < 3 * SIGMA
    pred, obs = target_set("floor", 0)
    assert ((pred - obs) / obs > 0.005).all()
    pred, obs = target_set("curvature", 0)
    err = (pred - obs) / obs
    assert err.max() > 0.005 and err.min() < -0.005


@pytest.mark.parametrize("kind", ["N", "D", "floor"])
def test_a_faulty_term_is_named(kind):
    ts = terms(kind)
    assert share(ts, kind) >= 0.9, ts
    # never another single term
    assert share(ts, {"N": "D", "D": "N", "floor": "N"}[kind]) == 0
    assert share(ts, "none") == 0


def test_curvature_is_named_when_errors_change_sign():
    ts = terms("curvature")
    assert share(ts, "curvature") >= 0.9, ts
    assert share(ts, "none") == 0


def test_errors_within_noise_name_no_term():
    ts = terms("none")
    # each of the rule's tests is at 95%: in noise alone it names a term in few sets
    assert share(ts, "none") >= 0.8, ts
    assert share(ts, "curvature") <= 0.05


def test_a_small_fault_is_none_and_a_large_one_is_named():
    # both sides: a tenth of the fault mostly hides in the noise (none in 73% of 400 draws,
    # against 86% for no fault); the full fault does not
    assert share(terms("D", size=0.1), "none") >= 0.6
    assert share(terms("D", size=1.0), "D") >= 0.9


def test_targets_that_cannot_separate_two_terms_say_so():
    # every target at the same larger N and inside the fitted tokens: N term and floor look alike
    global TARGETS
    saved = TARGETS
    TARGETS = [(7.5e6, d) for d in (6e5, 8e5, 1e6, 1.2e6, 1.6e6, 2.4e6)]
    try:
        d = _diagnose(rows_of(*target_set("N", 0, size=2.0)), "test_loss_avg", REC)
    finally:
        TARGETS = saved
    assert d["term"] in ("N", "floor") and d["also"] == [{"N": "floor", "floor": "N"}[d["term"]]]
    assert "do not tell them apart" in d["text"]


def test_too_few_targets_or_no_noise_scale_give_no_term():
    pred, obs = target_set("N", 0)
    d = diagnose(((pred - obs) / obs)[:2], obs[:2], [1, 2], [0, 0], [1, 2], SIGMA)
    assert d["term"] is None and "too few targets" in d["text"]
    d = diagnose((pred - obs) / obs, obs, *u_v_logC(), sigma=None)
    assert d["term"] is None


def test_extrapolation_in_e_folds():
    assert extrapolation(5e6, 1e4, 2.5e6) == pytest.approx(math.log(2))
    assert extrapolation(1e6, 1e4, 2.5e6) == 0.0
    assert extrapolation(5e3, 1e4, 2.5e6) == pytest.approx(math.log(0.5))


def test_the_noise_scale_falls_back_to_the_intervals():
    # a record without run_sd (format 1): a run's scatter from the width of the new-run
    # interval beyond the law's (here both symmetric: sqrt(ln(1.03/0.97)^2 - ln(1.02/0.98)^2)/2/1.96)
    pred, obs = target_set("D", 0)
    d = _diagnose(rows_of(pred, obs), "test_loss_avg", {"fitted_range": RANGE})
    want = math.sqrt(math.log(1.03 / 0.97) ** 2 - math.log(1.02 / 0.98) ** 2) / 2 / 1.96
    assert d["sigma"] == pytest.approx(want) and d["sigma_source"] == "the intervals"
    assert d["term"] == "D"


def test_the_named_term_carries_the_planted_size():
    # predictions 1.2% too high per e-fold of N, 2% too low per e-fold of D, 0.05 nats too high
    d = _diagnose(rows_of(*target_set("N", 0)), "test_loss_avg", REC)
    assert 0.010 < d["coef"]["N"] < 0.014 and "+1.2" in d["text"] and "larger models come out higher" in d["text"]
    d = _diagnose(rows_of(*target_set("D", 0)), "test_loss_avg", REC)
    assert -0.023 < d["coef"]["D"] < -0.017 and "more tokens come out lower" in d["text"]
    pred, obs = target_set("floor", 0)
    d = _diagnose(rows_of(pred, obs), "test_loss_avg", REC)
    assert 0.04 < d["floor_offset"] < 0.06 and np.isclose(d["floor_offset"], d["coef"]["floor"] * obs.mean())
    assert "every prediction higher than observed" in d["text"]
