"""The check of pre-registered predictions as text: the table ``varscale check`` prints and
``report/predictions-check.md`` holds, and the summary line (``analysis.check`` computes the
check; this module only renders it and writes ``report/predictions-check.{json,md}``
atomically, so a killed write leaves the previous pair)."""
from __future__ import annotations

from varscale.schema import StudyLayout, atomic_write_bytes, atomic_write_json

from .predict import SHORT


def _num(v) -> str:
    return "" if v is None else f"{v:.4f}"


def _pct(v) -> str:
    return "" if v is None else f"{100 * v:+.2f}%"


def preregistration_line(c: dict) -> str:
    """The summary line: how many started targets were pre-registered, and which were not."""
    p = c["preregistration"]
    if not p["started"]:
        return "pre-registration: no target has trained yet"
    bad = [t["run_id"] for t in p["targets"] if t["pre_registered"] is False]
    if not bad:
        return f"pre-registration: {p['pre_registered']} of {p['started']} trained targets pre-registered"
    return (f"pre-registration: {len(bad)} of {p['started']} trained targets NOT pre-registered "
            f"({', '.join(bad)})")


def _yn(v) -> str:
    return "" if v is None else ("yes" if v else "no")


def format_check(c: dict) -> str:
    code = c.get("code") or {}
    ver = (f", varscale {code.get('varscale')}" + (f" at {str(code['git_commit'])[:12]}" if code.get("git_commit") else "")
           + (" (uncommitted changes)" if code.get("git_dirty") else "")) if code else ""
    lines = [f"predictions for {c['study']} from {c['pilot']} (fit {c['fit_hash']}, rows {c.get('rows_hash')}, "
             f"written {c['written']}{ver}): {c['finished']} of {c['targets']} target runs finished; "
             + preregistration_line(c)[len("pre-registration: "):], ""]
    pre = c["preregistration"]
    head = ["run", "first evaluation", "after the predictions", "pilot unchanged", "config as predicted",
            "pre-registered"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join("---" for _ in head) + "|")
    for t in pre["targets"]:
        first = "" if t["first_evaluation"] is None else f"{t['first_evaluation'][:19]}Z ({t['source']})"
        state = ("not trained yet" if t["pre_registered"] is None else
                 "yes" if t["pre_registered"] else "not pre-registered: " + "; ".join(t["why"]))
        lines.append(f"| {t['run_id']} | {first} | {_yn(t['after'])} | {_yn(t['pilot_ok'])} | {_yn(t['config_ok'])} "
                     f"| {state} |")
    lines.append("")
    head = ["run", "N", "tokens", "metric", "predicted", "95% new run", "observed", "error", "in"]
    rows = []
    for r in c["rows"]:
        rows.append([r["run_id"], f"{r['n_params']:.3g}", f"{r['tokens']:.3g}", r["short"], f"{r['predicted']:.4f}",
                     f"[{_num(r['pi'][0])}, {_num(r['pi'][1])}]",
                     "" if r["observed"] is None else f"{r['observed']:.4f}", _pct(r["err"]),
                     "" if r["in_pi"] is None else ("yes" if r["in_pi"] else "no")])
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join("---" for _ in head) + "|")
    lines += ["| " + " | ".join(x) + " |" for x in rows]
    if c["summary"]:
        lines += ["", "| metric | targets | runs | mean abs error | max abs error | mean error | in 95% new-run interval "
                      "| in 95% law interval | median half-width, new run | median half-width, law |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        hw = lambda v: "" if v is None else f"{100 * v:.2f}%"  # noqa: E731
        for m, s in c["summary"].items():
            parts = [("all", s)] + [(f"{w} 10x", s[k]) for w, k in (("within", "within_10x"), ("beyond", "beyond_10x"))
                                    if s.get(k)]
            for name, t in parts:
                lines.append(f"| {SHORT[m]} | {name} | {t['n']} | {100 * t['mean_abs_err']:.2f}% | "
                             f"{100 * t['max_abs_err']:.2f}% | {100 * t['mean_err']:+.2f}% | {100 * t['coverage_pi']:.0f}% | "
                             f"{100 * t['coverage_ci']:.0f}% | {hw(t.get('median_half_width_pi'))} | "
                             f"{hw(t.get('median_half_width_ci'))} |")
        lines += [""] + [f"- {s['diagnosis']}" for s in c["summary"].values() if s["diagnosis"]]
    lines += [f"- note: {n}" for n in c["notes"]]
    lines += ["", preregistration_line(c)]
    return "\n".join(lines)


def write_check(study_dir, c: dict) -> None:
    lay = StudyLayout.of(study_dir)
    atomic_write_json(lay.check_json, c)
    atomic_write_bytes(lay.check_md, (format_check(c) + "\n").encode())
