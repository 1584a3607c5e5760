"""``varscale figures <study-dir>``: the paper's scaling figures for a study, PNG and PDF.

The fitted lines are not refitted here: they come from ``report/fits.json`` (``varscale fit``),
the fit entries its ``headline`` rows reference, drawn from their parameters (power form
y = exp(b) x^alpha), so a figure and the table cannot disagree. A fits.json written before the
headline existed is read through its ``fits`` list (one power law per metric and slice) and its
``floors``. Without a fits.json the laws are fitted first, in memory, by the code of
``varscale fit`` (no bootstrap), and the command says so.

- ``fig5_vs_N``: L and Err, last scale and all-scale average, vs N (each finished run's final
  evaluation), log-log, one dashed law per budget slice with its equation and Pearson r; the
  headline quantity: a loss with a study-wide floor E (fits.json ``floor``) is drawn reducible,
  L - E, its axis naming E and its source; error rates raw, their lines stopped at 1;
- ``fig6_vs_C``: the same four metrics vs training compute: every cell's evaluation curve,
  the Pareto frontier C_min and its law (a warmup-stable-decay study: also the annealed runs);
- ``fig5_vs_N_raw``, ``fig6_vs_C_raw``: the same on raw losses (only when a floor exists);
- ``per_scale_loss_vs_N``: the final test loss of every scale vs N, one panel per budget;
- ``training_curves``: test and training loss vs tokens seen, coloured by depth;
- ``isoflop``: loss vs N per FLOP budget with the Approach-2 parabolas (FLOP budgets only);
- ``quality_vs_N_C``: sample quality against N and C when ``quality/`` exists;
- ``fig7_samples``: per depth, sample images at about 20/60/100% of training, each labelled
  with its real fraction (step / that run's total steps), when ``samples/`` exists.

Each file is rendered in memory and renamed into place (``atomic_write_bytes``): a crash
leaves the previous figure or the new one, never a torn file. Figures are built on
``matplotlib.figure.Figure`` (no pyplot state), so the functions work in notebooks with any
backend (``show`` displays one as a PNG) and the command line needs no display. Each depth has
one colour in every figure (``depth_colors``).
"""
from __future__ import annotations

import warnings

import argparse
import io
import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from varscale.schema import StudyLayout, atomic_write_bytes, json_problem

from .frontier import annealed_rows, pareto_mask
from .load import (LOSSES, METRICS, SayDamagedParts, final_rows, floors, load, load_quality, sample_images,
                   usable_floors)

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
# how an axis label names the floor's source (fits.json "floor" -> "source")
SOURCE_LABEL = {"token entropy": "token entropy", "chinchilla": "Chinchilla E", "hand": "E by hand"}
# fits.json before the headline: "floor_source" sentences -> the contract's source names
_OLD_SOURCE = {"tokens/meta.json": ("token entropy", "token entropy of tokens/meta.json"),
               "Chinchilla E over the finished runs": ("chinchilla", "Chinchilla E over the finished runs"),
               "hand": ("hand", "given by hand")}
# auto: report/fits.json (its floor rule); none: raw losses only; the others: the report
# `varscale fit --floor-from <source>` (or --floor-last/--floor-avg: hand) writes beside it
FLOOR_CHOICES = ("auto", "none", "entropy", "chinchilla", "hand")
ALT_FLOORS = ("entropy", "chinchilla", "hand")
FIT_OPTION = {"entropy": "--floor-from entropy", "chinchilla": "--floor-from chinchilla",
              "hand": "--floor-last ... --floor-avg ..."}


# --------------------------------------------------------------------------- fits.json


def report_name(floor: str = "auto") -> str:
    """The report a floor choice draws: ``fits`` (auto, none) or ``fits-floor-<source>``."""
    return f"fits-floor-{floor}" if floor in ALT_FLOORS else "fits"


def read_report(study_dir, name: str = "fits", quiet: bool = False) -> dict | None:
    """``report/<name>.json`` of a study, or None when there is none; a damaged one (not JSON,
    not an object) is None too, with a warning naming it (unless ``quiet``): the laws are then
    fitted again."""
    p = StudyLayout.of(study_dir).report_dir / f"{name}.json"
    why = json_problem(p)
    if why:
        if not quiet:
                print(f"varscale figures: warning: {p} is damaged ({why}); the laws are fitted again now "
                  f"('varscale fit {study_dir}' writes it again)", file=sys.stderr)
        return None
    try:
        return json.loads(p.read_text())
    except OSError:
        return None


