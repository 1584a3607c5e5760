"""Figures draw the laws of the study's report (the fits its headline rows point at), never
refit: a line follows its fit's parameters, also through fits.json; error-rate lines stop at
1; Fig. 5's legend carries the budget markers; axis labels name the floor; a report without
a headline fails loudly; Fig. 7 labels real fractions of training. Every report here is a
real fit (``fit_study``) of a synthetic study, written and read back as fits.json."""
import dataclasses
import json
import math

import numpy as np
import pytest
from matplotlib.image import imsave

from analysis import figures, synthetic
from analysis.fitting import fit_study
from analysis.results import read_report, write_report
from analysis.study import Study
from varscale.cli import figures as cli


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("fig") / "tok"
    s = synthetic.make_study(root, depths=(2, 3, 4, 6), budgets=(1e7, 1e8), n_evals=5)
    write_report(fit_study(Study.load(s), n_boot=20, chinchilla_boot=0), s)
    return s


@pytest.fixture(scope="module")
def study(study_dir):
    return Study.load(study_dir)


@pytest.fixture
def rep(study_dir):
    """The study's report as ``varscale figures`` reads it (a fresh copy for each test)."""
    return read_report(study_dir)


def _lines(fig):
    return {ln.get_gid(): ln for ax in fig.axes for ln in ax.get_lines() if ln.get_gid()}


def _row(rep, metric, kind):
    return next(h for h in rep.headline if h.metric == metric and h.kind == kind)


def _power(fit, x):
    return np.exp(fit.params["b"]) * x ** fit.params["alpha"]


def test_the_report_has_a_headline_and_every_row_is_drawn(study, rep):
    kinds = {(h.metric, h.kind) for h in rep.headline}
    assert kinds == {(m, k) for m in figures.PANELS for k in "NC"}
    fig5, fig6 = figures.fig5_vs_N(study, rep), figures.fig6_vs_C(study, rep)
    assert set(_lines(fig5)) == {f"fit:{h.fit}" for h in rep.headline if h.kind == "N"}
    assert set(_lines(fig6)) == {f"fit:{h.fit}" for h in rep.headline if h.kind == "C"}
    raw = figures.fig5_vs_N(study, rep, raw=True)
    assert set(_lines(raw)) == {f"fit:{h.fit_raw}" for h in rep.headline if h.kind == "N"}


@pytest.mark.parametrize("kind,metric", [("N", "test_loss_last"), ("C", "test_loss_avg"), ("N", "test_err_avg")])
def test_line_follows_its_fit(study, study_dir, rep, tmp_path, kind, metric):
    h = _row(rep, metric, kind)
    draw = figures.fig5_vs_N if kind == "N" else figures.fig6_vs_C
    x, y = _lines(draw(study, rep))[f"fit:{h.fit}"].get_data()
    np.testing.assert_allclose(y, _power(rep.fit_of(h), x), rtol=1e-9)
    # move the law in fits.json and draw from the file read back: the line moves with it
    f = rep.fit_of(h)
    f.params.update(b=f.params["b"] + 0.1, alpha=f.params["alpha"] * 0.5)
    (tmp_path / "fits.json").write_text(json.dumps(rep.to_json()))
    rep2 = read_report(tmp_path / "fits.json")
    x2, y2 = _lines(draw(study, rep2))[f"fit:{h.fit}"].get_data()
    np.testing.assert_allclose(y2, _power(f, x2), rtol=1e-9)
    assert not np.allclose(y2, y)
    # the raw figure draws the raw law
    xr, yr = _lines(draw(study, rep2, raw=True))[f"fit:{h.fit_raw}"].get_data()
    np.testing.assert_allclose(yr, _power(rep2.fit_of(h, raw=True), xr), rtol=1e-9)


