"""The figures beside the laws: the final loss of every scale vs N, the training curves, the
IsoFLOP profiles of a FLOP-budget study, and sample quality vs N and C."""
from __future__ import annotations

import warnings
from typing import Optional

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ..results import Report
from ..study import Study
from .style import LABEL, XLABEL, budget_name, depth_colors, log_axes, run_colors, size_colors, size_legend


def has_per_scale(study: Study) -> bool:
    """Whether any finished run has a loss per scale (an imported table has none)."""
    fr = study.final
    return "test_loss_by_scale" in fr and bool(fr["test_loss_by_scale"].notna().any())


def per_scale_loss_vs_N(study: Study, report: Report, entropy: bool = True) -> Figure:
    """The final test loss of every scale vs N (``report.x``), one panel per budget (the
    largest four). ``entropy``: each scale minus its token entropy (``entropy_by_scale``)
    where every one lies below its losses; else raw, and the axis says which."""
    from matplotlib import colormaps

    x_col = report.x
    fr = study.final
    floors_k = None
    if entropy and "by_scale" in study.entropy:
        # an entropy that is no floor is dropped (the axis label says raw, so no warning here)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            floors_k = study.usable_entropy().get("by_scale")
    budgets = sorted(fr["budget"].unique()) if len(fr) else []
    nb = max(len(budgets), 1)
    fig = Figure(figsize=(4.5 * min(nb, 4), 4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, min(nb, 4)))
    for ax, b in zip(axes, budgets[-4:]):
        g = fr[fr["budget"] == b].sort_values(x_col)
        if not len(g) or g["test_loss_by_scale"].isna().all():
            continue
        L = np.array([np.asarray(v, float) for v in g["test_loss_by_scale"]])
        K = L.shape[1]
        red = floors_k is not None and len(floors_k) == K
        cmap = colormaps["plasma"]
        for k in range(K):
            y = L[:, k] - (floors_k[k] if red else 0.0)
            ax.plot(g[x_col], np.where(y > 0, y, np.nan), "o-", color=cmap(0.85 * k / max(K - 1, 1)),
                    ms=3, label=f"scale {k + 1}")
        log_axes(ax)
        ax.set_xlabel(XLABEL.get(x_col, x_col))
        ax.set_ylabel("reducible test loss per scale (nats)" if red else "test loss per scale (nats)")
        ax.set_title(f"final test loss per scale, budget {budget_name(study.budget_axis, b)}")
    if budgets:
        axes[0].legend(fontsize=7, ncol=2)
    return fig


def training_curves(study: Study, colors=None) -> Figure:
    """Test (all scales, last scale) and training loss vs tokens seen, a panel for each the
    study has values of (all-scale test loss always); colour = model size (depth, or N
    without depths), line style = budget."""
    df = study.evaluations
    colors = colors or size_colors(df)
    names = {"test_loss_avg": "test loss, all scales (nats)", "test_loss_last": "test loss, last scale (nats)",
             "train_loss": "training loss (nats)"}
    panels = [m for m in names if m == "test_loss_avg" or (m in df and df[m].notna().any())]
    fig = Figure(figsize=(4.7 * len(panels) + 0.9, 4.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    budgets = sorted(df["budget"].unique())
    styles = ["-", "--", ":", "-."]
    for rid, g in df.groupby("run_id"):
        c = run_colors(colors, g.iloc[:1])[0]
        ls = styles[budgets.index(g["budget"].iloc[0]) % len(styles)]
        for ax, m in zip(axes, panels):
            ax.plot(g["tokens_seen"], g[m], ls, color=c, lw=1.2, marker=".", ms=3)
    for ax, m in zip(axes, panels):
        ax.set_xscale("log")
        ax.set_xlabel(XLABEL["tokens_seen"])
        ax.set_ylabel(names[m])
        ax.grid(True, which="major", alpha=0.3)
    hs = [Line2D([], [], color="gray", ls=styles[i % 4], label=budget_name(study.budget_axis, b))
          for i, b in enumerate(budgets)]
    size_legend(fig, colors, extra=hs, marker="")
    return fig


def has_isoflop(study: Study, report: Report) -> bool:
    """A FLOP-budget study with at least 3 sizes finished in some budget."""
    fr = study.final
    return study.budget_axis == "budget_flops" and bool(len(fr)) and \
        bool((fr.groupby("budget")[report.x].nunique() >= 3).any())


def isoflop_figure(study: Study, report: Report, metric: str = "test_loss_avg") -> Figure:
    """Loss vs N (``report.x``) per FLOP budget with a parabola in log N through each budget
    of at least 3 sizes, and its minimum (Approach 2's view)."""
    from matplotlib import colormaps

    x_col = report.x
    fr = study.final
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


def quality_figure(study: Study, colors=None) -> Optional[Figure]:
    """Sample quality (class accuracy, Frechet distance, FID) vs N and C, one line per depth;
    None when the study has no ``quality/`` rows."""
    q = study.quality()
    if q is None or not len(q):
        return None
    if colors is None:
        colors = depth_colors(study.evaluations["depth"]) if len(study) else {}
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
