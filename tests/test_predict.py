"""Predictions from a study's laws: analysis.predict, the predictor kept in the report
folder, varscale predict / allocate, plan --predict-from (the pre-registration) and varscale
check (alias fit --check-predictions) on a tiny synthetic ladder and target, allocation
against known optima, and the calibration of the intervals through fit_predictor / predict
on synthetic studies with known laws (200 of them under -m slow, 40 in the default run)."""
from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import predictor_cache as PC
from analysis.allocate import allocate
from analysis import check as CHK
from analysis.check import check_predictions, parse_time, prediction_record, write_predictions
from analysis.check_report import format_check
from analysis.predict import PredictError, fit_hash, fit_predictor, fitted_runs, predict, rows_hash
from analysis.results import FloorEntry
from analysis.study import Study
from analysis.synthetic import SyntheticLaw, make_study, n_params_of, write_run
from varscale.schema import METRICS_SCHEMA, StudyLayout, read_parts, write_rows

ROOT = Path(__file__).resolve().parents[1]
LAW = SyntheticLaw()
NB = 40  # resamples: enough for the machinery, not for the calibration below


@pytest.fixture(scope="module")
def pilot(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("pred") / "pilot"
    make_study(d, depths=(2, 3, 4, 6, 8), budgets=(1e8, 3e8, 1e9), law=LAW)
    shutil.copy(ROOT / "runs/v1/default/study.yaml", d / "study.yaml")  # for the command line
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
    assert "within one depth (d +- 1)" in out and " apart  " in out
    rc, _, err = _cli(["allocate", str(pilot), "--metric", "L_bogus"], capsys)
    assert rc == 2 and "valid: L_last" in err


def _target(pilot: Path, root: Path, capsys) -> Path:
    """A target study (runs/default-holdout's design on its own tokenizer) planned with
    predictions from the pilot: ``varscale plan <target> --predict-from <pilot>``."""
    tgt = root / "tgt"
    tgt.mkdir()
    text = (ROOT / "runs/v1/default-holdout/study.yaml").read_text()
    (tgt / "study.yaml").write_text(text.replace("checkpoint: ../default/tokenizer/vqvae.pt", "steps: 10"))
    rc, out, _ = _cli(["plan", str(tgt), "--predict-from", str(pilot), "--n-boot", str(NB)], capsys)
    assert rc == 0 and "predicted by" in out and "wrote" in out and "commit it before any target trains" in out
    return tgt


def _train(tgt: Path, t0: dt.datetime | None = None, only=None) -> dict:
    """Every target of predictions.json (or those in ``only``) trained as the trainer writes
    them, their first evaluation at ``t0`` (default: a second after the predictions)."""
    rec = json.loads((tgt / "predictions.json").read_text())
    t0 = t0 or parse_time(rec["written"]) + dt.timedelta(seconds=1)
    lay = StudyLayout.of(tgt)
    for i, t in enumerate(rec["targets"]):
        if only is None or t["run_id"] in only:
            rows = write_run(lay, t["run_id"], t["depth"], t["n_params"], t["tokens"], law=LAW,
                             rng=np.random.default_rng(i), t0=t0)
            for j, r in enumerate(rows):  # each part written when its row was made, as the trainer does
                when = r["time"].timestamp() + 0.01
                os.utime(lay.cell(t["run_id"]).metrics_part(j), (when, when))
    return rec


def _prereg(tgt: Path) -> dict:
    """run id -> (pre-registered, reasons) from the check report's JSON."""
    c = json.loads((tgt / "report/predictions-check.json").read_text())
    return {t["run_id"]: (t["pre_registered"], " ".join(t["why"])) for t in c["preregistration"]["targets"]}


def test_plan_predict_from_writes_a_record_for_git_once_before_training(pilot, tmp_path, capsys):
    import varscale
    from varscale.config import load_study

    tgt = _target(pilot, tmp_path, capsys)
    rec = json.loads((tgt / "predictions.json").read_text())
    ids = [t["run_id"] for t in rec["targets"]]
    assert len(ids) == 6 and not any("-stable-" in i for i in ids)
    assert set(rec["targets"][0]["metrics"]) == {"test_loss_last", "test_loss_avg", "test_err_last", "test_err_avg"}
    # what the predictions depend on: the pilot's fit and exact rows, the target's config, the code, the time
    P = PC.cached_predictor(Study.load(pilot), n_boot=NB)
    assert rec["fit_hash"] == P.fit_hash and rec["rows_hash"] == rows_hash(P.runs)
    assert rec["study_config_hash"] == load_study(tgt).hash()
    assert rec["code"]["varscale"] == varscale.__version__
    commit = rec["code"]["git_commit"]
    assert commit is None or re.fullmatch(r"[0-9a-f]{40}", commit)
    written = parse_time(rec["written"])
    assert written.tzinfo is not None and abs(dt.datetime.now(dt.timezone.utc) - written) < dt.timedelta(hours=1)
    assert rec["written"].endswith("Z") and "." in rec["written"]  # UTC, to the microsecond
    assert rec["fitted_range"]["tokens"] and set(rec["run_sd"]) == set(rec["targets"][0]["metrics"])
    # once a target has an evaluation, the predictions stay as written
    mdir = tgt / "cells" / ids[0] / "metrics"
    mdir.mkdir(parents=True)
    (mdir / "part-00000.parquet").write_bytes(b"x")
    before = (tgt / "predictions.json").read_text()
    rc, out, _ = _cli(["plan", str(tgt), "--predict-from", str(pilot), "--n-boot", str(NB)], capsys)
    assert rc == 0 and "kept" in out and (tgt / "predictions.json").read_text() == before


def test_predictions_json_is_committed_not_ignored():
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    ign = lambda p: subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", p]).returncode == 0  # noqa: E731
    assert not ign("runs/v1/default-holdout/predictions.json") and not ign("runs/any-study/predictions.json")
    assert ign("runs/v1/default-holdout/plan.json") and ign("runs/v1/default-holdout/cells/x/metrics/part-000000.parquet")
    # the check of the predictions, once the targets trained, is committed beside them; the rest of report/ is not
    for d in ("runs/default-holdout", "runs/v1/default-holdout", "runs/any-study"):
        assert not ign(f"{d}/report/predictions-check.json") and not ign(f"{d}/report/predictions-check.md")
        assert ign(f"{d}/report/fits.json") and ign(f"{d}/report/predictor-x.npz")


def test_code_version_outside_a_git_checkout(monkeypatch):
    import varscale

    def no_git(*a, **k):
        raise FileNotFoundError("git")

    monkeypatch.setattr(CHK.subprocess, "run", no_git)
    assert CHK.code_version() == {"varscale": varscale.__version__, "git_commit": None, "git_dirty": None}
    monkeypatch.setattr(CHK.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 128, "", "fatal"))
    assert CHK.code_version()["git_commit"] is None


