"""Predictions registered before a study trains, and the check of them once it has.

**The record.** ``predictions.json`` (``StudyLayout.predictions_json``, committed to git: the
one file of a study folder besides ``study.yaml`` that is) is written by ``varscale plan
<study> --predict-from <pilot>`` before any cell of the study trains: per planned run (the
runs whose final evaluation is a result: a WSD study's decay branches, not its stable runs)
the pilot's predicted L_last, L_avg, Err_last, Err_avg with their intervals
(``analysis.predict``), and what the predictions depend on: the pilot's ``fit_hash`` (its
finished runs to 10 digits, the resamples, the method) and ``rows_hash`` (the exact rows
fitted, ``analysis.predict.rows_hash``), the target study's ``study_config_hash``
(``StudyConfig.hash()``), the ``code`` (``varscale.__version__`` and the git commit when the
code runs from a git checkout) and the time ``written`` (UTC, microseconds). Once a run has
trained the file is not overwritten (a prediction made after the fact is no prediction).

**The check.** ``varscale check <study>`` (alias ``varscale fit <study> --check-predictions``;
:func:`check_predictions`) first asks, per target run, whether it was **pre-registered**:

1. its first evaluation came after the predictions were written: the earliest ``time`` the
   trainer wrote into its metrics rows (``METRICS_SCHEMA``: UTC, set when the evaluation's row
   is made, kept through resumes and part repairs, unchanged by copying or cloning the
   folder, which resets file times) or, if earlier, the modification time of any of its
   metrics part files (a part without a readable row still counts); for a WSD decay branch
   its stable run's evaluations count too (the branch continues them);
2. the pilot's current finished runs give the recorded ``fit_hash`` and ``rows_hash``;
3. the target study's config is the one predicted for: ``study.yaml`` hashes to the recorded
   ``study_config_hash``, it still plans the target's run id, and the cell's own
   ``config.json`` (when written) gives that run id (:class:`TargetConfig`, which the
   command reads: this package reads no config).

A failure of any, or one that cannot be verified (no pilot here, no study.yaml), makes the
target "not pre-registered", in the table and in the summary line. A target with no
evaluation yet is "not trained yet".

Then every finished target's observed final metrics (from the target's
:class:`~analysis.study.Study`) against the predictions: the signed relative error, whether
the observation lies in the 95% interval of a new run (``pi``) and of the law (``ci``), and
per metric the mean absolute and the largest error, the coverage, the median half-width of
each interval over its prediction (and, when some target lies more than 10x beyond the
pilot's range, the same for the targets within 10x and for those beyond), and which term of the law
the errors point to, by the fixed rule of :func:`analysis.diagnose.diagnose` (docs/prediction.md, "Which term
is at fault"). ``analysis.check_report`` renders it and writes ``report/predictions-check.{json,md}`` atomically.
The predictions file is this module's own (read and written here); the studies' evaluations
come in as Study objects.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from varscale.schema import StudyLayout, atomic_write_json, json_problem

from .diagnose import _diagnose
from .load import METRICS
from .predict import EXTRAPOLATION_WARN, SHORT, PredictError, fit_hash, fitted_runs, rows_hash
from .study import Study, as_study

FORMAT = 2  # 2: rows_hash, code, run_sd, fitted tokens range, x_D, written to the microsecond

class CheckError(ValueError):
    """No predictions to check, or a damaged predictions file (one sentence)."""


def _f(v) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


# --------------------------------------------------------------------------- the record


def utc_now() -> str:
    """The time now, UTC, to the microsecond: ``2026-12-03T12:51:56.123456Z``."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(s) -> _dt.datetime | None:
    """A time as written in a record (ISO 8601, ``Z`` or an offset; naive is UTC), or None."""
    if not isinstance(s, str) or not s:
        return None
    try:
        t = _dt.datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo is not None else t.replace(tzinfo=_dt.timezone.utc)


