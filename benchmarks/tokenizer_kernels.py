"""Benchmark: a study's tokenizer trained under two CPU kernel paths, side by side.

    .venv/bin/python benchmarks/tokenizer_kernels.py <study-dir> [--paths native,avx2] [--parallel]
                                                     [--keep DIR]

Training is deterministic on one machine but not across CPUs: the kernels torch picks
(AVX-512, AVX2, plain) sum floats in different orders. One machine runs several paths:

    native   the environment as it is (AVX-512 where the CPU has it)
    avx2     ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2,
             which reproduces an AVX2 machine's tokenizer bit for bit (on an AVX-512 machine)
    default  ATEN_CPU_CAPABILITY=default: a second path on an AVX2-only machine

Each path trains `varscale tokenizer train --force` on its own copy of the study file (the
study's tokenizer section as it is, its threads included) and prints one row: the
tokenizer's weight hash, val PSNR, the final logged train loss, the training seconds and
whether the training loss stayed at the mean image's (metrics.json ``mean_image_plateau``:
the longest run of 25-step means within 1 dB of the mean image's PSNR, if >= 100 steps).
A recipe whose result does not hinge on rounding lands within 0.3 dB on every path.

Seconds are only comparable between sequential runs on a quiet machine; ``--parallel`` runs
the paths at once (same hashes and PSNRs, half the wall time, seconds not comparable).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PATHS = {
    "native": {},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "default": {"ATEN_CPU_CAPABILITY": "default"},
}
VARSCALE = [sys.executable, "-m", "varscale.cli"]


def _start(study: Path, work: Path, path: str):
    """Copy the study file into work/<path>/ and start its tokenizer training there."""
    d = work / path
    d.mkdir(parents=True, exist_ok=True)
    shutil.copy(study / "study.yaml", d / "study.yaml")
    env = {**os.environ, **PATHS[path]}
    log = open(d / "tokenizer.log", "w")
    proc = subprocess.Popen(VARSCALE + ["tokenizer", "train", str(d), "--force"], env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    return proc, time.time(), d


def _row(path: str, d: Path, wall: float, rc: int) -> dict:
    mp = d / "tokenizer" / "metrics.json"
    if rc != 0 or not mp.exists():
        tail = (d / "tokenizer.log").read_text().splitlines()[-3:]
        return {"path": path, "error": f"exit {rc}: " + " | ".join(tail)}
    m = json.loads(mp.read_text())
    plateau = m.get("mean_image_plateau")
    return {"path": path, "hash": m["tokenizer_hash"], "val_psnr": m["val_psnr"],
            "final_loss": m["curve"][-1]["loss"] if m.get("curve") else float("nan"),
            "train_s": m["train_wall_s"], "wall_s": round(wall, 1),
            "plateau": f"steps {plateau[0]}-{plateau[1]}" if plateau else "no"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study", type=Path, help="a study folder (its study.yaml is copied, never written)")
    ap.add_argument("--paths", default="native,avx2", help=f"comma-separated, of {', '.join(PATHS)}")
    ap.add_argument("--parallel", action="store_true", help="train the paths at once (seconds not comparable)")
    ap.add_argument("--keep", type=Path, default=None, help="train into this folder and keep it")
    args = ap.parse_args()
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    bad = [p for p in paths if p not in PATHS]
    if bad:
        ap.error(f"unknown path {bad[0]!r}; valid: {', '.join(PATHS)}")
    work = args.keep or Path(tempfile.mkdtemp(prefix="tokenizer_kernels_"))
    rows = []
    try:
        if args.parallel:
            started = [(p, *_start(args.study, work, p)) for p in paths]
            for p, proc, t0, d in started:
                rc = proc.wait()
                rows.append(_row(p, d, time.time() - t0, rc))
        else:
            for p in paths:
                proc, t0, d = _start(args.study, work, p)
                rc = proc.wait()
                rows.append(_row(p, d, time.time() - t0, rc))
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"study {args.study} ({'parallel' if args.parallel else 'sequential'}, torch threads from its "
          f"tokenizer section)")
    print(f"{'path':8s} {'hash':16s} {'val PSNR':>9s} {'loss':>7s} {'train s':>8s} {'wall s':>7s}  plateau")
    for r in rows:
        if "error" in r:
            print(f"{r['path']:8s} {r['error']}")
            continue
        print(f"{r['path']:8s} {r['hash']:16s} {r['val_psnr']:9.2f} {r['final_loss']:7.4f} {r['train_s']:8.1f} "
              f"{r['wall_s']:7.1f}  {r['plateau']}")
    ok = [r for r in rows if "error" not in r]
    if len(ok) > 1:
        spread = max(r["val_psnr"] for r in ok) - min(r["val_psnr"] for r in ok)
        print(f"val PSNR spread {spread:.2f} dB across {len(ok)} paths")
    sys.exit(1 if len(ok) < len(rows) else 0)


if __name__ == "__main__":
    main()
