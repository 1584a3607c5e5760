"""Read a study folder into tidy pandas tables; works while cells are still running.

``load(study_dir)`` returns every evaluation row of every cell (``METRICS_SCHEMA`` columns,
read with a unified schema so a column added later is kept) joined with what the cell
folder says about the run: its state from ``status.json`` and its run record when the cell
has finished. ``final_rows`` picks each run's last evaluation; ``floors`` reads the
ground-truth token entropies that the paper subtracts to get the reducible loss.
"""
from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from varscale.schema import StudyLayout, parquet_problem, read_json, read_parts

METRICS = ("test_loss_last", "test_loss_avg", "test_err_last", "test_err_avg")
LOSSES = ("test_loss_last", "test_loss_avg")


def _cell_dirs(layout: StudyLayout) -> list[Path]:
    if not layout.cells_dir.is_dir():
        return []
    return sorted(p for p in layout.cells_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def cells(study_dir) -> pd.DataFrame:
    """One row per cell folder: run_id, state (status.json; 'pending' if absent), the
    status.json fields, and the run record's columns (prefixed ``record_``) when present."""
    layout = StudyLayout.of(study_dir)
    rows = []
    for d in _cell_dirs(layout):
        cl = layout.cell(d.name)
        st = read_json(cl.status_json, default=None) or {}
        row = {"run_id": d.name, "state": st.get("state", "done" if cl.done.exists() else "pending")}
        row.update(_schedule_of(cl.config_json))
        for k, v in st.items():
            if k != "state" and (v is None or isinstance(v, (str, int, float, bool))):
                row["status_" + k] = v
        if cl.record.exists():
            try:
                rec = read_parts([cl.record]).to_pandas()
                if len(rec):
                    for k, v in rec.iloc[-1].items():
                        if k not in ("run_id",):
                            row["record_" + k] = v
            except Exception as e:  # a torn or foreign file should not stop the analysis
                warnings.warn(f"{cl.record}: unreadable run record ({e})")
        rows.append(row)
    return pd.DataFrame(rows, columns=None if rows else ["run_id", "state"])


def _schedule_of(config_json: Path) -> dict:
    """What the analysis needs of a cell's ``config.json``: whether the run is a
    warmup-stable-decay design's stable run (schedule "wsd", no decay, not a branch) and the
    unit its budget is written in. A missing or damaged file: not a stable run, unit unknown
    (``varscale fit`` says so for a damaged one before it starts)."""
    try:
        c = read_json(config_json, default=None)
    except (OSError, ValueError):
        c = None
    if not isinstance(c, dict):
        return {"is_stable": False, "budget_unit": None, "lr_schedule": None}
    stable = c.get("schedule") == "wsd" and not c.get("decay_steps") and not c.get("branch_from")
    unit = c.get("budget_unit")
    return {"is_stable": bool(stable), "budget_unit": unit if isinstance(unit, str) else None,
            "lr_schedule": _lr_schedule(c)}


_SCHEDULE_KEYS = ("total_steps", "schedule", "decay_steps", "branch_from", "branch_step")
_TRAINING_KEYS = ("warmup_frac", "hold_frac", "final_lr_ratio")


def _lr_schedule(c: dict) -> dict | None:
    """The part of a cell's config.json that fixes its learning-rate schedule (what
    ``varscale.schedule.schedule_of_cell`` reads; the loss-curve law's input), or None when the
    file does not say (no total_steps)."""
    if not isinstance(c.get("total_steps"), int):
        return None
    tr = c.get("training") if isinstance(c.get("training"), dict) else {}
    return {**{k: c.get(k) for k in _SCHEDULE_KEYS},
            "training": {k: tr[k] for k in _TRAINING_KEYS if isinstance(tr.get(k), (int, float))}}


def load(study_dir, states: tuple[str, ...] | None = None, info: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every evaluation row of every cell, sorted by run and step, with columns
    ``state`` (the cell's state now) and ``is_final`` (this row is the run's last
    evaluation of a finished run: step == total_steps or the cell is done).

    ``states`` keeps only cells in those states (e.g. ``("done",)``); default: all. ``info``: the
    study's ``cells`` table when the caller has read it already (``Study.load``).
    A cell with no metrics yet contributes no rows; a damaged part (not a file, unreadable, a
    failed page CRC, no rows) is skipped with a warning naming it (a cell being written is never
    torn: parts are renamed into place; ``varscale run`` writes a damaged one again).
    """
    layout = StudyLayout.of(study_dir)
    if not layout.root.is_dir():
        raise FileNotFoundError(f"no study folder at {layout.root}")
    parts = []
    for d in _cell_dirs(layout):
        parts.extend(layout.cell(d.name).metrics_parts())
    try:
        if not all(p.is_file() for p in parts):
            raise IsADirectoryError("a part that is not a file")
        table = _read_parallel(parts)
    except Exception:  # find the bad part(s) only when there is one
        good = []
        for p in parts:
            why = parquet_problem(p)
            if why:
                warnings.warn(damaged_part_warning(p, why, layout.root))
            else:
                good.append(p)
        table = read_parts(good)
    df = table.to_pandas()
    if "step" in df.columns and len(df):
        df = df.sort_values(["run_id", "step"], kind="stable")
        df = df.drop_duplicates(["run_id", "step"], keep="last").reset_index(drop=True)
    info = cells(study_dir) if info is None else info
    if len(info):
        df = df.merge(info[["run_id", "state", "is_stable"]], on="run_id", how="left")
    else:
        df["state"] = pd.Series(dtype=str)
        df["is_stable"] = pd.Series(dtype=bool)
    df["state"] = df["state"].fillna("running")
    df["is_stable"] = df["is_stable"].fillna(False).astype(bool)
    if len(df):
        last = df.groupby("run_id")["step"].transform("max") == df["step"]
        finished = (df["step"] >= df["total_steps"].fillna(np.inf)) | (df["state"] == "done")
        # a warmup-stable-decay design's stable run is never decayed: its curve belongs on the
        # compute frontier, but its last point is not a trained model of its size
        df["is_final"] = last & finished & (df["state"] != "diverged") & ~is_stable_run(df)
    else:
        df["is_final"] = pd.Series(dtype=bool)
    units = info["budget_unit"].dropna() if "budget_unit" in info else pd.Series(dtype=str)
    unit = str(units.iloc[0]) if len(units) else None
    axis = budget_axis(df, unit)
    # budgets equal to 10 significant digits are one slice (a budget converted through N and
    # back, as FLOPs = 6 N D, carries float noise in its last digits)
    df["budget"] = same_budgets(df[axis]) if len(df) else pd.Series(dtype=float)
    if states is not None:
        df = df[df["state"].isin(states)].reset_index(drop=True)
    df.attrs["budget_axis"] = axis
    df.attrs["study_dir"] = str(layout.root)
    return df


class NotAFloor(UserWarning):
    """A token-entropy floor left out because it is not below every observed loss; ``varscale
    fit`` says it once, in the floor's description, not as a note of its own."""


class DamagedPart(UserWarning):
    """A metrics part left out of the analysis; the message names it and what to do."""


def damaged_part_warning(path: Path, why: str, study_dir: Path) -> DamagedPart:
    """The one sentence ``fit`` / ``figures`` print for a metrics part they leave out."""
    return DamagedPart(f"{path} is damaged ({why}): its evaluation is left out; 'varscale run {study_dir}' "
                       "writes it again from the copy in the cell's checkpoint (docs/training.md, Faults)")


class SayDamagedParts:
    """``with SayDamagedParts(prog):`` each DamagedPart warning raised inside becomes one line on
    stderr, ``<prog>: warning: <sentence>``, once per part however often the study is loaded."""

    def __init__(self, prog: str):
        self.prog, self.said = prog, set()

    def __enter__(self):
        self._cm = warnings.catch_warnings()
        self._cm.__enter__()
        warnings.simplefilter("always", DamagedPart)
        old = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if not issubclass(category, DamagedPart):
                return old(message, category, filename, lineno, file, line)
            if str(message) not in self.said:
                self.said.add(str(message))
                print(f"{self.prog}: warning: {message}", file=sys.stderr)

        warnings.showwarning = show
        return self

    def __exit__(self, *exc):
        return self._cm.__exit__(*exc)


def _read_parallel(parts: list[Path], chunk: int = 64):
    """``read_parts`` over chunks in threads (parquet decoding releases the GIL), then one
    permissive concatenation: a study of thousands of small parts loads in a few seconds."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow as pa

    if len(parts) <= chunk:
        return read_parts(parts)
    chunks = [parts[i:i + chunk] for i in range(0, len(parts), chunk)]
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as ex:
        tables = list(ex.map(read_parts, chunks))
    return pa.concat_tables(tables, promote_options="permissive")


def same_budgets(budgets: Sequence[float], digits: int = 10) -> np.ndarray:
    """Each budget as its group's label, budgets that differ by float noise in one group: a
    value rounded to ``digits`` significant digits, and a rounded value within one unit of that
    digit above its neighbour (noise across a rounding edge) labelled as the neighbour."""
    b = np.asarray(budgets, dtype=float).reshape(-1)
    r = np.array([float(f"{v:.{digits - 1}e}") if np.isfinite(v) else v for v in b])
    label: dict[float, float] = {}
    start = None
    for v in np.unique(r[np.isfinite(r)]):
        if start is None or v - start > abs(start) * 10.0 ** (1 - digits):
            start = v
        label[v] = start
    return np.array([label.get(v, v) for v in r])


def is_stable_run(df: pd.DataFrame) -> pd.Series:
    """True on rows of a warmup-stable-decay design's stable run (the ``is_stable`` column
    that ``load`` reads from each cell's config.json; a table without it has none)."""
    if "is_stable" not in df:
        return pd.Series(False, index=df.index)
    return df["is_stable"].fillna(False).astype(bool)


def final_rows(df: pd.DataFrame, finished_only: bool = True) -> pd.DataFrame:
    """Each run's last evaluation (one row per run_id). ``finished_only``: only runs that
    reached their last step and did not diverge (what the laws vs N use)."""
    if not len(df):
        return df.copy()
    if finished_only:
        out = df[df["is_final"]]
    else:
        out = df.loc[df.groupby("run_id")["step"].idxmax()]
    out = out.reset_index(drop=True)
    out.attrs.update(df.attrs)
    return out


def budget_axis(df: pd.DataFrame, unit: str | None = None) -> str:
    """'budget_flops' or 'budget_tokens': what the study's budgets are written in.

    From the rows' ``budget_unit`` column; for parts written before that column existed,
    ``unit`` (the cells' config.json ``budget_unit``); without either, the column with fewer
    distinct values (a tokens budget gives every depth the same token count but different
    FLOPs).
    """
    if "budget_unit" in df and df["budget_unit"].notna().any():
        unit = str(df["budget_unit"].dropna().iloc[0])
    if unit is not None:
        return "budget_tokens" if unit == "tokens" else "budget_flops"
    if not len(df) or "budget_tokens" not in df or df["budget_tokens"].isna().all():
        return "budget_flops"
    nf = df["budget_flops"].round(6).nunique() if "budget_flops" in df else 10**9
    nt = df["budget_tokens"].nunique()
    return "budget_tokens" if nt < nf else "budget_flops"


def floors(study_dir) -> dict:
    """Token-entropy floors from ``tokens/meta.json``: {"test_loss_last": ..,
    "test_loss_avg": .., "by_scale": [..]} (nats); {} when the cache has no meta."""
    meta = read_json(StudyLayout.of(study_dir).tokens_meta, default=None)
    if not meta:
        return {}
    out = {}
    if meta.get("entropy_last") is not None:
        out["test_loss_last"] = float(meta["entropy_last"])
    if meta.get("entropy_avg") is not None:
        out["test_loss_avg"] = float(meta["entropy_avg"])
    if meta.get("entropy_by_scale") is not None:
        out["by_scale"] = [float(v) for v in meta["entropy_by_scale"]]
    return out


def usable_floors(fl: dict, df: pd.DataFrame) -> dict:
    """Keep only the floors that lie below every observed loss of their metric.

    The token-entropy floor of ``tokens/meta.json`` is the entropy of the marginal (unigram)
    code distribution, an upper bound on the irreducible loss rather than a floor: a model
    that uses the class and the coarser scales goes below it (measured on the default study:
    every final loss was). Subtracting it would leave non-positive values that no power law
    or log axis can take, so such a floor is dropped with a warning and raw losses are used.
    """
    out = {}
    for m, v in fl.items():
        if m == "by_scale":
            col = df.get("test_loss_by_scale")
            if col is None or not len(df):
                continue
            L = np.array([np.asarray(r, float) for r in col.dropna() if r is not None and len(r) == len(v)])
            if len(L) and (L.min(axis=0) > np.asarray(v)).all():
                out[m] = v
            else:
                warnings.warn("per-scale token-entropy floors are not below every per-scale loss; not used as a floor",
                              NotAFloor)
            continue
        if m in df and len(df) and np.nanmin(df[m].to_numpy(float)) > v:
            out[m] = v
        else:
            warnings.warn(f"floor {v:.4g} for {m} is not below every observed loss (it is a unigram "
                          f"entropy, not a true floor); not used as a floor", NotAFloor)
    return out


def load_quality(study_dir) -> pd.DataFrame | None:
    """Sample-quality rows (``quality/part-*.parquet``) when another stage wrote them."""
    parts = StudyLayout.of(study_dir).quality_parts()
    if not parts:
        return None
    return read_parts(parts).to_pandas()


def sample_images(study_dir) -> pd.DataFrame:
    """Sample grids ``samples/<run_id>/step-XXXXXXXX.png`` as rows (run_id, step, path)."""
    rows = []
    for p in StudyLayout.of(study_dir).fig7_pngs():
        try:
            rows.append({"run_id": p.parent.name, "step": int(p.stem.split("-", 1)[1]), "path": str(p)})
        except ValueError:
            continue
    return pd.DataFrame(rows, columns=["run_id", "step", "path"])


__all__ = ["load", "cells", "final_rows", "floors", "budget_axis", "load_quality",
           "sample_images", "METRICS", "LOSSES", "DamagedPart", "SayDamagedParts"]
