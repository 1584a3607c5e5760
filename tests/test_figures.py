"""Figures draw the laws of report/fits.json (the headline rows' fit entries), never refit:
a line follows its entry's parameters; error-rate lines stop at 1; Fig. 5's legend carries
the budget markers; axis labels name the floor; Fig. 7 labels real fractions of training."""
import json
import math

import numpy as np
import pytest
from matplotlib.image import imsave

from analysis import figures, report, synthetic
from analysis.load import final_rows, load
from fits_contract import with_contract


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("fig") / "tok"
    s = synthetic.make_study(root, depths=(2, 3, 4, 6), budgets=(1e7, 1e8), n_evals=5)
    rep = with_contract(report.fit_study(s, n_boot=0, chinchilla_boot=0))
    (s / "report").mkdir(exist_ok=True)
    (s / "report" / "fits.json").write_text(json.dumps(rep))
    (s / "report" / "fits.orig.json").write_text(json.dumps(rep))  # what an editing test puts back
    return s


def _write(study, rep):
    (study / "report" / "fits.json").write_text(json.dumps(rep))


def _lines(fig):
    return {ln.get_gid(): ln for ax in fig.axes for ln in ax.get_lines() if ln.get_gid()}


def _row(rep, metric, kind):
    return next((i, h) for i, h in enumerate(rep["headline"]) if h["metric"] == metric and h["kind"] == kind)


@pytest.mark.parametrize("kind,metric", [("N", "test_loss_last"), ("C", "test_loss_avg"), ("N", "test_err_avg")])
def test_line_follows_its_fit_entry(study, kind, metric):
    df = load(study)
    rep = figures.read_report(study)
    _, h = _row(rep, metric, kind)
    draw = figures.fig5_vs_N if kind == "N" else figures.fig6_vs_C
    ln = _lines(draw(df, rep))[f"fit:{h['fit']}"]
    p = rep["fits"][h["fit"]]["params"]
    x, y = ln.get_data()
    np.testing.assert_allclose(y, np.exp(p["b"]) * x ** p["alpha"], rtol=1e-9)
    # edit the entry in fits.json and redraw from the file: the line moves with it
    p["b"] += 0.1
    p["alpha"] *= 0.5
    _write(study, rep)
    rep2 = figures.read_report(study)
    x2, y2 = _lines(draw(df, rep2))[f"fit:{h['fit']}"].get_data()
    np.testing.assert_allclose(y2, np.exp(p["b"]) * x2 ** p["alpha"], rtol=1e-9)
    assert not np.allclose(y2, y)
    # the raw file draws the raw law
    xr, yr = _lines(draw(df, rep2, raw=True))[f"fit:{h['fit_raw']}"].get_data()
    q = rep2["fits"][h["fit_raw"]]["params"]
    np.testing.assert_allclose(yr, np.exp(q["b"]) * xr ** q["alpha"], rtol=1e-9)
    (study / "report" / "fits.json").write_text((study / "report" / "fits.orig.json").read_text())


def test_reducible_axis_names_E_and_its_source(study):
    df = load(study)
    rep = figures.read_report(study)
    E = rep["floor"]["test_loss_last"]["E"]
    for source, name in (("chinchilla", "Chinchilla E"), ("token entropy", "token entropy")):
        rep["floor"]["test_loss_last"].update(source=source, resolved=True)
        fig = figures.fig5_vs_N(df, rep)
        assert fig.axes[0].get_ylabel() == f"L_last - {E:.4g} ({name}), nats"
    rep["floor"]["test_loss_last"]["resolved"] = False
    assert "floor not resolved" in figures.fig5_vs_N(df, rep).axes[0].get_ylabel()
    assert fig.axes[2].get_ylabel().startswith("Err_last")  # error rates stay raw
    raw = figures.fig5_vs_N(df, rep, raw=True)
    assert raw.axes[0].get_ylabel() == "L_last: test loss, last scale (nats)"
    # the points are the loss minus that one E
    fr = final_rows(df)
    pts = np.concatenate([c.get_offsets()[:, 1] for c in fig.axes[0].collections])
    np.testing.assert_allclose(np.sort(pts), np.sort(fr["test_loss_last"].to_numpy() - E))


def test_old_report_without_headline_falls_back_to_its_fits(study):
    df = load(study)
    rep = figures.read_report(study)
    old = {k: v for k, v in rep.items() if k not in ("floor", "headline", "best_law")}
    rows = figures.report_headline(old)
    assert {(h["metric"], h["kind"], h["slice"], h["fit"], h["fit_raw"]) for h in rows} == \
        {(h["metric"], h["kind"], h["slice"], h["fit"], h["fit_raw"]) for h in rep["headline"]}
    fig = figures.fig5_vs_N(df, old)
    assert fig.axes[0].get_ylabel().startswith("L_last - 4.5 (token entropy)")
    assert len(_lines(fig)) == len([h for h in rows if h["kind"] == "N"])


def test_error_rate_line_is_clipped_at_one(study):
    df = load(study)
    rep = figures.read_report(study)
    i, h = _row(rep, "test_err_last", "N")
    g = final_rows(df)
    g = g[np.isclose(g["budget"], float(h["slice"].split("=")[1]), rtol=1e-2)]
    lo, hi = g["n_params"].min(), g["n_params"].max()
    # a law that crosses 1 inside the sizes: 1.5 at the smallest, falling as N^-0.3
    a = -0.3
    rep["fits"][h["fit"]]["params"].update(alpha=a, b=math.log(1.5) - a * math.log(lo))
    x, y = _lines(figures.fig5_vs_N(df, rep))[f"fit:{h['fit']}"].get_data()
    assert y.max() <= 1.0 and y.max() == pytest.approx(1.0)
    assert x.min() == pytest.approx(lo * 1.5 ** (1 / -a)) and x.max() == pytest.approx(hi)
    # entirely above 1: no line, and the legend says why
    rep["fits"][h["fit"]]["params"].update(alpha=-0.01, b=math.log(3.0) + 0.01 * math.log(lo))
    fig = figures.fig5_vs_N(df, rep)
    assert f"fit:{h['fit']}" not in _lines(fig)
    assert any("not drawn" in t.get_text() for t in fig.axes[2].get_legend().get_texts())


