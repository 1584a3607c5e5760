"""``varscale fit <study-dir>``: every scaling law of a study, as a table and as files.

Opens with the headline (analysis/headline.py): one floor E per loss for the whole study
(token entropy where it lies below every loss, else the E of one Approach-3 fit, with its
interval), then per metric and slice (each budget; the compute frontier of all evaluations
and, for a WSD study, of the annealed runs) alpha [95% CI], r of the headline quantity
(reducible loss L - E; error rates and losses without a floor raw), r of the raw metric, and
the leave-largest-out error; then which law predicts the largest model best. Then every fit
(each with 95% bootstrap intervals over whole runs, n, and warnings), from the fit forms
registered in ``analysis.forms``:
- per budget (or token count), each finished run's final evaluation vs N: VAR's power law
  for L_last, L_avg, Err_last, Err_avg, raw and on loss minus the floor; the saturating form
  for the losses when there are at least 4 sizes;
- on the compute frontier of all evaluations of all cells: the same metrics vs C_min
  (a warmup-stable-decay study also gets the frontier of its annealed runs' final evaluations);
- Chinchilla's Approach 3 on the final evaluations when N and D both vary;
- Approach 2 (IsoFLOP parabolas) for FLOP budgets with at least 3 depths;
- extrapolation checks: fit without the largest model, predict it (Approach 3: each held-out
  run on its own).
Warnings raised while fitting become one-line notes. Writes ``report/fits.json``
(everything) and ``report/fits.md`` (the tables), each by an atomic rename (a crash leaves the
previous report); a floor other than the default rule (``--floor-from``, ``--floor-last``,
``--no-floor``) writes ``report/fits-floor-<source>.{json,md}`` instead, so the default report,
which ``varscale run`` keeps while the finished cells are unchanged, is always the default rule's.
"""
from __future__ import annotations

import argparse
import math
import sys
import warnings
from pathlib import Path

import pandas as pd

from varscale.schema import StudyLayout, atomic_write_bytes, atomic_write_json, json_problem, yaml_problem

from . import forms
from . import headline as H
from .bootstrap import DEFAULT_BOOT, Fit, StudyResample
from .frontier import annealed_rows
from .load import LOSSES, METRICS, DamagedPart, cells, final_rows, floors, is_stable_run, load, usable_floors

SHORT = H.SHORT
FLOOR_RULES = ("auto", "entropy", "chinchilla")
# fits.json's floor_source, as it was written before per-metric floors existed
_OLD_SOURCE = {"token entropy": "tokens/meta.json", "chinchilla": "Chinchilla E over the finished runs",
               "hand": "hand"}


def _short(metric: str) -> str:
    for k, v in SHORT.items():
        metric = metric.replace(k, v)
    return metric


def _approach3(fr, x_col: str, n_boot: int, seed: int, boot: StudyResample | None = None) -> dict:
    """Chinchilla Approach 3 per loss metric on the finished runs ({} when the form's
    eligibility says no). Fitted once: its E is the floor where the token entropy is none,
    and with ``boot`` its resamples are the study's, so E moves with the laws on L - E."""
    form = forms.FORMS["chinchilla"]
    s = forms.Slice(fr, group="final evaluations", x_col=x_col, n_boot=n_boot, seed=seed, boot=boot)
    if form.eligible(s) is not None:
        return {}
    return {m: form.fit(s, m)[0] for m in form.metrics}


def _warning_notes(caught) -> list[str]:
    """One line per distinct warning raised while fitting (where it came from, what it said)."""
    out: list[str] = []
    for w in caught:
        msg = " ".join(str(w.message).split())
        line = f"{w.category.__name__} ({Path(w.filename).name}:{w.lineno}): {msg}"
        if len(line) > 240:
            line = line[:237] + "..."
        if line not in out:
            out.append(line)
    return out


def report_name(floor_from: str | None = None, use_floor: bool = True, hand: bool = False) -> str:
    """``fits`` for the default floor rule, else ``fits-floor-<source>``."""
    if hand:
        return "fits-floor-hand"
    if not use_floor:
        return "fits-floor-none"
    if floor_from in (None, "auto"):
        return "fits"
    return f"fits-floor-{floor_from}"


