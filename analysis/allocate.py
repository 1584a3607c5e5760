"""The compute-optimal allocation of a FLOP budget from a study's Approach-3 law.

:func:`optimal_allocation`: the continuous optimum, minimising E + A/N^alpha + B/D^beta on
C = k N D (k the study's FLOPs per parameter-token), with intervals over the predictor's
resamples. :func:`allocate`: that optimum and, over a model family (depths with their
parameters and FLOPs per token), the depth whose predicted metric at C is lowest, with its
neighbours. :func:`frontier_check`: the law against the grid itself, per compute-frontier
point the depth it was trained at against the depth recommended at its compute, apart in
depth units. Takes a :class:`~analysis.predict.Predictor` (or a study, fitted here); opens
no file (``varscale allocate`` prints).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .bootstrap import CI_LEVEL, DEFAULT_BOOT, percentile_ci
from .predict import SHORT, PredictError, Predictor, fit_predictor, predict


def optimal_allocation(P: Predictor, C: float, metric: str = "test_loss_avg") -> dict[str, Any]:
    """Compute-optimal N and D at compute C (continuous) from Approach 3 on ``metric``:
    minimise E + A/N^alpha + B/D^beta on C = k N D (k the study's FLOPs per parameter-token),
    N_opt = G (C/k)^a, D_opt = (C/k)^b / G, G = (alpha A / (beta B))^(1/(alpha+beta)),
    a = beta/(alpha+beta), b = alpha/(alpha+beta); point and 95% interval over the resamples."""
    s = np.stack([P.chin[metric].params[k] for k in ("E", "A", "B", "alpha", "beta")])[None]
    s = np.concatenate([s, P._chin_samples(metric)], 0)
    E, A, B, al, be = s.T
    with np.errstate(all="ignore"):
        G = (al * A / (be * B)) ** (1 / (al + be))
        a, b = be / (al + be), al / (al + be)
        X = C / P.k_flops
        No = G * X ** a
        Do = X ** b / G
        Lo = E + A / No ** al + B / Do ** be
    out: dict[str, Any] = {"flops": float(C), "metric": metric, "k_flops": P.k_flops}
    for name, v in (("N_opt", No), ("D_opt", Do), ("loss_opt", Lo), ("a", a), ("b", b)):
        ok = np.isfinite(v[1:])
        ci = percentile_ci(v[1:][ok][:, None], CI_LEVEL) if ok.any() else (np.array([np.nan]),) * 2
        out[name] = float(v[0])
        out[name + "_ci"] = [float(ci[0][0]), float(ci[1][0])]
    return out


def allocate(study: Any, C: float, family: pd.DataFrame | None = None, metric: str = "test_loss_avg",
             n_boot: int = DEFAULT_BOOT, seed: int = 0, neighbours: int = 1) -> dict[str, Any]:
    """The compute-optimal allocation of C: the continuous optimum (:func:`optimal_allocation`)
    and, over a model family (rows of depth, n_params, flops_per_token; default: the depths
    the study trained), the depth whose predicted ``metric`` at D = C / flops_per_token is
    lowest, with ``neighbours`` depths on either side and their predictions (how flat the
    optimum is). Returns {"continuous": {...}, "depths": DataFrame-as-records, "best": depth}."""
    P = study if isinstance(study, Predictor) else fit_predictor(study, n_boot=n_boot, seed=seed)
    if metric not in P.chin:
        raise PredictError(f"{P.study}: no law of {SHORT[metric]} (the study has no values of it); "
                           f"its laws are of {', '.join(SHORT[m] for m in P.chin)}")
    if not (C > 0):
        raise PredictError(f"--flops {C}: a compute budget must be > 0")
    fam = family_of(P) if family is None else family.sort_values("depth").reset_index(drop=True)
    tg = pd.DataFrame({"depth": fam["depth"], "n_params": fam["n_params"].astype(float),
                       "tokens": C / fam["flops_per_token"].astype(float), "flops": float(C)})
    allp = predict(P, tg)
    pr = allp[allp["metric"] == metric].reset_index(drop=True)
    best_i = int(np.nanargmin(pr["predicted"].to_numpy(float)))
    lo, hi = max(0, best_i - neighbours), min(len(pr), best_i + neighbours + 1)
    depths = []
    for i in range(lo, hi):
        r = pr.iloc[i]
        each = allp[allp["target"] == r["target"]]
        depths.append({"depth": int(fam["depth"][i]), "n_params": float(r["n_params"]), "tokens": float(r["tokens"]),
                       "steps": (float(r["tokens"]) / float(fam["tokens_per_step"][i])
                                 if "tokens_per_step" in fam and pd.notna(fam["tokens_per_step"][i]) else None),
                       "predicted": float(r["predicted"]), "ci": [float(r["ci_lo"]), float(r["ci_hi"])],
                       "metrics": {e["short"]: {"predicted": float(e["predicted"]), "ci": [float(e["ci_lo"]), float(e["ci_hi"])]}
                                   for _, e in each.iterrows()},
                       "best": i == best_i, "warning": r["warning"]})
    return {"continuous": optimal_allocation(P, C, metric), "depths": depths,
            "best": int(fam["depth"][best_i]), "metric": metric, "fit_hash": P.fit_hash,
            "edge": best_i in (0, len(pr) - 1)}


def family_of(P: Predictor) -> pd.DataFrame:
    """The depths a study trained: depth, n_params, flops_per_token (from its runs)."""
    r = P.runs
    return pd.DataFrame({"n_params": r.groupby("depth")["n_params"].first(),
                         "flops_per_token": (r["flops"] / r["tokens_seen"]).groupby(r["depth"]).median()}
                        ).reset_index().sort_values("depth").reset_index(drop=True)


def frontier_check(P: Predictor, family: pd.DataFrame, metric: str = "test_loss_avg") -> list[dict[str, Any]]:
    """For each point on the compute frontier of the finished runs' final evaluations (fewest
    FLOPs for its ``metric``, by ``analysis.frontier.pareto_mask``): the depth it was trained
    at against the depth :func:`allocate` recommends among ``family``'s depths (the study's
    own) at its compute. ``depth_apart`` is in depth units (d6 against d4: 2), ``steps_apart``
    in places of the family's list (d6 against d4 in 1, 2, 4, 6, 8: 1); ``within_one`` is
    ``depth_apart <= 1``."""
    from .frontier import pareto_mask

    r = P.runs
    m = pareto_mask(r["flops"].to_numpy(float), r[metric].to_numpy(float))
    pts = r[m].sort_values("flops")
    depths = [int(d) for d in family["depth"]]
    out = []
    for _, p in pts.iterrows():
        al = allocate(P, float(p["flops"]), family=family, metric=metric, neighbours=0)
        trained, best = int(p["depth"]), int(al["best"])
        steps = abs(depths.index(trained) - depths.index(best)) if trained in depths else None
        out.append({"run_id": p["run_id"], "flops": float(p["flops"]), "depth": trained,
                    "observed": float(p[metric]), "recommended": best, "steps_apart": steps,
                    "depth_apart": abs(trained - best), "within_one": abs(trained - best) <= 1})
    return out
