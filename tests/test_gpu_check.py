"""``benchmarks/gpu_check.sh --device cpu``: the prepared GPU check runs anywhere at tiny
sizes and reports every section as JSON and markdown; the official-code comparison runs
against a stand-in package with the official entry point (``models.build_vae_var``)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = {"tests", "train_step", "memory", "e2e", "sampling"}


def _run(out: Path, *args, **env) -> subprocess.CompletedProcess:
    # the official checkout only where a test gives it (the suite may run with VAR_OFFICIAL set)
    e = {k: v for k, v in os.environ.items()
         if k not in ("RANK", "WORLD_SIZE", "MASTER_PORT", "MASTER_ADDR", "VAR_OFFICIAL")}
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
"""A stand-in for the official repository's models package: its entry point, our model, with
what the official code fixes: width 64 x depth, a VQVAE GroupNorm(32, ch), and every layer
class's initialiser switched off process-wide."""
import torch.nn as nn

from varscale.models import build_var, get_preset


def build_vae_var(device, patch_nums, V, Cvae, ch, share_quant_resi, num_classes, depth, shared_aln,
                  attn_l2_norm, flash_if_available, fused_if_available, **kw):
    if ch % 32:
        raise ValueError(f"num_channels ({ch}) must be divisible by num_groups (32)")
    preset = next(p for p in ("tiny", "cpu32") if tuple(get_preset(p).patch_nums) == tuple(patch_nums))
    var = build_var(preset, depth, device=device, num_classes=num_classes, head_dim=64)
    for clz in (nn.Linear, nn.LayerNorm, nn.BatchNorm2d, nn.SyncBatchNorm, nn.Conv1d, nn.Conv2d,
                nn.ConvTranspose1d, nn.ConvTranspose2d):
        setattr(clz, "reset_parameters", lambda self: None)
    var.cond_drop_rate = 0.1
    return None, var
'''


def _official_rows(out: Path) -> list:
    rep = json.loads((out / "gpu_check.json").read_text())
    assert rep["sections"]["memory"]["status"] == "skipped: not in --only"
    assert rep["sections"]["train_step"]["status"] == "ok"
    return rep["sections"]["train_step"]["rows"]


def test_official_code_is_run_where_given(tmp_path):
    off = tmp_path / "VAR"
    (off / "models").mkdir(parents=True)
    (off / "models" / "__init__.py").write_text(STAND_IN)
    out = tmp_path / "gc"
    r = _run(out, "--only", "train_step", VAR_OFFICIAL=str(off))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for row in _official_rows(out):
        assert row["max_abs_logit_diff_fp32"] == 0.0  # the same weights through load_official
        assert row["official_step_s"] > 0 and row["ratio_vs_official"] > 0 and row["official_mfu"] > 0
        # tiny (head_dim 8, ch 16) is compared at the official width, its VQVAE at ch 32
        assert row["official_head_dim"] == 64 and row["official_vae_ch"] == 32 and row["compared_step_s"] > 0
    assert "compared at the official width" in (out / "gpu_check.md").read_text()


def test_layer_initialisers_are_put_back():
    """The official entry point sets ``reset_parameters`` on layer classes whose method is
    inherited (Conv2d, BatchNorm2d); afterwards they inherit it again, so later models are
    initialised rather than left with uninitialised memory."""
    import torch
    import torch.nn as nn

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    before = {c: c.__dict__.get("reset_parameters") for c in (nn.Linear, nn.Conv2d, nn.BatchNorm2d)}
    with gpu_check._torch_inits_kept():
        for c in before:
            c.reset_parameters = lambda self: None
    assert {c: c.__dict__.get("reset_parameters") for c in before} == before
    with torch.no_grad():
        conv = nn.Conv2d(4, 4, 3)
        conv.weight.fill_(float("nan"))
        conv.reset_parameters()
    assert torch.isfinite(conv.weight).all()


def _official_checkout():
    import importlib.util

    p = os.environ.get("VAR_OFFICIAL")
    if not p or not (Path(p) / "models" / "__init__.py").is_file():
        return None, "VAR_OFFICIAL does not name a checkout of FoundationVision/VAR"
    missing = [m for m in ("huggingface_hub",) if importlib.util.find_spec(m) is None]
    if missing:
        return None, f"the official code's requirement {missing[0]} is not installed"
    return p, ""


def test_official_checkout_at_tiny_sizes(tmp_path):
    """With the real official code (VAR_OFFICIAL, e.g. a checkout of
    github.com/FoundationVision/VAR; skipped without one): the same logits at tiny sizes."""
    off, why = _official_checkout()
    if off is None:
        pytest.skip(why)
    out = tmp_path / "gc"
    r = _run(out, "--only", "train_step", VAR_OFFICIAL=off)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for row in _official_rows(out):
        assert row["max_abs_logit_diff_fp32"] < 1e-5 and row["compared_step_s"] > 0
