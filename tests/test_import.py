"""``varscale import``: runs trained elsewhere become a study that ``varscale fit`` reads.

A table of 30 runs (one row per evaluation) imported and fitted end to end; the official VAR
trainer's log.txt and TensorBoard events of four depths (written as its code writes them,
tests/official_var.py) give the same report as the same numbers written by varscale's own
metrics writer; each kind of bad table is one sentence naming the row and the column; an
imported folder is refused by ``varscale run``; Epoch AI's Chinchilla points (when
../shared has them) give Epoch's Approach-3 fit through the import.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.chinchilla import fit_chinchilla
from analysis.fitting import fit_study
from analysis.importing import ImportProblem, column_map, read_table, table_evaluations
from analysis.study import Study
from official_var import official_validation_epochs, write_run
from varscale.cli import main as cli
from varscale.models.spec import param_counts, var_config
from varscale.schema import METRICS_SCHEMA, StudyLayout, atomic_write_json, write_part

SHARED_CSV = Path(__file__).resolve().parents[2] / "shared" / "data" / "chinchilla_svg_extracted.csv"
LAW = dict(E=1.9, A=420.0, alpha=0.34, B=1800.0, beta=0.29)


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    rc = cli([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def law(N, D, E=LAW["E"]):
    return E + LAW["A"] / np.asarray(N, float) ** LAW["alpha"] + LAW["B"] / np.asarray(D, float) ** LAW["beta"]


# --------------------------------------------------------------------------- a table of 30 runs


def thirty_runs_table(path: Path) -> pd.DataFrame:
    """5 sizes x 6 token budgets, 4 evaluations each (one row per evaluation), with noise."""
    rng = np.random.default_rng(0)
    rows = []
    for N in (2e7, 5e7, 1.2e8, 3e8, 8e8):
        for budget in (1e9, 2e9, 4e9, 8e9, 1.6e10, 3.2e10):
            run = f"N{N:.0e}/D{budget:.0e}"
            for step in (250, 500, 750, 1000):
                D = budget * step / 1000
                L = law(N, D) * np.exp(rng.normal(0, 0.004))
                rows.append({"model": run, "params": N, "seen_tokens": D, "iteration": step,
                             "val_loss": L, "val_loss_last": L + 0.35})
    t = pd.DataFrame(rows)
    t.to_csv(path, index=False)
    return t


def test_a_table_of_30_runs_imports_and_fits(tmp_path, capsys):
    src = thirty_runs_table(tmp_path / "runs.csv")
    cols = tmp_path / "columns.yaml"
    cols.write_text("run: model\nn: params\ntokens: seen_tokens\nstep: iteration\nloss-avg: val_loss\n")
    dest = tmp_path / "study"
    rc, out, err = run_cli(capsys, "import", tmp_path / "runs.csv", dest, "--columns", cols,
                           "--loss-last", "val_loss_last")
    assert rc == 0, err
    assert "imported 30 runs (120 evaluations; 30 finished)" in out
    assert "C = 6 N D (no --flops column)" in out
    lay = StudyLayout.of(dest)
    assert lay.imported_json.is_file() and lay.study_yaml.is_file()
    assert len(lay.cell_dirs()) == 30
    info = json.loads(lay.imported_json.read_text())
    assert info["format"] == "table" and info["columns"]["loss_last"] == "val_loss_last" and info["runs"] == 30
    # the real schema, one part per evaluation, every run finished
    st = Study.load(dest)
    assert set(st.evaluations.columns) >= set(METRICS_SCHEMA.names)
    assert len(st.evaluations) == 120 and st.final["run_id"].nunique() == 30
    assert st.budget_axis == "budget_tokens" and st.evaluations["budget"].nunique() == 6
    f = st.evaluations.sort_values(["run_id", "step"])
    np.testing.assert_allclose(f["flops"], 6.0 * f["n_params"].astype(float) * f["tokens_seen"].astype(float))
    np.testing.assert_allclose(np.sort(f["test_loss_avg"].to_numpy()), np.sort(src["val_loss"].to_numpy()))
    # the study.yaml is one varscale reads (predict / allocate load it)
    from varscale.config import load_study

    assert load_study(dest).budgets.unit == "tokens"
    # varscale fit gives laws
    rc, out, err = run_cli(capsys, "fit", dest, "--n-boot", "20")
    assert rc == 0, err
    rep = json.loads(lay.fits_json.read_text())
    power = [f for f in rep["fits"] if f["form"] == "power" and not f["frontier"] and f["of"] == "test_loss_avg"
             and f["quantity"] == "raw"]
    assert len(power) == 6 and all(f["r"] < -0.9 for f in power)
    chin = [f for f in rep["fits"] if f["form"] == "chinchilla" and f["of"] == "test_loss_avg"]
    assert chin and abs(chin[0]["params"]["alpha"] - LAW["alpha"]) < 0.05
    assert abs(chin[0]["params"]["E"] - LAW["E"]) < 0.1
    assert "no values of Err_last, Err_avg in the study: not fitted" in rep["notes"]


FINAL_NS = np.repeat([3e7, 1e8, 3e8, 1e9], 3)
FINAL_CS = np.tile([1e18, 4e18, 1.6e19], 4)


def import_one_loss(tmp_path: Path, capsys) -> tuple[Path, str]:
    """12 finished runs, one row each, FLOPs only (D = C / 6N), a lone --loss (stored as L_avg;
    no depth column, no L_last, no error rates): the study folder and import's output."""
    Ns, Cs = FINAL_NS, FINAL_CS
    t = pd.DataFrame({"Model Size": Ns, "Training FLOP": Cs, "loss": law(Ns, Cs / (6 * Ns))})
    t.to_csv(tmp_path / "finals.csv", index=False)
    rc, out, err = run_cli(capsys, "import", tmp_path / "finals.csv", tmp_path / "s", "--n", "Model Size",
                           "--flops", "Training FLOP", "--loss", "loss")
    assert rc == 0, err
    return tmp_path / "s", out