def fit_study(study_dir, n_boot: int = DEFAULT_BOOT, seed: int = 0, floor_last: float | None = None,
              floor_avg: float | None = None, use_floor: bool = True, x_col: str = "n_params",
              c_col: str = "flops", chinchilla_boot: int | None = None,
              floor_from: str | None = None) -> dict:
    """Fit every law the study's cells allow; returns a JSON-ready dict (see module doc and
    docs/analysis.md; the headline keys are described in analysis/headline.py).

    The floor rule (one E per loss metric, never per slice): ``floor_from`` None / "auto"
    takes the token entropy where it lies below every loss, else the Approach-3 E;
    "entropy" or "chinchilla" only that source; ``use_floor=False`` none;
    ``floor_last`` / ``floor_avg`` by hand. Warnings raised while fitting become notes.
    """
    if floor_from not in (None, *FLOOR_RULES):
        raise ValueError(f"floor_from: unknown source {floor_from!r}; valid: {', '.join(FLOOR_RULES)}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = _fit_study(study_dir, n_boot, seed, floor_last, floor_avg, use_floor, x_col, c_col,
                         chinchilla_boot, floor_from or "auto")
    damaged = [w for w in caught if issubclass(w.category, DamagedPart)]
    out["damaged_parts"] = list(dict.fromkeys(str(w.message) for w in damaged))
    out["notes"] += _warning_notes([w for w in caught if w not in damaged]) + out["damaged_parts"]
    return out


def _fit_study(study_dir, n_boot, seed, floor_last, floor_avg, use_floor, x_col, c_col,
               chinchilla_boot, rule) -> dict:
    df = load(study_dir)
    axis = df.attrs.get("budget_axis", "budget_flops")
    fr = final_rows(df) if len(df) else df
    boot = StudyResample(df["run_id"], n_boot, seed) if len(df) and n_boot else None
    n_chin = n_boot if chinchilla_boot is None else chinchilla_boot
    chin = _approach3(fr, x_col, n_chin, seed, boot if n_chin == n_boot else None) if len(df) else {}
    hand = {m: float(v) for m, v in (("test_loss_last", floor_last), ("test_loss_avg", floor_avg))
            if v is not None}
    entropy = usable_floors(floors(study_dir), df) if use_floor and rule in ("auto", "entropy") and len(df) else {}
    floor = H.choose_floors(entropy, chin, df, rule=rule if use_floor else "none", hand=hand)
    E_samples = {m: d.pop("samples", None) for m, d in floor.items()}
    fl = {m: d["E"] for m, d in floor.items()}
    sources = {d["source"] for d in floor.values()}
    if not floor:
        source = "none"
    elif len(sources) == 1:
        source = _OLD_SOURCE[sources.pop()]
    else:
        source = "; ".join(f"{m}: {_OLD_SOURCE[d['source']]}" for m, d in floor.items())
    info = cells(study_dir)
    states = info["state"].value_counts().to_dict() if len(info) else {}
    out: dict = {"study": str(study_dir), "cells": len(info), "states": states, "rows": len(df),
                 "budget_axis": axis, "x": x_col, "compute": c_col,
                 "floors": fl, "floor_source": source,
                 "floor_rule": {"rule": rule if use_floor else "none", "hand": hand,
                                "report": report_name(rule, use_floor, bool(hand))},
                 "floor": floor, "n_boot": n_boot, "headline": [], "best_law": {},
                 "fits": [], "extrapolation": [], "isoflop": [], "notes": []}
    if not len(df):
        out["notes"].append("no evaluations yet")
        return out
    for m in LOSSES:
        if m not in floor:
            out["notes"].append(_no_floor_reason(m, rule if use_floor else "none", floors(study_dir), chin,
                                                 fr, x_col))
        elif floor[m]["resolved"] is False:
            z = floor[m].get("share_at_zero")
            out["notes"].append(f"{SHORT[m]}: floor not resolved: the 95% interval of E "
                                f"[{floor[m]['ci'][0]:.3g}, {floor[m]['ci'][1]:.3g}] reaches below E/2"
                                + (f"; {100 * z:.1f}% of resamples put E at 0" if z else ""))
    if chin and n_chin != n_boot:
        out["notes"].append(f"Approach 3 bootstrapped with {n_chin} resamples, not the study's {n_boot}: "
                            "headline intervals hold E fixed")
    unfinished = df.loc[~is_stable_run(df), "run_id"].nunique() - fr["run_id"].nunique()
    if unfinished:
        out["notes"].append(f"{unfinished} run(s) not finished (running, failed or diverged): "
                            "left out of the laws vs N, their evaluations still count on the frontier")
    common = dict(x_col=x_col, c_col=c_col, n_boot=n_boot, seed=seed, floors=fl, axis=axis,
                  sections=out)
    fits: list[Fit] = []
    slices: list[tuple[str, str, pd.DataFrame]] = []  # (kind, label, rows) for the headline
    # --- per budget, final evaluations vs N
    budget_forms = forms.of_scope("budget")
    for budget, g in fr.groupby("budget"):
        s = forms.Slice(g, group=f"{axis}={budget:.3g}", **common)
        why = {f.name: f.eligible(s) for f in budget_forms}
        if all(v is not None for v in why.values()):
            out["notes"].append(f"{s.group}: {why[budget_forms[0].name]}")
            continue
        if why.get("power") is None:
            slices.append(("N", s.group, g))
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
    slices.append(("C", "all evaluations", df))
    if ann is not None:
        fronts.append(forms.Slice(ann, group="annealed runs", **common))
        slices.append(("C", "annealed runs", ann))
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
    out["allocation"] = _allocation(chin, fits)
    _headline(out, slices, floor, E_samples, boot, x_col, c_col)
    return out


