"""What every figure shares: axis names, symbols, one colour per model size (per depth; per
N in a study without depths), log axes, the panels of the metrics a study has, and the
figure as PNG bytes (``to_png``) or in a notebook (``show``)."""
from __future__ import annotations

import io
import math
from typing import Optional

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ..results import SHORT, FloorEntry

LOSSES = ("test_loss_last", "test_loss_avg")
LABEL = {"test_loss_last": "test loss, last scale", "test_loss_avg": "test loss, all scales",
         "test_err_last": "token error rate, last scale", "test_err_avg": "token error rate, all scales"}
SYMBOL = SHORT  # test_loss_last -> L_last, ...
PANELS = ("test_loss_last", "test_loss_avg", "test_err_last", "test_err_avg")
XLABEL = {"n_params": "parameters N", "n_params_blocks": "block parameters N (73728 d^3 form)",
          "n_params_nonembedding": "non-embedding parameters N",
          "flops": "training compute C (FLOPs)", "flops_6nd": "training compute C = 6ND (FLOPs)",
          "tokens_seen": "training tokens D"}
MARKERS = "osD^vP*Xph"
# how an axis label names a floor's source (FloorEntry.source)
SOURCE_LABEL = {"token entropy": "token entropy", "chinchilla": "Chinchilla E", "hand": "E by hand"}


LEGEND_SIZES = 12  # model sizes coloured by N beyond this many: a colour bar, not a legend entry each


class SizeColors(dict):
    """One colour per model size, the same in every figure of a study: a dict from the size
    (a depth, or N) to its colour, and ``key``, the column a run's size is read from:
    "depth", or "n_params" for a study without depths (an imported table)."""

    def __init__(self, key: str, colors: dict):
        super().__init__(colors)
        self.key = key

    def label(self, size) -> str:
        return f"d{size}" if self.key == "depth" else f"N={size:.3g}"

    @property
    def title(self) -> str:
        return "depth" if self.key == "depth" else "parameters N"


def depth_colors(depths) -> SizeColors:
    """One colour per depth, the same in every figure of a study (viridis, shallow to deep)."""
    from matplotlib import colormaps

    ds = sorted({int(d) for d in depths})
    cmap = colormaps["viridis"]
    return SizeColors("depth", {d: cmap(0.9 * i / max(len(ds) - 1, 1)) for i, d in enumerate(ds)})


def size_colors(df) -> SizeColors:
    """The colours of a study's runs (``df``: its evaluations): by depth when every row has
    one (``depth_colors``), else by N on a log scale (viridis, small to large)."""
    from matplotlib import colormaps

    if "depth" in df and df["depth"].notna().all():
        return depth_colors(df["depth"])
    ns = sorted({float(n) for n in df["n_params"].dropna()}) if "n_params" in df else []
    lo, hi = (math.log(ns[0]), math.log(ns[-1])) if ns else (0.0, 0.0)
    cmap = colormaps["viridis"]
    return SizeColors("n_params", {n: cmap(0.9 * (math.log(n) - lo) / (hi - lo) if hi > lo else 0.0) for n in ns})


def run_colors(colors: dict, rows) -> list:
    """The colour of each row of ``rows`` (a DataFrame of runs or evaluations) by its size;
    a plain dict is keyed by depth."""
    key = getattr(colors, "key", "depth")
    cast = int if key == "depth" else float
    return [colors[cast(v)] for v in rows[key]]


def num(v, fmt: str = ".4g") -> str:
    return "nan" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, fmt)


def ci_text(ci, fmt: str = ".4g") -> str:
    return f"[{num(ci[0], fmt)}, {num(ci[1], fmt)}]" if ci else ""


def symbol(metric: str, floor: Optional[FloorEntry] = None) -> str:
    """The drawn quantity's symbol: ``L_last - 2.27`` (a loss minus its floor) or ``L_last``."""
    return f"{SYMBOL[metric]} - {floor.E:.4g}" if floor is not None else SYMBOL[metric]


def source_name(floor: FloorEntry) -> str:
    return SOURCE_LABEL.get(floor.source, floor.source or "floor")


def budget_name(axis: str, b: float) -> str:
    return f"{b:.2g} tokens" if axis == "budget_tokens" else f"{b:.2g} FLOPs"


def log_axes(ax) -> None:
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


def size_legend(fig: Figure, colors: dict, extra: list = (), marker: str = "o") -> None:
    """The key of the size colours beside ``fig``: an entry per depth (or per N, when few),
    else a colour bar of N; ``extra`` handles (line styles, say) join the legend."""
    key = getattr(colors, "key", "depth")
    hs = []
    if key == "depth" or len(colors) <= LEGEND_SIZES:
        lab = colors.label if isinstance(colors, SizeColors) else (lambda d: f"d{d}")
        hs = [Line2D([], [], color=c, marker=marker, ls="" if marker else "-", label=lab(d))
              for d, c in colors.items()]
    elif colors:
        from matplotlib import colormaps
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import ListedColormap, LogNorm

        cmap = ListedColormap(colormaps["viridis"](np.linspace(0, 0.9, 256)))
        sm = ScalarMappable(norm=LogNorm(min(colors), max(colors)), cmap=cmap)
        fig.colorbar(sm, ax=fig.axes, label="parameters N", location="right", shrink=0.8)
    hs += list(extra)
    if hs:
        title = None if extra else (colors.title if isinstance(colors, SizeColors) else "depth")
        fig.legend(handles=hs, loc="outside right center", title=title, fontsize=8)


def panel_figure(n: int) -> tuple[Figure, list]:
    """A figure of ``n`` panels (1 to 4; the metrics a study has values of): one row of one
    or two, else two by two (a fourth axis unused is removed)."""
    rows, cols = (1, max(n, 1)) if n <= 2 else (2, 2)
    size = {(1, 1): (8.5, 5.5), (1, 2): (11, 5)}.get((rows, cols), (11, 8.5))  # room for the floor's title
    fig = Figure(figsize=size, layout="constrained")
    axes = list(np.atleast_1d(fig.subplots(rows, cols)).ravel())
    for ax in axes[n:]:
        ax.remove()
    return fig, axes[:n]


depth_legend = size_legend  # the older name


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