def test_a_table_of_final_runs_with_one_loss(tmp_path, capsys):
    # one row per finished run, FLOPs only (D = C / 6N), a lone --loss: L_avg, the rest absent
    Ns, Cs = FINAL_NS, FINAL_CS
    _, out = import_one_loss(tmp_path, capsys)
    assert "D = C / (6 N), C from column 'Training FLOP'" in out
    assert "the loss in column 'loss' is stored as test_loss_avg (L_avg)" in out
    st = Study.load(tmp_path / "s")
    fr = st.final.sort_values("run_id")
    assert list(fr["run_id"]) == [f"row{i:02d}" for i in range(1, 13)]
    np.testing.assert_allclose(fr["flops"], Cs)
    np.testing.assert_allclose(fr["tokens_seen"], np.round(Cs / (6 * Ns)))
    assert fr["test_loss_last"].isna().all() and fr["test_loss_avg"].notna().all()
    rep = fit_study(st, n_boot=0)
    chin = rep.find("chinchilla", "test_loss_avg")
    assert chin and abs(chin[0].params["alpha"] - LAW["alpha"]) < 0.02
    assert not rep.find("chinchilla", "test_loss_last") and not rep.find("power", "test_err_avg", frontier=True)
    assert "no values of L_last, Err_last, Err_avg in the study: not fitted" in rep.notes
    assert "12 slices, budget_tokens=" in " ".join(rep.notes)  # every run its own budget: one note for all