def _allocation(chin: dict, fits: list[Fit]) -> dict[str, dict]:
    """Per loss: the exponents of N_opt ~ C^a and D_opt ~ C^b with 95% intervals, from
    Approach 3 (a = beta/(alpha+beta), b = alpha/(alpha+beta)) and, where the study has
    IsoFLOP slices, from Approach 2's parabolas (fits.json's ``allocation``)."""
    out: dict[str, dict] = {}
    for m in LOSSES:
        row: dict = {}
        f = chin.get(m)
        if f is not None and math.isfinite(f.params.get("a_opt", float("nan"))):
            row["approach3"] = {"a": f.params["a_opt"], "a_ci": f.ci.get("a_opt"),
                                "b": f.params["b_opt"], "b_ci": f.ci.get("b_opt")}
        iso = {g.metric: g for g in fits if g.form == "isoflop" and g.group == m}
        fN = next((g for k, g in iso.items() if k.startswith("N_opt")), None)
        fD = next((g for k, g in iso.items() if k.startswith("D_opt")), None)
        if fN is not None and fD is not None:
            row["approach2"] = {"a": fN.params.get("alpha"), "a_ci": fN.ci.get("alpha"),
                                "b": fD.params.get("alpha"), "b_ci": fD.ci.get("alpha")}
        if row:
            out[m] = row
    return out


def _no_floor_reason(m: str, rule: str, ent: dict, chin: dict, fr, x_col: str) -> str:
    """Why loss ``m`` has no floor (so the output says which fallback it took)."""
    if rule == "none":
        return f"{SHORT[m]}: no floor (--no-floor): reported raw"
    why = []
    if rule in ("auto", "entropy"):
        why.append("no token entropy in tokens/meta.json" if m not in ent else
                   f"token entropy {ent[m]:.4g} is not below every loss")
    if rule in ("auto", "chinchilla"):
        if m not in chin:
            why.append(forms.FORMS["chinchilla"].eligible(forms.Slice(fr, x_col=x_col)) or "no Approach 3 fit")
        else:
            why.append(f"the Approach-3 E {chin[m].params.get('E', float('nan')):.4g} is not below every loss")
    return f"{SHORT[m]}: no floor ({'; '.join(why)}): reported raw"