def report_is_current(rep: dict, df: pd.DataFrame) -> bool:
    """True when the report was fitted on the evaluations the study has now."""
    return int(rep.get("rows", -1)) == len(df)


def study_report(study_dir, n_boot: int = 0, write: bool = False, x_col: str | None = None,
                 c_col: str | None = None, df: pd.DataFrame | None = None) -> tuple[dict, str]:
    """The study's fit report and a sentence saying where it came from: ``report/fits.json``
    when it matches the study's evaluations, else ``analysis.report.fit_study`` run now (the
    code of ``varscale fit``; ``write``: also written to report/fits.json and fits.md, as
    ``varscale fit`` would)."""
    from . import report as _report

    df = load(study_dir) if df is None else df
    rep = read_report(study_dir, quiet=True)  # a damaged one: fitted again, said by the caller
    path = StudyLayout.of(study_dir).report_dir / "fits.json"
    if rep is not None and report_is_current(rep, df) and x_col in (None, rep.get("x")) \
            and c_col in (None, rep.get("compute")):
        if "headline" not in rep:
            return rep, (f"read {path}, written before fits.json had a headline: its laws come from its fits "
                         f"list; `varscale fit {study_dir}` again gives the study-wide floor E and the headline")
        return rep, f"read {path}"
    why = "no report/fits.json" if rep is None else \
        f"report/fits.json was fitted on {rep.get('rows')} evaluations, the study has {len(df)} now"
    kw = {k: v for k, v in (("x_col", x_col), ("c_col", c_col)) if v is not None}
    rep = _report.fit_study(study_dir, n_boot=n_boot, **kw)
    if write:
        try:
            _report.write_report(rep, study_dir)
            return rep, f"{why}: fitted now with {n_boot} resamples and wrote {path} (as `varscale fit` does)"
        except OSError as e:
            return rep, f"{why}: fitted now with {n_boot} resamples (could not write {path}: {e.strerror})"
    return rep, f"{why}: fitted now with {n_boot} resamples, as `varscale fit` does"


def report_floor(rep: dict) -> dict[str, dict]:
    """Per loss metric with a study-wide floor: {"E", "ci", "source", "detail", "resolved"}
    (fits.json ``floor``; a report without it: from ``floors`` and ``floor_source``)."""
    if isinstance(rep.get("floor"), dict):
        return {m: f for m, f in rep["floor"].items()
                if isinstance(f, dict) and f.get("E") is not None and m in LOSSES}
    src, detail = _OLD_SOURCE.get(rep.get("floor_source") or "", ("hand", rep.get("floor_source") or ""))
    return {m: {"E": float(E), "ci": None, "source": src, "detail": detail, "resolved": True}
            for m, E in (rep.get("floors") or {}).items() if E is not None and m in LOSSES}


def _slice_order(sl: str) -> tuple:
    try:
        return (0, float(sl.split("=", 1)[1]))
    except (IndexError, ValueError):
        return (1, 0.0 if "all" in sl else 1.0)


def report_headline(rep: dict) -> list[dict]:
    """The headline rows of fits.json; for a report without them, the same rows built from its
    ``fits`` list: per (metric, slice) the power law on the reducible loss where a floor
    exists (``fit``), and on the raw metric (``fit_raw``)."""
    if isinstance(rep.get("headline"), list):
        return rep["headline"]
    fits = rep.get("fits") or []
    floor = report_floor(rep)
    slots: dict[tuple, dict] = {}
    for i, f in enumerate(fits):
        if f.get("form") != "power":
            continue
        base, _, sub = str(f.get("metric", "")).partition(" - ")
        if base not in METRICS:
            continue
        if str(f.get("x", "")).endswith("(frontier)"):
            key = (base, "C", f"frontier ({f.get('group') or 'all evaluations'})")
        elif f.get("x") == rep.get("x", "n_params"):
            key = (base, "N", f.get("group", ""))
        else:
            continue
        slots.setdefault(key, {})["reducible" if sub else "raw"] = i
    rows = []
    for (m, kind, sl), ix in sorted(slots.items(), key=lambda kv: (kv[0][1] == "C", _slice_order(kv[0][2]),
                                                                     METRICS.index(kv[0][0]))):
        if "raw" not in ix:
            continue
        q = "reducible" if "reducible" in ix and m in floor else "raw"
        f, fr = fits[ix[q]], fits[ix["raw"]]
        rows.append({"metric": m, "short": SYMBOL[m], "slice": sl, "kind": kind, "quantity": q,
                     "fit": ix[q], "fit_raw": ix["raw"], "alpha": (f.get("params") or {}).get("alpha"),
                     "alpha_ci": (f.get("ci") or {}).get("alpha"), "r": f.get("r"), "r_ci": None,
                     "r_raw": fr.get("r"), "lolo": None})
    return rows


