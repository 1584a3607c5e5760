"""Predictions from a study's laws: analysis.predict, the predictor kept in the report
folder, varscale predict / allocate, plan --predict-from and varscale check (alias fit
--check-predictions) on a tiny synthetic ladder and target, and the calibration of the
intervals on 200 synthetic studies with known laws."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import calibrate as CAL
from analysis import predictor_cache as PC
from analysis.allocate import allocate
from analysis.check import check_predictions, format_check, prediction_record, write_predictions
from analysis.predict import PredictError, fit_hash, fit_predictor, predict
from analysis.results import FloorEntry
from analysis.study import Study
from analysis.synthetic import SyntheticLaw, make_study, n_params_of
from varscale.schema import METRICS_SCHEMA, StudyLayout, read_parts, write_rows

ROOT = Path(__file__).resolve().parents[1]
LAW = SyntheticLaw()
NB = 40  # resamples: enough for the machinery, not for the calibration below


@pytest.fixture(scope="module")
def pilot(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("pred") / "pilot"
    make_study(d, depths=(2, 3, 4, 6, 8), budgets=(1e8, 3e8, 1e9), law=LAW)
    shutil.copy(ROOT / "runs/default/study.yaml", d / "study.yaml")  # for the command line
    return d


@pytest.fixture(scope="module")
def P(pilot):
    return fit_predictor(Study.load(pilot), n_boot=NB)


def test_predict_frame_intervals_and_warnings(P):
    N8, N12 = n_params_of(8), n_params_of(12)
    df = predict(P, [{"n_params": N12, "tokens": 2e9, "depth": 12}, {"n_params": 30 * N8, "tokens": 1e9}])
    assert set(df["metric"]) == {"test_loss_last", "test_loss_avg", "test_err_last", "test_err_avg"}
    assert len(df) == 8
    for _, r in df.iterrows():
        assert r["ci_lo"] <= r["predicted"] <= r["ci_hi"]
        assert r["pi_lo"] <= r["ci_hi"] and r["pi_hi"] >= r["ci_lo"]
    avg = df[(df["metric"] == "test_loss_avg") & (df["depth"] == 12)].iloc[0]
    truth = LAW.true_avg(N12, 2e9)
    assert abs(avg["predicted"] - truth) / truth < 0.03
    assert avg["warning"] == ""
    far = df[df["target"] != avg["target"]]
    assert far["warning"].str.contains("10x beyond the fitted range").all()
    # the floor (token entropy of the synthetic cache) gives the reducible loss
    assert np.isclose(avg["reducible"], avg["predicted"] - avg["floor"])
    assert df.attrs["fit_hash"] == P.fit_hash
    fl = df.attrs["floor"]["test_loss_avg"]
    assert isinstance(fl, FloorEntry) and fl.source == "token entropy" and fl.E == avg["floor"]


def test_targets_need_a_size_and_a_budget(P):
    with pytest.raises(PredictError, match="token count or a compute"):
        predict(P, {"n_params": 1e6})
    with pytest.raises(PredictError, match="> 0"):
        predict(P, {"n_params": -1.0, "tokens": 1e9})
    # flops alone converts with the study's FLOPs per parameter-token
    df = predict(P, {"n_params": 1e7, "flops": 6.2e7 * 1e9}, metrics=["test_loss_avg"])
    assert np.isclose(df["tokens"][0], 1e9)


def test_fit_hash_follows_the_runs(P):
    runs = P.runs.copy()
    assert fit_hash(runs, NB, 0) == P.fit_hash
    runs.loc[0, "test_loss_avg"] += 1e-6
    assert fit_hash(runs, NB, 0) != P.fit_hash
    assert fit_hash(P.runs, NB + 1, 0) != P.fit_hash


def test_allocate_matches_the_known_law(P):
    C = 1e17
    al = allocate(P, C, neighbours=1)
    c = al["continuous"]
    a_true = LAW.beta / (LAW.alpha + LAW.beta)
    assert c["a_ci"][0] - 0.05 <= a_true <= c["a_ci"][1] + 0.05
    assert np.isclose(c["a"] + c["b"], 1.0)
    assert c["N_opt_ci"][0] <= c["N_opt"] <= c["N_opt_ci"][1]
    best = [d for d in al["depths"] if d["best"]]
    assert len(best) == 1 and best[0]["depth"] == al["best"]
    assert set(best[0]["metrics"]) == {"L_last", "L_avg", "Err_last", "Err_avg"}
    # the best depth's prediction is the lowest of those shown
    assert best[0]["predicted"] == min(d["predicted"] for d in al["depths"])


def test_too_few_runs_is_one_sentence(tmp_path):
    d = make_study(tmp_path / "small", depths=(2, 3), budgets=(1e8,))
    with pytest.raises(PredictError, match=">= 6 finished runs"):
        fit_predictor(d, n_boot=NB)  # a folder is read as a Study
    with pytest.raises(PredictError, match=">= 6 finished runs"):
        PC.cached_predictor(Study.load(d), n_boot=NB)
    assert not StudyLayout.of(d).predictor_caches()


# --------------------------------------------------------------------------- the kept predictor


@pytest.fixture
def counted(monkeypatch):
    """How often analysis.predictor_cache fits a predictor."""
    calls = []
    real = PC.fit_predictor

    def fit(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(PC, "fit_predictor", fit)
    return calls


TARGETS = [{"n_params": 1e7, "tokens": 2e9, "depth": 12}, {"n_params": 3e6, "flops": 1e17}]


def test_kept_predictor_answers_without_refitting(tmp_path, counted):
    # token entropies above the losses: the floor is Approach 3's E, refitted per resample
    d = make_study(tmp_path / "s", depths=(2, 3, 4, 6), budgets=(1e8, 1e9), law=LAW, entropy_shift=2.0)
    P1 = PC.cached_predictor(Study.load(d), n_boot=NB)
    files = StudyLayout.of(d).predictor_caches()
    assert len(counted) == 1 and len(files) == 1 and files[0].name.startswith("predictor-")
    assert P1.floor["test_loss_avg"].source == "chinchilla" and P1.E_samples["test_loss_avg"] is not None
    P2 = PC.cached_predictor(Study.load(d), n_boot=NB)
    assert len(counted) == 1  # read, not fitted
    a, b = predict(P1, TARGETS), predict(P2, TARGETS)
    pd.testing.assert_frame_equal(a, b)
    assert a.attrs == b.attrs and P2.fit_hash == P1.fit_hash and P2.notes == P1.notes
    pd.testing.assert_frame_equal(P1.runs, P2.runs)
    assert allocate(P1, 1e17) == allocate(P2, 1e17)
    # other settings are another file
    PC.cached_predictor(Study.load(d), n_boot=NB, metrics=["test_loss_avg"])
    assert len(counted) == 2 and len(StudyLayout.of(d).predictor_caches()) == 2


def test_a_changed_study_refits(tmp_path, counted):
    d = make_study(tmp_path / "s", depths=(2, 3, 4, 6), budgets=(1e8, 1e9), law=LAW)
    kw = dict(n_boot=NB, metrics=["test_loss_avg"])
    P1 = PC.cached_predictor(Study.load(d), **kw)
    # one run's final evaluation is written again with another L_avg
    lay = StudyLayout.of(d)
    part = sorted(lay.cell(sorted(P1.runs["run_id"])[0]).metrics_dir.glob("part-*.parquet"))[-1]
    rows = read_parts([part]).to_pylist()
    rows[0]["test_loss_avg"] *= 1.01
    write_rows(part, rows, METRICS_SCHEMA)
    P2 = PC.cached_predictor(Study.load(d), **kw)
    assert len(counted) == 2 and P2.fit_hash != P1.fit_hash
    assert len(lay.predictor_caches()) == 2
    rows[0]["test_loss_avg"] /= 1.01  # back as it was: the first file answers
    write_rows(part, rows, METRICS_SCHEMA)
    P3 = PC.cached_predictor(Study.load(d), **kw)
    assert len(counted) == 2 and P3.fit_hash == P1.fit_hash


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "other key"])
def test_a_damaged_kept_predictor_refits(tmp_path, counted, damage):
    d = make_study(tmp_path / "s", depths=(2, 3, 4, 6), budgets=(1e8, 1e9), law=LAW)
    kw = dict(n_boot=NB, metrics=["test_loss_avg"])
    P1 = PC.cached_predictor(Study.load(d), **kw)
    (f,) = StudyLayout.of(d).predictor_caches()
    good = f.read_bytes()
    key = f.stem.split("-", 1)[1]
    if damage == "truncated":
        f.write_bytes(good[: len(good) // 2])
    elif damage == "garbage":
        f.write_bytes(good[:100] + bytes(200) + good[300:])
    elif damage == "empty":
        f.write_bytes(b"")
    else:  # a whole file written under another key
        f.write_bytes(PC.encode(P1, "0" * 16))
    damaged = f.read_bytes()
    assert PC.read_predictor(f, key) is None
    P2 = PC.cached_predictor(Study.load(d), **kw)
    assert len(counted) == 2  # fitted again ...
    assert f.read_bytes() != damaged  # ... and written over
    assert PC.read_predictor(f, key) is not None
    pd.testing.assert_frame_equal(predict(P1, TARGETS), predict(P2, TARGETS))


# --------------------------------------------------------------------------- command line


def _cli(argv, capsys):
    from varscale.cli import main

    rc = main(argv)
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return rc, out.out, out.err


def test_cli_predict_pairs_broadcast_csv_json(pilot, tmp_path, capsys):
    rc, out, _ = _cli(["predict", str(pilot), "--depth", "12", "--depth", "8", "--tokens", "2e9",
                       "--tokens", "3e9", "--n-boot", str(NB)], capsys)
    assert rc == 0 and "d12 @ 2e+09 tokens" in out and "d8 @ 3e+09 tokens" in out and "L_avg" in out
    csv = tmp_path / "t.csv"
    pd.DataFrame({"n_params": [1e7, 2e7], "tokens": [1e9, None], "flops": [None, 1e17],
                  "label": ["a", "b"]}).to_csv(csv, index=False)
    rc, out, _ = _cli(["predict", str(pilot), "--targets", str(csv), "--depth", "6", "--flops", "1e16",
                       "--tokens", "1e9", "--json", "--n-boot", str(NB)], capsys)
    js = json.loads(out)
    assert rc == 0 and {p["target"] for p in js["predictions"]} >= {"a", "b"}
    assert len(js["predictions"]) == 4 * 4  # 2 from the file, 2 broadcast from one depth


@pytest.mark.parametrize("argv,msg", [
    (["--depth", "12"], "a size (--depth or --params) and a budget"),
    (["--depth", "12", "--depth", "8", "--tokens", "1", "--tokens", "2", "--tokens", "3"], "as many of each"),
    ([], "no target"),
    (["--depth", "0", "--tokens", "1e9"], "--depth must be > 0"),
    (["--targets", "nope.csv"], "no such file"),
])
def test_cli_predict_bad_arguments(pilot, capsys, argv, msg):
    rc, _, err = _cli(["predict", str(pilot), *argv, "--n-boot", str(NB)], capsys)
    assert rc == 2 and msg in err and len(err.strip().splitlines()) == 1


def test_cli_allocate_and_frontier_check(pilot, capsys):
    rc, out, _ = _cli(["allocate", str(pilot), "--flops", "1e17", "--check-frontier", "--n-boot", str(NB)], capsys)
    assert rc == 0 and "N_opt" in out and "best" in out and "annealed-frontier check" in out
    rc, _, err = _cli(["allocate", str(pilot), "--metric", "L_bogus"], capsys)
    assert rc == 2 and "valid: L_last" in err


def test_plan_predict_from_writes_once_before_training(pilot, tmp_path, capsys):
    tgt = tmp_path / "tgt"
    tgt.mkdir()
    text = (ROOT / "runs/default-holdout/study.yaml").read_text()
    (tgt / "study.yaml").write_text(text.replace("checkpoint: ../default/tokenizer/vqvae.pt", "steps: 10"))
    rc, out, _ = _cli(["plan", str(tgt), "--predict-from", str(pilot), "--n-boot", str(NB)], capsys)
    assert rc == 0 and "predicted by" in out and "wrote" in out
    rec = json.loads((tgt / "predictions.json").read_text())
    ids = [t["run_id"] for t in rec["targets"]]
    assert len(ids) == 6 and not any("-stable-" in i for i in ids)
    assert rec["fit_hash"] and set(rec["targets"][0]["metrics"]) == {
        "test_loss_last", "test_loss_avg", "test_err_last", "test_err_avg"}
    # once a target has an evaluation, the predictions stay as written
    mdir = tgt / "cells" / ids[0] / "metrics"
    mdir.mkdir(parents=True)
    (mdir / "part-00000.parquet").write_bytes(b"x")
    before = (tgt / "predictions.json").read_text()
    rc, out, _ = _cli(["plan", str(tgt), "--predict-from", str(pilot), "--n-boot", str(NB)], capsys)
    assert rc == 0 and "kept" in out and (tgt / "predictions.json").read_text() == before


def test_check_predictions_on_a_held_out_target(P, pilot, tmp_path, capsys):
    tgt = make_study(tmp_path / "target", depths=(12,), budgets=(1e9, 3e9), law=LAW, rng_seed=5)
    shutil.copy(ROOT / "runs/default/study.yaml", tgt / "study.yaml")
    targets = [{"run_id": f"d12-t{b:.0e}-s0".replace("+", ""), "depth": 12, "n_params": float(n_params_of(12)),
                "tokens": None, "flops": None} for b in (1e9, 3e9)]
    from analysis.load import final_rows, load

    obs = final_rows(load(tgt)).set_index("run_id")
    for t in targets:
        t["tokens"] = float(obs.loc[t["run_id"], "tokens_seen"])
        t["flops"] = float(obs.loc[t["run_id"], "flops"])
    pred = predict(P, [{**t, "label": t["run_id"]} for t in targets])
    written, _ = write_predictions(tgt, prediction_record(pred, targets, str(pilot), "x"))
    assert written
    c = check_predictions(Study.load(tgt), Study.load(pilot))
    assert c["finished"] == 2 and c["notes"] == []  # the pilot is unchanged: same fit hash
    assert c["pilot_fit_hash_now"] == P.fit_hash
    s = c["summary"]["test_loss_avg"]
    assert s["n"] == 2 and s["max_abs_err"] < 0.03
    assert "L_avg" in format_check(c)
    rc, out, _ = _cli(["check", str(tgt)], capsys)
    assert rc == 0 and "predictions-check.md" in out and (tgt / "report/predictions-check.json").exists()
    assert out.startswith(f"predictions for {tgt} from {pilot}") and "- note:" not in out
    js = (tgt / "report/predictions-check.json").read_text()
    # the alias prints and writes the same
    rc, out2, _ = _cli(["fit", str(tgt), "--check-predictions"], capsys)
    assert rc == 0 and out2 == out and (tgt / "report/predictions-check.json").read_text() == js
    rc, out, _ = _cli(["check", str(tgt), "--quiet"], capsys)
    assert rc == 0 and out.startswith("wrote ")
    # a pilot that moved: named with --pilot; one that is gone: a note, no re-check
    moved = tmp_path / "moved"
    shutil.copytree(pilot, moved, ignore=shutil.ignore_patterns("report"))
    rc, out, _ = _cli(["check", str(tgt), "--pilot", str(moved)], capsys)
    assert rc == 0 and "- note:" not in out
    rec = json.loads((tgt / "predictions.json").read_text())
    (tgt / "predictions.json").write_text(json.dumps({**rec, "pilot": str(tmp_path / "gone")}))
    rc, out, _ = _cli(["check", str(tgt)], capsys)
    assert rc == 0 and "its fit hash is not re-checked" in out
    rc, _, err = _cli(["check", str(tgt), "--pilot", str(tmp_path / "nowhere")], capsys)
    assert rc == 2 and "no study folder" in err and len(err.strip().splitlines()) == 1


def test_check_predictions_without_a_file(tmp_path, capsys):
    d = make_study(tmp_path / "none", depths=(2, 3), budgets=(1e8,))
    shutil.copy(ROOT / "runs/default/study.yaml", d / "study.yaml")
    for argv in (["check", str(d)], ["fit", str(d), "--check-predictions"]):
        rc, _, err = _cli(argv, capsys)
        assert rc == 2 and "--predict-from" in err and len(err.strip().splitlines()) == 1
    rc, _, err = _cli(["check", str(tmp_path / "nope")], capsys)
    assert rc == 2 and "no study folder" in err


# --------------------------------------------------------------------------- calibration


def test_batched_calibration_agrees_with_the_predictor():
    # the batched path restarts each resample from the study's own minimum, fit_chinchilla
    # from its four best distinct ones: the same point fit, interval ends within a few percent
    recs, _ = CAL.calibrate(3, n_boot=NB)
    for i in range(3):
        one = CAL.one_study(i, n_boot=NB, starts=CAL.coarse_starts())
        r = recs.iloc[i]
        assert np.isclose(r["predicted"], one["predicted"], rtol=2e-3)
        assert np.isclose(r["ci_lo"], one["ci"][0], rtol=3e-2) and np.isclose(r["ci_hi"], one["ci"][1], rtol=3e-2)


def test_intervals_cover_the_truth_in_200_studies():
    recs, s = CAL.calibrate(200, n_boot=200)
    assert s["studies"] == 200
    assert s["coverage_ci"] >= 0.90, s
    assert s["median_abs_err"] < 0.05, s
