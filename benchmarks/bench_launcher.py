"""Launcher overhead per cell: a grid of no-op cells (the tests' stub trainer, no sleep).

    .venv/bin/python benchmarks/bench_launcher.py [--cells 8] [--parallel 1 2]

Measures the wall time of `varscale run --only-cells` on a study whose cells do almost
nothing, so what is left is the launcher's own cost: planning (imports torch for the FLOP
count), one worker process per cell (python + pyarrow start-up, lock, status), polling.
A real cell adds its trainer's start-up (torch, DeepSpeed: seconds) on top.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cells", type=int, default=8, help="cells in the grid (2 depths x cells/2 budgets)")
    ap.add_argument("--parallel", type=int, nargs="+", default=[1, 2])
    a = ap.parse_args()
    raw = yaml.safe_load((ROOT / "runs" / "ci-tiny" / "study.yaml").read_text())
    n_b = max(a.cells // 2, 1)
    raw["budgets"]["values"] = [float(f"{6e7 * 1.5 ** i:.3g}") for i in range(n_b)]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests"), "VARSCALE_CELL_FN": "test_grid_stubcell:train_cell",
           "STUB_SLEEP": "0"}
    print(f"# {2 * n_b} no-op cells; machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    for par in a.parallel:
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp) / "bench"
            d.mkdir()
            (d / "study.yaml").write_text(yaml.safe_dump(raw))
            t0 = time.perf_counter()
            p = subprocess.run([sys.executable, "-m", "varscale.cli", "run", str(d), "--only-cells",
                                "--parallel", str(par)], env=env, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            assert p.returncode == 0, p.stdout + p.stderr
            t1 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "varscale.cli", "run", str(d), "--only-cells"], env=env,
                           capture_output=True, text=True, check=True)
            again = time.perf_counter() - t1
            shutil.rmtree(d)
        print(f"parallel {par}: {wall:.1f} s for {2 * n_b} cells ({wall / (2 * n_b):.2f} s per cell, "
              f"launcher start-up included); a second run (nothing to do) {again:.1f} s")


if __name__ == "__main__":
    main()