def _num(v, fmt: str = ".4g") -> str:
    return "nan" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, fmt)


def _ci(ci, fmt: str = ".4g") -> str:
    return f"[{_num(ci[0], fmt)}, {_num(ci[1], fmt)}]" if ci else ""


def headline_table(rep: dict) -> pd.DataFrame:
    """The headline rows as a table of strings (what the notebook shows): metric (with its
    floor), slice, alpha [95% CI], r [95% CI], r of the raw metric, leave-largest-out error."""
    floor = report_floor(rep)
    out = []
    for h in report_headline(rep):
        m = h["metric"]
        q = SYMBOL.get(m, m)
        if h.get("quantity") == "reducible" and m in floor:
            q = f"{q} - {floor[m]['E']:.4g}"
        lolo = h.get("lolo") or {}
        out.append({"quantity": q, "vs": h.get("kind", ""), "slice": h.get("slice", ""),
                    "alpha [95% CI]": f"{_num(h.get('alpha'))} {_ci(h.get('alpha_ci'))}".strip(),
                    "r [95% CI]": f"{_num(h.get('r'))} {_ci(h.get('r_ci'))}".strip(),
                    "r (raw)": _num(h.get("r_raw")),
                    "largest held out": "" if lolo.get("err") is None else f"{100 * lolo['err']:+.2f}%"})
    return pd.DataFrame(out, columns=["quantity", "vs", "slice", "alpha [95% CI]", "r [95% CI]",
                                      "r (raw)", "largest held out"])


def floor_table(rep: dict) -> pd.DataFrame:
    """One row per loss with a study-wide floor: E, its interval, source, detail."""
    rows = [{"metric": SYMBOL.get(m, m), "E": _num(f.get("E")), "95% CI": _ci(f.get("ci")),
             "source": f.get("source", ""), "detail": f.get("detail", ""),
             "resolved": f.get("resolved")} for m, f in sorted(report_floor(rep).items(),
                                                                key=lambda kv: LOSSES.index(kv[0]))]
    return pd.DataFrame(rows, columns=["metric", "E", "95% CI", "source", "detail", "resolved"])


def _fit_entry(rep: dict, i) -> dict | None:
    fits = rep.get("fits") or []
    return fits[i] if isinstance(i, int) and 0 <= i < len(fits) else None


def _power_params(f: dict | None) -> tuple[float, float] | None:
    """(b, alpha) of a power-form fit entry (y = exp(b) x^alpha), None when it has none."""
    p = (f or {}).get("params") or {}
    a, b, k = p.get("alpha"), p.get("b"), p.get("k")
    if b is None and a is not None and k is not None and k > 0:
        b = a * math.log(k)  # y = (k x)^alpha
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)):
        return None
    return float(b), float(a)


def power_line(f: dict | None, lo: float, hi: float, y_max: float | None = None,
               n: int = 64) -> tuple[np.ndarray, np.ndarray] | None:
    """Points of a fit entry's power law over [lo, hi], only where it is <= ``y_max`` (an
    error rate's law above 1 is no prediction); None when nothing is left to draw."""
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


def _equation(f: dict, lhs: str, xsym: str) -> str:
    b, a = _power_params(f)
    with np.errstate(over="ignore"):  # a nearly flat law (tiny alpha) has an overflowing k
        k = float(np.exp(b / a)) if a != 0 else float("nan")
    r = f.get("r")
    rs = "" if r is None or not math.isfinite(r) else f", r={r:.4f}"
    return f"{lhs} = ({k:.3g} {xsym})^{a:.3g}{rs}"


