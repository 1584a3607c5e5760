"""Predictions written before a study trains, and the check of them once it has.

``predictions.json`` (``StudyLayout.predictions_json``) is written by ``varscale plan <study>
--predict-from <pilot>`` before any cell of the study trains: per planned run (the runs
whose final evaluation is a result: a WSD study's decay branches, not its stable runs) the
pilot's predicted L_last, L_avg, Err_last, Err_avg with their intervals
(``analysis.predict``), and the pilot's ``fit_hash`` (its finished runs, the resamples, the
method), so the predictions can be traced to the exact fit they came from. Once a run has
trained the file is not overwritten (a prediction made after the fact is no prediction).

``varscale check <study>`` (alias ``varscale fit <study> --check-predictions``;
:func:`check_predictions`) sets every finished target run's observed final metrics (from the
target's :class:`~analysis.study.Study`) against the predictions: the signed relative
error, whether the observation lies in the 95% interval of a new run (``pi``) and of the
law (``ci``), and per metric the mean absolute and the largest error and the coverage.
A diagnosis says which term of the law the errors point to: targets that extend the model
size (N beyond the pilot's) against those that extend only the tokens (D beyond), and a
common offset (the floor). With the pilot's Study, its fit hash is computed again: a pilot
changed since the predictions were written is a note. :func:`write_check` writes
``report/predictions-check.{json,md}`` atomically. The predictions file is this module's own
(read and written here); the studies' evaluations come in as Study objects.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from varscale.schema import StudyLayout, atomic_write_bytes, atomic_write_json, json_problem

from .load import METRICS
from .predict import SHORT, fit_hash
from .study import Study, as_study

FORMAT = 1


class CheckError(ValueError):
    """No predictions to check, or a damaged predictions file (one sentence)."""


def _f(v) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def prediction_record(pred: pd.DataFrame, targets: list[dict], pilot: str, study_hash: str) -> dict:
    """predictions.json's content from ``analysis.predict.predict``'s frame; ``targets`` are
    the planned runs (run_id, depth, n_params, tokens, flops), predicted with label = run_id."""
    a = pred.attrs
    out = {"format": FORMAT, "pilot": str(pilot), "fit_hash": a["fit_hash"], "n_boot": a["n_boot"],
           "seed": a["seed"], "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "study_config_hash": study_hash,
           "floor": {m: {"E": fe.E, "source": fe.source, "ci": fe.ci} for m, fe in a["floor"].items()},
           "fitted_range": {"n_params": list(a["range_N"]), "flops": list(a["range_C"])},
           "notes": list(a.get("notes", [])), "targets": []}
    for t in targets:
        rows = pred[pred["target"] == t["run_id"]]
        mets = {}
        for _, r in rows.iterrows():
            mets[r["metric"]] = {"predicted": _f(r["predicted"]), "ci": [_f(r["ci_lo"]), _f(r["ci_hi"])],
                                 "pi": [_f(r["pi_lo"]), _f(r["pi_hi"])],
                                 "reducible": _f(r["reducible"]),
                                 "reducible_ci": [_f(r["reducible_lo"]), _f(r["reducible_hi"])],
                                 "frontier": _f(r["frontier"]), "frontier_ci": [_f(r["frontier_lo"]), _f(r["frontier_hi"])]}
        first = rows.iloc[0]
        out["targets"].append({**t, "x_N": _f(first["x_N"]), "x_C": _f(first["x_C"]),
                               "warning": first["warning"], "metrics": mets})
    return out


def read_predictions(study_dir) -> dict:
    lay = StudyLayout.of(study_dir)
    f = lay.predictions_json
    if not f.exists():
        raise CheckError(f"{f}: no predictions; write them before training with "
                         f"'varscale plan {study_dir} --predict-from runs/<pilot>'")
    why = json_problem(f)
    if why:
        raise CheckError(f"{f}: {why}; write it again before training, or restore it")
    obj = json.loads(f.read_text())
    if not isinstance(obj, dict) or not isinstance(obj.get("targets"), list):
        raise CheckError(f"{f}: not a predictions file (no 'targets' list)")
    return obj


def started(study_dir, run_ids) -> list[str]:
    """Which of ``run_ids`` have any evaluation written (training has begun)."""
    lay = StudyLayout.of(study_dir)
    return [r for r in run_ids if any(lay.cell(r).metrics_dir.glob("part-*.parquet"))]


def write_predictions(study_dir, record: dict) -> tuple[bool, str]:
    """Write predictions.json unless one exists and a target has begun training; returns
    (written, sentence)."""
    lay = StudyLayout.of(study_dir)
    ids = [t["run_id"] for t in record["targets"]]
    if lay.predictions_json.exists():
        begun = started(study_dir, ids)
        if begun:
            return False, (f"{lay.predictions_json} kept: {len(begun)} target run(s) have trained since it was "
                           "written; a prediction made now would not be one (delete the file to write it anyway)")
    atomic_write_json(lay.predictions_json, record)
    return True, f"wrote {lay.predictions_json} (pilot fit {record['fit_hash']})"


def _diagnose(rows: list[dict], metric: str) -> str:
    """Which term of the law the errors point to (see module doc)."""
    r = [x for x in rows if x["metric"] == metric and x["err"] is not None]
    if not r:
        return ""
    errs = np.array([x["err"] for x in r])
    beyondN = np.array([x["x_N"] is not None and x["x_N"] > 1.0 + 1e-9 for x in r])
    parts = []
    if beyondN.any():
        parts.append(f"larger models (N up to {max(x['x_N'] for x in r):.2g}x the pilot's): mean "
                     f"{100 * errs[beyondN].mean():+.2f}%")
    if (~beyondN).any():
        parts.append(f"more tokens at a fitted size: mean {100 * errs[~beyondN].mean():+.2f}%")
    mN = float(errs[beyondN].mean()) if beyondN.any() else 0.0
    mD = float(errs[~beyondN].mean()) if (~beyondN).any() else 0.0
    side = lambda m: "higher" if m > 0 else "lower"  # noqa: E731 - predicted against observed
    if beyondN.any() and (~beyondN).any() and abs(mD) > 2 * abs(mN):
        verdict = (f"the data term (B/D^beta): with more tokens the prediction comes out {side(mD)} "
                   "than observed, while larger models are on the law")
    elif beyondN.any() and (~beyondN).any() and abs(mN) > 2 * abs(mD):
        verdict = (f"the model-size term (A/N^alpha): larger models come out {side(mN)} than observed, "
                   "while more tokens are on the law")
    elif np.all(np.sign(errs) == np.sign(errs[0])):
        verdict = f"a common offset, every prediction {side(errs[0])}: the floor E"
    else:
        verdict = "no single term: errors of both signs in both groups"
    if np.abs(errs).max() <= 0.02:
        verdict = "within 2% everywhere; the largest bias: " + verdict
    return f"{SHORT[metric]}: " + "; ".join(parts) + f" -> {verdict}"


def pilot_location(rec: dict, study_dir, given=None) -> Path | None:
    """Where the pilot of a predictions record is: ``given``, else the record's ``pilot``
    (as written, or relative to the target study when that is not found). None: no pilot."""
    pilot = given or rec.get("pilot")
    if not pilot:
        return None
    pp = Path(pilot)
    if not given and not pp.is_absolute() and not pp.exists():
        pp = Path(study_dir) / pilot
    return pp


def check_predictions(study, pilot: Study | None = None, pilot_problem: str | None = None) -> dict[str, Any]:
    """Predicted against observed for every finished target run (see module doc).

    ``study``: the target (a :class:`Study` or a folder), whose ``predictions.json`` is read;
    ``pilot``: the pilot (a Study or a folder), whose fit hash is computed again (None: not
    re-checked, and ``pilot_problem``, a phrase why, becomes a note)."""
    study = as_study(study)
    pilot = None if pilot is None else as_study(pilot)
    study_dir = study.root
    if study_dir is None:
        raise CheckError(f"{study.name}: a table of evaluations has no predictions file; give the study folder")
    rec = read_predictions(study_dir)
    fr = study.final
    obs = {r["run_id"]: r for r in fr.to_dict("records")} if len(fr) else {}
    rows = []
    for t in rec["targets"]:
        o = obs.get(t["run_id"])
        for m in METRICS:
            p = t["metrics"].get(m)
            if p is None:
                continue
            row = {"run_id": t["run_id"], "depth": t.get("depth"), "n_params": t.get("n_params"),
                   "tokens": t.get("tokens"), "flops": t.get("flops"), "x_N": t.get("x_N"), "x_C": t.get("x_C"),
                   "metric": m, "short": SHORT[m], "predicted": p["predicted"], "ci": p["ci"], "pi": p["pi"],
                   "observed": None, "err": None, "in_pi": None, "in_ci": None}
            if o is not None and o.get(m) is not None and math.isfinite(float(o[m])):
                v = float(o[m])
                row.update(observed=v, err=(p["predicted"] - v) / v,
                           in_pi=bool(p["pi"][0] is not None and p["pi"][0] <= v <= p["pi"][1]),
                           in_ci=bool(p["ci"][0] is not None and p["ci"][0] <= v <= p["ci"][1]))
            rows.append(row)
    summary = {}
    for m in METRICS:
        r = [x for x in rows if x["metric"] == m and x["err"] is not None]
        if not r:
            continue
        e = np.array([x["err"] for x in r])
        summary[m] = {"n": len(r), "mean_abs_err": float(np.abs(e).mean()), "max_abs_err": float(np.abs(e).max()),
                      "mean_err": float(e.mean()), "coverage_pi": float(np.mean([x["in_pi"] for x in r])),
                      "coverage_ci": float(np.mean([x["in_ci"] for x in r])), "diagnosis": _diagnose(rows, m)}
    out = {"study": str(study_dir), "pilot": rec.get("pilot"), "fit_hash": rec.get("fit_hash"),
           "written": rec.get("written"), "targets": len(rec["targets"]),
           "finished": len({x["run_id"] for x in rows if x["observed"] is not None}),
           "rows": rows, "summary": summary, "notes": []}
    name = rec.get("pilot") or (None if pilot is None else str(pilot.root or pilot.name))
    if pilot is not None and not len(pilot.final):
        pilot, pilot_problem = None, "no finished runs"
    if pilot is not None:
        now = fit_hash(pilot.final, int(rec.get("n_boot", 0)), int(rec.get("seed", 0)))
        out["pilot_fit_hash_now"] = now
        if now != rec.get("fit_hash"):
            out["notes"].append(f"the pilot {name} has changed since the predictions were written "
                                f"(fit {rec.get('fit_hash')} then, {now} now)")
    elif pilot_problem and name:
        out["notes"].append(f"pilot {name} not readable here ({pilot_problem}): its fit hash is not re-checked")
    if out["finished"] < out["targets"]:
        out["notes"].append(f"{out['targets'] - out['finished']} of {out['targets']} target run(s) not finished yet")
    return out


def _pct(v) -> str:
    return "" if v is None else f"{100 * v:+.2f}%"


def format_check(c: dict) -> str:
    lines = [f"predictions for {c['study']} from {c['pilot']} (fit {c['fit_hash']}, written {c['written']}): "
             f"{c['finished']} of {c['targets']} target runs finished", ""]
    head = ["run", "N", "tokens", "metric", "predicted", "95% new run", "observed", "error", "in"]
    rows = []
    for r in c["rows"]:
        rows.append([r["run_id"], f"{r['n_params']:.3g}", f"{r['tokens']:.3g}", r["short"], f"{r['predicted']:.4f}",
                     f"[{r['pi'][0]:.4f}, {r['pi'][1]:.4f}]",
                     "" if r["observed"] is None else f"{r['observed']:.4f}", _pct(r["err"]),
                     "" if r["in_pi"] is None else ("yes" if r["in_pi"] else "no")])
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join("---" for _ in head) + "|")
    lines += ["| " + " | ".join(x) + " |" for x in rows]
    if c["summary"]:
        lines += ["", "| metric | runs | mean abs error | max abs error | mean error | in 95% new-run interval "
                      "| in 95% law interval |", "|---|---|---|---|---|---|---|"]
        for m, s in c["summary"].items():
            lines.append(f"| {SHORT[m]} | {s['n']} | {100 * s['mean_abs_err']:.2f}% | {100 * s['max_abs_err']:.2f}% | "
                         f"{100 * s['mean_err']:+.2f}% | {100 * s['coverage_pi']:.0f}% | {100 * s['coverage_ci']:.0f}% |")
        lines += [""] + [f"- {s['diagnosis']}" for s in c["summary"].values() if s["diagnosis"]]
    lines += [f"- note: {n}" for n in c["notes"]]
    return "\n".join(lines)


def write_check(study_dir, c: dict) -> None:
    lay = StudyLayout.of(study_dir)
    atomic_write_json(lay.check_json, c)
    atomic_write_bytes(lay.check_md, (format_check(c) + "\n").encode())
