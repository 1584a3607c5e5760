"""The study-folder side of analysis: loading (partial studies), frontier, fit report and
figures from the command line, on synthetic studies written in the real format."""
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import analysis
import analysis.frontier as F
from analysis import synthetic

L = sys.modules["analysis.load"]  # the module (the name analysis.load is the function)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("studies") / "tok"
    return synthetic.make_study(root, depths=(2, 3, 4, 6, 8), budgets=(1e7, 1e8), seeds=(0, 1),
                                running=1, failed=1, pending=1)


@pytest.fixture(scope="module")
def flops_study(tmp_path_factory):
    root = tmp_path_factory.mktemp("studies") / "iso"
    law = synthetic.SyntheticLaw(run_noise=0.002, eval_noise=0.001)
    return synthetic.make_study(root, depths=(1, 2, 3, 4, 6, 8, 12), budgets=(1e14, 1e15, 1e16),
                                unit="flops", law=law)


def test_load_partial_study(study):
    df = L.load(study)
    info = L.cells(study)
    assert len(info) == 20
    assert set(info["state"]) == {"done", "running", "failed", "pending"}
    # the pending cell has no rows; running and failed ones have some but no final row
    assert df["run_id"].nunique() == 19
    assert df.attrs["budget_axis"] == "budget_tokens"
    assert not df.duplicated(["run_id", "step"]).any()
    fr = L.final_rows(df)
    assert len(fr) == 17 and fr["state"].eq("done").all()
    assert (fr["step"] == fr["total_steps"]).all()
    last_any = L.final_rows(df, finished_only=False)
    assert len(last_any) == 19
    assert {"test_loss_avg", "test_err_last", "budget", "is_final"} <= set(df.columns)
    fl = L.floors(study)
    assert fl["test_loss_last"] == pytest.approx(4.5)
    assert len(fl["by_scale"]) == 6


def test_load_keeps_a_column_added_later(tmp_path):
    root = synthetic.make_study(tmp_path / "s", depths=(2, 3), budgets=(1e7,), n_evals=3)
    cell = next((root / "cells").iterdir())
    t = pq.read_table(next((cell / "metrics").glob("part-*.parquet")))
    t = t.append_column("new_metric", pa.array([1.5] * t.num_rows))
    pq.write_table(t.set_column(t.schema.get_field_index("step"), "step", pa.array([10**6] * t.num_rows)),
                   cell / "metrics" / "part-000099.parquet")
    df = L.load(root)
    assert "new_metric" in df.columns
    assert df["new_metric"].notna().sum() == 1


def test_empty_and_missing_study(tmp_path):
    (tmp_path / "empty" / "cells").mkdir(parents=True)
    assert len(L.load(tmp_path / "empty")) == 0
    with pytest.raises(FileNotFoundError):
        L.load(tmp_path / "nope")


def test_pareto_mask():
    x = np.array([1, 2, 3, 4, 2, 5.0])
    y = np.array([5, 4, 4.5, 3, 3.5, 3.0])
    m = F.pareto_mask(x, y)
    assert m.tolist() == [True, False, False, True, True, False]


def test_frontier_fit_recovers_synthetic_slope(study):
    # on the synthetic law the reducible-loss frontier is close to a power law in C
    df = L.load(study)
    fl = L.floors(study)
    f = F.fit_frontier(df, x="flops", y="test_loss_last", floor=fl["test_loss_last"], n_boot=200)
    assert f.alpha < 0 and f.r < -0.98
    assert f.ci["alpha"][0] <= f.alpha <= f.ci["alpha"][1]
    assert f.n_runs >= 3


def test_chinchilla_on_a_study_recovers_the_law(flops_study):
    df = L.load(flops_study)
    fr = L.final_rows(df)
    law = synthetic.SyntheticLaw()
    f = analysis.fit_chinchilla(fr["n_params"], fr["tokens_seen"], fr["test_loss_avg"], n_boot=0)
    assert f.alpha == pytest.approx(law.alpha, abs=0.05)
    assert f.beta == pytest.approx(law.beta, abs=0.05)
    assert f.E == pytest.approx(L.floors(flops_study)["test_loss_avg"], abs=0.15)