def test_predict_and_allocate_use_the_one_loss_a_table_has(tmp_path, capsys):
    dest, _ = import_one_loss(tmp_path, capsys)
    N, C = 3e9, 1e20
    rc, out, err = run_cli(capsys, "predict", dest, "--params", N, "--flops", C, "--n-boot", 20, "--json")
    assert rc == 0, err
    preds = json.loads(out)["predictions"]
    assert [p["metric"] for p in preds] == ["test_loss_avg"]  # L_last and the error rates: no values
    p = preds[0]
    assert {"predicted", "ci_lo", "ci_hi", "pi_lo", "pi_hi", "floor", "reducible", "frontier", "x_N", "x_C",
            "warning"} <= set(p)
    assert p["predicted"] == pytest.approx(float(law(N, C / (6 * N))), rel=0.01)
    rc, out, err = run_cli(capsys, "predict", dest, "--params", N, "--flops", C, "--n-boot", 20)
    assert rc == 0 and "L_avg: E = " in out and "L_last" not in out, err
    rc, out, err = run_cli(capsys, "allocate", dest, "--flops", C, "--n-boot", 20, "--json")
    assert rc == 0, err
    al = json.loads(out)
    assert al["metric"] == "test_loss_avg"
    a, b = LAW["alpha"], LAW["beta"]  # the law's own optimum at C = 6 N D
    G = (a * LAW["A"] / (b * LAW["B"])) ** (1 / (a + b))
    assert al["allocations"][0]["continuous"]["N_opt"] == pytest.approx(G * (C / 6) ** (b / (a + b)), rel=0.05)
    rc, out, err = run_cli(capsys, "allocate", dest, "--flops", C, "--n-boot", 20, "--metric", "L_last")
    assert rc == 2 and err == f"varscale allocate: --metric L_last: {dest} has no values of it; its laws are of L_avg\n"


def test_figures_and_report_of_a_one_loss_table_without_depths(tmp_path, capsys):
    from analysis.figures import figures_of

    dest, _ = import_one_loss(tmp_path, capsys)
    rc, out, err = run_cli(capsys, "fit", dest, "--n-boot", 0)
    assert rc == 0 and "L_last: no values" in out and "L_avg: E = " in out, err
    rc, out, err = run_cli(capsys, "figures", dest, "--formats", "png")
    assert rc == 0, err
    names = {p.name for p in (dest / "report").iterdir()}
    assert {"fig5_vs_N.png", "fig6_vs_C.png", "training_curves.png"} <= names
    assert "per_scale_loss_vs_N.png" not in names  # no loss per scale in a table
    st = Study.load(dest)
    figs = figures_of(st, fit_study(st, n_boot=0))
    for name in ("fig5_vs_N", "fig6_vs_C"):  # one panel: L_avg, the one metric with values
        assert [ax.get_ylabel()[:5] for ax in figs[name].axes] == ["L_avg"], name
    legend = figs["fig5_vs_N"].legends[0]  # coloured by N: no depth column
    assert legend.get_title().get_text() == "parameters N"
    assert [t.get_text() for t in legend.get_texts()] == ["N=3e+07", "N=1e+08", "N=3e+08", "N=1e+09"]
    # beyond 12 sizes a colour bar (a second axis) keys N
    Ns = np.geomspace(1e7, 1e9, 16)
    t = pd.DataFrame({"N": Ns, "D": 2e10, "loss": law(Ns, 2e10)})
    t.to_csv(tmp_path / "many.csv", index=False)
    assert run_cli(capsys, "import", tmp_path / "many.csv", tmp_path / "m", "--n", "N", "--tokens", "D",
                   "--loss", "loss")[0] == 0
    st = Study.load(tmp_path / "m")
    fig = figures_of(st, fit_study(st, n_boot=0))["fig5_vs_N"]
    assert len(fig.axes) == 2 and fig.axes[1].get_ylabel() == "parameters N" and not fig.legends


# --------------------------------------------------------------------------- the official trainer's logs


DEPTHS = (8, 12, 16, 20)
EPOCHS = (20, 40)
IMAGES, TPI = 1_281_167, 680


def official_numbers() -> dict[tuple[int, int], dict[int, tuple[float, float, float, float]]]:
    """(depth, K) -> validation epoch -> (vL_mean, vL_tail, vacc_mean %, vacc_tail %), float32
    values (TensorBoard keeps float32), from a law in N (imagenet256 at that depth) and D."""
    rng = np.random.default_rng(1)
    out = {}
    for d in DEPTHS:
        N = param_counts(var_config("imagenet256", d))["n_params"]
        for K in EPOCHS:
            vals = {}
            for k in official_validation_epochs(K):
                L = float(law(N, k * IMAGES * TPI, E=4.2)) * math.exp(rng.normal(0, 0.002))
                acc = 100 * math.exp(-L / 1.6)
                vals[k] = tuple(float(np.float32(v)) for v in (L, L + 0.6, acc, acc * 0.8))
            out[(d, K)] = vals
    return out