# --------------------------------------------------------------------------- shared drawing


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


def _quantity(m: str, fl: dict | None) -> str:
    """The drawn quantity's symbol: ``L_last - 2.27`` (reducible) or ``L_last``."""
    return f"{SYMBOL[m]} - {fl['E']:.4g}" if fl else SYMBOL[m]


def _ylabel(m: str, fl: dict | None) -> str:
    if m not in LOSSES:
        return f"{SYMBOL[m]}: {LABEL[m]} (fraction)"
    if not fl:
        return f"{SYMBOL[m]}: {LABEL[m]} (nats)"
    src = SOURCE_LABEL.get(fl.get("source"), fl.get("source") or "floor")
    unresolved = ", floor not resolved" if fl.get("resolved") is False else ""
    return f"{_quantity(m, fl)} ({src}{unresolved}), nats"


def _panel_floor(m: str, floor: dict, rows: list[dict]) -> dict | None:
    """The floor a panel subtracts: the study's E of that loss when its headline is reducible."""
    if m in floor and any(h.get("metric") == m and h.get("quantity") == "reducible" for h in rows):
        return floor[m]
    return None


def _row_index(h: dict | None, reducible: bool):
    """Index into fits.json "fits" of the law a headline row draws: its reducible law on a
    reducible panel (none when the row is raw), else its law on the raw metric."""
    if h is None:
        return None
    if reducible:
        return h.get("fit") if h.get("quantity") == "reducible" else None
    i = h.get("fit_raw")
    return h.get("fit") if i is None and h.get("quantity") == "raw" else i


def _row_fit(rep: dict, h: dict | None, reducible: bool) -> dict | None:
    return _fit_entry(rep, _row_index(h, reducible))


def _floor_title(fig: Figure, floor: dict, used: list[str]) -> None:
    """Two lines over a reducible figure: what E is, then each loss's E with its interval."""
    if not used:
        return
    details = {floor[m].get("detail") or floor[m].get("source") for m in used}
    parts = []
    for m in used:
        f = floor[m]
        s = f"{SYMBOL[m]}: E = {f['E']:.4g}" + (f" {_ci(f['ci'], '.3g')}" if f.get("ci") else "")
        if len(details) > 1:
            s += f" ({f.get('detail') or f.get('source')})"
        if f.get("resolved") is False:
            s += ", floor not resolved"
        parts.append(s)
    head = "reducible loss L - E, one E per loss for the whole study"
    if len(details) == 1:
        head += f": {details.pop()}"
    fig.suptitle(head + "\n" + ";  ".join(parts), fontsize=9)


def _depth_legend(fig: Figure, colors: dict) -> None:
    hs = [Line2D([], [], color=c, marker="o", ls="", label=f"d{d}") for d, c in colors.items()]
    if hs:
        fig.legend(handles=hs, loc="outside right center", title="depth", fontsize=8)


def _slice_budget(sl: str) -> float | None:
    try:
        return float(str(sl).split("=", 1)[1])
    except (IndexError, ValueError):
        return None


# --------------------------------------------------------------------------- Fig. 5 and Fig. 6


