"""Runs trained elsewhere, read and checked: a table turned into evaluation rows.

``varscale import`` (varscale/cli/import_.py) is the command; this module reads and checks its
source, ``analysis.importstudy`` writes the study folder. Both import no torch (nor any of
varscale but ``varscale.schema``):

- ``read_table(path)``: a CSV (any other suffix is read as CSV too) or parquet table;
- ``column_map(file, **given)``: which column holds what, from a YAML / JSON mapping file and
  the command line's options (these win); ``KEYS`` lists the keys;
- ``table_evaluations(table, cols, source, sizes)``: the table checked row by row (one
  :class:`ImportProblem` sentence naming the row and the column) and turned into evaluation
  rows in ``varscale.schema.METRICS_SCHEMA`` terms. A table holds one row per evaluation
  (``step`` names the column of the evaluation's step, ``run`` the run's) or one row per
  finished run (no ``step``; without ``run`` every row is its own run);
- ``detect_format(path)``: a table, the official trainer's log.txt or its TensorBoard events.

What each quantity becomes: N from its column, or from a depth through ``sizes`` (a function
of the depth, e.g. the VAR's parameter count on a preset: the command passes
``varscale.models.spec``'s); D from its column, or steps x batch x tokens per image, or
C / (6 N) when only FLOPs are given; C from its column, else 6 N D (``flops_6nd`` is always
6 N D). A single loss column (``loss``) is stored as ``test_loss_avg``; ``loss_avg``,
``loss_last``, ``err_avg``, ``err_last`` name each metric (error rates in [0, 1]). A run's
budget is its ``budget`` column in ``budget_unit`` (tokens or flops), else its final token
count (or FLOPs). The official VAR trainer's logs (``analysis.varlogs``) become the same
evaluation rows and go through the same writer (``analysis.importstudy.write_study``).
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional

import numpy as np
import pandas as pd

__all__ = ["ImportProblem", "KEYS", "COLUMN_KEYS", "NUMBER_KEYS", "read_table", "column_map", "read_column_file",
           "table_evaluations", "detect_format", "run_ids", "FORMATS", "SINGLE_LOSS"]

FORMATS = ("table", "var-log", "tensorboard")
SINGLE_LOSS = "test_loss_avg"  # what a lone --loss column is stored as

# key -> what it names; the command line spells each as --key-with-dashes
COLUMN_KEYS: dict[str, str] = {
    "run": "the run's id (default: every row is its own run)",
    "n": "the parameter count N",
    "depth": "the VAR depth (N from the preset when --n is not given)",
    "tokens": "the training tokens D seen at the evaluation",
    "steps": "the training steps done (D = steps x --batch x --tokens-per-image)",
    "flops": "the training FLOPs C spent (default: 6 N D)",
    "step": "the evaluation's step (a table with one row per evaluation)",
    "loss": f"a loss, stored as {SINGLE_LOSS} (L_avg)",
    "loss_avg": "the all-scale loss (test_loss_avg)",
    "loss_last": "the last-scale loss (test_loss_last)",
    "err_avg": "the all-scale error rate in [0, 1] (test_err_avg)",
    "err_last": "the last-scale error rate in [0, 1] (test_err_last)",
    "budget": "the run's budget in --budget-unit (default: its final tokens or FLOPs)",
}
NUMBER_KEYS: dict[str, str] = {
    "batch": "images per step (with --steps)",
    "tokens_per_image": "tokens per image (with --steps)",
}
TEXT_KEYS: dict[str, str] = {"budget_unit": "tokens or flops: the unit of the budgets"}
KEYS = {**COLUMN_KEYS, **NUMBER_KEYS, **TEXT_KEYS}
METRIC_KEYS = {"loss": SINGLE_LOSS, "loss_avg": "test_loss_avg", "loss_last": "test_loss_last",
               "err_avg": "test_err_avg", "err_last": "test_err_last"}

Sizes = Callable[[int], Optional[Mapping[str, int]]]  # depth -> {n_params, n_params_blocks, ..., width, heads}


class ImportProblem(ValueError):
    """A table, a log or a target folder that cannot be imported: one sentence naming the row
    and the column (or the file), and what to do."""


def flag(key: str) -> str:
    return "--" + key.replace("_", "-")


# --------------------------------------------------------------------------- reading


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """A CSV or parquet table (by its suffix: .parquet / .pq; .tsv tab-separated; anything else
    CSV), every column
    kept as read; ``attrs["source"]`` is the path, ``attrs["csv"]`` whether row i is line i + 2."""
    p = Path(path)
    if not p.is_file():
        raise ImportProblem(f"{p}: no such file")
    try:
        if p.suffix.lower() in (".parquet", ".pq"):
            t = pd.read_parquet(p)
            csv = False
        else:
            t = pd.read_csv(p, sep="\t" if p.suffix.lower() == ".tsv" else ",")
            csv = True
    except Exception as e:  # noqa: BLE001 - any parse failure is the file's
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        kind = "parquet" if p.suffix.lower() in (".parquet", ".pq") else "CSV"
        raise ImportProblem(f"{p} cannot be read as a {kind} table ({first[:160]})") from None
    if not len(t):
        raise ImportProblem(f"{p} has no rows")
    t.columns = [str(c) for c in t.columns]
    t.attrs["source"], t.attrs["csv"] = str(p), csv
    return t


def read_column_file(path: str | os.PathLike) -> dict[str, Any]:
    """A YAML or JSON mapping of KEYS to column names (numbers for batch / tokens_per_image)."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ImportProblem(f"--columns {p}: no such file")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))  # JSON is YAML
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ImportProblem(f"--columns {p} is not YAML or JSON ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ImportProblem(f"--columns {p} must be a mapping of keys to column names, got {type(raw).__name__}")
    return {str(k).replace("-", "_"): v for k, v in raw.items()}


def column_map(file: str | os.PathLike | None = None, **given) -> dict[str, Any]:
    """The mapping of KEYS to columns: ``file``'s (``read_column_file``), then ``given`` (the
    command line's; None: not given) over it. An unknown key is an ImportProblem naming the keys."""
    out: dict[str, Any] = read_column_file(file) if file else {}
    where = f"--columns {file}" if file else "the columns"
    for k, v in given.items():
        if v is not None:
            out[k.replace("-", "_")] = v
    unknown = [k for k in out if k not in KEYS]
    if unknown:
        raise ImportProblem(f"{where}: unknown key '{unknown[0]}'; the keys are: {', '.join(KEYS)}")
    for k in COLUMN_KEYS:
        if k in out and not isinstance(out[k], str):
            out[k] = str(out[k])
    for k in NUMBER_KEYS:
        if k in out:
            try:
                v = float(out[k])
            except (TypeError, ValueError):
                raise ImportProblem(f"{flag(k)}: '{out[k]}' is not a number") from None
            if not (v > 0 and v == int(v)):
                raise ImportProblem(f"{flag(k)}: {out[k]} is not a whole number > 0")
            out[k] = int(v)
    if "budget_unit" in out and out["budget_unit"] not in ("tokens", "flops"):
        raise ImportProblem(f"--budget-unit: '{out['budget_unit']}' is not tokens or flops")
    return out


def detect_format(path: str | os.PathLike) -> str:
    """"table", "var-log" or "tensorboard" from the path: an event file or a folder holding one
    is TensorBoard's (the whole curve: the official log.txt keeps only the last epochs); a
    ``log.txt`` (or a folder holding one) the official trainer's log; anything else a table."""
    p = Path(path)
    if p.is_dir():
        if any(f.is_file() for f in p.rglob("*tfevents*")):
            return "tensorboard"
        if any(f.is_file() for f in p.rglob("log.txt")):
            return "var-log"
        raise ImportProblem(f"{p} is a folder with neither TensorBoard event files nor a log.txt of the "
                            "official VAR trainer; give a table file (CSV or parquet)")
    if "tfevents" in p.name:
        return "tensorboard"
    if p.name == "log.txt":
        return "var-log"
    if p.suffix.lower() == ".txt" and p.is_file():
        with open(p, "rb") as f:
            head = f.read(4096).lstrip()
        if head.startswith(b"{") and b'"cmd"' in head:
            return "var-log"
    return "table"


# --------------------------------------------------------------------------- checking a table


class _Where:
    """How a row of the source is named in a sentence: 'row 4 (line 5) of t.csv'."""

    def __init__(self, t: pd.DataFrame):
        self.source = t.attrs.get("source", "the table")
        self.csv = bool(t.attrs.get("csv"))

    def row(self, i: int) -> str:
        return f"row {i + 1} (line {i + 2})" if self.csv else f"row {i + 1}"

    def rows(self, i: int, j: int) -> str:
        if self.csv:
            return f"rows {i + 1} and {j + 1} (lines {i + 2} and {j + 2})"
        return f"rows {i + 1} and {j + 1}"


def _numbers(t: pd.DataFrame, key: str, col: str, w: _Where, *, required: bool, positive: bool = False,
             whole: bool = False, unit: bool = False) -> np.ndarray:
    """Column ``col`` as floats, each value checked: a number (empty only when not
    ``required``: NaN then), finite, not negative (> 0 with ``positive``), whole, or in [0, 1].
    The first row (in table order) that fails is the sentence."""
    raw = t[col]
    num = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float, copy=True)
    empty = raw.isna().to_numpy() | raw.astype(str).str.strip().eq("").to_numpy()
    full = ~empty
    with np.errstate(invalid="ignore"):
        checks = [
            (empty if required else np.zeros(len(t), bool), lambda i: "the value is empty"),
            (full & np.isnan(num), lambda i: f"'{raw.iloc[i]}' is not a number"),
            (full & np.isinf(num), lambda i: f"{raw.iloc[i]} is not finite"),
            (full & (num < 0), lambda i: f"{raw.iloc[i]} is negative"),
            (full & (num == 0) if positive else np.zeros(len(t), bool),
             lambda i: "0 is not > 0" + (" (an evaluation before training has no place on a law in D or C: "
                                         "leave the row out)" if key in ("tokens", "steps", "flops") else "")),
            (full & np.isfinite(num) & (num != np.round(num)) if whole else np.zeros(len(t), bool),
             lambda i: f"{raw.iloc[i]} is not a whole number"),
            (full & (num > 1) if unit else np.zeros(len(t), bool),
             lambda i: f"{raw.iloc[i]} is not an error rate in [0, 1] (1 - accuracy; an accuracy in % is "
                       "1 - acc/100)"),
        ]
    first = [(int(np.flatnonzero(m)[0]), k) for k, (m, _) in enumerate(checks) if m.any()]
    if first:
        i, k = min(first)
        raise ImportProblem(f"{w.row(i)} of {w.source}, column '{col}' ({flag(key)}): {checks[k][1](i)}")
    num[empty] = np.nan
    if not required and np.isnan(num).all():
        raise ImportProblem(f"{w.source}, column '{col}' ({flag(key)}): no row has a value")
    return num