def test_targets_trained_after_the_predictions_are_pre_registered(pilot, tmp_path, capsys):
    tgt = _target(pilot, tmp_path, capsys)
    rec = _train(tgt)
    rc, out, _ = _cli(["check", str(tgt)], capsys)
    assert rc == 0
    pre = _prereg(tgt)
    assert set(pre) == {t["run_id"] for t in rec["targets"]}
    assert all(ok is True for ok, _ in pre.values()), pre
    assert "6 of 6 target runs finished; 6 of 6 trained targets pre-registered" in out.splitlines()[0]
    assert "pre-registration: 6 of 6 trained targets pre-registered" in out and "NOT" not in out
    for t in rec["targets"]:
        row = next(x for x in out.splitlines() if x.startswith(f"| {t['run_id']} |") and "row time" in x)
        assert row.endswith("| yes | yes | yes | yes |")
    # --quiet still prints the summary line
    rc, out, _ = _cli(["check", str(tgt), "--quiet"], capsys)
    assert rc == 0 and out.startswith("wrote ") and out.strip().endswith("6 of 6 trained targets pre-registered")


def test_predictions_written_after_a_first_evaluation_are_flagged(pilot, tmp_path, capsys):
    tgt = _target(pilot, tmp_path, capsys)
    rec = json.loads((tgt / "predictions.json").read_text())
    early = rec["targets"][1]["run_id"]
    _train(tgt, t0=parse_time(rec["written"]) - dt.timedelta(minutes=5), only={early})  # evaluated before
    _train(tgt, only={t["run_id"] for t in rec["targets"]} - {early})
    rc, out, _ = _cli(["check", str(tgt)], capsys)
    assert rc == 1  # a trained target not pre-registered fails the check, after writing it
    assert (tgt / "report/predictions-check.json").exists()
    pre = _prereg(tgt)
    assert pre[early][0] is False and "is not after the predictions" in pre[early][1] and "row time" in pre[early][1]
    assert all(ok for r, (ok, _) in pre.items() if r != early)
    assert f"pre-registration: 1 of 6 trained targets NOT pre-registered ({early})" in out
    assert "1 of 6 trained targets NOT pre-registered" in out.splitlines()[0]
    assert next(x for x in out.splitlines() if x.startswith(f"| {early} |")).count("not pre-registered") == 1
    # a part without a row time: its file time counts
    lay = StudyLayout.of(tgt)
    other = rec["targets"][2]["run_id"]
    part = sorted(lay.cell(other).metrics_dir.glob("part-*.parquet"))[0]
    rows = read_parts([part]).to_pylist()
    rows[0]["time"] = None
    write_rows(part, rows, METRICS_SCHEMA)
    then = (parse_time(rec["written"]) - dt.timedelta(hours=1)).timestamp()
    os.utime(part, (then, then))
    _cli(["check", str(tgt)], capsys)
    pre = _prereg(tgt)
    assert pre[other][0] is False and f"file time of {other}/metrics/{part.name}" in pre[other][1]


