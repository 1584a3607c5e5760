"""Every figure a study allows, by file name, and writing them into ``report/``.

``figures_of(study, report, floor)`` draws them in memory; ``write_figures`` saves each in
every format by an atomic rename (a crash leaves the previous file or the new one, never a
torn one); ``make_figures`` is the two together, what ``varscale figures`` runs.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Optional

from matplotlib.figure import Figure

from varscale.schema import atomic_write_bytes

from ..results import Report, report_name
from ..study import Study
from .curves import (has_isoflop, has_per_scale, isoflop_figure, per_scale_loss_vs_N, quality_figure,
                     training_curves)
from .laws import fig5_vs_N, fig6_vs_C, has_reducible_headline
from .samples import fig7_samples
from .style import size_colors

# auto: the default report (report/fits.json) and its floor; none: raw losses only; the others:
# the report `varscale fit --floor-from <source>` (or --floor-last/--floor-avg: hand) writes
FLOOR_CHOICES = ("auto", "none", "entropy", "chinchilla", "hand")
ALT_FLOORS = ("entropy", "chinchilla", "hand")
FIT_OPTION = {"entropy": "--floor-from entropy", "chinchilla": "--floor-from chinchilla",
              "hand": "--floor-last ... --floor-avg ..."}
FORMATS = ("png", "pdf", "svg", "eps", "ps")  # what matplotlib's Agg, PDF, SVG and PS backends write
RAW_FILES = ("fig5_vs_N_raw", "fig6_vs_C_raw")


def floor_report(floor: str = "auto") -> str:
    """The report a floor choice draws (its file name without .json): ``fits`` for auto and
    none, else ``fits-floor-<source>``, the name ``varscale fit`` writes it under."""
    if floor not in FLOOR_CHOICES:
        raise ValueError(f"floor: {floor!r} is not one of {', '.join(FLOOR_CHOICES)}")
    if floor == "hand":
        return report_name(hand=True)
    return report_name(floor if floor in ALT_FLOORS else None)


def figures_of(study: Study, report: Report, floor: str = "auto") -> dict[str, Figure]:
    """Every figure the study allows, by file name (no extension). ``floor`` none: the laws
    on raw losses only; an alternative floor's report (entropy, chinchilla, hand) gives only
    its Fig. 5 and Fig. 6, named ``fig5_vs_N-floor-<source>``, beside the headline's."""
    floor_report(floor)  # a floor that is not a choice: ValueError
    colors = size_colors(study.evaluations)
    if floor in ALT_FLOORS:
        return {f"fig5_vs_N-floor-{floor}": fig5_vs_N(study, report, colors=colors),
                f"fig6_vs_C-floor-{floor}": fig6_vs_C(study, report, colors=colors)}
    raw_only = floor == "none" or not has_reducible_headline(report)
    figs = {"fig5_vs_N": fig5_vs_N(study, report, raw_only, colors),
            "fig6_vs_C": fig6_vs_C(study, report, raw_only, colors)}
    if not raw_only:
        figs["fig5_vs_N_raw"] = fig5_vs_N(study, report, True, colors)
        figs["fig6_vs_C_raw"] = fig6_vs_C(study, report, True, colors)
    if has_per_scale(study):
        figs["per_scale_loss_vs_N"] = per_scale_loss_vs_N(study, report, entropy=floor != "none")
    figs["training_curves"] = training_curves(study, colors)
    if has_isoflop(study, report):
        figs["isoflop"] = isoflop_figure(study, report, "test_loss_avg")
    q = quality_figure(study, colors)
    if q is not None:
        figs["quality_vs_N_C"] = q
    f7 = fig7_samples(study)
    if f7 is not None:
        figs["fig7_samples"] = f7
    return figs


def write_figures(figs: dict[str, Figure], out_dir, formats=("png", "pdf"), dpi: int = 150) -> list[Path]:
    """Each figure as ``<out_dir>/<name>.<format>``, by an atomic rename; the files written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, fig in figs.items():
        for ext in formats:
            buf = io.BytesIO()
            fig.savefig(buf, format=ext, dpi=dpi)
            atomic_write_bytes(out / f"{name}.{ext}", buf.getvalue())
            written.append(out / f"{name}.{ext}")
    return written


def make_figures(study: Study, report: Report, floor: str = "auto", formats=("png", "pdf"),
                 out_dir: Optional[Path] = None) -> list[Path]:
    """Draw every figure the study allows with ``report``'s laws into ``out_dir`` (default: the
    study's ``report/``); returns the files written (none for a study without evaluations).
    Raw-loss files an earlier run left there are removed when this one draws none (``floor``
    none, or no floor), so no stale raw figure remains beside the new ones."""
    if out_dir is None:
        if study.layout is None:
            raise ValueError("make_figures: a study read from a table has no report/ folder; give out_dir")
        out_dir = study.layout.report_dir
    if not len(study):
        return []
    figs = figures_of(study, report, floor)
    written = write_figures(figs, out_dir, formats)
    if floor not in ALT_FLOORS:
        for name in RAW_FILES:
            if name not in figs:
                for ext in formats:
                    (Path(out_dir) / f"{name}.{ext}").unlink(missing_ok=True)
    return written