def test_reducible_axis_names_E_and_its_source(study, rep):
    fl = rep.floor["test_loss_last"]
    assert fl.source == "token entropy"  # the synthetic study's entropy lies below every loss
    fig = figures.fig5_vs_N(study, rep)
    assert fig.axes[0].get_ylabel() == f"L_last - {fl.E:.4g} (token entropy), nats"
    assert fig.axes[2].get_ylabel().startswith("Err_last")  # error rates stay raw
    # the points are the loss minus that one E
    pts = np.concatenate([c.get_offsets()[:, 1] for c in fig.axes[0].collections])
    np.testing.assert_allclose(np.sort(pts), np.sort(study.final["test_loss_last"].to_numpy() - fl.E))
    for source, name in (("chinchilla", "Chinchilla E"), ("hand", "E by hand")):
        rep.floor["test_loss_last"] = dataclasses.replace(fl, source=source)
        assert figures.fig5_vs_N(study, rep).axes[0].get_ylabel() == f"L_last - {fl.E:.4g} ({name}), nats"
    rep.floor["test_loss_last"] = dataclasses.replace(fl, resolved=False)
    assert "floor not resolved" in figures.fig5_vs_N(study, rep).axes[0].get_ylabel()
    raw = figures.fig5_vs_N(study, rep, raw=True)
    assert raw.axes[0].get_ylabel() == "L_last: test loss, last scale (nats)"


def test_a_report_without_headline_fails_loudly(study, rep, study_dir, tmp_path, capsys, monkeypatch):
    rep.headline = []
    for draw in (figures.fig5_vs_N, figures.fig6_vs_C):
        for raw in (False, True):
            with pytest.raises(figures.NoHeadline, match="no headline"):
                draw(study, rep, raw=raw)
    with pytest.raises(figures.NoHeadline):
        figures.figures_of(study, rep)
    with pytest.raises(figures.NoHeadline):
        figures.make_figures(study, rep, out_dir=tmp_path)
    assert figures.stale(study, rep).startswith("has laws but no headline")
    # on disk (a fits.json from before the headline): the command fits the laws again and says so
    s = synthetic.make_study(tmp_path / "old", depths=(2, 3, 4), budgets=(1e7,), n_evals=3)
    old = fit_study(Study.load(s), n_boot=0)
    old.headline = []
    write_report(old, s)
    assert cli.main([str(s), "--formats", "png"]) == 0
    out = capsys.readouterr().out
    assert "has laws but no headline" in out and "fitted now" in out
    # a fit that writes no headline: the command stops with that sentence, draws nothing
    import analysis.fitting

    real = analysis.fitting.fit_study

    def headless(*a, **k):
        r = real(*a, **k)
        r.headline = []
        return r

    monkeypatch.setattr(analysis.fitting, "fit_study", headless)
    for p in (s / "report").glob("fig*"):
        p.unlink()
    assert cli.main([str(s), "--formats", "png"]) == 1
    assert "no headline rows" in capsys.readouterr().err
    assert not list((s / "report").glob("fig5*"))


def test_error_rate_line_is_clipped_at_one(study, rep):
    h = _row(rep, "test_err_last", "N")
    g = study.final[study.final["budget"].map(study.slice_label) == h.slice]
    lo, hi = g["n_params"].min(), g["n_params"].max()
    # a law that crosses 1 inside the sizes: 1.5 at the smallest, falling as N^-0.3
    a = -0.3
    rep.fit_of(h).params.update(alpha=a, b=math.log(1.5) - a * math.log(lo))
    x, y = _lines(figures.fig5_vs_N(study, rep))[f"fit:{h.fit}"].get_data()
    assert y.max() <= 1.0 and y.max() == pytest.approx(1.0)
    assert x.min() == pytest.approx(lo * 1.5 ** (1 / -a)) and x.max() == pytest.approx(hi)
    # entirely above 1: no line, and the legend says why
    rep.fit_of(h).params.update(alpha=-0.01, b=math.log(3.0) + 0.01 * math.log(lo))
    fig = figures.fig5_vs_N(study, rep)
    assert f"fit:{h.fit}" not in _lines(fig)
    assert any("not drawn" in t.get_text() for t in fig.axes[2].get_legend().get_texts())


