"""Which loss-curve law: candidate forms compared on a study's every evaluation.

    .venv/bin/python benchmarks/curve_forms.py STUDY [--metric test_loss_avg] [--csv PATH]

For each candidate (below), on the study's curve points (``analysis.curve.curve_points``:
every evaluation of every run with its schedule's areas S1, S2 in tokens):

- leave-one-branch-out (LOBO): each decay branch held out, its final loss predicted from the
  stable runs and the other branches; max and median |error|, and every error;
- leave-largest-out (LLO): every run of the largest model held out, each of its decayed
  finals predicted; the worst signed error;
- the relative rms residual of the full fit and its number of parameters.

Approach 3 (final evaluations only; ``analysis.chinchilla``) gets the same two checks: LOBO
from the other finals, LLO as ``varscale fit``'s extrapolation check. The candidate
``tissue`` is the product's law (``analysis.curve``, batched L-BFGS); the others are fitted
here by scipy's least_squares from a grid of starts (log scale parameters), the same
objective (relative residuals). docs/analysis.md, "The loss-curve law", quotes the output.
"""
from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis import curve as K  # noqa: E402
from analysis.chinchilla import extrapolation_check_chinchilla, fit_chinchilla  # noqa: E402
from analysis.study import Study  # noqa: E402


def _law(name):
    """(parameter names, which are logs, model(theta, n, s, s2)) of a candidate; n = N/1e6,
    s = S1/1e6, s2 = S2/1e6 (tokens)."""
    base = ["e", "a", "alpha", "b", "beta"]

    def core(t, n, s):
        return np.exp(t[0]) + np.exp(t[1]) * n ** -t[2] + np.exp(t[3]) * s ** -t[4]

    if name == "no annealing term":
        return base, lambda t, n, s, s2: core(t, n, s)
    if name == "C(N) = C N^gamma":
        return base + ["c", "gamma"], lambda t, n, s, s2: core(t, n, s) - np.exp(t[5]) * n ** t[6] * s2
    if name == "annealing x reducible":
        return base + ["c"], lambda t, n, s, s2: (np.exp(t[0]) + (core(t, n, s) - np.exp(t[0]))
                                                  * np.exp(-np.exp(t[5]) * s2))
    if name == "saturating S2":
        return base + ["c", "tau"], lambda t, n, s, s2: core(t, n, s) - np.exp(t[5]) * s2 / (1 + s2 / np.exp(t[6]))
    return base + ["c"], lambda t, n, s, s2: core(t, n, s) - np.exp(t[5]) * s2


def _starts(names, y):
    lo = float(np.min(y))
    grid = {"e": np.log([0.3 * lo, 0.8 * lo]), "a": np.log([0.1, 1.0]), "alpha": [0.3, 0.8],
            "b": np.log([0.1, 1.0]), "beta": [0.3, 0.8], "c": np.log([0.1, 1.0]), "gamma": [0.0],
            "tau": np.log([0.05, 0.5])}
    return np.array(list(itertools.product(*(grid[k] for k in names))), float)


def _fit(model, starts, n, s, s2, y, keep=1):
    out = []
    for x0 in starts:
        with np.errstate(all="ignore"):
            r = least_squares(lambda t: model(t, n, s, s2) / y - 1, x0, method="lm", max_nfev=4000)
        if np.isfinite(r.cost):
            out.append((r.cost, r.x))
    out.sort(key=lambda t: t[0])
    return [x for _, x in out[:keep]]


def candidate(pts, metric, name, warmup_only=False):
    d = pts[pts[metric].notna()].reset_index(drop=True)
    if warmup_only:
        d = d[d["step"] >= d["warmup_steps"]].reset_index(drop=True)
    n, s, s2, y = d["n_params"].to_numpy(float) / 1e6, d["S1"].to_numpy(float) / 1e6, \
        d["S2"].to_numpy(float) / 1e6, d[metric].to_numpy(float)
    names, model = _law(name)
    t0 = time.time()
    full = _fit(model, _starts(names, y), n, s, s2, y, keep=3)
    rms = float(np.sqrt(np.mean((model(full[0], n, s, s2) / y - 1) ** 2)))
    ann = d["annealed"].to_numpy(bool)
    lobo = {}
    for rid in sorted(set(d["run_id"][ann])):
        keep = (d["run_id"] != rid).to_numpy()
        t = _fit(model, full, n[keep], s[keep], s2[keep], y[keep])[0]
        i = np.flatnonzero(~keep & ann)[0]
        lobo[rid] = float(model(t, n[i:i + 1], s[i:i + 1], s2[i:i + 1])[0] / y[i] - 1)
    big = n == n.max()
    t = _fit(model, _starts(names, y[~big]), n[~big], s[~big], s2[~big], y[~big])[0]
    llo = {str(r): float(model(t, n[i:i + 1], s[i:i + 1], s2[i:i + 1])[0] / y[i] - 1)
           for i, r in zip(np.flatnonzero(big & ann), d["run_id"][big & ann])}
    return {"form": name + (" (after warmup)" if warmup_only else ""), "k": len(names), "rms": rms,
            "lobo": lobo, "llo": llo, "s": time.time() - t0}


