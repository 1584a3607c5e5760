"""The paper's Fig. 5 (L and Err vs N per budget) and Fig. 6 (vs compute, with the Pareto
frontier), a panel per metric the study has values of, each point coloured by its model
size (``style.size_colors``), drawn with the laws of a :class:`~analysis.results.Report`: each line is the fit
a headline row points at (``HeadlineRow.fit``, or ``fit_raw`` on a raw figure), drawn from
its parameters (power form y = exp(b) x^alpha), never refitted, so a figure and the table
cannot disagree. A report that has laws but no headline rows raises :class:`NoHeadline`.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ..bootstrap import Fit
from ..frontier import pareto_mask
from ..results import FloorEntry, HeadlineRow, Report
from ..study import Study
from ..fitting import present_metrics
from .style import (LABEL, LOSSES, MARKERS, SYMBOL, XLABEL, budget_name, ci_text, log_axes, panel_figure,
                    run_colors, size_colors, size_legend, source_name, symbol)

ANNEALED = "annealed runs"  # the group of the frontier fitted on a WSD study's annealed runs


class NoHeadline(ValueError):
    """A report with laws but no headline rows to draw them by (a fits.json written before the
    headline existed, or a fit that no longer writes one)."""


def headline_rows(report: Report, kind: str) -> list[HeadlineRow]:
    """The headline rows of one kind ("N": per budget vs N; "C": compute frontiers). Raises
    :class:`NoHeadline` when the report has power laws but no headline at all: a figure
    would silently lose every line."""
    if not report.headline:
        n = sum(f.form == "power" for f in report.fits)
        if n:
            raise NoHeadline(f"the report of {report.study or 'this study'} has {n} power laws but no headline "
                             "rows to draw them by; run `varscale fit` again to write its headline")
    return [h for h in report.headline if h.kind == kind]


def _power_params(f: Optional[Fit]) -> Optional[tuple[float, float]]:
    """(b, alpha) of a power-form fit (y = exp(b) x^alpha), None when it has none."""
    p = f.params if f is not None else {}
    a, b, k = p.get("alpha"), p.get("b"), p.get("k")
    if b is None and a is not None and k is not None and k > 0:
        b = a * math.log(k)  # y = (k x)^alpha
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)):
        return None
    return float(b), float(a)


def power_line(f: Optional[Fit], lo: float, hi: float, y_max: Optional[float] = None,
               n: int = 64) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """Points of a power-form fit over [lo, hi], only where it is <= ``y_max`` (an error
    rate's law above 1 is no prediction); None when nothing is left to draw."""
    ba = _power_params(f)
    if ba is None or not (np.isfinite(lo) and np.isfinite(hi) and 0 < lo < hi):
        return None
    b, a = ba
    if y_max is not None:
        if a == 0:
            if b > math.log(y_max):
                return None
        else:  # a power law is monotone: where it is <= y_max is one side of its crossing
            with np.errstate(over="ignore"):
                xc = float(np.exp((math.log(y_max) - b) / a))  # inf for a nearly flat law
            lo, hi = (max(lo, xc), hi) if a < 0 else (lo, min(hi, xc))
        if not lo < hi:
            return None
    xs = np.geomspace(lo, hi, n)
    ys = np.exp(b + a * np.log(xs))
    return xs, (np.minimum(ys, y_max) if y_max is not None else ys)


def equation(f: Fit, lhs: str, xsym: str) -> str:
    b, a = _power_params(f)
    with np.errstate(over="ignore"):  # a nearly flat law (tiny alpha) has an overflowing k
        k = float(np.exp(b / a)) if a != 0 else float("nan")
    rs = "" if f.r is None or not math.isfinite(f.r) else f", r={f.r:.4f}"
    return f"{lhs} = ({k:.3g} {xsym})^{a:.3g}{rs}"


def _ylabel(m: str, fl: Optional[FloorEntry]) -> str:
    if m not in LOSSES:
        return f"{SYMBOL[m]}: {LABEL[m]} (fraction)"
    if fl is None:
        return f"{SYMBOL[m]}: {LABEL[m]} (nats)"
    unresolved = ", floor not resolved" if fl.resolved is False else ""
    return f"{symbol(m, fl)} ({source_name(fl)}{unresolved}), nats"


def _panel_floor(report: Report, rows: list[HeadlineRow], m: str, raw: bool) -> Optional[FloorEntry]:
    """The floor a panel subtracts: the study's E of that loss when its headline is reducible."""
    if raw:
        return None
    for h in rows:
        if h.metric == m and h.quantity == "reducible":
            ref = report.fit_of(h).floor
            if ref in report.floor:
                return report.floor[ref]
    return None


def _row_fit(report: Report, h: Optional[HeadlineRow], reducible: bool) -> tuple[Optional[int], Optional[Fit]]:
    """(index into Report.fits, the fit) of the law a headline row draws: its reducible law on
    a reducible panel (none when the row is raw), else its law on the raw metric."""
    if h is None or (reducible and h.quantity != "reducible"):
        return None, None
    i = h.fit if reducible else h.fit_raw
    return i, report.fits[i]


def _floor_title(fig: Figure, floors: dict[str, FloorEntry]) -> None:
    """Two lines over a reducible figure: what E is, then each loss's E with its interval."""
    if not floors:
        return
    details = {f.detail or f.source for f in floors.values()}
    parts = []
    for m, f in floors.items():
        s = f"{SYMBOL[m]}: E = {f.E:.4g}" + (f" {ci_text(f.ci, '.3g')}" if f.ci else "")
        if len(details) > 1:
            s += f" ({f.detail or f.source})"
        if f.resolved is False:
            s += ", floor not resolved"
        parts.append(s)
    head = "reducible loss L - E, one E per loss for the whole study"
    if len(details) == 1:
        head += f": {details.pop()}"
    fig.suptitle(head + "\n" + ";  ".join(parts), fontsize=9)


def fig5_vs_N(study: Study, report: Report, raw: bool = False, colors=None) -> Figure:
    """L and Err vs N (each finished run's final evaluation), one law per budget slice from
    ``report``'s headline; the headline quantity (a loss minus its study-wide floor E, error
    rates raw), or every metric raw with ``raw``. One panel per metric the study has values
    of (an imported table may have one loss)."""
    x_col = report.x
    fr = study.final
    colors = colors or size_colors(study.evaluations)
    rows = headline_rows(report, "N")
    panels = present_metrics(study.evaluations)
    fig, axes = panel_figure(len(panels))
    budgets = sorted(fr["budget"].unique()) if len(fr) else []
    used: dict[str, FloorEntry] = {}
    for ax, m in zip(axes, panels):
        fl = _panel_floor(report, rows, m, raw)
        if fl is not None:
            used[m] = fl
        E = fl.E if fl is not None else 0.0
        handles = []
        for bi, b in enumerate(budgets):
            g = fr[fr["budget"] == b]
            x = g[x_col].to_numpy(float)
            y = g[m].to_numpy(float) - E
            marker = MARKERS[bi % len(MARKERS)]
            shade = str(0.15 + 0.5 * bi / max(len(budgets), 1))
            ax.scatter(x, np.where(y > 0, y, np.nan), c=run_colors(colors, g),
                       marker=marker, s=40, edgecolors="k", linewidths=0.4, zorder=3)
            label = study.slice_label(b)
            h = next((h for h in rows if h.metric == m and h.slice == label), None)
            i, f = _row_fit(report, h, fl is not None)
            line = power_line(f, x.min(), x.max(), None if m in LOSSES else 1.0) if len(x) else None
            text = budget_name(study.budget_axis, b)
            if line is not None:
                ax.plot(*line, "--", color=shade, gid=f"fit:{i}")
                text += ": " + equation(f, symbol(m, fl), "N")
            elif _power_params(f) is not None:
                text += ": law above 1, not drawn"
            # the legend entry shows the budget's marker and its line together
            handles.append(Line2D([], [], color=shade, ls="--" if line is not None else "", marker=marker,
                                  mfc="white", mec="k", ms=6, label=text))
        log_axes(ax)
        ax.set_xlabel(XLABEL.get(x_col, x_col))
        ax.set_ylabel(_ylabel(m, fl))
        ax.set_title(f"{'reducible ' if fl else ''}{SYMBOL[m]} vs N (final evaluation of each run)")
        if handles:
            ax.legend(handles=handles, fontsize=7, loc="best", title="budget (marker)", title_fontsize=7)
    _floor_title(fig, used)
    size_legend(fig, colors)
    return fig


def fig6_vs_C(study: Study, report: Report, raw: bool = False, colors=None) -> Figure:
    """Every cell's evaluation curve vs compute, the Pareto frontier C_min and the frontier
    laws of ``report``'s headline (a WSD study: also its annealed runs and their law); one
    panel per metric the study has values of."""
    c_col = report.compute
    df = study.evaluations
    colors = colors or size_colors(df)
    rows = headline_rows(report, "C")
    ann = study.annealed
    panels = present_metrics(df)
    fig, axes = panel_figure(len(panels))
    used: dict[str, FloorEntry] = {}
    for ax, m in zip(axes, panels):
        fl = _panel_floor(report, rows, m, raw)
        if fl is not None:
            used[m] = fl
        E = fl.E if fl is not None else 0.0
        for rid, g in df.groupby("run_id"):
            y = g[m].to_numpy(float) - E
            ax.plot(g[c_col], np.where(y > 0, y, np.nan), "-", color=run_colors(colors, g.iloc[:1])[0],
                    lw=1, alpha=0.6)
        d = df[[c_col, m]].dropna()
        x = d[c_col].to_numpy(float)
        y = d[m].to_numpy(float) - E
        ok = y > 0
        msk = pareto_mask(x[ok], y[ok])
        ax.plot(x[ok][msk], y[ok][msk], "k.", ms=5, label="frontier C_min (all evaluations)")
        if ann is not None:
            ya = ann[m].to_numpy(float) - E
            ax.plot(ann[c_col], np.where(ya > 0, ya, np.nan), "o", mfc="none", mec="k", ms=6,
                    label="annealed runs (final)")
        for h in rows:
            if h.metric != m:
                continue
            i, f = _row_fit(report, h, fl is not None)
            if f is None:
                continue
            annealed = f.group == ANNEALED
            rng = f.extra.get("x_range") or []
            if len(rng) != 2:  # a report without ranges: the frontier points' span
                pts = ann[c_col].to_numpy(float) if annealed and ann is not None else x[ok][msk]
                rng = [pts.min(), pts.max()] if len(pts) else [np.nan, np.nan]
            line = power_line(f, float(rng[0]), float(rng[1]), None if m in LOSSES else 1.0)
            if line is None:
                continue
            style = dict(ls="-", color="navy", lw=1.2) if annealed else dict(ls="--", color="crimson", lw=1.5)
            ax.plot(*line, **style, gid=f"fit:{i}",
                    label=("annealed: " if annealed else "frontier: ") + equation(f, symbol(m, fl), "C"))
        log_axes(ax)
        ax.set_xlabel(XLABEL.get(c_col, c_col))
        ax.set_ylabel(_ylabel(m, fl))
        ax.set_title(f"{'reducible ' if fl else ''}{SYMBOL[m]} vs compute (every evaluation of every cell)")
        ax.legend(fontsize=7, loc="best")
    _floor_title(fig, used)
    size_legend(fig, colors)
    return fig


def has_reducible_headline(report: Report) -> bool:
    """Whether the report's headline draws any loss minus its floor (else the figures are raw)."""
    return any(h.quantity == "reducible" for h in report.headline)