def test_fig5_legend_shows_every_budget_marker(study):
    df = load(study)
    fig = figures.fig5_vs_N(df, figures.read_report(study))
    budgets = sorted(final_rows(df)["budget"].unique())
    for ax in fig.axes[:4]:
        hs = ax.get_legend().legend_handles
        assert [hh.get_marker() for hh in hs] == list(figures.MARKERS[:len(budgets)])
        scattered = {p.get_paths()[0].vertices.shape for p in ax.collections}
        assert len(ax.collections) == len(budgets) and scattered  # one marker set per budget
        assert all(f"{b:.2g}" in t.get_text() for b, t in zip(budgets, ax.get_legend().get_texts()))


def test_make_figures_floor_option_and_raw_files(study, capsys):
    out = {p.name for p in figures.make_figures(study, formats=("png",))}
    assert {"fig5_vs_N.png", "fig5_vs_N_raw.png", "fig6_vs_C.png", "fig6_vs_C_raw.png"} <= out
    assert figures.main([str(study), "--floor", "none", "--formats", "png"]) == 0
    names = {p.name for p in (study / "report").iterdir()}
    assert "fig5_vs_N.png" in names and "fig5_vs_N_raw.png" not in names  # no stale raw file
    rep = figures.read_report(study)
    fig = figures.fig5_vs_N(load(study), rep, raw=True)
    assert "- " not in fig.axes[0].get_ylabel()


def test_cli_sentences(study, tmp_path, capsys):
    assert figures.main([str(study), "--floor-last", "4.0"]) == 2
    assert "varscale fit" in capsys.readouterr().err
    assert figures.main([str(study), "--x", "n_params_blocks"]) == 2
    assert "--x n_params" in capsys.readouterr().err
    # no fits.json: the laws are fitted now and the command says how to get the table
    s = synthetic.make_study(tmp_path / "nofit", depths=(2, 3, 4), budgets=(1e7,), n_evals=3)
    assert figures.main([str(s), "--formats", "png"]) == 0
    out = capsys.readouterr().out
    assert "no report/fits.json" in out and f"varscale fit {s}" in out
    assert (s / "report" / "fig5_vs_N.png").exists() and not (s / "report" / "fits.json").exists()


def _png(path, hw=(8, 80)):
    path.parent.mkdir(parents=True, exist_ok=True)
    imsave(path, np.random.default_rng(len(str(path))).random((*hw, 3)))


def test_fig7_labels_real_fractions_and_prefers_the_run_with_snapshots(tmp_path):
    s = synthetic.make_study(tmp_path / "s7", depths=(2, 3), budgets=(1e7, 1e8), n_evals=3)
    fr = final_rows(load(s)).set_index("run_id")
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
    picks = figures.fig7_picks(load(s), figures.sample_images(s))
    assert {p["run_id"] for p in picks if p["depth"] == 2} == {small}
    assert [p["step"] for p in picks if p["depth"] == 3] == [int(0.96 * T3), T3]  # each snapshot once
    fig = figures.fig7_samples(load(s), figures.sample_images(s))
    titles = [ax.get_title(loc="left") for ax in fig.axes]
    assert len(titles) == 5
    assert any(f"step {int(0.96 * T3)} of {T3}, 96% of training" in tt for tt in titles)
    assert sum("20% of training" in tt for tt in titles) == 1
    # wide strips get one row each at the figure's full width
    w, h = fig.get_size_inches()
    assert all(ax.get_position().width > 0.8 for ax in fig.axes)


def test_alternative_floor_reads_its_own_report(study, capsys):
    assert figures.main([str(study), "--floor", "chinchilla", "--formats", "png"]) == 2
    err = capsys.readouterr().err
    assert f"run `varscale fit {study} --floor-from chinchilla` first" in err
    rep = figures.read_report(study)
    rep["floor"]["test_loss_last"]["source"] = "chinchilla"
    (study / "report" / "fits-floor-chinchilla.json").write_text(json.dumps(rep))
    assert figures.main([str(study), "--floor", "chinchilla", "--formats", "png"]) == 0
    names = {p.name for p in (study / "report").iterdir()}
    assert {"fig5_vs_N-floor-chinchilla.png", "fig6_vs_C-floor-chinchilla.png"} <= names


def test_nearly_flat_law_draws(study):
    # alpha near 0 gives k = exp(b / alpha) beyond a float and a crossing of 1 at x = inf
    df = load(study)
    rep = figures.read_report(study)
    for kind, metric in (("N", "test_loss_last"), ("N", "test_err_last"), ("C", "test_err_avg")):
        _, h = _row(rep, metric, kind)
        rep["fits"][h["fit"]]["params"].update(alpha=-1e-4, b=-0.5)
    fig5, fig6 = figures.fig5_vs_N(df, rep), figures.fig6_vs_C(df, rep)
    assert any("inf" in t.get_text() for t in fig5.axes[0].get_legend().get_texts())
    assert len(_lines(fig6)) == 4
