"""Write the version-1 fits.json fixtures of this folder again (see README.md).

Each fixture comes from an old commit's own code: the commit is checked out into a temporary
git worktree, its ``analysis.synthetic.make_study`` writes a small synthetic study, and its
fit entry point (``python -m analysis.report <study> --n-boot 20 --quiet``) fits it. Run from
the repository root with the project's venv:

    OMP_NUM_THREADS=1 .venv/bin/python tests/data/fits_json/make_fixtures.py [name ...]

Not a test; nothing imports it.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
OUT = Path(__file__).resolve().parent
PY = sys.executable

# name -> (commit, make_study keyword arguments as code, post-processing, extra fit arguments)
ISO = ("depths=(1, 2, 3, 4, 6, 8, 12), budgets=(1e14, 1e15, 1e16), unit='flops', "
       "law=SyntheticLaw(run_noise=0.002, eval_noise=0.001)")  # an IsoFLOP design (tests/test_analysis_study.py's)
FIXTURES = {
    # 0f1bfc4: the first fits.json (floors + floor_source only, power/saturating/frontier/chinchilla fits)
    "v1-0f1bfc4-tokens": ("0f1bfc4", "", None, []),
    # 96d6739: Approach 3's leave-largest-out entries in "extrapolation"
    "v1-96d6739-tokens": ("96d6739", "", None, []),
    # 9ab22b7: --floor-from chinchilla: one Approach-3 E per loss subtracted (floor_source names it)
    "v1-9ab22b7-chinchilla-floor": ("9ab22b7", "", None, ["--floor-from", "chinchilla"]),
    # 6b02b7e (the last commit before the headline): an IsoFLOP design (N_opt/D_opt fits) with floors by hand
    "v1-6b02b7e-flops-hand-floor": ("6b02b7e", ISO, None,
                                    ["--floor-last", "2.5", "--floor-avg", "3.0"]),
    # 6b02b7e: a warmup-stable-decay design (stable runs; the annealed runs' frontier)
    "v1-6b02b7e-wsd": ("6b02b7e", "", "wsd", []),
    # 0a79483: floor, floor_rule, headline, best_law appear (no share_at_zero yet)
    "v1-0a79483-tokens": ("0a79483", "", None, []),
    # 34c6862: share_at_zero in an Approach-3 floor (token entropy 3 nats above: auto falls back to it)
    "v1-34c6862-approach3-floor": ("34c6862", "entropy_shift=3.0", None, []),
    # 3a02b24: allocation (no damaged_parts); a partial study
    "v1-3a02b24-partial": ("3a02b24", "running=1, failed=1, pending=1", None, []),
    # b557ec5 (the faults branch): damaged_parts (no allocation), one part damaged
    "v1-b557ec5-damaged-part": ("b557ec5", "", "damage", []),
    # d51f789: the last commit before schema_version (allocation and damaged_parts)
    "v1-d51f789-tokens": ("d51f789", "", None, []),
    "v1-d51f789-flops-approach3-floor": ("d51f789", ISO + ", entropy_shift=3.0", None, []),
    "v1-d51f789-wsd": ("d51f789", "", "wsd", []),
    "v1-d51f789-no-floor": ("d51f789", "", None, ["--no-floor"]),
}


def add_stable_runs(study: Path) -> None:
    """A warmup-stable-decay design: each depth's longest run copied as ``d<depth>-stable-s0``,
    its losses 5% higher (evaluations at the peak learning rate); never a final model."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    cells = study / "cells"
    longest = {}
    for c in sorted(cells.iterdir()):
        depth = c.name.split("-")[0]
        n = len(list((c / "metrics").glob("part-*.parquet")))
        if n and (depth not in longest or c.name > longest[depth].name):
            longest[depth] = c
    for depth, src in longest.items():
        dst = cells / f"{depth}-stable-s0"
        shutil.copytree(src, dst)
        for p in sorted(dst.rglob("*.parquet")):
            t = pq.read_table(p)
            for i, name in enumerate(t.column_names):
                if name == "run_id":
                    t = t.set_column(i, name, pa.array([dst.name] * len(t), t.schema.field(name).type))
                elif "loss" in name and t.schema.field(name).type in ("double", "float"):
                    t = t.set_column(i, name, pc.multiply(t[name], 1.05))
            pq.write_table(t, p)


def damage_one_part(study: Path) -> None:
    part = sorted((study / "cells").iterdir())[0] / "metrics" / "part-000003.parquet"
    part.write_bytes(b"not a parquet file\n")


def make(name: str) -> Path:
    commit, kw, post, extra = FIXTURES[name]
    wt, study = Path(f"/tmp/wt-{commit}"), Path(f"/tmp/s-{name}")
    shutil.rmtree(study, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(wt), "OMP_NUM_THREADS": "1"}
    fresh = not wt.exists()
    if fresh:
        subprocess.run(["git", "worktree", "add", "--detach", str(wt), commit], cwd=REPO, check=True,
                       capture_output=True)
    try:
        subprocess.run([PY, "-c", "from analysis.synthetic import SyntheticLaw, make_study; "
                        f"make_study({str(study)!r}" + (f", {kw}" if kw else "") + ")"], cwd=wt, env=env, check=True)
        if post == "wsd":
            add_stable_runs(study)
        elif post == "damage":
            damage_one_part(study)
        subprocess.run([PY, "-m", "analysis.report", str(study), "--n-boot", "20", "--quiet", *extra],
                       cwd=wt, env=env, check=True)
    finally:
        if fresh:
            subprocess.run(["git", "worktree", "remove", "--force", str(wt)], cwd=REPO, check=True)
    # the report's file: fits.json, or fits-floor-<source>.json for another floor rule (0a79483 on)
    written = sorted((study / "report").glob("fits*.json"))
    assert len(written) == 1, written
    d = json.loads(written[0].read_text())
    assert "schema_version" not in d, name
    out = OUT / f"{name}.json"
    out.write_bytes(written[0].read_bytes())  # the bytes as that commit wrote them
    shutil.rmtree(study, ignore_errors=True)
    return out


if __name__ == "__main__":
    for n in sys.argv[1:] or FIXTURES:
        p = make(n)
        print(p, p.stat().st_size, flush=True)
