"""Timing of the fits that run thousands of times: Approach 3 on Hoffmann's full grid and its
bootstrap, plus the one-variable laws' bootstraps.

    .venv/bin/python benchmarks/bench_fits.py [--csv PATH] [--repeats 3] [--baseline-starts 50]

Targets (issue 6): the 4,500-start grid on Chinchilla's 240 points in <= 10 s on 2 cores;
1,000 bootstrap resamples in <= 2 min. ``--baseline-starts`` also times a plain scipy loop
with numerical gradients over that many starts and scales it to the full grid.
Threads: VARSCALE_FIT_THREADS (default: all cores) splits large batches.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

import analysis
from analysis import chinchilla as ch

DEFAULT_CSV = Path(__file__).resolve().parents[2] / "shared" / "data" / "chinchilla_svg_extracted.csv"


def chinchilla_points(csv):
    df = pd.read_csv(csv).sort_values("loss").iloc[:-5]
    N = df["Model Size"].to_numpy(float)
    return N, df["Training FLOP"].to_numpy(float) / (6 * N), df["loss"].to_numpy(float)


def timed(fn, repeats):
    ts, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t)
    return min(ts), float(np.median(ts)), out


def baseline(N, D, L, n_starts):
    """scipy L-BFGS-B per start with finite-difference gradients (the naive way)."""
    from scipy.optimize import minimize

    lN, lD, lL = np.log(N), np.log(D), np.log(L)
    grid = ch.hoffmann_grid()
    pick = np.random.default_rng(0).choice(len(grid), n_starts, replace=False)
    f = lambda th: float(ch._objective(th[None], lN, lD, lL, None, 1e-3)[0][0])  # noqa: E731
    t = time.perf_counter()
    for i in pick:
        minimize(f, grid[i], method="L-BFGS-B")
    return (time.perf_counter() - t) / n_starts * len(grid)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--csv", default=os.environ.get("VARSCALE_CHINCHILLA_CSV", str(DEFAULT_CSV)))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--baseline-starts", type=int, default=0)
    a = ap.parse_args(argv)
    N, D, L = chinchilla_points(a.csv)
    print(f"cores {os.cpu_count()}, fit threads {os.environ.get('VARSCALE_FIT_THREADS', os.cpu_count())}, "
          f"load average {os.getloadavg()[0]:.1f} (the machine may be shared)")
    best, med, fit = timed(lambda: analysis.fit_chinchilla(N, D, L, n_boot=0), a.repeats)
    print(f"Approach 3, {fit.extra['starts']} starts x {fit.n} points + polish: "
          f"best {best:.2f} s, median {med:.2f} s  ({fit.equation()})")
    best, med, fit = timed(lambda: analysis.fit_chinchilla(N, D, L, n_boot=a.n_boot), 1)
    print(f"Approach 3 + {a.n_boot} bootstrap resamples: {best:.2f} s "
          f"(alpha 95% CI {fit.ci['alpha'][0]:.3f}-{fit.ci['alpha'][1]:.3f})")
    x = np.geomspace(1e6, 1e9, 12)
    y = (1.5 + (3e5 / x) ** 0.3) * np.exp(np.random.default_rng(0).normal(0, 0.01, x.size))
    best, med, _ = timed(lambda: analysis.fit_power_law(x, y, n_boot=a.n_boot), a.repeats)
    print(f"power law + {a.n_boot} resamples (12 points): best {best * 1e3:.1f} ms")
    best, med, _ = timed(lambda: analysis.fit_saturating(x, y, n_boot=a.n_boot), a.repeats)
    print(f"saturating law + {a.n_boot} resamples (12 points): best {best:.2f} s")
    if a.baseline_starts:
        est = baseline(N, D, L, a.baseline_starts)
        print(f"baseline: scipy loop, numerical gradients, scaled to 4,500 starts: ~{est:.0f} s")


if __name__ == "__main__":
    main()