def write_official(root: Path) -> dict:
    nums = official_numbers()
    for (d, K), vals in nums.items():
        write_run(root / f"d{d}-ep{K}", d, K, vals, cmd_style="=" if d % 8 else " ")
    return nums


def write_reference(dest: Path, nums: dict, epochs_of) -> Path:
    """The same numbers written as varscale writes its own cells (write_part, status.json, DONE)."""
    lay = StudyLayout.of(dest)
    iters = -(-IMAGES // 768)
    for (d, K), vals in nums.items():
        rid = f"d{d}-ep{K}"
        N = param_counts(var_config("imagenet256", d))["n_params"]
        cl = lay.cell(rid)
        ks = epochs_of(K, vals)
        for i, k in enumerate(ks):
            L, Lt, a, at = vals[k]
            D = k * IMAGES * TPI
            write_part(cl.metrics_dir, [{
                "study": "ref", "run_id": rid, "depth": d, "n_params": N, "step": k * iters,
                "total_steps": K * iters, "tokens_seen": D, "flops": 6.0 * N * D, "flops_6nd": 6.0 * N * D,
                "budget_tokens": float(K * IMAGES * TPI), "budget_flops": 6.0 * N * K * IMAGES * TPI,
                "budget_unit": "tokens", "test_loss_avg": L, "test_loss_last": Lt,
                "test_err_avg": 1.0 - a / 100.0, "test_err_last": 1.0 - at / 100.0}], i)
        atomic_write_json(cl.status_json, {"state": "done", "step": ks[-1] * iters, "total_steps": K * iters})
        cl.done.write_text("done\n")
    return dest


def _same_report(a, b):
    ja, jb = a.to_json(), b.to_json()
    for j in (ja, jb):
        j.pop("study")
    assert ja["fits"] and ja["headline"]
    assert ja == jb


def test_official_logs_give_the_fits_of_the_same_numbers_written_by_varscale(tmp_path, capsys):
    nums = write_official(tmp_path / "var_runs")
    # TensorBoard events: every validation (epochs 10, 20, ... and K)
    rc, out, err = run_cli(capsys, "import", tmp_path / "var_runs", tmp_path / "tb")
    assert rc == 0, err
    assert "(tensorboard)" in out and "imported 8 runs (24 evaluations; 8 finished)" in out
    assert "N = the parameter count of varscale's imagenet256 model at each depth" in out
    # log.txt: rewritten at epochs 1, 11, 21, ...: only the last two validations survive
    rc, out, err = run_cli(capsys, "import", tmp_path / "var_runs", tmp_path / "log", "--format", "var-log")
    assert rc == 0, err
    assert "imported 8 runs (16 evaluations; 8 finished)" in out
    ref_tb = write_reference(tmp_path / "ref_tb", nums, lambda K, v: sorted(v))
    ref_log = write_reference(tmp_path / "ref_log", nums, lambda K, v: sorted(v)[-2:])
    st = Study.load(tmp_path / "tb")
    assert sorted(st.final["depth"].unique()) == list(DEPTHS)
    assert st.final["n_params"].tolist() == [param_counts(var_config("imagenet256", d))["n_params"]
                                             for d in st.final["depth"]]
    for imported, ref in ((tmp_path / "tb", ref_tb), (tmp_path / "log", ref_log)):
        _same_report(fit_study(Study.load(imported), n_boot=30, seed=1), fit_study(Study.load(ref), n_boot=30, seed=1))
    # the study.yaml sizes a new depth the way the runs were sized: predict reads it
    rc, out, err = run_cli(capsys, "predict", tmp_path / "tb", "--depth", "24", "--tokens", "5e10", "--n-boot", "20")
    assert rc == 0, err
    n24 = param_counts(var_config("imagenet256", 24))["n_params"]
    assert f"d24 @ 5e+10 tokens  {n24:.3g}" in out


def test_official_run_that_stopped_early_is_not_finished(tmp_path, capsys):
    vals = official_numbers()[(8, 40)]
    write_run(tmp_path / "r", 8, 40, vals, last_epoch=25, tensorboard=False)
    rc, out, err = run_cli(capsys, "import", tmp_path / "r" / "log.txt", tmp_path / "s")
    assert rc == 0, err
    assert "(var-log)" in out and "0 finished" in out
    st = Study.load(tmp_path / "s")
    # log.txt was rewritten at epoch 21: lines 21..25 hold the validation of epoch 20
    assert st.evaluations["step"].tolist() == [20 * 1669] and not st.evaluations["is_final"].any()
    assert json.loads((tmp_path / "s" / "cells" / "r" / "status.json").read_text())["state"] == "failed"


def test_event_reader_matches_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    from analysis.tfevents import event_files, read_scalars

    write_official(tmp_path)
    for f in event_files(tmp_path)[:2]:
        assert read_scalars(f, "own") == read_scalars(f, "tensorboard")


# --------------------------------------------------------------------------- bad tables, refusals


def small_table(path: Path, **change) -> Path:
    t = pd.DataFrame({"run": ["a", "a", "b", "b"], "N": [1e6, 1e6, 2e6, 2e6], "D": [1e8, 2e8, 1e8, 2e8],
                      "step": [100, 200, 100, 200], "loss": [3.0, 2.8, 2.9, 2.7]}).astype(object)
    for (row, col), v in change.get("cells", {}).items():
        t.loc[row, col] = v
    t.to_csv(path, index=False)
    return path


ARGS = ("--run", "run", "--n", "N", "--tokens", "D", "--step", "step", "--loss", "loss")


@pytest.mark.parametrize("cells, args, sentence", [
    ({}, ("--run", "run", "--n", "Model size", "--tokens", "D", "--loss", "loss"),
     "--n 'Model size': {src} has no such column; its columns are: run, N, D, step, loss"),
    ({(2, "loss"): "abc"}, ARGS, "row 3 (line 4) of {src}, column 'loss' (--loss): 'abc' is not a number"),
    ({(1, "N"): -1e6}, ARGS, "row 2 (line 3) of {src}, column 'N' (--n): -1000000.0 is negative"),
    ({(3, "step"): 100}, ARGS, "rows 3 and 4 (lines 4 and 5) of {src}: run 'b' has step 100 twice "
                               "(column 'step'); a run has one row per evaluation"),
    ({(1, "N"): 3e6}, ARGS, "rows 1 and 2 (lines 2 and 3) of {src}: run 'a' has two values of column 'N' (--n): "
                            "1e+06 and 3e+06; a run has one"),
    ({(0, "D"): 0}, ARGS, "row 1 (line 2) of {src}, column 'D' (--tokens): 0 is not > 0 (an evaluation before "
                          "training has no place on a law in D or C: leave the row out)"),
    ({}, ("--run", "run", "--n", "N", "--tokens", "D", "--loss", "loss"),
     "rows 1 and 2 (lines 2 and 3) of {src}: run 'a' (column 'run') appears twice; a table with one row per "
     "evaluation needs --step COLUMN"),
    ({}, ("--run", "run", "--n", "N", "--step", "step", "--loss", "loss"),
     "give the data: --tokens COLUMN, --steps COLUMN with --batch and --tokens-per-image, or --flops COLUMN "
     "(D = C / 6N)"),
])
def test_bad_table_is_one_sentence(tmp_path, capsys, cells, args, sentence):
    src = small_table(tmp_path / "t.csv", cells=cells)
    rc, out, err = run_cli(capsys, "import", src, tmp_path / "s", *args)
    assert rc == 2
    assert err == f"varscale import: {sentence.format(src=src)}\n"
    assert not (tmp_path / "s").exists()


def test_existing_target_and_unknown_column_key(tmp_path, capsys):
    src = small_table(tmp_path / "t.csv")
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "notes.txt").write_text("mine")
    rc, _, err = run_cli(capsys, "import", src, tmp_path / "s", *ARGS)
    assert rc == 2 and err == (f"varscale import: {tmp_path / 's'} exists and is not empty: import into a new "
                               "study folder (or delete that one first)\n")
    assert (tmp_path / "s" / "notes.txt").read_text() == "mine"
    (tmp_path / "cols.json").write_text('{"run": "run", "params": "N"}')
    rc, _, err = run_cli(capsys, "import", src, tmp_path / "s2", "--columns", tmp_path / "cols.json")
    assert rc == 2 and err.startswith(f"varscale import: --columns {tmp_path / 'cols.json'}: unknown key 'params'; "
                                      "the keys are: run, n, depth,")
    with pytest.raises(ImportProblem, match="error rate in"):
        t = read_table(small_table(tmp_path / "e.csv"))
        table_evaluations(t, column_map(run="run", n="N", tokens="D", step="step", err_avg="loss"))


