"""What a notebook shows beside the figures: the report's floor, headline and extrapolation
checks as tables of the typed :class:`~analysis.results.Report`, and whether a report is
the one of the study as it is now."""
from __future__ import annotations

from typing import Optional

import pandas as pd

from ..results import LOSSES, Report
from ..study import Study
from .style import SYMBOL, ci_text, num, symbol

HEADLINE_COLUMNS = ["quantity", "vs", "slice", "alpha [95% CI]", "r [95% CI]", "r (raw)", "largest held out"]
FLOOR_COLUMNS = ["metric", "E", "95% CI", "source", "detail", "resolved"]
EXTRAPOLATION_COLUMNS = ["form", "metric", "quantity", "group", "x_held_out", "predicted", "observed", "rel_error"]


def headline_table(report: Report) -> pd.DataFrame:
    """The headline rows as a table of strings: the quantity (a loss with its floor E
    subtracted, or raw), slice, alpha [95% CI], r [95% CI], r of the raw metric, and the
    leave-largest-out error."""
    out = []
    for h in report.headline:
        fl = report.floor.get(report.fit_of(h).floor) if h.quantity == "reducible" else None
        out.append({"quantity": symbol(h.metric, fl), "vs": h.kind, "slice": h.slice,
                    "alpha [95% CI]": f"{num(h.alpha)} {ci_text(h.alpha_ci)}".strip(),
                    "r [95% CI]": f"{num(h.r)} {ci_text(h.r_ci)}".strip(),
                    "r (raw)": num(h.r_raw),
                    "largest held out": "" if h.lolo is None or h.lolo.err is None else f"{100 * h.lolo.err:+.2f}%"})
    return pd.DataFrame(out, columns=HEADLINE_COLUMNS)


def floor_table(report: Report) -> pd.DataFrame:
    """One row per loss with a study-wide floor: E, its interval, source, detail, resolved."""
    rows = [{"metric": SYMBOL[m], "E": num(f.E), "95% CI": ci_text(f.ci), "source": f.source,
             "detail": f.detail, "resolved": f.resolved}
            for m, f in sorted(report.floor.items(), key=lambda kv: LOSSES.index(kv[0]))]
    return pd.DataFrame(rows, columns=FLOOR_COLUMNS)


def extrapolation_table(report: Report) -> pd.DataFrame:
    """Every leave-largest-out check of the report: the law fitted without the largest model
    (or run) predicts it; ``rel_error`` = (predicted - observed) / observed."""
    rows = [{"form": e.form, "metric": e.metric, "quantity": e.quantity, "group": e.group,
             **{k: e.values.get(k) for k in ("x_held_out", "predicted", "observed")}, "rel_error": e.rel_error}
            for e in report.extrapolation]
    return pd.DataFrame(rows, columns=EXTRAPOLATION_COLUMNS)


def stale(study: Study, report: Report) -> Optional[str]:
    """Why ``report`` is not the study's report as it is now, as the end of a sentence whose
    subject is the report ("was fitted on 40 evaluations, the study has 48 now", "has laws
    but no headline ..."), or None when it is."""
    if not report.headline and any(f.form == "power" for f in report.fits):
        return "has laws but no headline (written before fits.json had one)"
    if report.rows != len(study):
        return f"was fitted on {report.rows} evaluations, the study has {len(study)} now"
    return None