def test_predictions_rewritten_after_training_are_flagged(pilot, tmp_path, capsys):
    # the targets trained; then the file was deleted and written again: its time is after
    tgt = _target(pilot, tmp_path, capsys)
    rec = json.loads((tgt / "predictions.json").read_text())
    an_hour_ago = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)
    (tgt / "predictions.json").write_text(json.dumps({**rec, "written": an_hour_ago.isoformat()}))
    _train(tgt)
    rc, out, _ = _cli(["check", str(tgt)], capsys)  # so far in order
    assert all(ok for ok, _ in _prereg(tgt).values())
    (tgt / "predictions.json").unlink()
    rc, out, _ = _cli(["plan", str(tgt), "--predict-from", str(pilot), "--n-boot", str(NB)], capsys)
    assert rc == 0 and "wrote" in out
    _cli(["check", str(tgt)], capsys)
    assert all(ok is False and "is not after the predictions" in why for ok, why in _prereg(tgt).values())


def test_a_stable_run_evaluated_before_the_predictions_flags_its_branches(pilot, tmp_path, capsys):
    from varscale.config import load_study
    from varscale.grid.cells import plan_cells

    tgt = _target(pilot, tmp_path, capsys)
    rec = _train(tgt)
    cells = plan_cells(load_study(tgt), tgt)
    stable = next(c for c in cells if c.depth == 12 and c.branch_from is None)
    write_run(StudyLayout.of(tgt), stable.run_id, 12, rec["targets"][0]["n_params"], 2e6, law=LAW, state="running",
              t0=parse_time(rec["written"]) - dt.timedelta(minutes=1))
    _cli(["check", str(tgt)], capsys)
    pre = _prereg(tgt)
    branches = {c.run_id for c in cells if c.branch_from == stable.run_id}
    assert len(branches) == 3
    assert all(pre[r][0] is False for r in branches) and all(pre[r][0] for r in set(pre) - branches)


def test_a_changed_pilot_row_is_flagged(pilot, tmp_path, capsys):
    tgt = _target(pilot, tmp_path, capsys)
    _train(tgt)
    moved = tmp_path / "pilot-copy"
    shutil.copytree(pilot, moved, ignore=shutil.ignore_patterns("report"))
    rc, out, _ = _cli(["check", str(tgt), "--pilot", str(moved)], capsys)  # a moved, unchanged pilot
    assert rc == 0 and all(ok for ok, _ in _prereg(tgt).values()) and "- note:" not in out
    # one final loss changed in its 14th digit: the fit hash (10 digits) is the same, the rows hash is not
    lay = StudyLayout.of(moved)
    run = sorted(fitted_runs(Study.load(moved))["run_id"])[0]
    part = sorted(lay.cell(run).metrics_dir.glob("part-*.parquet"))[-1]
    rows = read_parts([part]).to_pylist()
    rows[0]["test_loss_avg"] *= 1 + 1e-13
    write_rows(part, rows, METRICS_SCHEMA)
    rc, out, _ = _cli(["check", str(tgt), "--pilot", str(moved)], capsys)
    pre = _prereg(tgt)
    assert all(ok is False and "rows " in why and "fit " not in why for ok, why in pre.values()), pre
    assert "6 of 6 trained targets NOT pre-registered" in out and "has changed since the predictions" in out
    # a visible change: both hashes
    rows[0]["test_loss_avg"] *= 1.01
    write_rows(part, rows, METRICS_SCHEMA)
    _cli(["check", str(tgt), "--pilot", str(moved)], capsys)
    assert all(ok is False and "fit " in why and "rows " in why for ok, why in _prereg(tgt).values())
    # a pilot that cannot be read here: not verified, so not pre-registered
    rec = json.loads((tgt / "predictions.json").read_text())
    (tgt / "predictions.json").write_text(json.dumps({**rec, "pilot": str(tmp_path / "gone")}))
    rc, out, _ = _cli(["check", str(tgt)], capsys)
    assert rc == 1 and "not re-checked" in out and all(ok is False for ok, _ in _prereg(tgt).values())


