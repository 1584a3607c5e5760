"""A fitted predictor kept in the study's report folder, so that ``varscale predict``,
``allocate`` and ``plan --predict-from`` on an unchanged study answer without refitting.

:func:`cached_predictor` is :func:`analysis.predict.fit_predictor` with a file:
``report/predictor-<key>.npz`` (``StudyLayout.predictor_cache``), where the key
(:func:`cache_key`) is a digest of everything the fit depends on: the fit hash (each
finished run's id, N, D, C and final metrics, the resamples, ``PREDICT_VERSION``), the
finished runs' columns the predictor keeps, exactly (``RUN_COLUMNS``: depth too), the
token-entropy floors it may use, the metrics, and this file's format. A changed study, other
resamples or another method is another key, so a file is either right or not read.

The file is a numpy ``.npz`` read with ``allow_pickle=False`` (a study folder is shared: a
file in it must not run code): the predictor's arrays (the resampled parameters, residuals,
floors and frontier laws, the runs' columns) and one JSON record of the rest. It is written
atomically (``varscale.schema.atomic_write_bytes``); a file that is damaged, unreadable, of
another format or whose recorded key is not its name's is treated as absent: the predictor
is fitted again and the file written over. A study folder that cannot be written (read-only,
full) only costs the refit next time. The newest ``KEEP`` files are kept.
"""
from __future__ import annotations

import hashlib
import io
import json
from typing import Sequence

import numpy as np
import pandas as pd

from varscale.schema import atomic_write_bytes

from .bootstrap import DEFAULT_BOOT, Fit
from .fitting import present_metrics
from .predict import (PREDICT_VERSION, Predictor, entropy_floors, fit_hash, fit_predictor, fitted_runs)
from .results import FloorEntry
from .study import Study, as_study

FORMAT = 1
KEEP = 8  # predictor files kept per study (other resamples, seeds, metrics)
_FIT_FIELDS = ("form", "metric", "x", "group", "params", "ci", "n", "n_runs", "r", "n_boot", "warnings",
               "extra", "quantity", "floor", "frontier")


def cache_key(runs: pd.DataFrame, n_boot: int, seed: int, entropy: dict[str, float],
              metrics: Sequence[str]) -> str:
    """16 hex digits of what a fitted predictor depends on (see module doc)."""
    exact = hashlib.sha256(pd.util.hash_pandas_object(runs, index=False).to_numpy().tobytes())
    exact.update(json.dumps({c: str(runs[c].dtype) for c in runs}, sort_keys=True).encode())
    view = {"format": FORMAT, "v": PREDICT_VERSION, "fit_hash": fit_hash(runs, n_boot, seed),
            "runs": exact.hexdigest(), "entropy": {m: repr(float(v)) for m, v in sorted(entropy.items())},
            "metrics": list(metrics), "n_boot": int(n_boot), "seed": int(seed)}
    return hashlib.sha256(json.dumps(view, sort_keys=True).encode()).hexdigest()[:16]


def cached_predictor(study, n_boot: int = DEFAULT_BOOT, seed: int = 0,
                     metrics: Sequence[str] | None = None) -> Predictor:
    """The study's predictor from its report folder when one was fitted on the same runs
    with the same settings, else fitted (``fit_predictor``) and written there. A study
    without a folder (a table) is fitted each time. ``metrics``: as ``fit_predictor``'s
    (default: those the study has values of). Raises ``PredictError`` as the fit."""
    study = as_study(study)
    if metrics is None:
        metrics = present_metrics(study.evaluations)
    if study.layout is None:
        return fit_predictor(study, n_boot=n_boot, seed=seed, metrics=metrics)
    runs = fitted_runs(study)
    key = cache_key(runs, n_boot, seed, entropy_floors(study), metrics)
    path = study.layout.predictor_cache(key)
    P = read_predictor(path, key)
    if P is not None:
        P.study = str(study.root)
        P.notes += list(study.damaged)
        return P
    P = fit_predictor(study, n_boot=n_boot, seed=seed, metrics=metrics)
    try:
        write_predictor(path, P, key, leave_out=study.damaged)
        _prune(study, keep=path)
    except OSError:  # a read-only or full study folder: predictions still come, fitted each time
        pass
    return P


# --------------------------------------------------------------------------- the file


def _jsonable(v):
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return v