def test_fig5_legend_shows_every_budget_marker(study, rep):
    fig = figures.fig5_vs_N(study, rep)
    budgets = sorted(study.final["budget"].unique())
    for ax in fig.axes[:4]:
        hs = ax.get_legend().legend_handles
        assert [hh.get_marker() for hh in hs] == list(figures.MARKERS[:len(budgets)])
        scattered = {p.get_paths()[0].vertices.shape for p in ax.collections}
        assert len(ax.collections) == len(budgets) and scattered  # one marker set per budget
        assert all(f"{b:.2g}" in t.get_text() for b, t in zip(budgets, ax.get_legend().get_texts()))


def test_tables_are_the_reports(rep):
    t = figures.headline_table(rep)
    assert len(t) == len(rep.headline)
    h = _row(rep, "test_loss_last", "N")
    row = t.iloc[rep.headline.index(h)]
    assert row["quantity"] == f"L_last - {rep.floor['test_loss_last'].E:.4g}" and row["slice"] == h.slice
    assert row["alpha [95% CI]"].startswith(f"{h.alpha:.4g} [")  # the bootstrap's interval
    assert t.loc[t["quantity"] == "Err_last", "vs"].tolist() == ["N", "N", "C"]
    ft = figures.floor_table(rep)
    assert ft["metric"].tolist() == ["L_last", "L_avg"] and set(ft["source"]) == {"token entropy"}
    ex = figures.extrapolation_table(rep)
    assert len(ex) == len(rep.extrapolation) and ex["rel_error"].notna().all()


def test_make_figures_floor_option_and_raw_files(study, study_dir, rep):
    out = {p.name for p in figures.make_figures(study, rep, formats=("png",))}
    assert {"fig5_vs_N.png", "fig5_vs_N_raw.png", "fig6_vs_C.png", "fig6_vs_C_raw.png",
            "per_scale_loss_vs_N.png", "training_curves.png"} <= out
    assert cli.main([str(study_dir), "--floor", "none", "--formats", "png"]) == 0
    names = {p.name for p in (study_dir / "report").iterdir()}
    assert "fig5_vs_N.png" in names and "fig5_vs_N_raw.png" not in names  # no stale raw file
    assert "- " not in figures.figures_of(study, rep, "none")["fig5_vs_N"].axes[0].get_ylabel()
    with pytest.raises(ValueError, match="not one of"):
        figures.figures_of(study, rep, "entropie")


def test_cli_sentences(study_dir, tmp_path, capsys):
    assert cli.main([str(study_dir), "--floor-last", "4.0"]) == 2
    assert "varscale fit" in capsys.readouterr().err
    assert cli.main([str(study_dir), "--x", "n_params_blocks"]) == 2
    assert "--x n_params" in capsys.readouterr().err
    assert cli.main([str(study_dir), "--formats", "png,gif"]) == 2
    assert "unknown format gif" in capsys.readouterr().err
    # no fits.json: the laws are fitted now and the command says how to get the table
    s = synthetic.make_study(tmp_path / "nofit", depths=(2, 3, 4), budgets=(1e7,), n_evals=3)
    assert cli.main([str(s), "--formats", "png"]) == 0
    out = capsys.readouterr().out
    assert "no report/fits.json" in out and f"varscale fit {s}" in out
    assert (s / "report" / "fig5_vs_N.png").exists() and not (s / "report" / "fits.json").exists()
    # a report fitted on fewer evaluations than the study has: drawn, with a note
    rep = fit_study(Study.load(s), n_boot=0)
    rep.rows -= 1
    write_report(rep, s)
    assert cli.main([str(s), "--formats", "png"]) == 0
    assert "note: report/fits.json was fitted on" in capsys.readouterr().out