def test_depth_column_gives_n_from_the_preset(tmp_path, capsys):
    t = pd.DataFrame({"d": [8, 12, 16], "tok": [1e9, 1e9, 1e9], "L": [3.1, 3.0, 2.95]})
    t.to_csv(tmp_path / "t.csv", index=False)
    rc, out, err = run_cli(capsys, "import", tmp_path / "t.csv", tmp_path / "s", "--depth", "d", "--tokens", "tok",
                           "--loss-avg", "L")
    assert rc == 0, err
    fr = Study.load(tmp_path / "s").final.sort_values("depth")
    for d, n, b in zip(fr["depth"], fr["n_params"], fr["n_params_blocks"]):
        c = param_counts(var_config("imagenet256", int(d)))
        assert (n, b) == (c["n_params"], c["n_params_blocks"])


def test_run_plan_and_the_tokenizer_refuse_an_imported_folder(tmp_path, capsys):
    src = small_table(tmp_path / "t.csv")
    assert run_cli(capsys, "import", src, tmp_path / "s", *ARGS)[0] == 0
    before = sorted(p.name for p in (tmp_path / "s").iterdir())
    rc, out, err = run_cli(capsys, "run", tmp_path / "s")
    assert rc == 2
    assert err == (f"varscale run: {tmp_path / 's'} holds imported runs: there is nothing to train; "
                   "use varscale fit/predict/figures\n")
    assert not (tmp_path / "s" / "plan.json").exists() and not (tmp_path / "s" / "tokenizer").exists()
    for argv in (["plan"], ["tokenize"], ["tokenizer", "train"], ["tokenizer", "eval"]):
        rc, out, err = run_cli(capsys, *argv, tmp_path / "s")
        assert rc == 2 and out == ""
        assert err == (f"varscale {argv[0]}: {tmp_path / 's'} holds imported runs: there is nothing to train; "
                       "use varscale fit/predict/figures\n")
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == before  # nothing written
    rc, out, err = run_cli(capsys, "doctor", tmp_path / "s")  # its files are checked, nothing is to redo
    assert rc == 0 and "holds imported runs (imported.json)" in out and "0 stale, 0 thing(s) a rerun would do" in out


