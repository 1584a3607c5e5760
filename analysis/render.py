"""The report as text: the terminal table of ``varscale fit`` and ``report/fits.md``.

Reads a typed :class:`~analysis.results.Report` (fresh from ``analysis.fitting.fit_study`` or
read back by ``analysis.results.read_report``) and returns strings; computes nothing, writes
nothing.
"""
from __future__ import annotations

import math
from pathlib import Path

from . import headline as H
from .bootstrap import Fit
from .results import LOSSES, SHORT, Exponents, Extrapolation, FloorEntry, Report


def _short(label: str) -> str:
    for k, v in SHORT.items():
        label = label.replace(k, v)
    return label


def _finite(v):
    return v if v is not None and math.isfinite(v) else None


def _num(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "nan"
    return f"{v:.4g}"


def _params_str(f: Fit) -> str:
    parts = []
    for k, v in f.params.items():
        if k in ("b", "a_opt", "b_opt"):
            continue
        ci = f.ci.get(k)
        parts.append(f"{k}={_num(v)}" + (f" [{_num(ci[0])}, {_num(ci[1])}]" if ci else ""))
    return "  ".join(parts)


def table_rows(report: Report) -> list[list[str]]:
    rows = []
    for f in report.fits:
        r = _finite(f.r)
        rows.append([f.form, _short(report.label(f.metric, f.quantity, f.floor)), f.x, f.group, _params_str(f),
                     "" if r is None else f"{r:.4f}", f"{f.n} ({f.n_runs})", "; ".join(f.warnings)])
    return rows


HEAD = ["form", "metric", "x", "slice", "params [95% CI]", "r", "n (runs)", "warnings"]


def _pct(v) -> str:
    return "" if v is None or not math.isfinite(v) else f"{100 * v:+.2f}%"


def _ci(ci, fmt="{:.4f}") -> str:
    return "" if not ci else "[" + ", ".join(fmt.format(v) for v in ci) + "]"


def no_values(report: Report, m: str) -> bool:
    """Whether the study had no values of metric ``m`` (an imported table with one loss): the
    report has laws and none of ``m``, as ``fit_study`` fits every metric the study has values
    of. A report without any law says nothing of it (False)."""
    return bool(report.fits) and m not in report.floor and not any(f.metric == m for f in report.fits)


def floor_lines(report: Report) -> list[str]:
    """The floor of each loss, its source and interval (above every table); "no values" for
    a loss the study has none of."""
    return [f"{SHORT[m]}: no values" if no_values(report, m) else H.floor_line(m, report.floor.get(m))
            for m in LOSSES]


def _floor_caption(report: Report) -> str:
    parts = []
    for m in LOSSES:
        if m in report.floor:
            d = report.floor[m]
            parts.append(f"{SHORT[m]} E = {d.E:.4g} ({d.source}"
                         + (", not resolved" if d.resolved is False else "") + ")")
        else:
            parts.append(f"{SHORT[m]} {'no values' if no_values(report, m) else 'no floor'}")
    return "floor: " + "; ".join(parts)


HL_HEAD = ["metric", "slice", "alpha [95% CI]", "r", "r raw", "lolo err"]


def headline_rows(report: Report) -> list[list[str]]:
    rows = []
    for h in report.headline:
        q = h.short + ("-E" if h.quantity == "reducible" else "")
        rows.append([q, h.slice, f"{h.alpha:.4f} {_ci(h.alpha_ci)}".rstrip(),
                     _rnum(h.r), _rnum(h.r_raw), _pct(h.lolo.err if h.lolo else None)])
    return rows


def _rnum(v) -> str:
    return "" if v is None or not math.isfinite(v) else f"{v:.4f}"


def best_law_lines(report: Report) -> list[str]:
    out = []
    for m, b in report.best_law.items():
        others = ", ".join(f"{k} {_pct(v.err)}" for k, v in b.laws.items() if k != b.law)
        out.append(f"  {SHORT[m]}: {b.law}, worst error {_pct(b.err)} "
                   f"({'within' if b.within_3pct else 'NOT within'} 3%)")
        if others:
            out.append(f"    others: {others}")
    return out


def format_headline(report: Report, width: int = 100) -> str:
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


def format_terminal(report: Report) -> str:
    import textwrap

    rows = table_rows(report)
    w = [max(len(HEAD[i]), *(len(r[i]) for r in rows)) if rows else len(HEAD[i]) for i in range(len(HEAD))]
    w[-1] = len(HEAD[-1])
    line = lambda r: "  ".join(c.ljust(w[i]) for i, c in enumerate(r)).rstrip()  # noqa: E731
    out = [format_headline(report), "", textwrap.fill("every fit; " + _floor_caption(report), 100),
           line(HEAD), line(["-" * x for x in w])] + [line(r) for r in rows]
    out += _extrap_lines(report)
    out += curve_lines(report)
    out += [textwrap.fill(f"note: {n}", 100, subsequent_indent="      ") for n in report.notes]
    return "\n".join(out)


def _held(e: Extrapolation) -> str:
    return f"{e.run_id} " if e.run_id else ""


def _extrap_lines(report: Report) -> list[str]:
    ex = [e for e in report.extrapolation if "rel_error" in e.values]
    if not ex:
        return []
    import textwrap

    lines = ["", textwrap.fill("extrapolation (fit without the largest model, predict it); "
                               + _floor_caption(report), 100)]
    for e in ex:
        v = e.values
        lines.append(f"  {e.form:<10} {_short(report.label(e.metric, e.quantity, e.floor)):<22} {e.group:<22} "
                     f"{_held(e)}N={v['x_held_out']:.3g} predicted {v['predicted']:.4g} observed "
                     f"{v['observed']:.4g} error {100 * v['rel_error']:+.2f}%")
    return lines


def _apct(v) -> str:
    return "" if v is None or not math.isfinite(v) else f"{100 * v:.2f}%"


def _worst_llo(report: Report, form: str, m: str):
    errs = [e.rel_error for e in report.extrapolation if e.form == form and e.metric == m and e.quantity == "raw"
            and e.rel_error is not None]
    return max(errs, key=abs) if errs else None


def curve_lines(report: Report) -> list[str]:
    """Per loss, the loss-curve law's checks beside Approach 3's: leave-one-branch-out (max
    and median |error|) and the worst leave-largest-out error of each."""
    out = []
    for f in report.fits:
        if f.form != "curve":
            continue
        lo = f.extra.get("lobo") or {}
        a3 = _worst_llo(report, "chinchilla", f.metric)
        out.append(f"  {SHORT.get(f.metric, f.metric)}: leave-one-branch-out max {_apct(lo.get('max_abs'))} median "
                   f"{_apct(lo.get('median_abs'))} ({len(lo.get('each', []))} branches); leave-largest-out worst "
                   f"{_pct(_worst_llo(report, 'curve', f.metric))}"
                   + (f" (Approach 3: {_pct(a3)})" if a3 is not None else ""))
    return ["", "loss-curve law over every evaluation (fit without each decay branch / the largest model, "
            "predict it):"] + out if out else []


def _md_curve(report: Report) -> list[str]:
    fits = [f for f in report.fits if f.form == "curve"]
    if not fits:
        return []
    md = ["", "## Loss-curve law (every evaluation)", "",
          "Every evaluation of every run with its learning-rate schedule: S1 = the area under the schedule "
          "(lr / peak summed over the updates, in tokens), S2 = the annealing area (the momentum of the "
          f"schedule's drops, decay {fits[0].extra.get('decay', '')} per step, in tokens). Leave-one-branch-out: "
          "each decay branch's final loss predicted from the stable runs and the other branches; "
          "leave-largest-out: every run of the largest model held out, beside Approach 3's.", "",
          "| loss | law | rms residual | LOBO max | LOBO median | leave-largest-out worst | Approach 3's |",
          "|---|---|---|---|---|---|---|"]
    for f in fits:
        lo = f.extra.get("lobo") or {}
        md.append(f"| {SHORT.get(f.metric, f.metric)} | {f.equation()} | {_apct(f.extra.get('rms_rel_resid'))} | "
                  f"{_apct(lo.get('max_abs'))} | {_apct(lo.get('median_abs'))} | "
                  f"{_pct(_worst_llo(report, 'curve', f.metric))} | {_pct(_worst_llo(report, 'chinchilla', f.metric))} |")
    md += ["", "| loss | held-out branch | N | tokens | observed | predicted | error |", "|---|---|---|---|---|---|---|"]
    for f in fits:
        for e in (f.extra.get("lobo") or {}).get("each", []):
            md.append(f"| {SHORT.get(f.metric, f.metric)} | {e['run_id']} | {e['x_held_out']:.3g} | "
                      f"{e['d_held_out']:.3g} | {e['observed']:.4g} | {e['predicted']:.4g} | {_pct(e['rel_error'])} |")
    return md


def _resolved(d: FloorEntry) -> str:
    r = d.resolved
    if r is False and d.share_at_zero:
        return f"no: floor not resolved ({100 * d.share_at_zero:.1f}% of resamples at E = 0)"
    return "yes" if r else "unknown (no bootstrap)" if r is None else "no: floor not resolved"


def _md_headline(report: Report) -> list[str]:
    md = ["## Floor", "", "One E per loss metric for the whole study, subtracted everywhere the loss is "
          "reported as reducible (token entropy where it lies below every loss, else the E of one "
          "Chinchilla Approach-3 fit over all finished runs).", "",
          "| loss | E | 95% CI | source | detail | resolved |", "|---|---|---|---|---|---|"]
    fl = report.floor
    for m in LOSSES:
        if m in fl:
            d = fl[m]
            md.append(f"| {SHORT[m]} | {d.E:.4g} | {_ci(d.ci, '{:.4g}') or 'none'} | {d.source} | "
                      f"{d.detail} | {_resolved(d)} |")
        else:
            md.append(f"| {SHORT[m]} | none | | | reported raw | |")
    hl = report.headline
    if hl:
        md += ["", "## Headline", "", _floor_caption(report) + ". Quantity: reducible = L - E, raw = the "
               "metric itself. lolo: the same law fitted without the largest model (budget slice) or the "
               "largest-compute frontier point, predicting that loss (E added back): signed relative error.",
               "", "| metric | slice | quantity | alpha [95% CI] | r [95% CI] | r raw | lolo held out | "
               "observed | predicted | lolo err |", "|---|---|---|---|---|---|---|---|---|---|"]
        for h in hl:
            lo = h.lolo
            md.append(f"| {h.short} | {h.slice} | {h.quantity} | {h.alpha:.4f} {_ci(h.alpha_ci)} | "
                      f"{_rnum(h.r)} {_ci(h.r_ci)} | {_rnum(h.r_raw)} | {lo.held_out if lo else ''} | "
                      f"{_num(lo.observed if lo else None)} | {_num(lo.predicted if lo else None)} | "
                      f"{_pct(lo.err if lo else None)} |")
    bl = report.best_law
    if bl:
        md += ["", "## Best law for the held-out largest model", "",
               "Each law fitted without the largest model predicts it (per budget; Approach 3: each of its "
               "runs at its own D); a law's error is its worst prediction.", "",
               "| loss | best law | worst error | within 3% | every law (worst error) |", "|---|---|---|---|---|"]
        for m, b in bl.items():
            every = ", ".join(f"{k} {_pct(v.err)}" for k, v in b.laws.items())
            md.append(f"| {SHORT[m]} | {b.law} | {_pct(b.err)} | {'yes' if b.within_3pct else 'no'} | "
                      f"{every} |")
    return md


def format_markdown(report: Report) -> str:
    md = [f"# Scaling-law fits: {Path(report.study).name}", "",
          f"fits.json schema version {report.schema_version}.", "",
          f"{report.cells} cells ({', '.join(f'{k}: {v}' for k, v in report.states.items())}), "
          f"{report.rows} evaluations; x = `{report.x}`, compute = `{report.compute}`; "
          f"budgets by `{report.budget_axis}`; floors {report.floors() or 'none'} "
          f"({report.floor_source}); {report.n_boot} bootstrap resamples over runs.", ""]
    md += _md_headline(report)
    md += ["", "## Every fit", "", _floor_caption(report) + ".", "",
           "VAR form: y = (k x)^alpha; saturating: y = E + (x0/x)^alpha; "
           "chinchilla: L = E + A/N^alpha + B/D^beta; curve (onset law, docs/analysis.md): "
           "L = P - (P - E_N) (1 - (1 + (S1/s_N)^beta)^-g) (1 + k S2/(S2 + tau)), E_N = E + A (N/1e6)^-alpha, "
           "s_N = s0 (N/1e6)^-gamma (S1, S2 the areas under the lr schedule, in 1e6 tokens).", "",
           "| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
    for r in table_rows(report):
        md.append("| " + " | ".join(c.replace("|", "/") for c in r) + " |")
    ex = [e for e in report.extrapolation if "rel_error" in e.values]
    if ex:
        md += ["", "## Extrapolation checks", "", _floor_caption(report) + ".", "",
               "| form | metric | slice | held-out run | held-out N | predicted | observed | signed error |",
               "|---|---|---|---|---|---|---|---|"]
        for e in ex:
            v = e.values
            md.append(f"| {e.form} | {_short(report.label(e.metric, e.quantity, e.floor))} | {e.group} | "
                      f"{e.run_id or ''} | {v['x_held_out']:.3g} | {v['predicted']:.4g} | {v['observed']:.4g} | "
                      f"{100 * v['rel_error']:+.2f}% |")
    md += _md_curve(report)
    al = report.allocation
    if al:
        def ex(d: Exponents | None, k: str) -> str:
            v = None if d is None else getattr(d, k)
            return "" if v is None else f"{v:.3f} {_ci(getattr(d, k + '_ci'), '{:.3f}')}"

        md += ["", "## Compute-optimal allocation", "",
               "N_opt ~ C^a and D_opt ~ C^b [95% CI]. Approach 3: a = beta/(alpha+beta), b = alpha/(alpha+beta) "
               "of L = E + A/N^alpha + B/D^beta over every finished run; Approach 2: the vertices of per-budget "
               "IsoFLOP parabolas (FLOP budgets with >= 3 sizes). `varscale allocate` gives N_opt and D_opt "
               "at a budget.", "",
               "| loss | Approach 3 a | Approach 3 b | Approach 2 a | Approach 2 b |", "|---|---|---|---|---|"]
        for m, d in al.items():
            a2 = d.approach2
            md.append(f"| {SHORT[m]} | {ex(d.approach3, 'a')} | {ex(d.approach3, 'b')} | "
                      f"{ex(a2, 'a') or 'no IsoFLOP slices'} | {ex(a2, 'b') or 'no IsoFLOP slices'} |")
    for iso in report.isoflop:
        md += ["", f"## IsoFLOP parabolas ({_short(iso.metric)})", "",
               "| budget | N_opt | L_opt | warning |", "|---|---|---|---|"]
        for p in iso.parabolas:
            md.append(f"| {p['budget']:.3g} | {_num(p['N_opt'])} | {_num(p['L_opt'])} | {p['warning']} |")
    if report.notes:
        md += ["", "## Notes", ""] + [f"- {n}" for n in report.notes]
    return "\n".join(md) + "\n"