def run_ids(values: Iterable[Any]) -> list[str]:
    """Folder-safe run ids for the given run names, distinct where the names are (characters
    other than letters, digits, '.', '_', '+', '-' become '_'; a clash gets '-2', '-3', ...)."""
    out, taken, seen = [], set(), {}
    for v in values:
        key = str(v)
        if key in seen:
            out.append(seen[key])
            continue
        base = re.sub(r"[^A-Za-z0-9._+-]", "_", key).lstrip(".") or "run"
        rid, k = base, 1
        while rid in taken:
            k += 1
            rid = f"{base}-{k}"
        taken.add(rid)
        seen[key] = rid
        out.append(rid)
    return out


def _require_columns(t: pd.DataFrame, cols: Mapping[str, Any]) -> None:
    source = t.attrs.get("source", "the table")
    have = list(t.columns)
    for k in COLUMN_KEYS:
        if k in cols and cols[k] not in have:
            raise ImportProblem(f"{flag(k)} '{cols[k]}': {source} has no such column; its columns are: "
                                + ", ".join(have))


def _same_per_run(run: np.ndarray, v: np.ndarray, key: str, col: str, w: _Where) -> None:
    first: dict[str, int] = {}
    for i, r in enumerate(run):
        if np.isnan(v[i]):
            continue
        j = first.setdefault(r, i)
        if v[j] != v[i]:
            raise ImportProblem(f"{w.rows(j, i)} of {w.source}: run '{r}' has two values of column '{col}' "
                                f"({flag(key)}): {v[j]:g} and {v[i]:g}; a run has one")