def code_version() -> dict[str, Any]:
    """The code that writes a record: ``varscale.__version__`` and, when the package runs
    from a git checkout, its commit and whether tracked files differ from it (None outside a
    checkout or without git)."""
    import varscale

    out: dict[str, Any] = {"varscale": varscale.__version__, "git_commit": None, "git_dirty": None}
    where = Path(varscale.__file__).resolve().parent

    def git(*args) -> str | None:
        try:
            r = subprocess.run(["git", "-C", str(where), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return r.stdout if r.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit and len(commit.strip()) >= 40:
        out["git_commit"] = commit.strip()
        status = git("status", "--porcelain", "--untracked-files=no")
        out["git_dirty"] = None if status is None else bool(status.strip())
    return out


def prediction_record(pred: pd.DataFrame, targets: list[dict], pilot: str, study_hash: str,
                      code: dict | None = None) -> dict:
    """predictions.json's content from ``analysis.predict.predict``'s frame; ``targets`` are
    the planned runs (run_id, depth, n_params, tokens, flops), predicted with label = run_id;
    ``study_hash`` the target study's ``StudyConfig.hash()``; ``code`` (default
    :func:`code_version`) the code writing it. ``written`` is the time now."""
    a = pred.attrs
    out = {"format": FORMAT, "pilot": str(pilot), "fit_hash": a["fit_hash"], "rows_hash": a.get("rows_hash"),
           "n_boot": a["n_boot"], "seed": a["seed"], "study_config_hash": study_hash,
           "code": code_version() if code is None else code,
           "floor": {m: {"E": fe.E, "source": fe.source, "ci": fe.ci} for m, fe in a["floor"].items()},
           "fitted_range": {"n_params": list(a["range_N"]), "tokens": list(a["range_D"]) if "range_D" in a else None,
                            "flops": list(a["range_C"])},
           "run_sd": {m: _f(v) for m, v in a.get("run_sd", {}).items()},
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
        out["targets"].append({**t, "x_N": _f(first["x_N"]), "x_D": _f(first["x_D"]) if "x_D" in first else None,
                               "x_C": _f(first["x_C"]), "warning": first["warning"], "metrics": mets})
    out["written"] = utc_now()  # last: after everything the record holds was computed
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
    return True, (f"wrote {lay.predictions_json} (pilot fit {record['fit_hash']}, written {record['written']}); "
                  f"commit it before any target trains: git add {lay.predictions_json} && git commit")


# --------------------------------------------------------------------------- pre-registration


@dataclass
class TargetConfig:
    """What the target study's config says now (``varscale check`` reads it from study.yaml
    and the cells' config.json; ``analysis`` reads no config)."""

    study_hash: str | None  # StudyConfig.hash() of study.yaml now
    planned: frozenset[str] = frozenset()  # the run ids study.yaml plans now
    cell_ids: dict[str, str | None] = field(default_factory=dict)  # run id -> the run id its config.json gives (None: unreadable)
    parents: dict[str, str] = field(default_factory=dict)  # a WSD decay branch's run id -> its stable run's


def first_evaluation(study: Study, run_ids: Sequence[str]) -> tuple[_dt.datetime | None, str]:
    """The earliest evaluation of any of ``run_ids`` (a target and, for a WSD branch, its
    stable run): the earliest of the ``time`` its rows carry and its metrics parts' file
    modification times; (None, "") when it has none. The second value says which it was."""
    best: tuple[_dt.datetime, str] | None = None
    ev = study.evaluations
    if len(ev) and "time" in ev and "run_id" in ev:
        t = pd.to_datetime(ev.loc[ev["run_id"].isin(list(run_ids)), "time"], utc=True, errors="coerce").dropna()
        if len(t):
            best = (t.min().to_pydatetime(), "row time")
    if study.layout is not None:
        for r in run_ids:
            for p in study.layout.cell(r).metrics_parts():
                try:
                    mt = _dt.datetime.fromtimestamp(p.stat().st_mtime, _dt.timezone.utc)
                except OSError:
                    continue
                if best is None or mt < best[0]:
                    best = (mt, f"file time of {r}/metrics/{p.name}")
    return best if best is not None else (None, "")


def _pilot_state(rec: dict, pilot: Study | None, pilot_problem: str | None) -> dict[str, Any]:
    """Whether the pilot's current finished runs give the recorded fit and rows hashes."""
    name = rec.get("pilot") or (None if pilot is None else str(pilot.root or pilot.name))
    st: dict[str, Any] = {"ok": None, "why": "", "fit_hash_now": None, "rows_hash_now": None}
    if pilot is None:
        st["why"] = f"pilot {name} not re-checked ({pilot_problem or 'not given'})"
        return st
    try:
        runs = fitted_runs(pilot)
    except PredictError as e:
        st["why"] = f"pilot {name} gives no fit now ({e})"
        st["ok"] = False
        return st
    st["fit_hash_now"] = fit_hash(runs, int(rec.get("n_boot", 0)), int(rec.get("seed", 0)))
    st["rows_hash_now"] = rows_hash(runs)
    why = []
    if st["fit_hash_now"] != rec.get("fit_hash"):
        why.append(f"fit {rec.get('fit_hash')} then, {st['fit_hash_now']} now")
    if not rec.get("rows_hash"):
        why.append("the predictions record no rows hash (written before format 2)")
    elif st["rows_hash_now"] != rec.get("rows_hash"):
        why.append(f"rows {rec.get('rows_hash')} then, {st['rows_hash_now']} now")
    st["ok"] = not why
    st["why"] = f"the pilot {name} has changed since the predictions were written ({'; '.join(why)})" if why else ""
    return st


def _config_state(rec: dict, run_id: str, config: TargetConfig | None, config_problem: str | None) -> tuple[bool | None, str]:
    if config is None:
        return None, f"study.yaml not re-checked ({config_problem or 'not given'})"
    why = []
    if config.study_hash != rec.get("study_config_hash"):
        why.append(f"study.yaml hashes to {config.study_hash} now, {rec.get('study_config_hash')} when predicted")
    if run_id not in config.planned:
        why.append("study.yaml no longer plans this run")
    if run_id in config.cell_ids and config.cell_ids[run_id] != run_id:
        got = config.cell_ids[run_id]
        why.append(f"its config.json is {'unreadable' if got is None else 'the config of ' + got}")
    return (not why), "; ".join(why)


def preregistration(study: Study, rec: dict, pilot: Study | None = None, pilot_problem: str | None = None,
                    config: TargetConfig | None = None, config_problem: str | None = None) -> dict[str, Any]:
    """Per target, whether it was pre-registered (see module doc): {"written", "pilot",
    "targets": [{run_id, first_evaluation, source, after, pilot_ok, config_ok, pre_registered,
    why}], "started", "pre_registered"}. ``pre_registered`` is None for a target with no
    evaluation yet."""
    written = parse_time(rec.get("written"))
    pil = _pilot_state(rec, pilot, pilot_problem)
    out = []
    for t in rec["targets"]:
        rid = t["run_id"]
        ids = [rid] + ([config.parents[rid]] if config is not None and rid in config.parents else [])
        first, source = first_evaluation(study, ids)
        cfg_ok, cfg_why = _config_state(rec, rid, config, config_problem)
        row = {"run_id": rid, "first_evaluation": None if first is None else first.isoformat(), "source": source,
               "after": None, "pilot_ok": pil["ok"], "config_ok": cfg_ok, "pre_registered": None, "why": []}
        if first is None:
            row["why"] = ["not trained yet"]
            out.append(row)
            continue
        why = []
        if written is None:
            why.append("the predictions record no time written")
        else:
            row["after"] = first > written
            if not row["after"]:
                why.append(f"first evaluation {first.isoformat(timespec='seconds')} ({source}) is not after "
                           f"the predictions ({rec.get('written')})")
        if not pil["ok"]:
            why.append(pil["why"])
        if not cfg_ok:
            why.append(cfg_why)
        row["pre_registered"] = not why
        row["why"] = why
        out.append(row)
    begun = [r for r in out if r["pre_registered"] is not None]
    return {"written": rec.get("written"), "pilot": pil, "targets": out, "started": len(begun),
            "pre_registered": sum(bool(r["pre_registered"]) for r in begun)}


# --------------------------------------------------------------------------- the check


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


def check_predictions(study, pilot: Study | None = None, pilot_problem: str | None = None,
                      config: TargetConfig | None = None, config_problem: str | None = None) -> dict[str, Any]:
    """Pre-registration and predicted against observed for every target run (module doc).

    ``study``: the target (a :class:`Study` or a folder), whose ``predictions.json`` is read;
    ``pilot``: the pilot (a Study or a folder), whose fit and rows hashes are computed again
    (None: not re-checked, ``pilot_problem`` says why); ``config``: the target's config now
    (:class:`TargetConfig`; None: not re-checked, ``config_problem`` says why). A target whose
    pilot or config is not re-checked is not pre-registered."""
    study = as_study(study)
    pilot = None if pilot is None else as_study(pilot)
    study_dir = study.root
    if study_dir is None:
        raise CheckError(f"{study.name}: a table of evaluations has no predictions file; give the study folder")
    rec = read_predictions(study_dir)
    pre = preregistration(study, rec, pilot, pilot_problem, config, config_problem)
    status = {t["run_id"]: t["pre_registered"] for t in pre["targets"]}
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
                   "tokens": t.get("tokens"), "flops": t.get("flops"), "x_N": t.get("x_N"), "x_D": t.get("x_D"),
                   "x_C": t.get("x_C"), "metric": m, "short": SHORT[m], "predicted": p["predicted"], "ci": p["ci"],
                   "pi": p["pi"], "observed": None, "err": None, "in_pi": None, "in_ci": None,
                   "pre_registered": status.get(t["run_id"])}
            if o is not None and o.get(m) is not None and math.isfinite(float(o[m])):
                v = float(o[m])
                row.update(observed=v, err=(p["predicted"] - v) / v,
                           in_pi=_inside(v, p["pi"]), in_ci=_inside(v, p["ci"]))
            rows.append(row)
    summary = {}
    for m in METRICS:
        r = [x for x in rows if x["metric"] == m and x["err"] is not None]
        if not r:
            continue
        d = _diagnose(rows, m, rec)
        summary[m] = {**_stats(r), "diagnosis": d["text"], "term": d["term"], "also": d.get("also", [])}
        far = [_far(x, rec.get("fitted_range") or {}) for x in r]
        if any(far):  # the targets within 10x of the pilot's range are the claim; those beyond, apart
            summary[m]["within_10x"] = _stats([x for x, f in zip(r, far) if not f])
            summary[m]["beyond_10x"] = _stats([x for x, f in zip(r, far) if f])
    out = {"study": str(study_dir), "pilot": rec.get("pilot"), "fit_hash": rec.get("fit_hash"),
           "rows_hash": rec.get("rows_hash"), "written": rec.get("written"), "code": rec.get("code"),
           "study_config_hash": rec.get("study_config_hash"), "targets": len(rec["targets"]),
           "finished": len({x["run_id"] for x in rows if x["observed"] is not None}),
           "preregistration": pre, "rows": rows, "summary": summary, "notes": []}
    if pre["pilot"]["fit_hash_now"] is not None:
        out["pilot_fit_hash_now"] = pre["pilot"]["fit_hash_now"]
        out["pilot_rows_hash_now"] = pre["pilot"]["rows_hash_now"]
    if pre["pilot"]["why"]:
        out["notes"].append(pre["pilot"]["why"])
    if out["finished"] < out["targets"]:
        out["notes"].append(f"{out['targets'] - out['finished']} of {out['targets']} target run(s) not finished yet")
    return out


def _inside(v: float, iv) -> bool:
    """Whether ``v`` lies in an interval; one with a missing (non-finite) bound holds nothing."""
    lo, hi = iv
    return lo is not None and hi is not None and lo <= v <= hi


def _far(row: dict, rng: dict) -> bool:
    """A target more than 10x beyond the pilot's fitted range (``rng``, the record's
    ``fitted_range``), above or below it, in N or in C: the targets ``analysis.predict`` warns
    of, reported apart from the others. A record without the range: its x_N and x_C."""
    for col, key, x in (("n_params", "n_params", "x_N"), ("flops", "flops", "x_C")):
        lo, hi = (rng.get(key) or [None, None])[:2]
        v = row.get(col)
        if v and lo and hi:
            if v > EXTRAPOLATION_WARN * hi or v < lo / EXTRAPOLATION_WARN:
                return True
        elif (row.get(x) or 0) > EXTRAPOLATION_WARN:
            return True
    return False


def _half_width(row: dict, key: str) -> float | None:
    lo, hi = row[key]
    return None if lo is None or hi is None or not row["predicted"] else (hi - lo) / 2 / row["predicted"]


def _stats(r: list[dict]) -> dict[str, Any] | None:
    """Errors, coverage and median interval half-width (over the prediction) of finished rows."""
    if not r:
        return None
    e = np.array([x["err"] for x in r])
    hw = {k: [h for h in (_half_width(x, k) for x in r) if h is not None] for k in ("pi", "ci")}
    return {"n": len(r), "mean_abs_err": float(np.abs(e).mean()), "max_abs_err": float(np.abs(e).max()),
            "mean_err": float(e.mean()), "coverage_pi": float(np.mean([x["in_pi"] for x in r])),
            "coverage_ci": float(np.mean([x["in_ci"] for x in r])),
            "median_half_width_pi": float(np.median(hw["pi"])) if hw["pi"] else None,
            "median_half_width_ci": float(np.median(hw["ci"])) if hw["ci"] else None}