def encode(P: Predictor, key: str, leave_out: Sequence[str] = ()) -> bytes:
    """The predictor as ``.npz`` bytes (``notes`` without ``leave_out``: the study's damaged
    parts, said again from the study at each read)."""
    arrays: dict[str, np.ndarray] = {}
    for c in P.runs:
        col = P.runs[c]
        arrays[f"runs/{c}"] = (np.array([str(v) for v in col], dtype=str) if not pd.api.types.is_numeric_dtype(col)
                               else col.to_numpy())
    chin = {}
    for m, f in P.chin.items():
        chin[m] = {k: _jsonable(getattr(f, k)) for k in _FIT_FIELDS}
        chin[m]["samples"] = list(f.samples)
        for k, v in f.samples.items():
            arrays[f"chin/{m}/{k}"] = np.asarray(v, float)
    for m, r in P.resid.items():
        arrays[f"resid/{m}"] = np.asarray(r, float)
    for m, s in P.E_samples.items():
        if s is not None:
            arrays[f"E/{m}"] = np.asarray(s, float)
    front = {}
    for m, fr in P.frontier.items():
        front[m] = {k: _jsonable(v) for k, v in fr.items() if k not in ("slope_s", "b_s")}
        for k in ("slope_s", "b_s"):
            if k in fr:
                arrays[f"front/{m}/{k}"] = np.asarray(fr[k], float)
    meta = {"format": FORMAT, "key": key, "study": P.study, "n_boot": P.n_boot, "seed": P.seed,
            "runs": {c: str(P.runs[c].dtype) for c in P.runs}, "chin": chin,
            "floor": {m: {"metric": fe.metric, **fe.to_json(), "has_share": fe.has_share} for m, fe in P.floor.items()},
            "E_samples": {m: s is not None for m, s in P.E_samples.items()}, "resid": list(P.resid),
            "frontier": front, "k_flops": P.k_flops, "range_N": list(P.range_N), "range_C": list(P.range_C),
            "fit_hash": P.fit_hash, "notes": [n for n in P.notes if n not in set(leave_out)]}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def decode(data, key: str) -> Predictor | None:
    """A predictor from ``.npz`` bytes or a path; None when it is not one written under
    ``key`` by this format (damaged, another format, another key)."""
    try:
        with np.load(data if not isinstance(data, bytes) else io.BytesIO(data), allow_pickle=False) as z:
            meta = json.loads(bytes(z["meta"]).decode())
            if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("key") != key:
                return None
            R = int(meta["n_boot"])

            def arr(name: str, n: int | None = R) -> np.ndarray:
                a = np.asarray(z[name])
                if a.ndim != 1 or (n is not None and a.shape[0] != n):
                    raise ValueError(f"{name}: shape {a.shape}")
                return a

            runs = pd.DataFrame({c: arr(f"runs/{c}", None) for c in meta["runs"]})
            runs = runs.astype({c: d for c, d in meta["runs"].items()})
            chin = {}
            for m, d in meta["chin"].items():
                f = Fit(**{k: d[k] for k in _FIT_FIELDS})
                f.ci = {k: tuple(v) for k, v in f.ci.items()}
                f.samples = {k: arr(f"chin/{m}/{k}").astype(float) for k in d["samples"]}
                chin[m] = f
            floor = {m: FloorEntry(metric=d["metric"], E=float(d["E"]), source=d["source"], detail=d["detail"],
                                   ci=d["ci"], resolved=d["resolved"], share_at_zero=d.get("share_at_zero"),
                                   has_share=bool(d["has_share"]))
                     for m, d in meta["floor"].items()}
            E_samples = {m: arr(f"E/{m}").astype(float) if has else None for m, has in meta["E_samples"].items()}
            resid = {m: arr(f"resid/{m}", None).astype(float) for m in meta["resid"]}
            front = {}
            for m, d in meta["frontier"].items():
                front[m] = dict(d)
                if d:
                    front[m].update(slope_s=arr(f"front/{m}/slope_s").astype(float),
                                    b_s=arr(f"front/{m}/b_s").astype(float))
            P = Predictor(study=str(meta["study"]), n_boot=R, seed=int(meta["seed"]), runs=runs, chin=chin,
                          floor=floor, E_samples=E_samples, resid=resid, frontier=front,
                          k_flops=float(meta["k_flops"]), range_N=tuple(map(float, meta["range_N"])),
                          range_C=tuple(map(float, meta["range_C"])), fit_hash=str(meta["fit_hash"]),
                          notes=[str(n) for n in meta["notes"]])
    except Exception:  # noqa: BLE001 - any failure to read the file is a file to fit again
        return None
    if fit_hash(P.runs, P.n_boot, P.seed) != P.fit_hash:
        return None
    return P


def read_predictor(path, key: str) -> Predictor | None:
    """The predictor in ``path`` written under ``key``; None when absent or not usable."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return decode(data, key)


def write_predictor(path, P: Predictor, key: str, leave_out: Sequence[str] = ()) -> None:
    atomic_write_bytes(path, encode(P, key, leave_out))


def _prune(study: Study, keep) -> None:
    """Remove all but the newest ``KEEP`` predictor files of the study (never ``keep``)."""
    files = [p for p in study.layout.predictor_caches() if p != keep]
    try:
        files.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    except OSError:
        return
    for p in files[KEEP - 1:]:
        try:
            p.unlink()
        except OSError:
            pass


__all__ = ["cached_predictor", "cache_key", "encode", "decode", "read_predictor", "write_predictor", "FORMAT"]
