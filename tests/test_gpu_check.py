"""``benchmarks/gpu_check.sh --device cpu``: the prepared GPU check runs anywhere at tiny
sizes and reports every section as JSON and markdown; the official-code comparison runs
against a stand-in package with the official entry point (``models.build_vae_var``)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = {"tests", "train_step", "memory", "e2e", "sampling"}


def _run(out: Path, *args, **env) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "MASTER_PORT", "MASTER_ADDR")}
    e.update(PYTHON=sys.executable, OMP_NUM_THREADS="1", VARSCALE_PEAK_FLOPS="1e11", **env)
    return subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--device", "cpu", "--out", str(out),
                           *args], capture_output=True, text=True, env=e, timeout=600)


def test_cpu_run_reports_every_section(tmp_path):
    out = tmp_path / "gc"
    r = _run(out)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rep = json.loads((out / "gpu_check.json").read_text())
    assert set(rep["sections"]) == SECTIONS and rep["device"] == "cpu"
    s = rep["sections"]
    assert s["tests"]["status"].startswith("skipped: --device cpu")
    rows = s["train_step"]["rows"]
    assert [r["depth"] for r in rows] == [1, 2] and all(r["step_s"] > 0 and r["mfu"] > 0 for r in rows)
    assert rows[0]["official"].startswith("skipped: official code not found")
    assert [r["zero_stage"] for r in s["memory"]["rows"]] == [1, 2, 3]
    assert all("estimate_bytes" in r and "peak_bytes" in r for r in s["memory"]["rows"])
    assert s["e2e"]["status"] == "ok" and s["e2e"]["cells_done"] == 1
    assert s["sampling"]["status"] == "ok" and s["sampling"]["speedup"] > 0 and s["sampling"]["batch"] == 1
    md = (out / "gpu_check.md").read_text()
    assert md.startswith("# gpu_check (cpu)") and "| train_step | ok |" in md


STAND_IN = '''
"""A stand-in for the official repository's models package: its entry point, our model."""
from varscale.models import build_var, get_preset


def build_vae_var(device, patch_nums, V, Cvae, ch, share_quant_resi, num_classes, depth, shared_aln,
                  attn_l2_norm, flash_if_available, fused_if_available, **kw):
    preset = next(p for p in ("tiny", "cpu32") if tuple(get_preset(p).patch_nums) == tuple(patch_nums))
    var = build_var(preset, depth, device=device, num_classes=num_classes)
    var.cond_drop_rate = 0.1
    return None, var
'''


def test_official_code_is_run_where_given(tmp_path):
    off = tmp_path / "VAR"
    (off / "models").mkdir(parents=True)
    (off / "models" / "__init__.py").write_text(STAND_IN)
    out = tmp_path / "gc"
    r = _run(out, "--only", "train_step", VAR_OFFICIAL=str(off))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rep = json.loads((out / "gpu_check.json").read_text())
    assert rep["sections"]["memory"]["status"] == "skipped: not in --only"
    for row in rep["sections"]["train_step"]["rows"]:
        assert row["max_abs_logit_diff_fp32"] == 0.0  # the same weights through load_official
        assert row["official_step_s"] > 0 and row["ratio_vs_official"] > 0 and row["official_mfu"] > 0