def fig5_vs_N(df: pd.DataFrame, rep: dict, raw: bool = False, colors=None) -> Figure:
    """L and Err vs N per budget slice, the laws of ``rep`` (fits.json); ``raw``: raw losses."""
    x_col = rep.get("x") or "n_params"
    fr = final_rows(df)
    colors = colors or depth_colors(df["depth"])
    floor = {} if raw else report_floor(rep)
    rows = [h for h in report_headline(rep) if h.get("kind") == "N"]
    fig = Figure(figsize=(11, 8.5), layout="constrained")
    axes = fig.subplots(2, 2).ravel()
    budgets = sorted(fr["budget"].unique()) if len(fr) else []
    axis = df.attrs.get("budget_axis", "budget")
    used = []
    for ax, m in zip(axes, PANELS):
        fl = _panel_floor(m, floor, rows)
        if fl:
            used.append(m)
        E = fl["E"] if fl else 0.0
        handles = []
        for bi, b in enumerate(budgets):
            g = fr[fr["budget"] == b]
            x = g[x_col].to_numpy(float)
            y = g[m].to_numpy(float) - E
            marker = MARKERS[bi % len(MARKERS)]
            shade = str(0.15 + 0.5 * bi / max(len(budgets), 1))
            ax.scatter(x, np.where(y > 0, y, np.nan), c=[colors[int(d)] for d in g["depth"]],
                       marker=marker, s=40, edgecolors="k", linewidths=0.4, zorder=3)
            h = next((h for h in rows if h.get("metric") == m and _slice_budget(h.get("slice")) is not None
                      and math.isclose(_slice_budget(h["slice"]), b, rel_tol=1e-2)), None)
            f = _row_fit(rep, h, fl is not None)
            line = power_line(f, x.min(), x.max(), None if m in LOSSES else 1.0) if len(x) else None
            label = _budget_name(axis, b)
            if line is not None:
                ax.plot(*line, "--", color=shade, gid=f"fit:{_row_index(h, fl is not None)}")
                label += ": " + _equation(f, _quantity(m, fl), "N")
            elif f is not None and _power_params(f) is not None:
                label += ": law above 1, not drawn"
            # the legend entry shows the budget's marker and its line together
            handles.append(Line2D([], [], color=shade, ls="--" if line is not None else "", marker=marker,
                                  mfc="white", mec="k", ms=6, label=label))
        _log_axes(ax)
        ax.set_xlabel(XLABEL.get(x_col, x_col))
        ax.set_ylabel(_ylabel(m, fl))
        ax.set_title(f"{'reducible ' if fl else ''}{SYMBOL[m]} vs N (final evaluation of each run)")
        if handles:
            ax.legend(handles=handles, fontsize=7, loc="best", title="budget (marker)", title_fontsize=7)
    _floor_title(fig, floor, used)
    _depth_legend(fig, colors)
    return fig


