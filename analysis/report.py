"""``varscale fit <study-dir>``: every scaling law of a study, as a table and as files.

Fits (each with 95% bootstrap intervals over whole runs, n, and warnings):
- per budget (or token count), each finished run's final evaluation vs N: VAR's power law
  for L_last, L_avg, Err_last, Err_avg; the reducible losses (minus the token-entropy floor);
  the saturating form for the losses when there are at least 4 sizes;
- on the compute frontier of all evaluations of all cells: the same metrics vs C_min
  (a warmup-stable-decay study also gets the frontier of its annealed runs' final evaluations);
- Chinchilla's Approach 3 on the final evaluations when N and D both vary;
- Approach 2 (IsoFLOP parabolas) for FLOP budgets with at least 3 depths;
- extrapolation checks: fit without the largest model, predict it.
Writes ``report/fits.json`` (everything) and ``report/fits.md`` (the table).
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from varscale.schema import StudyLayout, atomic_write_bytes, atomic_write_json

from .bootstrap import DEFAULT_BOOT, Fit
from . import forms
from .frontier import annealed_rows
from .load import LOSSES, METRICS, cells, final_rows, floors, is_stable_run, load, usable_floors

SHORT = {"test_loss_last": "L_last", "test_loss_avg": "L_avg", "test_err_last": "Err_last",
         "test_err_avg": "Err_avg"}


def _short(metric: str) -> str:
    for k, v in SHORT.items():
        metric = metric.replace(k, v)
    return metric


def _approach3(fr, x_col: str, n_boot: int, seed: int) -> dict:
    """Chinchilla Approach 3 per loss metric on the finished runs ({} when the form's
    eligibility says no). Fitted once: its E is also the floor of ``floor_from="chinchilla"``."""
    form = forms.FORMS["chinchilla"]
    s = forms.Slice(fr, group="final evaluations", x_col=x_col, n_boot=n_boot, seed=seed)
    if form.eligible(s) is not None:
        return {}
    return {m: form.fit(s, m)[0] for m in form.metrics}


def chinchilla_floors(chin: dict, df) -> dict[str, float]:
    """Per loss metric, the E of its Approach-3 fit where that is a floor (finite, > 0, below
    every observed value)."""
    out: dict[str, float] = {}
    for m, f in chin.items():
        E = float(f.params.get("E", float("nan")))
        if np.isfinite(E) and 0 < E < float(df[m].min()):
            out[m] = E
    return out


def fit_study(study_dir, n_boot: int = DEFAULT_BOOT, seed: int = 0, floor_last: float | None = None,
              floor_avg: float | None = None, use_floor: bool = True, x_col: str = "n_params",
              c_col: str = "flops", chinchilla_boot: int | None = None,
              floor_from: str | None = None) -> dict:
    """Fit every law the study's cells allow; returns a JSON-ready dict (see module doc).

    The laws are the registered fit forms (``analysis.forms.FORMS``), scope by scope.
    ``floor_from="chinchilla"`` subtracts, from each loss, the E of a Chinchilla fit over the
    finished runs (one number per metric, fitted once, not per slice): a reducible-loss view
    when the token-entropy floors are no floor (docs/analysis.md).
    """
    if floor_from not in (None, "chinchilla"):
        raise ValueError(f"floor_from: unknown source {floor_from!r}; valid: 'chinchilla'")
    df = load(study_dir)
    axis = df.attrs.get("budget_axis", "budget_flops")
    fr = final_rows(df) if len(df) else df
    chin = _approach3(fr, x_col, n_boot if chinchilla_boot is None else chinchilla_boot, seed)
    fl = usable_floors(floors(study_dir), df) if use_floor else {}
    source = "tokens/meta.json" if fl else "none"
    if floor_from == "chinchilla":
        fl, source = chinchilla_floors(chin, df), "Chinchilla E over the finished runs"
    if floor_last is not None:
        fl["test_loss_last"] = float(floor_last)
    if floor_avg is not None:
        fl["test_loss_avg"] = float(floor_avg)
    if floor_last is not None or floor_avg is not None:
        source = "hand"
    info = cells(study_dir)
    states = info["state"].value_counts().to_dict() if len(info) else {}
    out: dict = {"study": str(study_dir), "cells": len(info), "states": states, "rows": len(df),
                 "budget_axis": axis, "x": x_col, "compute": c_col,
                 "floors": {k: v for k, v in fl.items() if k in LOSSES},
                 "floor_source": source,
                 "n_boot": n_boot, "fits": [], "extrapolation": [], "isoflop": [], "notes": []}
    if not len(df):
        out["notes"].append("no evaluations yet")
        return out
    unfinished = df.loc[~is_stable_run(df), "run_id"].nunique() - fr["run_id"].nunique()
    if unfinished:
        out["notes"].append(f"{unfinished} run(s) not finished (running, failed or diverged): "
                            "left out of the laws vs N, their evaluations still count on the frontier")
    floors_ = {k: v for k, v in fl.items() if k in METRICS}
    common = dict(x_col=x_col, c_col=c_col, n_boot=n_boot, seed=seed, floors=floors_, axis=axis,
                  sections=out)
    fits: list[Fit] = []
    # --- per budget, final evaluations vs N
    budget_forms = forms.of_scope("budget")
    for budget, g in fr.groupby("budget"):
        s = forms.Slice(g, group=f"{axis}={budget:.3g}", **common)
        why = {f.name: f.eligible(s) for f in budget_forms}
        if all(v is not None for v in why.values()):
            out["notes"].append(f"{s.group}: {why[budget_forms[0].name]}")
            continue
        for m in METRICS:
            for f in budget_forms:
                if why[f.name] is None and m in f.metrics:
                    fits += f.fit(s, m)
            for f in budget_forms:
                if why[f.name] is None and m in f.metrics:
                    out["extrapolation"] += f.extrapolate(s, m)
    # --- compute frontier over every evaluation of every cell (and, for WSD, of the annealed runs)
    ann = annealed_rows(df)
    fronts = [forms.Slice(df, group="all evaluations", **common)]
    if ann is not None:
        fronts.append(forms.Slice(ann, group="annealed runs", **common))
    for m in METRICS:
        for f in forms.of_scope("frontier"):
            for s in fronts:
                if m in f.metrics and f.eligible(s) is None:
                    fits += f.fit(s, m)
    # --- over every finished run: Chinchilla Approach 3 (fitted above), Approach 2
    for f in forms.of_scope("study"):
        s = forms.Slice(fr, group="final evaluations", **common)
        why = f.eligible(s)
        if why is not None:
            if why:
                out["notes"].append(why)
            continue
        for m in f.metrics:
            fits += [chin[m]] if f.name == "chinchilla" else f.fit(s, m)
            out["extrapolation"] += f.extrapolate(s, m)
    out["fits"] = [f.to_dict() for f in fits]
    return out


# --------------------------------------------------------------------------- formatting


def _num(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "nan"
    return f"{v:.4g}"


def _params_str(f: dict) -> str:
    parts = []
    for k, v in f["params"].items():
        if k in ("b", "a_opt", "b_opt"):
            continue
        ci = f["ci"].get(k)
        parts.append(f"{k}={_num(v)}" + (f" [{_num(ci[0])}, {_num(ci[1])}]" if ci else ""))
    return "  ".join(parts)


def table_rows(report: dict) -> list[list[str]]:
    rows = []
    for f in report["fits"]:
        rows.append([f["form"], _short(f["metric"]), f["x"], f["group"], _params_str(f),
                     "" if f["r"] is None else f"{f['r']:.4f}", f"{f['n']} ({f['n_runs']})",
                     "; ".join(f["warnings"])])
    return rows


HEAD = ["form", "metric", "x", "slice", "params [95% CI]", "r", "n (runs)", "warnings"]


def format_terminal(report: dict) -> str:
    rows = table_rows(report)
    w = [max(len(HEAD[i]), *(len(r[i]) for r in rows)) if rows else len(HEAD[i]) for i in range(len(HEAD))]
    w[-1] = len(HEAD[-1])
    line = lambda r: "  ".join(c.ljust(w[i]) for i, c in enumerate(r)).rstrip()  # noqa: E731
    out = [line(HEAD), line(["-" * x for x in w])] + [line(r) for r in rows]
    out += _extrap_lines(report)
    out += [f"note: {n}" for n in report["notes"]]
    return "\n".join(out)


def _extrap_lines(report: dict) -> list[str]:
    ex = [e for e in report["extrapolation"] if "rel_error" in e]
    if not ex:
        return []
    lines = ["", "extrapolation (fit without the largest model, predict it):"]
    for e in ex:
        lines.append(f"  {e['form']:<10} {_short(e['metric']):<22} {e['group']:<22} "
                     f"N={e['x_held_out']:.3g} predicted {e['predicted']:.4g} observed "
                     f"{e['observed']:.4g} error {100 * e['rel_error']:+.2f}%")
    return lines


def format_markdown(report: dict) -> str:
    md = [f"# Scaling-law fits: {Path(report['study']).name}", "",
          f"{report['cells']} cells ({', '.join(f'{k}: {v}' for k, v in report['states'].items())}), "
          f"{report['rows']} evaluations; x = `{report['x']}`, compute = `{report['compute']}`; "
          f"budgets by `{report['budget_axis']}`; floors {report['floors'] or 'none'} "
          f"({report['floor_source']}); {report['n_boot']} bootstrap resamples over runs.", "",
          "VAR form: y = (k x)^alpha; saturating: y = E + (x0/x)^alpha; "
          "chinchilla: L = E + A/N^alpha + B/D^beta.", "",
          "| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
    for r in table_rows(report):
        md.append("| " + " | ".join(c.replace("|", "/") for c in r) + " |")
    ex = [e for e in report["extrapolation"] if "rel_error" in e]
    if ex:
        md += ["", "## Extrapolation checks", "",
               "| form | metric | slice | held-out N | predicted | observed | signed error |",
               "|---|---|---|---|---|---|---|"]
        for e in ex:
            md.append(f"| {e['form']} | {_short(e['metric'])} | {e['group']} | {e['x_held_out']:.3g} | "
                      f"{e['predicted']:.4g} | {e['observed']:.4g} | {100 * e['rel_error']:+.2f}% |")
    for iso in report["isoflop"]:
        md += ["", f"## IsoFLOP parabolas ({_short(iso['metric'])})", "",
               "| budget | N_opt | L_opt | warning |", "|---|---|---|---|"]
        for p in iso["parabolas"]:
            md.append(f"| {p['budget']:.3g} | {_num(p['N_opt'])} | {_num(p['L_opt'])} | {p['warning']} |")
    if report["notes"]:
        md += ["", "## Notes", ""] + [f"- {n}" for n in report["notes"]]
    return "\n".join(md) + "\n"


def write_report(report: dict, study_dir) -> tuple[Path, Path]:
    rd = StudyLayout.of(study_dir).report_dir
    rd.mkdir(parents=True, exist_ok=True)
    atomic_write_json(rd / "fits.json", report)
    atomic_write_bytes(rd / "fits.md", format_markdown(report).encode())
    return rd / "fits.json", rd / "fits.md"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="varscale fit", description=__doc__.split("\n")[0])
    ap.add_argument("study_dir", help="runs/<study>")
    ap.add_argument("--n-boot", type=int, default=DEFAULT_BOOT, help="bootstrap resamples (0: none)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--floor-last", type=float, help="irreducible last-scale loss by hand (nats)")
    ap.add_argument("--floor-avg", type=float, help="irreducible all-scale loss by hand (nats)")
    ap.add_argument("--no-floor", action="store_true", help="ignore tokens/meta.json entropies")
    ap.add_argument("--floor-from", choices=["chinchilla"],
                    help="subtract the E of a Chinchilla fit over the finished runs from each loss")
    ap.add_argument("--x", default="n_params",
                    choices=["n_params", "n_params_blocks", "n_params_nonembedding"])
    ap.add_argument("--compute", default="flops", choices=["flops", "flops_6nd"])
    ap.add_argument("--quiet", action="store_true", help="no table on the terminal")
    a = ap.parse_args(argv)
    if not Path(a.study_dir).is_dir():
        print(f"varscale fit: no study folder at {a.study_dir}", file=sys.stderr)
        return 2
    rep = fit_study(a.study_dir, n_boot=a.n_boot, seed=a.seed, floor_last=a.floor_last,
                    floor_avg=a.floor_avg, use_floor=not a.no_floor, x_col=a.x, c_col=a.compute,
                    floor_from=a.floor_from)
    js, md = write_report(rep, a.study_dir)
    if not a.quiet:
        print(format_terminal(rep))
    print(f"wrote {js} and {md}")
    if not rep["fits"]:  # not an error: a study with too few finished cells has no law yet
        print("varscale fit: no law could be fitted yet (see the notes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
