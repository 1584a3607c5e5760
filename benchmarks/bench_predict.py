"""Wall time of ``varscale predict STUDY --depth 10 --tokens 2.4e6``, the real command in a
fresh subprocess each time: the first (cold) call, which fits the predictor (1,000 resamples
by default) and keeps it in ``report/predictor-<key>.npz``, then the median of ``--warm``
calls that read it.

    .venv/bin/python benchmarks/bench_predict.py [STUDY] [--warm 5] [--n-boot 1000] [--keep]

Target (prediction issue): <= 2 s for a warm call on an unchanged, already-fitted study.
Without STUDY, a synthetic study the size of runs/v1/default (``analysis.synthetic.make_study``:
depths 1-8, three token budgets, 8 evaluations per run) is written to a temporary folder
with runs/v1/default's study.yaml. The predictor files of STUDY are removed first, so the first
call is cold (``--keep``: leave them, the first call is then warm too). Also prints how long
the command's imports take (``-X importtime``), the floor under any warm call.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def synthetic_study(where: Path) -> Path:
    from analysis.synthetic import make_study

    d = make_study(where / "default-synthetic", depths=(1, 2, 3, 4, 6, 8), budgets=(6e5, 1.2e6, 2.4e6),
                   unit="tokens", n_evals=8, tokens_per_step=64 * 30)
    shutil.copy(ROOT / "runs/v1/default/study.yaml", d / "study.yaml")
    return d


def call(argv: list[str]) -> tuple[float, float, subprocess.CompletedProcess]:
    """(wall seconds, CPU seconds of the child, its result)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "varscale.cli", *argv], capture_output=True, text=True, cwd=ROOT)
    dt = time.perf_counter() - t
    ru2 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode:
        raise SystemExit(f"{' '.join(argv)} failed ({r.returncode}):\n{r.stderr}")
    return dt, (ru2.ru_utime - ru.ru_utime) + (ru2.ru_stime - ru.ru_stime), r


def import_seconds() -> float:
    """Seconds the command's modules take to import (the sum of -X importtime's top level)."""
    mods = ("varscale.cli.predict analysis.study analysis.predictor_cache analysis.predict "
            "varscale.config varscale.models.family")
    r = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {', '.join(mods.split())}"],
                       capture_output=True, text=True, cwd=ROOT)
    total = 0
    for line in r.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and not parts[2].startswith("  ") and parts[1].strip().isdigit():
            total += int(parts[1])
    return total / 1e6


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("study", nargs="?", help="a fitted study folder (default: a synthetic one)")
    ap.add_argument("--warm", type=int, default=5, help="warm calls (default 5)")
    ap.add_argument("--n-boot", type=int, default=1000, help="the command's resamples (default 1000)")
    ap.add_argument("--keep", action="store_true", help="keep the study's predictor files")
    a = ap.parse_args(argv)
    tmp = None
    if a.study:
        study = Path(a.study)
    else:
        tmp = Path(tempfile.mkdtemp(prefix="bench_predict."))
        study = synthetic_study(tmp)
    try:
        from varscale.schema import StudyLayout

        lay = StudyLayout.of(study)
        if not a.keep:
            for p in lay.predictor_caches():
                p.unlink()
        cmd = ["predict", str(study), "--depth", "10", "--tokens", "2.4e6", "--n-boot", str(a.n_boot)]
        load0 = os.getloadavg()[0]
        cold, cold_cpu, r = call(cmd)
        warm = [call(cmd)[:2] for _ in range(a.warm)]
        wall, cpu = [w for w, _ in warm], [c for _, c in warm]
        print(f"study: {study}{' (synthetic, the size of runs/v1/default)' if tmp else ''}; "
              f"{os.cpu_count()} cores, load average {load0:.2f} before, {os.getloadavg()[0]:.2f} after"
              + ("; PYTHONDONTWRITEBYTECODE is set: every call compiles the project's modules"
                 if os.environ.get("PYTHONDONTWRITEBYTECODE") else ""))
        print(f"command: varscale {' '.join(cmd)}")
        print(f"first call{' (cold: fits and keeps the predictor)' if not a.keep else ''}: "
              f"{cold:.2f} s wall, {cold_cpu:.2f} s CPU")
        print(f"warm calls: median {statistics.median(wall):.2f} s wall ({', '.join(f'{t:.2f}' for t in wall)}), "
              f"median {statistics.median(cpu):.2f} s CPU, over {len(warm)} calls")
        print(f"imports alone: {import_seconds():.2f} s")
        print(f"predictor files: {', '.join(p.name for p in lay.predictor_caches())}")
        print(r.stdout.splitlines()[0])
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