def _headline(out: dict, slices, floor: dict, E_samples: dict, boot, x_col: str, c_col: str) -> None:
    """Fill ``headline`` and ``best_law`` from the fits already in ``out`` (see analysis/headline.py)."""
    index = {(f["form"], f["metric"], f["x"], f["group"]): i for i, f in enumerate(out["fits"])}
    # an Approach-3 floor for leave-largest-out: E refitted without the largest model
    E_wo = {e["metric"]: e["fit"]["params"]["E"] for e in out["extrapolation"]
            if e["form"] == "chinchilla" and "fit" in e}
    rows, raw_lolo = [], {}
    for m in METRICS:
        E = floor[m]["E"] if m in floor else None
        E_lolo = E_wo.get(m) if m in floor and floor[m]["source"] == "chinchilla" else E
        if E_lolo is None or not math.isfinite(E_lolo):
            E_lolo = E
        Es = E_samples.get(m)
        if Es is not None and (boot is None or len(Es) != boot.n_boot):
            Es = None
        label = m if E is None else f"{m} - {E:.4g}"
        for kind, group, d in slices:
            if kind == "N":
                xname, sl = x_col, group
                pts = d[[x_col, m, "run_id"]].dropna()
                x, y, ids = pts[x_col].to_numpy(float), pts[m].to_numpy(float), pts["run_id"]
                ci = H.slice_intervals(x, y, ids, boot, E, Es)
                lolo = H.lolo_slice(x, y, ids, E_lolo)
                if E is not None and m in LOSSES:
                    lr = H.lolo_slice(x, y, ids, None)
                    if lr:
                        raw_lolo.setdefault(m, []).append((group, lr))
            else:
                xname, sl = f"{c_col} (frontier)", f"frontier ({group})"
                pts = d[[c_col, m, "run_id"]].dropna()
                x, y, ids = pts[c_col].to_numpy(float), pts[m].to_numpy(float), pts["run_id"]
                ci = H.frontier_intervals(x, y, ids, boot, E, Es)
                lolo = H.lolo_frontier(x, y, ids, E_lolo)
            i = index.get(("power", label, xname, group))
            i_raw = index.get(("power", m, xname, group))
            if i is None or i_raw is None:
                continue
            f, fraw = out["fits"][i], out["fits"][i_raw]
            rows.append({"metric": m, "short": SHORT[m], "slice": sl, "kind": kind,
                         "quantity": "raw" if E is None else "reducible", "fit": i, "fit_raw": i_raw,
                         "alpha": f["params"]["alpha"], "alpha_ci": ci.get("alpha_ci"),
                         "r": f["r"], "r_ci": ci.get("r_ci"), "r_raw": fraw["r"],
                         "n": f["n"], "n_boot": ci.get("n_boot", 0),
                         "lolo": None if lolo is None else {k: lolo[k] for k in
                                                            ("err", "held_out", "observed", "predicted", "E")}})
    out["headline"] = rows
    out["best_law"] = H.best_laws(rows, out["extrapolation"], raw_lolo)


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


def _pct(v) -> str:
    return "" if v is None or not math.isfinite(v) else f"{100 * v:+.2f}%"


def _ci(ci, fmt="{:.4f}") -> str:
    return "" if not ci else "[" + ", ".join(fmt.format(v) for v in ci) + "]"


def floor_lines(report: dict) -> list[str]:
    """The floor of each loss, its source and interval (above every table)."""
    fl = report.get("floor", {})
    return [H.floor_line(m, fl.get(m)) for m in LOSSES]


def _floor_caption(report: dict) -> str:
    fl = report.get("floor", {})
    parts = []
    for m in LOSSES:
        if m in fl:
            d = fl[m]
            parts.append(f"{SHORT[m]} E = {d['E']:.4g} ({d['source']}"
                         + (", not resolved" if d.get("resolved") is False else "") + ")")
        else:
            parts.append(f"{SHORT[m]} no floor")
    return "floor: " + "; ".join(parts)


HL_HEAD = ["metric", "slice", "alpha [95% CI]", "r", "r raw", "lolo err"]


