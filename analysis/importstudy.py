"""The study folder of runs trained elsewhere: what ``varscale import`` writes.

``analysis.importing`` reads and checks the source into evaluation rows
(``varscale.schema.METRICS_SCHEMA`` columns); this module writes them as a study folder that
the analysis reads like any other. Torch-free (nothing of varscale but ``varscale.schema``):

- ``check_target(dest)``: the folder to import into is absent or empty;
- ``write_study(dest, evaluations, ...)``: the study folder, every path through
  ``StudyLayout``: per run ``cells/<run_id>/metrics/part-*.parquet`` (one part per evaluation,
  as the trainer writes them), ``record.parquet``, ``status.json`` and ``DONE`` (a run whose
  evaluations reach its last step is done, so its last row is final); ``imported.json`` (where
  the runs came from and how each quantity was derived: the mark ``varscale run`` refuses)
  and a ``study.yaml`` that ``varscale predict`` / ``allocate`` read (the preset and depths
  they size a depth with). The folder is written under a temporary name and renamed into
  place, so an import that stops half way leaves no study behind;
- ``default_config(evaluations, preset, depths, batch)``: that study.yaml's sections.
"""
from __future__ import annotations

import datetime as _dt
import math
import os
import shutil
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from varscale.schema import (METRICS_SCHEMA, RUN_SCHEMA, StudyLayout, atomic_write_bytes, atomic_write_json,
                             write_part, write_record)

from .importing import ImportProblem

__all__ = ["check_target", "write_study", "default_config", "study_yaml"]


def check_target(dest: str | os.PathLike) -> Path:
    """The study folder to import into: absent or empty (else an ImportProblem)."""
    p = Path(dest)
    if p.exists():
        if not p.is_dir():
            raise ImportProblem(f"{p} exists and is a file: import into a new study folder")
        if any(p.iterdir()):
            raise ImportProblem(f"{p} exists and is not empty: import into a new study folder "
                                "(or delete that one first)")
    return p


_INT = {f.name for f in METRICS_SCHEMA if str(f.type).startswith("int")}


def _py(v, name: str):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, (np.floating, float)) and math.isnan(float(v)):
        return None
    if name in _INT:
        return int(round(float(v)))
    if isinstance(v, np.generic):
        return v.item()
    return v


def study_yaml(name: str, description: str, header: list[str], config: Mapping[str, Any]) -> str:
    import yaml

    body = yaml.safe_dump({"name": name, "description": description, **config}, sort_keys=False,
                          default_flow_style=None, width=100)
    return "".join(f"# {h}\n" if h else "#\n" for h in header) + body


def write_study(dest: str | os.PathLike, evals: pd.DataFrame, *, source: str, fmt: str,
                columns: Mapping[str, Any] | None = None, notes: Iterable[str] = (), name: str | None = None,
                config: Mapping[str, Any] | None = None, states: Mapping[str, str] | None = None,
                messages: Mapping[str, str] | None = None) -> Path:
    """Write ``evals`` (METRICS_SCHEMA columns; other columns are left out) as a study folder at
    ``dest`` (absent or empty). ``states``: run id -> done | failed (default: ``evals.attrs
    ["state"]``, else done); ``messages``: a run's one-line message (status.json, record);
    ``config``: the study.yaml sections besides name and description (``data``, ``model``,
    ``budgets``, ``training``); ``columns`` / ``notes`` go into imported.json."""
    dest = check_target(dest)
    name = name or dest.resolve().name
    states = dict(states or evals.attrs.get("state") or {})
    messages = dict(messages or evals.attrs.get("message") or {})
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.importing-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    lay = StudyLayout.of(tmp)
    schema_cols = [c for c in METRICS_SCHEMA.names if c in evals.columns]
    runs = list(dict.fromkeys(evals["run_id"]))
    now = _dt.datetime.now(_dt.timezone.utc)
    try:
        for rid in runs:
            g = evals[evals["run_id"] == rid].sort_values("step", kind="stable")
            cl = lay.cell(rid)
            rows = []
            for i, (_, r) in enumerate(g.iterrows()):
                row = {c: _py(r[c], c) for c in schema_cols}
                row["study"] = name
                rows.append(row)
                write_part(cl.metrics_dir, [row], i)
            last = rows[-1]
            state = states.get(rid, "done")
            msg = messages.get(rid) or f"imported from {source}"
            rec = {k: last.get(k) for k in RUN_SCHEMA.names if k in last}
            rec.update(status=state, steps=last.get("step"), message=msg,
                       **{f"final_{m}": last.get(m) for m in ("test_loss_avg", "test_loss_last", "test_err_avg",
                                                               "test_err_last")})
            write_record(cl, rec)
            atomic_write_json(cl.status_json, {"state": state, "step": last.get("step"),
                                               "total_steps": last.get("total_steps"), "message": msg,
                                               "imported": True, "updated": now.isoformat(timespec="seconds")})
            if state == "done":
                atomic_write_bytes(cl.done, b"done\n")
        units = evals["budget_unit"].dropna().unique().tolist() if "budget_unit" in evals else []
        atomic_write_json(lay.imported_json, {
            "format": fmt, "source": str(source), "columns": dict(columns or {}), "notes": list(notes),
            "runs": len(runs), "evaluations": int(len(evals)),
            "states": {s: sum(1 for r in runs if states.get(r, "done") == s) for s in ("done", "failed")},
            "budget_unit": units[0] if units else None, "imported": now.isoformat(timespec="seconds"),
        })
        header = [f"Imported by `varscale import` from {source} ({fmt}): analysis only, nothing to train here",
                  "(`varscale run` refuses this folder; imported.json says how each quantity was derived).",
                  "The model section is what `varscale predict --depth` and `varscale allocate` size a depth",
                  "with; the runs themselves are in cells/<run_id>/metrics as varscale writes its own."]
        desc = f"{len(runs)} run{'s' * (len(runs) != 1)} imported from {Path(source).name}"
        atomic_write_bytes(lay.study_yaml, study_yaml(name, desc, header, dict(config or {})).encode())
        if dest.exists():
            dest.rmdir()  # empty (check_target)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def default_config(evals: pd.DataFrame, preset: Mapping[str, Any] | None = None,
                   depths: Iterable[int] | None = None, batch: int | None = None) -> dict[str, Any]:
    """The study.yaml sections of an imported study: ``preset`` (name, resolution, num_classes)
    and ``depths`` give the model section (what predict / allocate size a depth with), the
    budgets are the runs' budgets, ``batch`` the training batch when known."""
    units = evals["budget_unit"].dropna() if "budget_unit" in evals else pd.Series(dtype=str)
    unit = str(units.iloc[0]) if len(units) else "tokens"
    col = "budget_tokens" if unit == "tokens" else "budget_flops"
    vals = sorted({float(v) for v in evals[col].dropna().unique()})
    cfg: dict[str, Any] = {}
    if preset:
        cfg["data"] = {"resolution": int(preset["resolution"]), "num_classes": int(preset["num_classes"])}
        model: dict[str, Any] = {"preset": str(preset["name"])}
        ds = sorted({int(d) for d in (depths or [])})
        if ds:
            model["depths"] = ds
        cfg["model"] = model
    if vals:
        cfg["budgets"] = {"unit": unit, "values": vals}
    if batch:
        cfg["training"] = {"batch_size": int(batch)}
    return cfg