def test_fit_cli_writes_report(study, capsys):
    from varscale.cli import fit

    rc = fit.main([str(study), "--n-boot", "50"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "L_last" in out and "frontier" in out and "chinchilla" in out
    rep = json.loads((study / "report" / "fits.json").read_text())
    forms = {f["form"] for f in rep["fits"]}
    assert {"power", "saturating", "chinchilla"} <= forms
    assert rep["floors"]["test_loss_last"] == pytest.approx(4.5)
    f0 = rep["fits"][0]
    assert {"params", "ci", "n", "r", "warnings"} <= set(f0)
    assert f0["n_boot"] == 50
    assert rep["extrapolation"] and all("rel_error" in e for e in rep["extrapolation"])
    md = (study / "report" / "fits.md").read_text()
    assert md.startswith("# Scaling-law fits") and "| power |" in md


def test_fit_cli_flops_study_has_isoflop(flops_study):
    from analysis.fitting import fit_study

    rep = fit_study(flops_study, n_boot=20, chinchilla_boot=0)
    assert rep.budget_axis == "budget_flops"
    assert rep.isoflop
    iso = [f for f in rep.fits if f.form == "isoflop"]
    assert iso and all(np.isfinite(f.params["alpha"]) for f in iso)


def test_figures_cli(study, flops_study, tmp_path):
    from varscale.cli import figures

    # optional inputs: a sample grid per checkpoint and sample-quality rows
    from matplotlib.image import imsave

    df = L.load(study)
    rows = []
    for rid, g in L.final_rows(df).groupby("run_id"):
        for step in g["total_steps"].iloc[0] * np.array([0.2, 0.6, 1.0]):
            p = study / "samples" / rid / f"step-{int(step):08d}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            imsave(p, np.random.default_rng(int(step)).random((8, 8, 3)))
            rows.append({"run_id": rid, "depth": int(g["depth"].iloc[0]), "step": int(step),
                         "n_params": int(g["n_params"].iloc[0]), "flops": float(g["flops"].iloc[0]) * step / g["step"].iloc[0],
                         "class_accuracy": 0.5, "frechet_distance": 10.0, "fid": 20.0})
    (study / "quality").mkdir(exist_ok=True)
    pq.write_table(pa.Table.from_pandas(pd.DataFrame(rows)), study / "quality" / "part-000000.parquet")
    assert figures.main([str(study)]) == 0
    names = {p.name for p in (study / "report").iterdir()}
    for n in ("fig5_vs_N", "fig6_vs_C", "per_scale_loss_vs_N", "training_curves", "fig7_samples",
              "quality_vs_N_C"):
        assert f"{n}.png" in names and f"{n}.pdf" in names, n
    assert figures.main([str(flops_study), "--formats", "png"]) == 0
    assert (flops_study / "report" / "isoflop.png").exists()


def test_varscale_cli_dispatch(tmp_path):
    # one token budget: D does not vary, so no Approach 3 (keeps this quick)
    study = synthetic.make_study(tmp_path / "one", depths=(2, 3, 4), budgets=(1e7,), n_evals=4)
    r = subprocess.run([sys.executable, "-m", "varscale.cli", "fit", str(study), "--n-boot", "0", "--quiet"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "fits.json" in r.stdout


def test_public_api():
    df = analysis.load  # the function, not the module
    assert callable(df)
    f = analysis.fit_power_law([1, 2, 4], [1, 0.5, 0.25])
    assert f.alpha == pytest.approx(-1) and f.k == pytest.approx(1) and f.r == pytest.approx(-1)


def test_analysis_imports_no_torch_nor_config(tmp_path):
    # import every submodule, then use the study path end to end (the budget unit comes from a
    # cell's config.json, read as JSON): no torch, deepspeed or varscale.config in sys.modules;
    # of varscale only the leaf modules schema and schedule (the trainer's learning-rate schedule)
    import json as _json

    study = synthetic.make_study(tmp_path / "nt", depths=(2, 3, 4), budgets=(1e7,), n_evals=3)
    first = sorted((study / "cells").iterdir())[0]
    (first / "config.json").write_text(_json.dumps({"budget_unit": "flops", "schedule": "lin0"}))
    code = ("import sys, pkgutil, importlib, analysis\n"
            "for m in pkgutil.walk_packages(analysis.__path__, 'analysis.'):\n"
            "    importlib.import_module(m.name)\n"
            "from analysis.fitting import fit_study\n"
            f"rep = fit_study({str(study)!r}, n_boot=0)\n"
            "assert rep.fits and rep.budget_axis == 'budget_flops', rep.budget_axis\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'deepspeed')]\n"
            "bad += [m for m in sys.modules if m.startswith('varscale.')\n"
            "        and m not in ('varscale.schema', 'varscale.schedule')]\n"
            "assert not bad, bad\n"
            "print(len(list(pkgutil.iter_modules(analysis.__path__))))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout.strip().splitlines()[-1]) >= 8


def test_budget_axis_and_stable_runs_from_rows_then_cell_config(tmp_path):
    # tokens budget: every depth the same tokens, so the columns alone would say tokens
    df = pd.DataFrame({"budget_tokens": [1e6, 1e6], "budget_flops": [1e12, 2e12]})
    assert L.budget_axis(df) == "budget_tokens"
    assert L.budget_axis(df.assign(budget_unit="flops")) == "budget_flops"  # the rows say so
    assert L.budget_axis(df, "flops") == "budget_flops"  # the cells' config.json says so
    assert L.budget_axis(df.assign(budget_unit="tokens"), "flops") == "budget_tokens"  # the rows win
    # a study whose parts predate the budget_unit column: the unit and the stable runs come from
    # each cell's config.json, never from the run id or a second parse of study.yaml
    from analysis.study import Study

    study = synthetic.make_study(tmp_path / "cfg", depths=(2, 3), budgets=(1e7,), n_evals=3)
    cells = sorted(p for p in (study / "cells").iterdir() if p.is_dir())
    (cells[0] / "config.json").write_text(json.dumps({"budget_unit": "flops", "schedule": "wsd",
                                                      "decay_steps": 0, "branch_from": None}))
    (cells[1] / "config.json").write_text(json.dumps({"budget_unit": "flops", "schedule": "wsd",
                                                      "decay_steps": 5, "branch_from": cells[0].name}))
    st = Study.load(study)
    assert st.budget_axis == "budget_flops"  # the synthetic rows carry no budget_unit: config.json says it
    assert st.stable_runs == [cells[0].name]
    assert cells[0].name not in set(st.final["run_id"]) and cells[1].name in set(st.final["run_id"])


def test_every_fit_form_is_registered_with_its_parts():
    from analysis import forms

    assert list(forms.FORMS) == ["power", "saturating", "frontier", "chinchilla", "isoflop", "curve"]
    for name, f in forms.FORMS.items():
        assert f.name == name and f.scope in ("budget", "frontier", "study", "curve")
    p = {"k": 2.0, "alpha": -0.5, "b": -0.5 * np.log(2.0)}
    fit = analysis.Fit(form="power", params=p)
    assert fit.predict([8.0])[0] == pytest.approx(0.25) and fit.equation() == "y = (2 x)^-0.5"
    c = analysis.Fit(form="chinchilla", params={"E": 1.0, "A": 4.0, "alpha": 0.5, "B": 9.0, "beta": 0.5})
    assert c.predict([4.0], [9.0])[0] == pytest.approx(6.0)
    s = forms.Slice(pd.DataFrame({"n_params": [1e6], "run_id": ["a"]}))
    assert "1 size(s)" in forms.FORMS["power"].eligible(s)


def test_annealed_frontier_uses_only_decayed_finals():
    # a WSD study: each depth has a stable run (high-lr evaluations) and decayed branches,
    # whose final rows are the only points of the annealed frontier
    rows = []
    for d, n in ((2, 1e5), (4, 4e5)):
        for step, c in ((10, 1e10), (100, 1e11), (1000, 1e12)):
            rows.append(dict(run_id=f"d{d}-stable-x", flops=c * n / 1e5, test_loss_last=6 - np.log10(c) / 4 - d / 10,
                             is_final=False, is_stable=True))
        for c in (5e10, 5e11):
            rows.append(dict(run_id=f"d{d}-t{c:g}-y", flops=c * n / 1e5, test_loss_last=5.5 - np.log10(c) / 4 - d / 10,
                             is_final=True, is_stable=False))
    df = pd.DataFrame(rows)
    ann = F.annealed_rows(df)
    assert len(ann) == 4 and not ann["run_id"].str.contains("stable").any()
    f = F.fit_frontier(ann, x="flops", y="test_loss_last", n_boot=0, group="annealed runs")
    assert f.group == "annealed runs" and set(f.extra["frontier_runs"]) <= set(ann["run_id"])
    assert F.annealed_rows(df[~df["is_stable"]]) is None  # not a WSD study


def test_floor_from_chinchilla_subtracts_one_fitted_E_everywhere(flops_study, monkeypatch):
    from analysis.fitting import fit_study
    from analysis.study import Study

    # treat the finished runs as the annealed runs of a WSD study, so that frontier is fitted too
    study = Study.load(flops_study)
    study.annealed = study.final
    rep = fit_study(study, n_boot=0, chinchilla_boot=0, floor_from="chinchilla")
    assert rep.floor_source.startswith("Chinchilla E")
    true = L.floors(flops_study)
    for m in ("test_loss_last", "test_loss_avg"):
        assert rep.floor[m].E == pytest.approx(true[m], abs=0.15)
        groups = {f.group for f in rep.fits if f.metric == m and f.quantity == "reducible" and f.floor == m}
        assert "annealed runs" in groups and "all evaluations" in groups
        assert any(g.startswith("budget_flops=") for g in groups)
    with pytest.raises(ValueError, match="floor_from"):
        fit_study(flops_study, n_boot=0, floor_from="tokens")


def test_a_new_form_is_one_module_and_one_registry_line(tmp_path, monkeypatch):
    # the worked example of docs/extending.md ("Adding a fit form"), registered for this test
    from analysis import forms
    from analysis.fitting import fit_study
    from analysis.forms.base import FitForm
    from analysis.render import format_markdown

    class LogLinear(FitForm):
        name, scope, metrics = "loglinear", "budget", ("test_err_last", "test_err_avg")

        def eligible(self, s):
            sizes = s.data[s.x_col].nunique()
            return None if sizes >= 3 else f"{sizes} size(s): the log-linear law needs 3"

        def fit(self, s, metric):
            lx = np.log(s.data[s.x_col].to_numpy(float))
            y = s.data[metric].to_numpy(float)
            c, a = np.polyfit(lx, y, 1)
            return [analysis.Fit(form=self.name, metric=metric, x=s.x_col, group=s.group, n=len(y),
                                 n_runs=s.data["run_id"].nunique(), params={"a": float(a), "c": float(c)},
                                 r=float(np.corrcoef(lx, y)[0, 1]))]

        def predict(self, params, x, d=None):
            return params["a"] + params["c"] * np.log(np.asarray(x, dtype=float))

        def equation(self, params):
            return f"y = {params['a']:.3g} + {params['c']:.3g} log x"

    monkeypatch.setitem(forms.FORMS, "loglinear", LogLinear())
    study = synthetic.make_study(tmp_path / "ll", depths=(2, 3, 4), budgets=(1e7,), n_evals=3)
    rep = fit_study(study, n_boot=0)
    ll = [f for f in rep.to_json()["fits"] if f["form"] == "loglinear"]
    assert [f["metric"] for f in ll] == ["test_err_last", "test_err_avg"]
    assert ll[0]["equation"].endswith("log x") and "| loglinear |" in format_markdown(rep)
    assert rep.fits[[f.form for f in rep.fits].index("loglinear")].equation().endswith("log x")
    p = ll[0]["params"]
    assert forms.get("loglinear").predict(p, [1e6])[0] == pytest.approx(p["a"] + p["c"] * np.log(1e6))