def headline_rows(report: dict) -> list[list[str]]:
    rows = []
    for h in report.get("headline", []):
        q = h["short"] + ("-E" if h["quantity"] == "reducible" else "")
        rows.append([q, h["slice"], f"{h['alpha']:.4f} {_ci(h['alpha_ci'])}".rstrip(),
                     _rnum(h["r"]), _rnum(h["r_raw"]), _pct((h.get("lolo") or {}).get("err"))])
    return rows


def _rnum(v) -> str:
    return "" if v is None or not math.isfinite(v) else f"{v:.4f}"


def best_law_lines(report: dict) -> list[str]:
    out = []
    for m, b in report.get("best_law", {}).items():
        others = ", ".join(f"{k} {_pct(v['err'])}" for k, v in b["laws"].items() if k != b["law"])
        out.append(f"  {SHORT[m]}: {b['law']}, worst error {_pct(b['err'])} "
                   f"({'within' if b['within_3pct'] else 'NOT within'} 3%)")
        if others:
            out.append(f"    others: {others}")
    return out


def format_headline(report: dict, width: int = 100) -> str:
    """The headline on the terminal, every line at most ``width`` columns."""
    import textwrap

    out = ["floor E (one per loss, for the whole study):"] + [f"  {x}" for x in floor_lines(report)]
    rows = headline_rows(report)
    if rows:
        w = [max(len(HL_HEAD[i]), *(len(r[i]) for r in rows)) for i in range(len(HL_HEAD))]
        line = lambda r: "  ".join(c.ljust(w[i]) for i, c in enumerate(r)).rstrip()  # noqa: E731
        out += ["", "headline: law of L - E per slice (error rates raw); r raw: the same law on the raw",
                "metric; lolo err: fitted without the largest model (or frontier point), its loss predicted",
                line(HL_HEAD), line(["-" * x for x in w])] + [line(r) for r in rows]
    bl = best_law_lines(report)
    if bl:
        out += ["", "best law for the held-out largest model (its worst prediction):"] + bl
    return "\n".join(textwrap.fill(x, width, subsequent_indent="    ") if len(x) > width else x
                     for x in out)


def format_terminal(report: dict) -> str:
    import textwrap

    rows = table_rows(report)
    w = [max(len(HEAD[i]), *(len(r[i]) for r in rows)) if rows else len(HEAD[i]) for i in range(len(HEAD))]
    w[-1] = len(HEAD[-1])
    line = lambda r: "  ".join(c.ljust(w[i]) for i, c in enumerate(r)).rstrip()  # noqa: E731
    out = [format_headline(report), "", textwrap.fill("every fit; " + _floor_caption(report), 100),
           line(HEAD), line(["-" * x for x in w])] + [line(r) for r in rows]
    out += _extrap_lines(report)
    out += [textwrap.fill(f"note: {n}", 100, subsequent_indent="      ") for n in report["notes"]]
    return "\n".join(out)


def _held(e: dict) -> str:
    return f"{e['run_id']} " if e.get("run_id") else ""


def _extrap_lines(report: dict) -> list[str]:
    ex = [e for e in report["extrapolation"] if "rel_error" in e]
    if not ex:
        return []
    import textwrap

    lines = ["", textwrap.fill("extrapolation (fit without the largest model, predict it); "
                               + _floor_caption(report), 100)]
    for e in ex:
        lines.append(f"  {e['form']:<10} {_short(e['metric']):<22} {e['group']:<22} {_held(e)}"
                     f"N={e['x_held_out']:.3g} predicted {e['predicted']:.4g} observed "
                     f"{e['observed']:.4g} error {100 * e['rel_error']:+.2f}%")
    return lines


def _resolved(d: dict) -> str:
    r = d.get("resolved")
    if r is False and d.get("share_at_zero"):
        return f"no: floor not resolved ({100 * d['share_at_zero']:.1f}% of resamples at E = 0)"
    return "yes" if r else "unknown (no bootstrap)" if r is None else "no: floor not resolved"