def product(pts, metric):
    """The registered form (analysis.curve), as `varscale fit` runs it."""
    d = pts[pts[metric].notna()].reset_index(drop=True)
    t0 = time.time()
    ends, fs = K.fit_all_starts(d["n_params"], d["S1"], d["S2"], d[metric])
    p = K.params_dict(ends[int(np.argmin(fs))][None])
    y = d[metric].to_numpy(float)
    rms = float(np.sqrt(np.mean((K.predict_law(p, d["n_params"], d["S1"], d["S2"]) / y - 1) ** 2)))
    lobo = {e["run_id"]: e["rel_error"] for e in K.lobo(d, metric, K._distinct(ends, fs, 2))}
    llo = {e["run_id"]: e["rel_error"] for e in K.leave_largest_out(d, metric)}
    return {"form": f"tissue, lambda {K.DECAY} (registered)", "k": 6, "rms": rms, "lobo": lobo, "llo": llo,
            "s": time.time() - t0, "params": p}


def approach3(study, metric):
    fr = study.final
    N, D, L, ids = fr["n_params"].to_numpy(float), fr["tokens_seen"].to_numpy(float), fr[metric].to_numpy(float), \
        fr["run_id"].astype(str).to_numpy()
    lobo = {}
    for i, rid in enumerate(ids):
        k = ids != rid
        f = fit_chinchilla(N[k], D[k], L[k], n_boot=0)
        lobo[rid] = float(f.predict(N[i:i + 1], D[i:i + 1])[0] / L[i] - 1)
    ex = extrapolation_check_chinchilla(N, D, L, run_ids=ids)
    return {"form": "Approach 3 (final evaluations)", "k": 5, "rms": float("nan"), "lobo": lobo,
            "llo": {e["run_id"]: e["rel_error"] for e in ex.get("each", [])}, "s": float("nan")}


def _worst(d):
    return max(d.values(), key=abs) if d else float("nan")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("study")
    ap.add_argument("--metric", action="append", help="default: test_loss_avg and test_loss_last")
    ap.add_argument("--csv", help="write every LOBO / LLO error here")
    ap.add_argument("--no-approach3", action="store_true")
    a = ap.parse_args(argv)
    st = Study.load(a.study)
    out = []
    for decay in (K.DECAY, 0.99):
        pts = K.curve_points(st, decay=decay)
        pts["warmup_steps"] = [round(st.schedules[r]["training"].get("warmup_frac", 0.02)
                                     * st.schedules[st.schedules[r].get("branch_from") or r]["total_steps"])
                               for r in pts["run_id"]]
        for m in a.metric or ["test_loss_avg", "test_loss_last"]:
            res = [product(pts, m)] if decay == K.DECAY else [candidate(pts, m, "tissue")]
            if decay == K.DECAY:
                res += [candidate(pts, m, "tissue"), candidate(pts, m, "tissue", warmup_only=True),
                        candidate(pts, m, "no annealing term"), candidate(pts, m, "C(N) = C N^gamma"),
                        candidate(pts, m, "annealing x reducible"), candidate(pts, m, "saturating S2")]
                if not a.no_approach3:
                    res.append(approach3(st, m))
            for r in res:
                r.update(metric=m, decay=decay if r["form"] != "Approach 3 (final evaluations)" else None)
                out.append(r)
                lo = np.abs(list(r["lobo"].values()))
                print(f"{m:<15} lambda {decay:<6} {r['form']:<40} k={r['k']} rms {100 * r['rms']:.2f}%  "
                      f"LOBO max {100 * lo.max():.2f}% median {100 * np.median(lo):.2f}%  "
                      f"LLO worst {100 * _worst(r['llo']):+.2f}%  ({r['s']:.1f} s)", flush=True)
                if "params" in r:
                    print("    params", {k: round(v, 4) for k, v in r["params"].items()})
    print("\n| loss | lambda | form | parameters | rms residual | LOBO max | LOBO median | leave-largest-out worst |")
    print("|---|---|---|---|---|---|---|---|")
    for r in out:
        lo = np.abs(list(r["lobo"].values()))
        rms = "" if not np.isfinite(r["rms"]) else f"{100 * r['rms']:.2f}%"
        print(f"| {'L_avg' if r['metric'] == 'test_loss_avg' else 'L_last'} | {r['decay'] or ''} | {r['form']} | "
              f"{r['k']} | {rms} | {100 * lo.max():.2f}% | {100 * np.median(lo):.2f}% | {100 * _worst(r['llo']):+.2f}% |")
    for r in out:
        if r["form"].endswith("(registered)"):
            print(f"\nLOBO per branch, {r['metric']}: " + ", ".join(f"{k} {100 * v:+.2f}%" for k, v in sorted(r["lobo"].items())))
            print(f"leave-largest-out, {r['metric']}: " + ", ".join(f"{k} {100 * v:+.2f}%" for k, v in sorted(r["llo"].items())))
    if a.csv:
        rows = [{"metric": r["metric"], "form": r["form"], "decay": r["decay"], "check": chk, "run_id": k, "rel_error": v}
                for r in out for chk in ("lobo", "llo") for k, v in r[chk].items()]
        pd.DataFrame(rows).to_csv(a.csv, index=False)
    return out


if __name__ == "__main__":
    main()