def test_a_changed_target_config_is_flagged(pilot, tmp_path, capsys):
    from varscale.cell import CellConfig
    from varscale.config import load_study
    from varscale.grid.cells import plan_cells

    tgt = _target(pilot, tmp_path, capsys)
    rec = _train(tgt)
    # one cell's config.json is another config than its run id says
    cells = {c.run_id: c for c in plan_cells(load_study(tgt), tgt)}
    one = rec["targets"][0]["run_id"]
    cfg = cells[one].to_dict()
    cfg["total_steps"] += 1
    StudyLayout.of(tgt).cell(one).config_json.write_text(json.dumps(cfg))
    CellConfig.load(StudyLayout.of(tgt).cell(one).root)  # a readable config, of another cell
    _cli(["check", str(tgt)], capsys)
    pre = _prereg(tgt)
    assert pre[one][0] is False and "its config.json is the config of d12-" in pre[one][1]
    assert all(ok for r, (ok, _) in pre.items() if r != one)
    # study.yaml changed since the predictions: every target
    y = tgt / "study.yaml"
    y.write_text(y.read_text().replace("base_lr: 3.2e-2", "base_lr: 3.0e-2"))
    rc, out, _ = _cli(["check", str(tgt)], capsys)
    pre = _prereg(tgt)
    assert rc == 1 and all(ok is False and "study.yaml hashes to" in why and "no longer plans this run" in why
                           for ok, why in pre.values()), pre
    assert "6 of 6 trained targets NOT pre-registered" in out
    # and back as it was: pre-registered again (but the one cell's config.json)
    y.write_text(y.read_text().replace("base_lr: 3.0e-2", "base_lr: 3.2e-2"))
    _cli(["check", str(tgt)], capsys)
    assert sum(ok for ok, _ in _prereg(tgt).values()) == 5