def _md_headline(report: dict) -> list[str]:
    md = ["## Floor", "", "One E per loss metric for the whole study, subtracted everywhere the loss is "
          "reported as reducible (token entropy where it lies below every loss, else the E of one "
          "Chinchilla Approach-3 fit over all finished runs).", "",
          "| loss | E | 95% CI | source | detail | resolved |", "|---|---|---|---|---|---|"]
    fl = report.get("floor", {})
    for m in LOSSES:
        if m in fl:
            d = fl[m]
            md.append(f"| {SHORT[m]} | {d['E']:.4g} | {_ci(d['ci'], '{:.4g}') or 'none'} | {d['source']} | "
                      f"{d['detail']} | {_resolved(d)} |")
        else:
            md.append(f"| {SHORT[m]} | none | | | reported raw | |")
    hl = report.get("headline", [])
    if hl:
        md += ["", "## Headline", "", _floor_caption(report) + ". Quantity: reducible = L - E, raw = the "
               "metric itself. lolo: the same law fitted without the largest model (budget slice) or the "
               "largest-compute frontier point, predicting that loss (E added back): signed relative error.",
               "", "| metric | slice | quantity | alpha [95% CI] | r [95% CI] | r raw | lolo held out | "
               "observed | predicted | lolo err |", "|---|---|---|---|---|---|---|---|---|---|"]
        for h in hl:
            lo = h.get("lolo") or {}
            md.append(f"| {h['short']} | {h['slice']} | {h['quantity']} | {h['alpha']:.4f} {_ci(h['alpha_ci'])} | "
                      f"{_rnum(h['r'])} {_ci(h['r_ci'])} | {_rnum(h['r_raw'])} | {lo.get('held_out', '')} | "
                      f"{_num(lo.get('observed'))} | {_num(lo.get('predicted'))} | {_pct(lo.get('err'))} |")
    bl = report.get("best_law", {})
    if bl:
        md += ["", "## Best law for the held-out largest model", "",
               "Each law fitted without the largest model predicts it (per budget; Approach 3: each of its "
               "runs at its own D); a law's error is its worst prediction.", "",
               "| loss | best law | worst error | within 3% | every law (worst error) |", "|---|---|---|---|---|"]
        for m, b in bl.items():
            every = ", ".join(f"{k} {_pct(v['err'])}" for k, v in b["laws"].items())
            md.append(f"| {SHORT[m]} | {b['law']} | {_pct(b['err'])} | {'yes' if b['within_3pct'] else 'no'} | "
                      f"{every} |")
    return md