def table_evaluations(t: pd.DataFrame, cols: Mapping[str, Any],
                      sizes: Optional[Sizes] = None) -> tuple[pd.DataFrame, list[str]]:
    """The table's rows as evaluation rows (METRICS_SCHEMA columns, plus ``source_row``), and
    one note per quantity that was derived rather than read. Every problem is an
    :class:`ImportProblem` naming the row and the column."""
    w = _Where(t)
    _require_columns(t, cols)
    notes: list[str] = []
    if "n" not in cols and "depth" not in cols:
        raise ImportProblem("give the size: --n COLUMN (parameters) or --depth COLUMN (N from the preset)")
    metric_keys = [k for k in METRIC_KEYS if k in cols]
    if not metric_keys:
        raise ImportProblem("give a metric: --loss COLUMN, or --loss-avg / --loss-last / --err-avg / --err-last")
    if "loss" in cols and "loss_avg" in cols:
        raise ImportProblem(f"--loss and --loss-avg both name {SINGLE_LOSS}: give one of them")
    if "step" in cols and "run" not in cols:
        raise ImportProblem("--step needs --run: a table with one row per evaluation names each row's run")
    steps_given = "steps" in cols
    if steps_given and "tokens" not in cols:
        missing = [flag(k) for k in ("batch", "tokens_per_image") if k not in cols]
        if missing:
            raise ImportProblem(f"--steps needs {' and '.join(missing)} (D = steps x batch x tokens per image), "
                                "or give --tokens COLUMN")
    if "tokens" not in cols and not steps_given and "flops" not in cols:
        raise ImportProblem("give the data: --tokens COLUMN, --steps COLUMN with --batch and --tokens-per-image, "
                            "or --flops COLUMN (D = C / 6N)")
    n = len(t)
    # the run of each row
    if "run" in cols:
        names = t[cols["run"]]
        for i in range(n):
            if pd.isna(names.iloc[i]) or str(names.iloc[i]).strip() == "":
                raise ImportProblem(f"{w.row(i)} of {w.source}, column '{cols['run']}' (--run): the value is empty")
        run = np.array(run_ids(names.tolist()), dtype=object)
    else:
        width = len(str(n))
        run = np.array([f"row{i + 1:0{width}d}" for i in range(n)], dtype=object)
    # size
    depth = _numbers(t, "depth", cols["depth"], w, required="n" not in cols, positive=True, whole=True) \
        if "depth" in cols else np.full(n, np.nan)
    if "n" in cols:
        N = _numbers(t, "n", cols["n"], w, required=True, positive=True)
        blocks = nonemb = width_ = heads = np.full(n, np.nan)
    else:
        if sizes is None:
            raise ImportProblem("--depth without --n: N from a depth needs varscale's model sizes "
                                "(varscale.models.spec), which are not available here; give --n COLUMN")
        got = {}
        for d in sorted(set(depth.astype(int).tolist())):
            s = sizes(int(d))
            if not s:
                raise ImportProblem(f"--depth '{cols['depth']}': no model size for depth {d}; give --n COLUMN")
            got[d] = s
        N = np.array([got[int(d)]["n_params"] for d in depth], dtype=float)
        blocks = np.array([got[int(d)].get("n_params_blocks", np.nan) for d in depth], dtype=float)
        nonemb = np.array([got[int(d)].get("n_params_nonembedding", np.nan) for d in depth], dtype=float)
        width_ = np.array([got[int(d)].get("width", np.nan) for d in depth], dtype=float)
        heads = np.array([got[int(d)].get("heads", np.nan) for d in depth], dtype=float)
        notes.append(f"N from the depth in column '{cols['depth']}' (the model's parameter count at that depth)")
    _same_per_run(run, N, "n" if "n" in cols else "depth", cols.get("n", cols.get("depth")), w)
    if "depth" in cols:
        _same_per_run(run, depth, "depth", cols["depth"], w)
    # progress
    steps = _numbers(t, "steps", cols["steps"], w, required=True, positive=True, whole=True) if steps_given else None
    if "step" in cols:
        step = _numbers(t, "step", cols["step"], w, required=True, whole=True)
    elif steps is not None:
        step = steps.copy()
    else:
        step = np.ones(n)
    flops_col = _numbers(t, "flops", cols["flops"], w, required=True, positive=True) if "flops" in cols else None
    if "tokens" in cols:
        D = _numbers(t, "tokens", cols["tokens"], w, required=True, positive=True)
    elif steps is not None:
        D = steps * cols["batch"] * cols["tokens_per_image"]
        notes.append(f"D = steps (column '{cols['steps']}') x {cols['batch']} images x {cols['tokens_per_image']} "
                     "tokens per image")
    else:
        D = flops_col / (6.0 * N)
        notes.append(f"D = C / (6 N), C from column '{cols['flops']}'")
    D = np.round(D)
    if flops_col is None:
        C = 6.0 * N * D
        notes.append("C = 6 N D (no --flops column)")
    else:
        C = flops_col
    images = steps * cols["batch"] if steps is not None and "batch" in cols else np.full(n, np.nan)
    # one row per (run, step)
    first: dict[tuple[str, float], int] = {}
    for i in range(n):
        j = first.setdefault((run[i], step[i]), i)
        if j != i:
            if "step" in cols or steps_given:
                what = f"column '{cols.get('step', cols.get('steps'))}'"
                raise ImportProblem(f"{w.rows(j, i)} of {w.source}: run '{run[i]}' has step {step[i]:g} twice "
                                    f"({what}); a run has one row per evaluation")
            raise ImportProblem(f"{w.rows(j, i)} of {w.source}: run '{run[i]}' (column '{cols['run']}') appears "
                                "twice; a table with one row per evaluation needs --step COLUMN")
    order = pd.DataFrame({"run": run, "step": step}).sort_values(["run", "step"], kind="stable").index
    last_at: dict[str, int] = {}
    for i in order:
        k = last_at.get(run[i])
        if k is not None and D[i] < D[k]:
            raise ImportProblem(f"{w.row(i)} of {w.source}: run '{run[i]}' has fewer tokens at step {step[i]:g} "
                                f"({D[i]:.6g}) than at step {step[k]:g} ({D[k]:.6g})")
        last_at[run[i]] = i
    # metrics
    metrics = {}
    for k in metric_keys:
        metrics[METRIC_KEYS[k]] = _numbers(t, k, cols[k], w, required=False, unit=k.startswith("err"))
    if "loss" in cols:
        notes.append(f"the loss in column '{cols['loss']}' is stored as {SINGLE_LOSS} (L_avg)")
    # budgets
    unit = cols.get("budget_unit", "tokens")
    final_D = pd.Series(D).groupby(run).transform("max").to_numpy() if n else D
    final_C = pd.Series(C).groupby(run).transform("max").to_numpy() if n else C
    if "budget" in cols:
        B = _numbers(t, "budget", cols["budget"], w, required=True, positive=True)
        _same_per_run(run, B, "budget", cols["budget"], w)
        if unit == "tokens":
            b_tok, b_fl = B, B * final_C / final_D
        else:
            b_fl, b_tok = B, B * final_D / final_C
    else:
        b_tok, b_fl = final_D, final_C
        notes.append(f"each run's budget is its final {'token count' if unit == 'tokens' else 'FLOPs'}")
    total = pd.Series(step).groupby(run).transform("max").to_numpy() if n else step
    df = pd.DataFrame({
        "run_id": run, "depth": depth, "width": width_, "heads": heads,
        "n_params": N, "n_params_blocks": blocks, "n_params_nonembedding": nonemb,
        "step": step, "total_steps": total, "images_seen": images, "tokens_seen": D, "flops": C,
        "flops_6nd": 6.0 * N * D, "budget_tokens": b_tok, "budget_flops": b_fl, "budget_unit": unit,
        **metrics, "source_row": np.arange(n) + 1,
    })
    df.attrs["state"] = {r: "done" for r in df["run_id"].unique()}
    return df, notes
