"""The loss-curve law (analysis/curve.py, the form "curve"): one schedule implementation for the
trainer and the analysis, the areas, recovery of a known synthetic law within its intervals,
leave-one-branch-out, a prediction under another schedule, the report and the command line."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from analysis import curve as K
from analysis.bootstrap import StudyResample, percentile_ci
from analysis.study import Study
from analysis.synthetic import n_params_of
from analysis.synthetic_curve import CurveLaw, make_curve_study
from varscale.schedule import Schedule, areas, history, schedule_of_cell

ROOT = Path(__file__).resolve().parents[1]
TPS = 64 * 30


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    d = make_curve_study(tmp_path_factory.mktemp("curve") / "study")
    shutil.copy(ROOT / "runs/v1/default/study.yaml", d / "study.yaml")  # predict --depth sizes from it
    return d


@pytest.fixture(scope="module")
def report(study):
    from analysis.fitting import fit_study

    return fit_study(study, n_boot=100)


def test_one_schedule_for_trainer_and_analysis():
    import varscale.train.schedule as T

    assert T.Schedule is Schedule and T.schedule_of_cell is schedule_of_cell
    cell = {"total_steps": 313, "schedule": "wsd", "decay_steps": 63, "branch_step": 250,
            "training": {"warmup_frac": 0.05, "hold_frac": 0.0, "final_lr_ratio": 0.01}}
    s = schedule_of_cell(cell)
    assert (s.kind, s.decay_steps, s.final_ratio, s.warmup_steps) == ("wsd", 63, 0.01, 16)
    parent = schedule_of_cell({**cell, "total_steps": 1000, "decay_steps": 0, "branch_step": None})
    h = history(s, parent, 250)
    assert h[:250] == parent.factors(250) and h[250:] == [s.factor(i) for i in range(250, 313)]
    assert h[49] < 1.0 and h[50] == 1.0  # the stable run's warmup (50 of 1000 steps), not the branch's 16
    assert h[-1] == pytest.approx(0.01)
    c = Schedule(1.0, 100, warmup_frac=0.1, final_ratio=0.0, kind="cosine")
    assert c.factor(10) == pytest.approx(1.0) and c.factor(99) == pytest.approx(0.0, abs=1e-12)
    assert c.factor(55) == pytest.approx(0.5, abs=0.02)


def test_areas():
    s1, s2 = areas([0.5, 1.0, 1.0, 1.0])  # a rise (warmup) is no drop
    assert s1 == [0.5, 1.5, 2.5, 3.5] and s2 == [0, 0, 0, 0]
    s1, s2 = areas([1.0, 0.5, 0.5], decay=0.5)
    assert s1 == [1.0, 1.5, 2.0] and s2 == [0.0, 0.5, 0.75]  # m: 0, 0.5, 0.25


def test_curve_points_every_evaluation_with_its_areas(study):
    st = Study.load(study)
    p = K.curve_points(st)
    assert len(p) == 6 * (8 + 3) and p["annealed"].sum() == 18
    stable = p[p["is_stable"]]
    assert (stable["S2"] == 0).all() and not stable["annealed"].any()
    # a stable run's S1 is the sum of its multipliers, in tokens
    r = stable[stable["run_id"] == "d1-stable"].iloc[-1]
    f = schedule_of_cell(st.schedules["d1-stable"]).factors(int(r["step"]))
    assert r["S1"] == pytest.approx(sum(f) * TPS)
    # a branch's S1 includes the stable run's first steps and falls short of its tokens
    b = p[p["annealed"]].iloc[0]
    assert 0.8 * b["tokens_seen"] < b["S1"] < b["tokens_seen"] and b["S2"] > 0


def test_recovers_a_known_curve_law_within_its_intervals(tmp_path):
    # five synthetic studies of the default design (noise 0.2% per run and per evaluation):
    # each parameter's truth inside its 95% interval in >= 4 of 5 (12 seeds: >= 92% each), and
    # the intervals are informative (relative widths bounded), not merely wide
    law = CurveLaw()
    truth = np.array([law.params()[k] for k in K.PARAMS])
    hits, widths = [], []
    for seed in range(5):
        st = Study.load(make_curve_study(tmp_path / f"s{seed}", law=law, rng_seed=seed))
        p = K.curve_points(st)
        args = [p[c].to_numpy(float) for c in ("n_params", "S1", "S2", "test_loss_avg")]
        ends, fs = K.fit_all_starts(*args)
        W = StudyResample(p["run_id"], 200, seed).weights(p["run_id"])
        P = K.to_params(K.fit_law(*args, weights=W, starts=K._distinct(ends, fs, 2))[0])
        lo, hi = percentile_ci(P)
        hits.append((lo <= truth) & (truth <= hi))
        widths.append((hi - lo) / truth)
    cover = np.mean(hits, 0)
    assert (cover >= 0.8).all(), dict(zip(K.PARAMS, cover))
    w = np.median(widths, 0)
    assert (w > 0).all() and (w < [0.15, 0.4, 0.3, 0.1, 0.05, 0.3]).all(), dict(zip(K.PARAMS, w))


def test_report_has_the_curve_law_lobo_and_leave_largest_out(report, tmp_path):
    from analysis.render import format_markdown, format_terminal
    from analysis.results import read_report, write_report

    law = CurveLaw()
    f = next(f for f in report.fits if f.form == "curve" and f.metric == "test_loss_avg")
    for k, v in law.params().items():
        assert f.params[k] == pytest.approx(v, rel=0.1), k
        lo, hi = f.ci[k]
        assert lo < hi
    last = next(f for f in report.fits if f.form == "curve" and f.metric == "test_loss_last")
    assert last.params["C"] == pytest.approx(law.C * law.last_ratio, rel=0.1)
    lobo = f.extra["lobo"]
    assert len(lobo["each"]) == 18 and lobo["max_abs"] < 0.01  # 0.2% noise: well within 1%
    llo = [e for e in report.extrapolation if e.form == "curve" and e.metric == "test_loss_avg"]
    assert len(llo) == 3 and all(abs(e.rel_error) < 0.01 for e in llo)
    assert "curve law" in report.best_law["test_loss_avg"].laws
    md, term = format_markdown(report), format_terminal(report)
    assert "## Loss-curve law (every evaluation)" in md and "(S1/1e6)^-" in md
    assert "leave-one-branch-out max" in term and "(Approach 3:" in term
    path, _ = write_report(report, tmp_path)
    j = json.loads(path.read_text())
    cj = [x for x in j["fits"] if x["form"] == "curve"]
    assert len(cj) == 2 and cj[0]["equation"].startswith("L = ") and "lobo" in cj[0]["extra"]
    back = read_report(path)
    fb = next(x for x in back.fits if x.form == "curve" and x.metric == "test_loss_avg")
    N, S1, S2 = 1e6, 2e6, 2e5
    assert fb.predict(N, (S1, S2)) == pytest.approx(K.predict_law(f.params, N, S1, S2))


def test_predict_under_another_schedule(study):
    # fitted on WSD branches only, asked about cosine and a longer decay: close to the truth
    law = CurveLaw()
    st = Study.load(study)
    N = n_params_of(8, 16)
    for kind, frac in (("cosine", None), ("wsd", 0.5)):
        df = K.predict_curve(st, [{"n_params": N, "tokens": 2.4e6}], kind=kind, decay_frac=frac, n_boot=100)
        S1, S2 = K.target_areas(2.4e6, TPS, kind, frac or 0.2, warmup_frac=0.05, hold_frac=0.0)
        true = law.loss(N, S1, S2)
        r = df[df["metric"] == "test_loss_avg"].iloc[0]
        assert r["S1"] == pytest.approx(S1) and r["S2"] == pytest.approx(S2)
        assert r["predicted"] == pytest.approx(true, rel=0.01)
        assert r["ci_lo"] < r["predicted"] < r["ci_hi"]


def _cli(argv, capsys):
    from varscale.cli import main

    rc = main(argv)
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return rc, out.out, out.err


def test_cli_predict_law_curve(study, capsys):
    rc, out, err = _cli(["predict", str(study), "--law", "curve", "--depth", "8", "--tokens", "2.4e6",
                         "--schedule", "cosine", "--n-boot", "50"], capsys)
    assert rc == 0, err
    assert "loss-curve law of" in out and "cosine" in out and "L_avg" in out
    rc, out, err = _cli(["predict", str(study), "--law", "curve", "--depth", "8", "--tokens", "2.4e6",
                         "--decay-frac", "0.3", "--json", "--n-boot", "50"], capsys)
    assert rc == 0, err
    j = json.loads(out)
    assert {p["schedule"] for p in j["predictions"]} == {"wsd decay 0.3"} and j["schedule"]["decay_frac"] == 0.3
    rc, _, err = _cli(["predict", str(study), "--depth", "8", "--tokens", "2.4e6", "--schedule", "cosine"], capsys)
    assert rc == 2 and "--law curve" in err
    rc, _, err = _cli(["predict", str(study), "--law", "curve", "--depth", "8", "--tokens", "2.4e6",
                       "--decay-frac", "1.5"], capsys)
    assert rc == 2 and "(0, 1)" in err
