import math

import pytest

from varscale.train.schedule import Schedule, peak_lr


def test_peak_lr_paper_rule():
    assert peak_lr(1e-4, 768) == pytest.approx(3e-4)
    assert peak_lr(1e-4, 256, width=64, width_ref=256, width_power=0.5) == pytest.approx(2e-4)


def test_lin0_warmup_hold_decay():
    s = Schedule(peak=1.0, total_steps=1000, warmup_frac=0.02, hold_frac=0.05, final_ratio=0.01)
    assert s.warmup_steps == 20
    assert s.factor(0) == pytest.approx(0.005)
    assert s.factor(10) == pytest.approx(0.005 + 0.995 * 0.5)
    assert s.factor(20) == 1.0
    hold_end = 20 + 0.05 * (1000 - 1 - 20)
    assert s.factor(int(hold_end)) == 1.0
    assert s.factor(999) == pytest.approx(0.01)
    vals = [s.factor(i) for i in range(20, 1000)]
    assert all(b <= a + 1e-12 for a, b in zip(vals, vals[1:]))  # non-increasing after warmup


def test_lin0_tiny_runs_do_not_divide_by_zero():
    for T in (1, 2, 3):
        s = Schedule(peak=1.0, total_steps=T, warmup_frac=0.5)
        assert all(math.isfinite(s.factor(i)) for i in range(T))


def test_wsd_constant_then_linear_decay():
    s = Schedule(peak=2.0, total_steps=100, warmup_frac=0.1, kind="wsd", decay_steps=20, final_ratio=0.0)
    assert s.lr_at(50) == 2.0 and s.lr_at(79) == 2.0
    assert s.lr_at(99) == pytest.approx(0.0)
    assert s.lr_at(89) == pytest.approx(2.0 * (1 - 10 / 20))
    stable = Schedule(peak=2.0, total_steps=100, warmup_frac=0.1, kind="wsd", decay_steps=0)
    assert stable.lr_at(99) == 2.0
