"""What every figure shares: axis names, symbols, one colour per depth, log axes, and the
figure as PNG bytes (``to_png``) or in a notebook (``show``)."""
from __future__ import annotations

import io
import math
from typing import Optional

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


def depth_colors(depths) -> dict[int, tuple]:
    """One colour per depth, the same in every figure of a study (viridis, shallow to deep)."""
    from matplotlib import colormaps

    ds = sorted({int(d) for d in depths})
    cmap = colormaps["viridis"]
    return {d: cmap(0.9 * i / max(len(ds) - 1, 1)) for i, d in enumerate(ds)}


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


def depth_legend(fig: Figure, colors: dict) -> None:
    hs = [Line2D([], [], color=c, marker="o", ls="", label=f"d{d}") for d, c in colors.items()]
    if hs:
        fig.legend(handles=hs, loc="outside right center", title="depth", fontsize=8)


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