def format_markdown(report: dict) -> str:
    md = [f"# Scaling-law fits: {Path(report['study']).name}", "",
          f"{report['cells']} cells ({', '.join(f'{k}: {v}' for k, v in report['states'].items())}), "
          f"{report['rows']} evaluations; x = `{report['x']}`, compute = `{report['compute']}`; "
          f"budgets by `{report['budget_axis']}`; floors {report['floors'] or 'none'} "
          f"({report['floor_source']}); {report['n_boot']} bootstrap resamples over runs.", ""]
    md += _md_headline(report)
    md += ["", "## Every fit", "", _floor_caption(report) + ".", "",
           "VAR form: y = (k x)^alpha; saturating: y = E + (x0/x)^alpha; "
           "chinchilla: L = E + A/N^alpha + B/D^beta.", "",
           "| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
    for r in table_rows(report):
        md.append("| " + " | ".join(c.replace("|", "/") for c in r) + " |")
    ex = [e for e in report["extrapolation"] if "rel_error" in e]
    if ex:
        md += ["", "## Extrapolation checks", "", _floor_caption(report) + ".", "",
               "| form | metric | slice | held-out run | held-out N | predicted | observed | signed error |",
               "|---|---|---|---|---|---|---|---|"]
        for e in ex:
            md.append(f"| {e['form']} | {_short(e['metric'])} | {e['group']} | {e.get('run_id') or ''} | "
                      f"{e['x_held_out']:.3g} | {e['predicted']:.4g} | {e['observed']:.4g} | "
                      f"{100 * e['rel_error']:+.2f}% |")
    al = report.get("allocation") or {}
    if al:
        def ex(d, k):
            return "" if not d or d.get(k) is None else f"{d[k]:.3f} {_ci(d.get(k + '_ci'), '{:.3f}')}"

        md += ["", "## Compute-optimal allocation", "",
               "N_opt ~ C^a and D_opt ~ C^b [95% CI]. Approach 3: a = beta/(alpha+beta), b = alpha/(alpha+beta) "
               "of L = E + A/N^alpha + B/D^beta over every finished run; Approach 2: the vertices of per-budget "
               "IsoFLOP parabolas (FLOP budgets with >= 3 sizes). `varscale allocate` gives N_opt and D_opt "
               "at a budget.", "",
               "| loss | Approach 3 a | Approach 3 b | Approach 2 a | Approach 2 b |", "|---|---|---|---|---|"]
        for m, d in al.items():
            a2 = d.get("approach2")
            md.append(f"| {SHORT[m]} | {ex(d.get('approach3'), 'a')} | {ex(d.get('approach3'), 'b')} | "
                      f"{ex(a2, 'a') or 'no IsoFLOP slices'} | {ex(a2, 'b') or 'no IsoFLOP slices'} |")
    for iso in report["isoflop"]:
        md += ["", f"## IsoFLOP parabolas ({_short(iso['metric'])})", "",
               "| budget | N_opt | L_opt | warning |", "|---|---|---|---|"]
        for p in iso["parabolas"]:
            md.append(f"| {p['budget']:.3g} | {_num(p['N_opt'])} | {_num(p['L_opt'])} | {p['warning']} |")
    if report["notes"]:
        md += ["", "## Notes", ""] + [f"- {n}" for n in report["notes"]]
    return "\n".join(md) + "\n"


def write_report(report: dict, study_dir) -> tuple[Path, Path]:
    """``report/<name>.json`` and ``.md``, <name> from ``report["floor_rule"]["report"]``
    (``fits`` for the default floor rule), each written by an atomic rename."""
    rd = StudyLayout.of(study_dir).report_dir
    rd.mkdir(parents=True, exist_ok=True)
    name = report.get("floor_rule", {}).get("report", "fits")
    atomic_write_json(rd / f"{name}.json", report)
    atomic_write_bytes(rd / f"{name}.md", format_markdown(report).encode())
    return rd / f"{name}.json", rd / f"{name}.md"


class HelpFormatter(argparse.HelpFormatter):
    """Every option's default after its help line (None: the help says what happens; a flag is off)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        h = action.help or ""
        if "%(default)" in h or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return h
        return h + " (default: %(default)s)"


class ArgumentParser(argparse.ArgumentParser):
    """An error as one line, exit 2 (as ``varscale.cli.common.ArgumentParser``, which the analysis
    half does not import): ``varscale fit: argument --n-boot: invalid int value: 'abc' (...)``."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} ('{self.prog} -h' lists the options)\n")


def check_study_dir(prog: str, study_dir: str) -> int | None:
    """Before any work of ``fit`` / ``figures``: 2 (said in one line) when ``study_dir`` is not a
    study folder or a file the analysis reads is damaged, else None. A damaged cell
    ``config.json`` (which the analysis does not read) is a warning and the cell stays in."""
    lay = StudyLayout.of(study_dir)

    def stop(sentence: str) -> int:
        print(f"{prog}: {sentence}", file=sys.stderr)
        return 2

    if not lay.root.is_dir():
        return stop(f"no study folder at {study_dir}")
    if not lay.study_yaml.is_file() and not lay.cells_dir.is_dir():
        return stop(f"{study_dir} is not a study folder (it has neither study.yaml nor cells/); "
                    "give runs/<study>")
    # what the analysis reads besides the parquet: a damaged one stops it, with what to do
    needed = [(lay.study_yaml, yaml_problem, "restore it from version control or rewrite it "
               "(runs/README.md describes the format)"),
              (lay.tokens_meta, json_problem, f"rebuild the token cache with 'varscale tokenize {study_dir} --force'")]
    needed += [(lay.cell(d.name).status_json, json_problem, "delete it (the cell's next run writes it "
                "again; its checkpoints and metrics stay)") for d in lay.cell_dirs()]
    for path, problem, fix in needed:
        why = problem(path)
        if why:
            return stop(f"{path} is damaged ({why}); {fix}")
    for d in lay.cell_dirs():
        c = lay.cell(d.name)
        why = json_problem(c.config_json)
        if why:
            print(f"{prog}: warning: {c.config_json} is damaged ({why}); the analysis does not read it, the "
                  f"cell's metrics are used; 'varscale run {study_dir}' needs it rewritten", file=sys.stderr)
    return None


