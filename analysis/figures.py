"""``varscale figures <study-dir>``: the paper's scaling figures for a study, PNG and PDF.

- ``fig5_vs_N``: L and Err, last scale and all-scale average, vs N (each finished run's final
  evaluation), log-log, one dashed power law per budget with its equation and Pearson r;
  losses are reducible (minus the token-entropy floor) when the floor is known, as in the paper;
- ``fig6_vs_C``: the same four metrics vs training compute: every cell's evaluation curve,
  the Pareto frontier C_min and its power law;
- ``per_scale_loss_vs_N``: the final test loss of every scale vs N, one panel per budget;
- ``training_curves``: test and training loss vs tokens seen, coloured by depth;
- ``isoflop``: loss vs N per FLOP budget with the Approach-2 parabolas (FLOP budgets only);
- ``quality_vs_N_C``: sample quality against N and C when ``quality/`` exists;
- ``fig7_samples``: depth x training progress grid of sample images when ``samples/`` exists.

Figures are built on ``matplotlib.figure.Figure`` (no pyplot state), so the functions work
in notebooks with any backend and the command line needs no display. Each depth has one
colour in every figure (``depth_colors``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from varscale.schema import StudyLayout

from .frontier import annealed_rows, fit_frontier, pareto_mask
from .load import LOSSES, final_rows, floors, load, load_quality, sample_images, usable_floors
from .powerlaw import fit_power_law, predict_power

LABEL = {"test_loss_last": "test loss, last scale", "test_loss_avg": "test loss, all scales",
         "test_err_last": "token error rate, last scale", "test_err_avg": "token error rate, all scales"}
SYMBOL = {"test_loss_last": "L_last", "test_loss_avg": "L_avg", "test_err_last": "Err_last",
          "test_err_avg": "Err_avg"}
PANELS = ("test_loss_last", "test_loss_avg", "test_err_last", "test_err_avg")
XLABEL = {"n_params": "parameters N", "n_params_blocks": "block parameters N (73728 d^3 form)",
          "n_params_nonembedding": "non-embedding parameters N",
          "flops": "training compute C (FLOPs)", "flops_6nd": "training compute C = 6ND (FLOPs)",
          "tokens_seen": "training tokens D"}
MARKERS = "osD^vP*Xph"


def _log_axes(ax) -> None:
    """Log-log with plain numbers on a y axis that spans little more than a decade."""
    from matplotlib.ticker import FuncFormatter

    ax.set_xscale("log")
    ax.set_yscale("log")
    lo, hi = ax.get_ylim()
    if lo > 0 and hi / lo < 30:
        def minor(v, _):  # a narrow log axis has few or no decades: label 1-2-3-5 ticks
            lead = int(f"{v:.0e}"[0])
            return f"{v:.3g}" if hi / lo < 3 or lead in (1, 2, 3, 5) else ""

        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(minor))
    ax.grid(True, which="major", alpha=0.3)


def _budget_name(axis: str, b: float) -> str:
    return f"{b:.2g} tokens" if axis == "budget_tokens" else f"{b:.2g} FLOPs"


def depth_colors(depths) -> dict[int, tuple]:
    """One colour per depth, the same in every figure of a study (viridis, shallow to deep)."""
    from matplotlib import colormaps

    ds = sorted({int(d) for d in depths})
    cmap = colormaps["viridis"]
    return {d: cmap(0.9 * i / max(len(ds) - 1, 1)) for i, d in enumerate(ds)}


def _ylabel(metric: str, floor: float | None) -> str:
    base = LABEL[metric]
    if metric in LOSSES:
        return (f"reducible {base} (nats, minus {floor:.3g})" if floor is not None else f"{base} (nats)")
    return base + " (fraction)"


def _legend_eq(fit, sym: str, xsym: str) -> str:
    p = fit.params
    r = "" if fit.r is None or not np.isfinite(fit.r) else f", r={fit.r:.4f}"
    return f"{sym} = ({p['k']:.3g} {xsym})^{p['alpha']:.3g}{r}"


def fig5_vs_N(df: pd.DataFrame, fl: dict, x_col: str = "n_params", colors=None) -> Figure:
    fr = final_rows(df)
    colors = colors or depth_colors(df["depth"])
    fig = Figure(figsize=(11, 8.5), layout="constrained")
    axes = fig.subplots(2, 2).ravel()
    budgets = sorted(fr["budget"].unique()) if len(fr) else []
    axis = df.attrs.get("budget_axis", "budget")
    for ax, m in zip(axes, PANELS):
        floor = fl.get(m)
        handles = []
        for bi, b in enumerate(budgets):
            g = fr[fr["budget"] == b]
            y = g[m].to_numpy(float) - (floor or 0.0)
            x = g[x_col].to_numpy(float)
            ax.scatter(x, np.where(y > 0, y, np.nan), c=[colors[int(d)] for d in g["depth"]],
                       marker=MARKERS[bi % len(MARKERS)], s=40, edgecolors="k", linewidths=0.4, zorder=3)
            if g[x_col].nunique() >= 2:
                f = fit_power_law(x, y, n_boot=0)
                if np.isfinite(f.params["alpha"]):
                    xs = np.geomspace(x.min(), x.max(), 50)
                    (h,) = ax.plot(xs, predict_power(f, xs), "--", color=str(0.15 + 0.5 * bi / max(len(budgets), 1)),
                                   label=f"{_budget_name(axis, b)}: " + _legend_eq(f, SYMBOL[m], "N"))
                    handles.append(h)
        _log_axes(ax)
        ax.set_xlabel(XLABEL.get(x_col, x_col))
        ax.set_ylabel(_ylabel(m, floor))
        ax.set_title(f"{SYMBOL[m]} vs N (final evaluation of each run)")
        if handles:
            ax.legend(handles=handles, fontsize=7, loc="best")
    _depth_legend(fig, colors)
    return fig


def _depth_legend(fig: Figure, colors: dict) -> None:
    hs = [Line2D([], [], color=c, marker="o", ls="", label=f"d{d}") for d, c in colors.items()]
    if hs:
        fig.legend(handles=hs, loc="outside right center", title="depth", fontsize=8)


def fig6_vs_C(df: pd.DataFrame, fl: dict, c_col: str = "flops", colors=None) -> Figure:
    colors = colors or depth_colors(df["depth"])
    fig = Figure(figsize=(11, 8.5), layout="constrained")
    axes = fig.subplots(2, 2).ravel()
    for ax, m in zip(axes, PANELS):
        floor = fl.get(m)
        for rid, g in df.groupby("run_id"):
            y = g[m].to_numpy(float) - (floor or 0.0)
            ax.plot(g[c_col], np.where(y > 0, y, np.nan), "-", color=colors[int(g["depth"].iloc[0])],
                    lw=1, alpha=0.6)
        d = df[[c_col, m]].dropna()
        x = d[c_col].to_numpy(float)
        y = d[m].to_numpy(float) - (floor or 0.0)
        ok = y > 0
        msk = pareto_mask(x[ok], y[ok])
        ax.plot(x[ok][msk], y[ok][msk], "k.", ms=5, label="frontier C_min")
        f = fit_frontier(df, x=c_col, y=m, floor=floor, n_boot=0)
        if np.isfinite(f.params["alpha"]) and msk.sum() >= 2:
            xs = np.geomspace(x[ok][msk].min(), x[ok][msk].max(), 50)
            ax.plot(xs, predict_power(f, xs), "--", color="crimson", lw=1.5,
                    label=_legend_eq(f, SYMBOL[m], "C"))
        ann = annealed_rows(df)
        if ann is not None and floor is None:  # WSD: the frontier of the decayed runs' finals
            fa = fit_frontier(ann, x=c_col, y=m, n_boot=0)
            xa, ya = ann[c_col].to_numpy(float), ann[m].to_numpy(float)
            ma = pareto_mask(xa, ya)
            ax.plot(xa, ya, "o", mfc="none", mec="k", ms=6, label="annealed runs (final)")
            if np.isfinite(fa.params["alpha"]) and ma.sum() >= 2:
                xs = np.geomspace(xa[ma].min(), xa[ma].max(), 50)
                ax.plot(xs, predict_power(fa, xs), "-", color="navy", lw=1.2,
                        label="annealed: " + _legend_eq(fa, SYMBOL[m], "C"))
        _log_axes(ax)
        ax.set_xlabel(XLABEL.get(c_col, c_col))
        ax.set_ylabel(_ylabel(m, floor))
        ax.set_title(f"{SYMBOL[m]} vs compute (every evaluation of every cell)")
        ax.legend(fontsize=7, loc="best")
    _depth_legend(fig, colors)
    return fig


def per_scale_loss_vs_N(df: pd.DataFrame, fl: dict, x_col: str = "n_params") -> Figure:
    from matplotlib import colormaps

    fr = final_rows(df)
    budgets = sorted(fr["budget"].unique()) if len(fr) else []
    nb = max(len(budgets), 1)
    fig = Figure(figsize=(4.5 * min(nb, 4), 4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, min(nb, 4)))
    floors_k = fl.get("by_scale")
    axis = df.attrs.get("budget_axis", "budget")
    for ax, b in zip(axes, budgets[-4:]):
        g = fr[fr["budget"] == b].sort_values(x_col)
        if not len(g) or g["test_loss_by_scale"].isna().all():
            continue
        L = np.array([np.asarray(v, float) for v in g["test_loss_by_scale"]])
        K = L.shape[1]
        cmap = colormaps["plasma"]
        for k in range(K):
            y = L[:, k] - (floors_k[k] if floors_k and len(floors_k) == K else 0.0)
            ax.plot(g[x_col], np.where(y > 0, y, np.nan), "o-", color=cmap(0.85 * k / max(K - 1, 1)),
                    ms=3, label=f"scale {k + 1}")
        _log_axes(ax)
        ax.set_xlabel(XLABEL.get(x_col, x_col))
        red = floors_k and len(floors_k) == K
        ax.set_ylabel("reducible test loss per scale (nats)" if red else "test loss per scale (nats)")
        ax.set_title(f"final test loss per scale, budget {_budget_name(axis, b)}")
    if budgets:
        axes[0].legend(fontsize=7, ncol=2)
    return fig


def training_curves(df: pd.DataFrame, colors=None) -> Figure:
    colors = colors or depth_colors(df["depth"])
    fig = Figure(figsize=(14, 4.2), layout="constrained")
    axes = fig.subplots(1, 3)
    budgets = sorted(df["budget"].unique())
    styles = ["-", "--", ":", "-."]
    for rid, g in df.groupby("run_id"):
        c = colors[int(g["depth"].iloc[0])]
        ls = styles[budgets.index(g["budget"].iloc[0]) % len(styles)]
        for ax, m in zip(axes, ("test_loss_avg", "test_loss_last", "train_loss")):
            ax.plot(g["tokens_seen"], g[m], ls, color=c, lw=1.2, marker=".", ms=3)
    for ax, t in zip(axes, ("test loss, all scales (nats)", "test loss, last scale (nats)",
                            "training loss (nats)")):
        ax.set_xscale("log")
        ax.set_xlabel(XLABEL["tokens_seen"])
        ax.set_ylabel(t)
        ax.grid(True, which="major", alpha=0.3)
    hs = [Line2D([], [], color=c, label=f"d{d}") for d, c in colors.items()]
    axis = df.attrs.get("budget_axis", "budget_flops")
    hs += [Line2D([], [], color="gray", ls=styles[i % 4], label=_budget_name(axis, b))
           for i, b in enumerate(budgets)]
    fig.legend(handles=hs, loc="outside right center", fontsize=8)
    return fig


def isoflop_figure(df: pd.DataFrame, metric: str = "test_loss_avg", x_col: str = "n_params") -> Figure:
    from matplotlib import colormaps

    fr = final_rows(df)
    fig = Figure(figsize=(6.5, 4.5), layout="constrained")
    ax = fig.subplots()
    budgets = sorted(fr["budget"].unique())
    cmap = colormaps["cividis"]
    for i, b in enumerate(budgets):
        g = fr[fr["budget"] == b]
        c = cmap(0.9 * i / max(len(budgets) - 1, 1))
        ax.plot(g[x_col], g[metric], "o", color=c, label=f"C = {b:.2g} FLOPs")
        u = np.log(g[x_col].to_numpy(float))
        if len(np.unique(u)) >= 3:
            p = np.polyfit(u, g[metric].to_numpy(float), 2)
            us = np.linspace(u.min(), u.max(), 50)
            ax.plot(np.exp(us), np.polyval(p, us), "--", color=c, lw=1)
            if p[0] > 0:
                ax.plot(np.exp(-p[1] / (2 * p[0])), np.polyval(p, -p[1] / (2 * p[0])), "*", color=c, ms=12)
    ax.set_xscale("log")
    ax.set_xlabel(XLABEL.get(x_col, x_col))
    ax.set_ylabel(LABEL[metric] + " (nats)")
    ax.set_title("IsoFLOP profiles (Approach 2); stars: fitted optima")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def quality_figure(q: pd.DataFrame, colors: dict) -> Figure:
    cols = [c for c in ("class_accuracy", "frechet_distance", "fid") if c in q and q[c].notna().any()]
    fig = Figure(figsize=(9, 3.5 * max(len(cols), 1)), layout="constrained")
    axes = np.atleast_2d(fig.subplots(max(len(cols), 1), 2))
    for row, c in zip(axes, cols):
        for ax, x in zip(row, ("n_params", "flops")):
            for d, g in q.groupby("depth"):
                g = g.sort_values("step")
                ax.plot(g[x], g[c], "o-", color=colors.get(int(d), "k"), ms=4, label=f"d{d}")
            ax.set_xscale("log")
            ax.set_xlabel(XLABEL.get(x, x))
            ax.set_ylabel(c.replace("_", " ") + (" (fraction)" if c == "class_accuracy" else ""))
            ax.grid(True, which="major", alpha=0.3)
        row[0].legend(fontsize=7)
    return fig


def fig7_samples(df: pd.DataFrame, samples: pd.DataFrame,
                 fractions=(0.2, 0.6, 1.0)) -> Figure | None:
    """Depth (rows) x training progress (columns): for each depth, the run with the largest
    budget that has samples; per column the checkpoint nearest that fraction of its steps."""
    from matplotlib.image import imread

    if samples is None or not len(samples):
        return None
    info = df.groupby("run_id").agg(depth=("depth", "first"), budget=("budget", "first"),
                                    total=("total_steps", "max")).reset_index()
    s = samples.merge(info, on="run_id", how="inner")
    if not len(s):
        return None
    best = s.sort_values("budget").groupby("depth")["run_id"].last()
    depths = sorted(best.index)
    fig = Figure(figsize=(2.6 * len(fractions), 2.6 * len(depths)), layout="constrained")
    axes = np.array(fig.subplots(len(depths), len(fractions), squeeze=False))
    for i, d in enumerate(depths):
        g = s[s["run_id"] == best[d]]
        total = float(g["total"].iloc[0]) or float(g["step"].max())
        for j, fr in enumerate(fractions):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            k = (g["step"] - fr * total).abs().idxmin()
            ax.imshow(imread(g.loc[k, "path"]))
            if i == 0:
                ax.set_title(f"{int(round(100 * fr))}% of training")
            if j == 0:
                ax.set_ylabel(f"VAR-d{d}")
            ax.set_xlabel(f"step {int(g.loc[k, 'step'])}", fontsize=7)
    return fig


def make_figures(study_dir, x_col: str = "n_params", c_col: str = "flops", use_floor: bool = True,
                 floor_last: float | None = None, floor_avg: float | None = None,
                 formats=("png", "pdf"), out_dir=None) -> list[Path]:
    """Draw every figure the study allows into ``report/``; returns the files written."""
    df = load(study_dir)
    out = Path(out_dir) if out_dir else StudyLayout.of(study_dir).report_dir
    out.mkdir(parents=True, exist_ok=True)
    if not len(df):
        return []
    fl = usable_floors(floors(study_dir), df) if use_floor else {}
    if floor_last is not None:
        fl["test_loss_last"] = floor_last
    if floor_avg is not None:
        fl["test_loss_avg"] = floor_avg
    colors = depth_colors(df["depth"])
    figs = {"fig5_vs_N": fig5_vs_N(df, fl, x_col, colors),
            "fig6_vs_C": fig6_vs_C(df, fl, c_col, colors),
            "per_scale_loss_vs_N": per_scale_loss_vs_N(df, fl, x_col),
            "training_curves": training_curves(df, colors)}
    fr = final_rows(df)
    if df.attrs.get("budget_axis") == "budget_flops" and len(fr) and \
            (fr.groupby("budget")[x_col].nunique() >= 3).any():
        figs["isoflop"] = isoflop_figure(df, "test_loss_avg", x_col)
    q = load_quality(study_dir)
    if q is not None and len(q):
        figs["quality_vs_N_C"] = quality_figure(q, colors)
    f7 = fig7_samples(df, sample_images(study_dir))
    if f7 is not None:
        figs["fig7_samples"] = f7
    written = []
    for name, fig in figs.items():
        for ext in formats:
            p = out / f"{name}.{ext}"
            fig.savefig(p, dpi=150)
            written.append(p)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="varscale figures", description=__doc__.split("\n")[0])
    ap.add_argument("study_dir", help="runs/<study>")
    ap.add_argument("--x", default="n_params",
                    choices=["n_params", "n_params_blocks", "n_params_nonembedding"])
    ap.add_argument("--compute", default="flops", choices=["flops", "flops_6nd"])
    ap.add_argument("--no-floor", action="store_true", help="plot raw losses, not reducible ones")
    ap.add_argument("--floor-last", type=float)
    ap.add_argument("--floor-avg", type=float)
    ap.add_argument("--formats", default="png,pdf")
    a = ap.parse_args(argv)
    if not Path(a.study_dir).is_dir():
        print(f"varscale figures: no study folder at {a.study_dir}", file=sys.stderr)
        return 2
    files = make_figures(a.study_dir, a.x, a.compute, not a.no_floor, a.floor_last, a.floor_avg,
                         tuple(a.formats.split(",")))
    if not files:  # not an error: nothing has been evaluated yet
        print("varscale figures: no evaluations yet, no figures")
        return 0
    for p in files:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