def test_check_predictions_on_a_held_out_target(P, pilot, tmp_path, capsys):
    # predictions made by hand for runs that had trained: the numbers are checked, and no
    # target is pre-registered (its evaluations come first; no config was re-checked)
    tgt = make_study(tmp_path / "target", depths=(12,), budgets=(1e9, 3e9), law=LAW, rng_seed=5)
    shutil.copy(ROOT / "runs/v1/default/study.yaml", tgt / "study.yaml")
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
    assert c["finished"] == 2 and c["notes"] == []  # the pilot is unchanged: same fit and rows hashes
    assert c["pilot_fit_hash_now"] == P.fit_hash and c["pilot_rows_hash_now"] == rows_hash(P.runs)
    pre = c["preregistration"]
    assert pre["started"] == 2 and pre["pre_registered"] == 0
    assert all(t["after"] is False and t["pilot_ok"] and t["config_ok"] is None for t in pre["targets"])
    s = c["summary"]["test_loss_avg"]
    assert s["n"] == 2 and s["max_abs_err"] < 0.03
    assert s["term"] is None and "too few targets (2)" in s["diagnosis"]
    assert "L_avg" in format_check(c)
    # the median half-width of the new-run interval, over the prediction, beside the errors
    mine = [x for x in c["rows"] if x["metric"] == "test_loss_avg"]
    hw = [(x["pi"][1] - x["pi"][0]) / 2 / x["predicted"] for x in mine]
    assert s["median_half_width_pi"] == pytest.approx(float(np.median(hw))) and 0 < s["median_half_width_pi"] < 0.2
    assert s["median_half_width_ci"] < s["median_half_width_pi"]
    # a target more than 10x beyond the pilot's compute is summed up apart (and in the total)
    assert "within_10x" not in s and "beyond 10x" not in format_check(c)
    text = (tgt / "predictions.json").read_text()
    rec = json.loads(text)
    rec["targets"][1]["flops"] = 12 * rec["fitted_range"]["flops"][1]  # 12x the pilot's largest compute
    assert all(t["x_C"] < 10 and t["x_N"] < 10 for t in rec["targets"])
    (tgt / "predictions.json").write_text(json.dumps(rec))
    c2 = check_predictions(Study.load(tgt), Study.load(pilot))
    s2 = c2["summary"]["test_loss_avg"]
    near, far = (next(x for x in c2["rows"] if x["run_id"] == t["run_id"] and x["metric"] == "test_loss_avg")
                 for t in rec["targets"])
    assert s2["n"] == 2 and s2["within_10x"]["n"] == 1 and s2["beyond_10x"]["n"] == 1
    assert s2["within_10x"]["max_abs_err"] == pytest.approx(abs(near["err"]))
    assert s2["beyond_10x"]["max_abs_err"] == pytest.approx(abs(far["err"]))
    assert s2["max_abs_err"] == pytest.approx(max(abs(near["err"]), abs(far["err"])))
    md = format_check(c2)
    assert "| L_avg | within 10x | 1 |" in md and "| L_avg | beyond 10x | 1 |" in md and "| L_avg | all | 2 |" in md
    rec["targets"][1]["flops"] = rec["fitted_range"]["flops"][0] / 12  # and 12x below its smallest
    (tgt / "predictions.json").write_text(json.dumps(rec))
    s3 = check_predictions(Study.load(tgt), Study.load(pilot))["summary"]["test_loss_avg"]
    assert s3["beyond_10x"]["max_abs_err"] == pytest.approx(abs(far["err"]))
    # an interval with a missing (non-finite, written as null) bound holds nothing, and prints blank
    rec["targets"][0]["metrics"]["test_loss_avg"]["pi"][1] = None
    (tgt / "predictions.json").write_text(json.dumps(rec))
    c4 = check_predictions(Study.load(tgt), Study.load(pilot))
    row = next(x for x in c4["rows"] if x["run_id"] == rec["targets"][0]["run_id"] and x["metric"] == "test_loss_avg")
    assert row["in_pi"] is False and row["in_ci"] is near["in_ci"]
    assert f"| L_avg | {row['predicted']:.4f} | [{row['pi'][0]:.4f}, ] |" in format_check(c4)
    (tgt / "predictions.json").write_text(text)
    rc, out, _ = _cli(["check", str(tgt)], capsys)
    assert rc == 1 and "predictions-check.md" in out and (tgt / "report/predictions-check.json").exists()
    assert out.startswith(f"predictions for {tgt} from {pilot}") and "- note:" not in out
    assert "2 of 2 trained targets NOT pre-registered" in out
    js = (tgt / "report/predictions-check.json").read_text()
    # the alias prints and writes the same
    rc, out2, _ = _cli(["fit", str(tgt), "--check-predictions"], capsys)
    assert rc == 1 and out2 == out and (tgt / "report/predictions-check.json").read_text() == js
    rc, out, _ = _cli(["check", str(tgt), "--quiet"], capsys)
    assert rc == 1 and out.startswith("wrote ")
    # a pilot that moved: named with --pilot; one that is gone: a note, no re-check
    moved = tmp_path / "moved"
    shutil.copytree(pilot, moved, ignore=shutil.ignore_patterns("report"))
    rc, out, _ = _cli(["check", str(tgt), "--pilot", str(moved)], capsys)
    assert rc == 1 and "- note:" not in out
    rec = json.loads((tgt / "predictions.json").read_text())
    (tgt / "predictions.json").write_text(json.dumps({**rec, "pilot": str(tmp_path / "gone")}))
    rc, out, _ = _cli(["check", str(tgt)], capsys)
    assert rc == 1 and "not re-checked" in out
    rc, _, err = _cli(["check", str(tgt), "--pilot", str(tmp_path / "nowhere")], capsys)
    assert rc == 2 and "no study folder" in err and len(err.strip().splitlines()) == 1


def test_check_predictions_without_a_file(tmp_path, capsys):
    d = make_study(tmp_path / "none", depths=(2, 3), budgets=(1e8,))
    shutil.copy(ROOT / "runs/v1/default/study.yaml", d / "study.yaml")
    for argv in (["check", str(d)], ["fit", str(d), "--check-predictions"]):
        rc, _, err = _cli(argv, capsys)
        assert rc == 2 and "--predict-from" in err and len(err.strip().splitlines()) == 1
    rc, _, err = _cli(["check", str(tmp_path / "nope")], capsys)
    assert rc == 2 and "no study folder" in err