def build_parser() -> argparse.ArgumentParser:
    ap = ArgumentParser(prog="varscale fit", description=__doc__.split("\n")[0],
                                 formatter_class=HelpFormatter)
    ap.add_argument("study_dir", metavar="STUDY", help="study folder (runs/<study>)")
    ap.add_argument("--n-boot", type=int, default=DEFAULT_BOOT, help="bootstrap resamples (0: none)")
    ap.add_argument("--seed", type=int, default=0, help="random seed of the bootstrap")
    ap.add_argument("--floor-last", type=float,
                    help="irreducible last-scale loss by hand (nats); writes report/fits-floor-hand.* "
                         "(default: the --floor-from rule)")
    ap.add_argument("--floor-avg", type=float,
                    help="irreducible all-scale loss by hand (nats); writes report/fits-floor-hand.* "
                         "(default: the --floor-from rule)")
    ap.add_argument("--no-floor", action="store_true",
                    help="no floor: every loss raw; writes report/fits-floor-none.*")
    ap.add_argument("--floor-from", choices=list(FLOOR_RULES), default="auto",
                    help="the floor's source: auto (token entropy where it lies below every loss, "
                         "else the Approach-3 E), entropy, chinchilla; other than auto writes "
                         "report/fits-floor-<source>.*")
    ap.add_argument("--x", default="n_params",
                    choices=["n_params", "n_params_blocks", "n_params_nonembedding"],
                    help="the size axis N: all parameters, transformer blocks only, or non-embedding")
    ap.add_argument("--compute", default="flops", choices=["flops", "flops_6nd"],
                    help="the compute axis C: exact training FLOPs or 6 N D")
    ap.add_argument("--quiet", action="store_true", help="no table on the terminal")
    ap.add_argument("--check-predictions", action="store_true",
                    help="set the predictions written before training (predictions.json, from "
                         "'varscale plan --predict-from') against the observed runs; writes "
                         "report/predictions-check.{json,md} (the fits are not redone)")
    return ap


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    rc = check_study_dir("varscale fit", a.study_dir)
    if rc is not None:
        return rc
    for name, v in (("--n-boot", a.n_boot),):
        if v < 0:
            print(f"varscale fit: {name} must be >= 0 (0: no bootstrap), got {v}", file=sys.stderr)
            return 2
    for name, v in (("--floor-last", a.floor_last), ("--floor-avg", a.floor_avg)):
        if v is not None and not (math.isfinite(v) and v >= 0):
            print(f"varscale fit: {name} must be a loss in nats (>= 0), got {v:g}", file=sys.stderr)
            return 2
    if a.check_predictions:
        from .check import CheckError, check_predictions, format_check, write_check

        try:
            c = check_predictions(a.study_dir)
        except CheckError as e:
            print(f"varscale fit: {e}", file=sys.stderr)
            return 2
        write_check(a.study_dir, c)
        if not a.quiet:
            print(format_check(c))
        lay = StudyLayout.of(a.study_dir)
        print(f"wrote {lay.check_json} and {lay.check_md}")
        return 0
    rep = fit_study(a.study_dir, n_boot=a.n_boot, seed=a.seed, floor_last=a.floor_last,
                    floor_avg=a.floor_avg, use_floor=not a.no_floor, x_col=a.x, c_col=a.compute,
                    floor_from=a.floor_from)
    for sentence in rep.get("damaged_parts", []):
        print(f"varscale fit: warning: {sentence}", file=sys.stderr)
    js, md = write_report(rep, a.study_dir)
    if not a.quiet:
        print(format_terminal(rep))
    print(f"wrote {js} and {md}")
    if not rep["fits"]:  # not an error: a study with too few finished cells has no law yet
        print("varscale fit: no law could be fitted yet (see the notes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