def fig6_vs_C(df: pd.DataFrame, rep: dict, raw: bool = False, colors=None) -> Figure:
    """Every cell's curve vs compute, the frontier and the frontier laws of ``rep``."""
    c_col = rep.get("compute") or "flops"
    colors = colors or depth_colors(df["depth"])
    floor = {} if raw else report_floor(rep)
    rows = [h for h in report_headline(rep) if h.get("kind") == "C"]
    ann = annealed_rows(df)
    fig = Figure(figsize=(11, 8.5), layout="constrained")
    axes = fig.subplots(2, 2).ravel()
    used = []
    for ax, m in zip(axes, PANELS):
        fl = _panel_floor(m, floor, rows)
        if fl:
            used.append(m)
        E = fl["E"] if fl else 0.0
        for rid, g in df.groupby("run_id"):
            y = g[m].to_numpy(float) - E
            ax.plot(g[c_col], np.where(y > 0, y, np.nan), "-", color=colors[int(g["depth"].iloc[0])],
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
            if h.get("metric") != m:
                continue
            f = _row_fit(rep, h, fl is not None)
            annealed = "annealed" in str(h.get("slice", ""))
            rng = ((f or {}).get("extra") or {}).get("x_range") or []
            if len(rng) != 2:  # a report without ranges: the frontier points' span
                pts = ann[c_col].to_numpy(float) if annealed and ann is not None else x[ok][msk]
                rng = [pts.min(), pts.max()] if len(pts) else [np.nan, np.nan]
            line = power_line(f, float(rng[0]), float(rng[1]), None if m in LOSSES else 1.0)
            if line is None:
                continue
            style = dict(ls="-", color="navy", lw=1.2) if annealed else dict(ls="--", color="crimson", lw=1.5)
            ax.plot(*line, **style, gid=f"fit:{_row_index(h, fl is not None)}",
                    label=("annealed: " if annealed else "frontier: ") + _equation(f, _quantity(m, fl), "C"))
        _log_axes(ax)
        ax.set_xlabel(XLABEL.get(c_col, c_col))
        ax.set_ylabel(_ylabel(m, fl))
        ax.set_title(f"{'reducible ' if fl else ''}{SYMBOL[m]} vs compute (every evaluation of every cell)")
        ax.legend(fontsize=7, loc="best")
    _floor_title(fig, floor, used)
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


def _snapshot_choice(steps: list[int], total: float, fractions) -> tuple[list[int], int]:
    """The distinct available steps nearest each wanted fraction, and how many of those
    fractions have a snapshot within 5% of training (a WSD branch keeps only late ones)."""
    chosen, covered = [], 0
    for f in fractions:
        st = min(steps, key=lambda v: (abs(v - f * total), -v))
        covered += abs(st - f * total) <= 0.05 * total
        if st not in chosen:
            chosen.append(st)
    return sorted(chosen), covered


def _sample_total(path: str) -> float | None:
    """total_steps from the json ``varscale sample`` writes beside each PNG."""
    try:
        return float(json.loads(Path(path).with_suffix(".json").read_text())["total_steps"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def fig7_picks(df: pd.DataFrame, samples: pd.DataFrame, fractions=(0.2, 0.6, 1.0)) -> list[dict]:
    """Per depth, the run whose snapshots best cover ``fractions`` of its training (ties: the
    largest budget) and its snapshots: [{"depth", "run_id", "step", "total", "path"}, ...]."""
    if samples is None or not len(samples):
        return []
    info = df.groupby("run_id").agg(depth=("depth", "first"), budget=("budget", "first"),
                                    total=("total_steps", "max")).reset_index()
    s = samples.merge(info, on="run_id", how="inner")
    out = []
    for d, g in s.groupby("depth"):
        best = None
        for rid, gr in g.groupby("run_id"):
            total = gr["total"].iloc[0]
            if not (pd.notna(total) and total > 0):
                total = _sample_total(gr["path"].iloc[0]) or float(gr["step"].max())
            chosen, covered = _snapshot_choice(sorted(gr["step"].unique()), float(total), fractions)
            key = (covered, len(chosen), float(gr["budget"].iloc[0]))
            if best is None or key > best[0]:
                best = (key, rid, float(total), chosen, gr)
        _, rid, total, chosen, gr = best
        for st in chosen:
            out.append({"depth": int(d), "run_id": rid, "step": int(st), "total": total,
                        "path": gr.loc[gr["step"] == st, "path"].iloc[0]})
    return out


def fig7_samples(df: pd.DataFrame, samples: pd.DataFrame, fractions=(0.2, 0.6, 1.0),
                 width_in: float = 11.0) -> Figure | None:
    """Depth (rows) x training progress (columns): the snapshots of ``fig7_picks``, each titled
    with its real fraction of training, step / that run's total steps. Wide sample strips
    (one image per class) get one row each, so they span the figure's width."""
    from matplotlib.image import imread

    picks = fig7_picks(df, samples, fractions)
    if not picks:
        return None
    imgs = [imread(p["path"]) for p in picks]
    h, w = imgs[0].shape[:2]
    aspect = w / h
    depths = sorted({p["depth"] for p in picks})
    title_in = 0.3
    strips = aspect > 2.5
    label_in = 0.15 if strips else 0.5  # a strip's title names its depth; a grid labels its rows
    if strips:  # one snapshot per row, at the full width
        layout = [(i, 0) for i in range(len(picks))]
        nrows, ncols = len(picks), 1
    else:
        col = {}
        layout = []
        for p in picks:
            j = col.get(p["depth"], 0)
            col[p["depth"]] = j + 1
            layout.append((depths.index(p["depth"]), j))
        nrows, ncols = len(depths), max(col.values())
    pw = (width_in - label_in) / ncols  # panel width; its height follows the image's aspect
    ph = pw / aspect + title_in
    fig = Figure(figsize=(width_in, nrows * ph + 0.1))
    H = nrows * ph + 0.1
    for p, img, (i, j) in zip(picks, imgs, layout):
        ax = fig.add_axes([(label_in + j * pw) / width_in, (H - (i + 1) * ph) / H,
                           (pw - 0.05) / width_in, (ph - title_in) / H])
        ax.imshow(img, interpolation="nearest" if max(img.shape[:2]) < 512 else "antialiased")
        ax.set_xticks([])
        ax.set_yticks([])
        frac = p["step"] / p["total"] if p["total"] else float("nan")
        ax.set_title(f"VAR-d{p['depth']} ({p['run_id']}): step {p['step']} of {int(p['total'])}, "
                     f"{frac:.0%} of training", fontsize=8, loc="left", pad=2)
        if j == 0 and not strips:
            ax.set_ylabel(f"d{p['depth']}", fontsize=9)
    return fig


# --------------------------------------------------------------------------- the command


def to_png(fig: Figure, dpi: int = 100) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def show(fig: Figure | None, dpi: int = 100) -> None:
    """Display a figure in a notebook as a PNG (works without pyplot or an inline backend)."""
    from IPython.display import Image, display

    if fig is None:
        print("(nothing to draw)")
        return
    display(Image(data=to_png(fig, dpi)))


def figures_of(study_dir, df: pd.DataFrame, rep: dict, floor: str = "auto") -> dict[str, Figure]:
    """Every figure the study allows, by file name (no extension). An alternative floor's
    report (``floor`` entropy, chinchilla, hand) gives only its Fig. 5 and Fig. 6, named
    ``fig5_vs_N-floor-<source>``, beside the headline's."""
    if floor not in FLOOR_CHOICES:
        raise ValueError(f"floor: {floor!r} is not one of {', '.join(FLOOR_CHOICES)}")
    colors = depth_colors(df["depth"])
    if floor in ALT_FLOORS:
        return {f"fig5_vs_N-floor-{floor}": fig5_vs_N(df, rep, colors=colors),
                f"fig6_vs_C-floor-{floor}": fig6_vs_C(df, rep, colors=colors)}
    raw_only = floor == "none" or not any(h.get("quantity") == "reducible" for h in report_headline(rep))
    figs = {"fig5_vs_N": fig5_vs_N(df, rep, raw_only, colors), "fig6_vs_C": fig6_vs_C(df, rep, raw_only, colors)}
    if not raw_only:
        figs["fig5_vs_N_raw"] = fig5_vs_N(df, rep, True, colors)
        figs["fig6_vs_C_raw"] = fig6_vs_C(df, rep, True, colors)
    # the per-scale panels subtract per-scale entropies only where each lies below its losses
    # (usable_floors warns when it drops them; the panels' labels say raw, so no warning here)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        fl = usable_floors({k: v for k, v in floors(study_dir).items() if k == "by_scale"}, df) \
            if floor != "none" else {}
    x_col = rep.get("x") or "n_params"
    figs["per_scale_loss_vs_N"] = per_scale_loss_vs_N(df, fl, x_col)
    figs["training_curves"] = training_curves(df, colors)
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
    return figs


def make_figures(study_dir, floor: str = "auto", formats=("png", "pdf"), out_dir=None,
                 report: dict | None = None) -> list[Path]:
    """Draw every figure the study allows into ``report/``; returns the files written.

    The laws come from ``report`` (a fits.json dict), else from the study's report/fits.json,
    else from ``fit_study`` run now without bootstrap (``study_report``). ``floor="none"``:
    raw losses only; entropy, chinchilla, hand: the report of that floor
    (``report/fits-floor-<source>.json``, FileNotFoundError naming the fit to run when absent).
    """
    df = load(study_dir)
    out = Path(out_dir) if out_dir else StudyLayout.of(study_dir).report_dir
    if not len(df):
        return []
    if report is not None:
        rep = report
    elif floor in ALT_FLOORS:
        rep = read_report(study_dir, report_name(floor))
        if rep is None:
            raise FileNotFoundError(f"no report/{report_name(floor)}.json in {study_dir}: run `varscale fit "
                                    f"{study_dir} {FIT_OPTION[floor]}` first")
    else:
        rep = study_report(study_dir, df=df)[0]
    figs = figures_of(study_dir, df, rep, floor)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, fig in figs.items():
        for ext in formats:
            buf = io.BytesIO()
            fig.savefig(buf, format=ext, dpi=150)
            atomic_write_bytes(out / f"{name}.{ext}", buf.getvalue())
            written.append(out / f"{name}.{ext}")
    for name in ("fig5_vs_N_raw", "fig6_vs_C_raw"):  # a raw file left by an earlier floor would mislead
        if name not in figs and floor not in ALT_FLOORS:
            for ext in formats:
                (out / f"{name}.{ext}").unlink(missing_ok=True)
    return written


FORMATS = ("png", "pdf", "svg", "eps", "ps")  # what matplotlib's Agg, PDF, SVG and PS backends write


def build_parser():
    from .report import ArgumentParser, HelpFormatter

    ap = ArgumentParser(prog="varscale figures", description=__doc__.split("\n")[0],
                                 formatter_class=HelpFormatter)
    ap.add_argument("study_dir", metavar="STUDY", help="study folder (runs/<study>)")
    ap.add_argument("--floor", default="auto", choices=FLOOR_CHOICES,
                    help="auto: reducible losses with the floor of report/fits.json (raw ones in *_raw "
                         "files); none: raw losses only; entropy, chinchilla, hand: the laws of "
                         "report/fits-floor-<source>.json (`varscale fit --floor-from ...`) into "
                         "fig5_vs_N-floor-<source>.* and fig6_vs_C-floor-<source>.*")
    ap.add_argument("--no-floor", action="store_true", help=argparse.SUPPRESS)  # = --floor none
    ap.add_argument("--x", default=None, choices=["n_params", "n_params_blocks", "n_params_nonembedding"],
                    help="must match the fit's (default: what report/fits.json was fitted with)")
    ap.add_argument("--compute", default=None, choices=["flops", "flops_6nd"],
                    help="must match the fit's (default: what report/fits.json was fitted with)")
    ap.add_argument("--floor-last", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--floor-avg", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--formats", default="png,pdf", help=f"comma-separated file formats, of {', '.join(FORMATS)}")
    return ap


def main(argv: list[str] | None = None) -> int:
    from .report import check_study_dir

    a = build_parser().parse_args(argv)
    rc = check_study_dir("varscale figures", a.study_dir)
    if rc is not None:
        return rc
    formats = tuple(f.strip() for f in a.formats.split(",") if f.strip())
    bad = [f for f in formats if f not in FORMATS] or ([] if formats else ["(none)"])
    if bad:
        print(f"varscale figures: --formats {a.formats}: unknown format {bad[0]}; give some of "
              f"{', '.join(FORMATS)}", file=sys.stderr)
        return 2
    if a.floor_last is not None or a.floor_avg is not None:
        print("varscale figures: a floor by hand is the fit's: run `varscale fit "
              f"{a.study_dir} --floor-last ... --floor-avg ...`, then `varscale figures {a.study_dir} --floor hand`",
              file=sys.stderr)
        return 2
    said = SayDamagedParts("varscale figures")  # a damaged part: one warning line, once
    with said:
        df = load(a.study_dir)
    if not len(df):  # not an error: nothing has been evaluated yet
        print("varscale figures: no evaluations yet, no figures")
        return 0
    floor = "none" if a.no_floor else a.floor
    rep = read_report(a.study_dir, report_name(floor))
    if rep is None and floor in ALT_FLOORS:
        print(f"varscale figures: no report/{report_name(floor)}.json in {a.study_dir}: run `varscale fit "
              f"{a.study_dir} {FIT_OPTION[floor]}` first", file=sys.stderr)
        return 2
    for opt, key, val in (("--x", "x", a.x), ("--compute", "compute", a.compute)):
        if rep is not None and val is not None and rep.get(key) != val:
            print(f"varscale figures: report/{report_name(floor)}.json was fitted with {opt} {rep.get(key)}; "
                  f"run `varscale fit {a.study_dir} {opt} {val}` first", file=sys.stderr)
            return 2
    if rep is None:
        rep, _ = study_report(a.study_dir, df=df, x_col=a.x, c_col=a.compute)
        print(f"varscale figures: no report/fits.json in {a.study_dir}: the laws were fitted now, without "
              f"bootstrap, by the code of `varscale fit` (run `varscale fit {a.study_dir}` for the table)")
    elif not report_is_current(rep, df):
        print(f"varscale figures: note: report/{report_name(floor)}.json was fitted on {rep.get('rows')} evaluations, the "
              f"study has {len(df)} now; run `varscale fit {a.study_dir}` for laws through every point")
    with said:
        files = make_figures(a.study_dir, floor, formats, report=rep)
    for p in files:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