# --------------------------------------------------------------------------- Epoch AI's Chinchilla points


@pytest.mark.skipif(not SHARED_CSV.is_file(), reason="../shared/data/chinchilla_svg_extracted.csv not present")
def test_chinchilla_points_through_the_import(tmp_path, capsys):
    df = pd.read_csv(SHARED_CSV).sort_values("loss").iloc[:-5]  # Epoch AI drop the 5 highest-loss points
    df.to_csv(tmp_path / "chinchilla.csv", index=False)
    rc, out, err = run_cli(capsys, "import", tmp_path / "chinchilla.csv", tmp_path / "chin", "--n", "Model Size",
                           "--flops", "Training FLOP", "--loss", "loss")
    assert rc == 0, err
    assert "imported 240 runs" in out
    fr = Study.load(tmp_path / "chin").final
    assert len(fr) == 240 and fr["test_loss_last"].isna().all()
    f = fit_chinchilla(fr["n_params"], fr["tokens_seen"], fr["test_loss_avg"], n_boot=0)  # what fit_study fits
    assert f.params["E"] == pytest.approx(1.817, abs=0.01)
    assert f.params["alpha"] == pytest.approx(0.348, abs=0.01)
    assert f.params["beta"] == pytest.approx(0.366, abs=0.01)
    assert f.params["A"] == pytest.approx(482.0, rel=0.10) and f.params["B"] == pytest.approx(2085.4, rel=0.10)