def test_alternative_floor_reads_its_own_report(study, study_dir, capsys):
    assert cli.main([str(study_dir), "--floor", "chinchilla", "--formats", "png"]) == 2
    err = capsys.readouterr().err
    assert f"run `varscale fit {study_dir} --floor-from chinchilla` first" in err
    alt = fit_study(study, n_boot=0, floor_from="chinchilla")
    path, _ = write_report(alt, study_dir)
    assert path.name == "fits-floor-chinchilla.json"
    assert cli.main([str(study_dir), "--floor", "chinchilla", "--formats", "png"]) == 0
    names = {p.name for p in (study_dir / "report").iterdir()}
    assert {"fig5_vs_N-floor-chinchilla.png", "fig6_vs_C-floor-chinchilla.png"} <= names
    fig = figures.figures_of(study, read_report(path), "chinchilla")["fig5_vs_N-floor-chinchilla"]
    E = alt.floor["test_loss_last"].E
    assert fig.axes[0].get_ylabel().startswith(f"L_last - {E:.4g} (Chinchilla E")


def _png(path, hw=(8, 80)):
    path.parent.mkdir(parents=True, exist_ok=True)
    imsave(path, np.random.default_rng(len(str(path))).random((*hw, 3)))


def test_fig7_labels_real_fractions_and_prefers_the_run_with_snapshots(tmp_path):
    s = synthetic.make_study(tmp_path / "s7", depths=(2, 3), budgets=(1e7, 1e8), n_evals=3)
    fr = Study.load(s).final.set_index("run_id")
    small, big = sorted(fr.index[fr["depth"] == 2], key=lambda r: fr.loc[r, "budget"])
    # the larger budget (a late branch) has snapshots only near its end; the smaller has 20/60/100%
    T = int(fr.loc[big, "total_steps"])
    for st in (int(0.96 * T), int(0.96 * T), T):
        _png(s / "samples" / big / f"step-{st:08d}.png")
    t = int(fr.loc[small, "total_steps"])
    for f in (0.2, 0.6, 1.0):
        _png(s / "samples" / small / f"step-{int(f * t):08d}.png")
    d3 = fr.index[fr["depth"] == 3][0]
    T3 = int(fr.loc[d3, "total_steps"])
    for st in (int(0.96 * T3), T3):
        _png(s / "samples" / d3 / f"step-{st:08d}.png")
    # the run's length as `varscale sample` writes it beside a PNG
    (s / "samples" / d3 / f"step-{T3:08d}.json").write_text(json.dumps({"step": T3, "total_steps": T3}))
    study = Study.load(s)
    imgs = study.sample_images().set_index("path")
    assert imgs.loc[str(s / "samples" / d3 / f"step-{T3:08d}.png"), "total_steps"] == T3
    assert imgs["total_steps"].isna().sum() == len(imgs) - 1
    picks = figures.fig7_picks(study)
    assert {p["run_id"] for p in picks if p["depth"] == 2} == {small}
    assert [p["step"] for p in picks if p["depth"] == 3] == [int(0.96 * T3), T3]  # each snapshot once
    fig = figures.fig7_samples(study)
    titles = [ax.get_title(loc="left") for ax in fig.axes]
    assert len(titles) == 5
    assert any(f"step {int(0.96 * T3)} of {T3}, 96% of training" in tt for tt in titles)
    assert sum("20% of training" in tt for tt in titles) == 1
    # wide strips get one row each at the figure's full width
    assert all(ax.get_position().width > 0.8 for ax in fig.axes)


def test_nearly_flat_law_draws(study, rep):
    # alpha near 0 gives k = exp(b / alpha) beyond a float and a crossing of 1 at x = inf
    for kind, metric in (("N", "test_loss_last"), ("N", "test_err_last"), ("C", "test_err_avg")):
        rep.fit_of(_row(rep, metric, kind)).params.update(alpha=-1e-4, b=-0.5)
    fig5, fig6 = figures.fig5_vs_N(study, rep), figures.fig6_vs_C(study, rep)
    assert any("inf" in t.get_text() for t in fig5.axes[0].get_legend().get_texts())
    assert len(_lines(fig6)) == 4
