"""The intervals of ``analysis.predict`` calibrated on synthetic studies with known laws,
through the code users call (``analysis.calibrate``: ``fit_predictor`` then ``predict`` per
study). Both sides of the claim: the 95% intervals cover (the law's the noise-free truth, the
new run's a fresh noisy run of the target) in 90%-99% of 200 studies, and they are narrow:
their median half-width is at most 5 times the median absolute error of the prediction (a
normal error's 95% half-width is 2.9 times its median absolute value) and under a stated
percentage of the prediction. 200 studies took 991 s here, on two cores shared with other
work (marked slow); the default run checks 40 of them with a wider band, stated below.

    python -m analysis.calibrate --studies 200 --n-boot 200   # the numbers of docs/prediction.md
"""
from __future__ import annotations

import pytest

from analysis import calibrate as CAL


def _report(s: dict) -> str:
    return (f"{s['studies']} studies, {s['n_boot']} resamples: truth in the 95% law interval "
            f"{100 * s['coverage_ci']:.1f}%, fresh run in the 95% new-run interval {100 * s['coverage_pi']:.1f}%, "
            f"median half-width {100 * s['median_ci_halfwidth']:.2f}% (law) / {100 * s['median_pi_halfwidth']:.2f}% "
            f"(new run), median abs error {100 * s['median_abs_err']:.2f}%, {s['seconds']:.0f} s")


def _narrow(s: dict, most: float) -> None:
    # narrow: no wider than the errors call for, and under `most` of the prediction
    assert s["median_ci_halfwidth"] <= 5 * s["median_abs_err"], s
    assert s["median_ci_halfwidth"] <= most and s["median_pi_halfwidth"] <= most, s
    # the new run's interval holds the law's and a run's scatter: not narrower than the law's
    assert s["median_pi_halfwidth"] >= s["median_ci_halfwidth"], s


@pytest.mark.slow
def test_intervals_cover_in_90_to_99_percent_of_200_studies():
    recs, s = CAL.calibrate(200, n_boot=200)  # Hoffmann's 4,500 starts, as users call it
    print(_report(s))
    assert s["studies"] == 200 and recs["predicted"].notna().all()
    assert 0.90 <= s["coverage_ci"] <= 0.99, s
    assert 0.90 <= s["coverage_pi"] <= 0.99, s
    _narrow(s, most=0.05)


def test_intervals_cover_in_40_studies():
    # the first 40 of the 200, 100 resamples, Approach 3 from 675 of Hoffmann's starts
    # (fit_predictor's `starts`). The wider band of 40 studies: at a true 95%, >= 33 of 40
    # with 99.9% probability, so >= 80% each; 40 of 40 happens 13% of the time, so the upper
    # side here is the narrowness alone.
    recs, s = CAL.calibrate(40, n_boot=100, starts=CAL.coarse_starts())
    print(_report(s))
    assert s["studies"] == 40 and recs["predicted"].notna().all()
    assert s["coverage_ci"] >= 0.80 and s["coverage_pi"] >= 0.80, s
    _narrow(s, most=0.05)
