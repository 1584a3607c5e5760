"""What a CPU cannot show, in one run on one GPU (<= 8 minutes): ``benchmarks/gpu_check.sh``.

    bash benchmarks/gpu_check.sh --out gpu_check/                 # CUDA: the real sizes
    VAR_OFFICIAL=/path/to/VAR bash benchmarks/gpu_check.sh        # + the official implementation
    bash benchmarks/gpu_check.sh --device cpu --out /tmp/gc       # tiny sizes, anywhere (~1 min)

Sections, each reported with a ``status`` ("ok", "skipped: <why>" or "failed: <why>"):

``tests``       the test suite with CUDA visible (``pytest -q``, its own time limit); skipped
                with ``--device cpu``, where CI runs it anyway.
``train_step``  one training step (forward, backward, AdamW) of the imagenet256 preset at
                depths 16 and 20 in bf16: seconds, images/s, MFU (exact FLOPs from
                ``varscale.models.flops`` over ``varscale.train.peak``'s measured matmul peak),
                and, when the official VAR code is found (``--official`` or $VAR_OFFICIAL, a
                checkout of the official repository, its requirements installed; never part
                of this one), the official model with the same weights
                (``varscale.models.load_official``): its time, our/official step-time ratio
                and the largest logit difference. The official code builds only its own
                width (head_dim 64) and a VQVAE whose ch is a multiple of 32; at a preset
                with other sizes (tiny) ours is compared at head_dim 64 (``compared_step_s``)
                and the official VQVAE, which the VAR's forward never runs, gets ch 32.
``memory``      peak memory of DeepSpeed training at ZeRO 1, 2 and 3 (one rank) against the
                planner's estimate (the hook ``planner_estimate``; skipped where the planner
                has none). On CPU only the estimate: torch has no CPU allocator peak.
``e2e``         the ci-tiny study end to end (``varscale run``) on the device: cells done,
                the fit written.
``sampling``    generation latency at batch 1: VAR's K next-scale steps against the same
                transformer run as a raster next-token model over the last scale's h*w tokens
                (``benchmarks/bench_sampling.py``; the paper reports ~20x at 256x256).

Writes ``<out>/gpu_check.json`` (every number) and ``<out>/gpu_check.md`` (a table), and
``<out>/ci-tiny/`` (the end-to-end study). Exit 0 when no section failed, 1 otherwise.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

# sizes per device: the real ones on CUDA, tiny ones anywhere else
SIZES = {
    "cuda": dict(preset="imagenet256", step_depths=[16, 20], step_batch=32, step_reps=5,
                 mem_depth=16, mem_batch=16, sample_depth=16, sample_reps=3, precision="bf16"),
    "cpu": dict(preset="tiny", step_depths=[1, 2], step_batch=8, step_reps=3,
                mem_depth=2, mem_batch=8, sample_depth=2, sample_reps=2, precision="bf16"),
}
SECTIONS = ("tests", "train_step", "memory", "e2e", "sampling")


# --------------------------------------------------------------------------- helpers


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def _best_time(fn: Callable[[], Any], reps: int, device: str, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(reps):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        ts.append(time.perf_counter() - t0)
    return min(ts)  # robust to a shared machine


DIST_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def _child_env() -> dict[str, str]:
    """This process's environment less the distributed variables the memory section set (a
    child would otherwise try to listen on this process's MASTER_PORT)."""
    env = {k: v for k, v in os.environ.items() if k not in DIST_VARS}
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _one_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:300]


@contextlib.contextmanager
def _torch_inits_kept():
    """The official ``build_vae_var`` switches off torch's default initialisers for every
    process-wide layer class (it sets ``reset_parameters`` on each class); put them back so
    later models are initialised: the class's own method where it had one, else the
    attribute removed, so that it inherits again (Conv2d's and BatchNorm2d's are their base
    classes': left set, every later conv would hold uninitialised memory)."""
    import torch.nn as nn

    classes = [nn.Linear, nn.LayerNorm, nn.BatchNorm2d, nn.SyncBatchNorm, nn.Conv1d, nn.Conv2d,
               nn.ConvTranspose1d, nn.ConvTranspose2d, nn.Embedding, nn.GroupNorm]
    saved = {c: c.__dict__.get("reset_parameters") for c in classes}
    try:
        yield
    finally:
        for c, f in saved.items():
            if f is not None:
                c.reset_parameters = f
            elif "reset_parameters" in c.__dict__:
                delattr(c, "reset_parameters")


def official_path(arg: Optional[str]) -> Optional[Path]:
    """The official VAR checkout (``--official`` or $VAR_OFFICIAL) if it holds ``models/``."""
    p = arg or os.environ.get("VAR_OFFICIAL")
    if not p:
        return None
    p = Path(p).expanduser()
    return p if (p / "models" / "__init__.py").is_file() else None


# The official entry point fixes what it builds beyond the preset's shapes:
OFFICIAL_HEAD_DIM = 64  # models.build_vae_var: width = 64 x depth, heads = depth
OFFICIAL_NORM_GROUPS = 32  # its VQVAE's GroupNorm(32, ch): ch a multiple of 32


def official_vae_ch(ch: int) -> int:
    """The base channels the official VQVAE is built with for a preset's ``ch``: ``ch`` where
    the official code can build it (a multiple of its 32 norm groups), else the next multiple
    of 32 (tiny: 16 -> 32). The comparison is unchanged by it: the official VAR takes only V
    and Cvae from its VQVAE, holds none of its weights, and never runs it in a training
    forward."""
    return -(-ch // OFFICIAL_NORM_GROUPS) * OFFICIAL_NORM_GROUPS


def build_official(path: Path, preset, depth: int, device: str):
    """The official VAR-d from its own code (``models.build_vae_var``), on ``device``, with its
    VQVAE at ``official_vae_ch(preset.ch)``."""
    sys.path.insert(0, str(path))
    try:
        from models import build_vae_var  # the official repository's package
    finally:
        sys.path.remove(str(path))
    with _torch_inits_kept():
        _, var = build_vae_var(device=device, patch_nums=tuple(preset.patch_nums), V=preset.vocab_size,
                               Cvae=preset.cvae, ch=official_vae_ch(preset.ch), share_quant_resi=4,
                               num_classes=preset.num_classes, depth=depth, shared_aln=False,
                               attn_l2_norm=True, flash_if_available=True, fused_if_available=True)
    return var


def compare_official(off: Path, preset, depth: int, var, batch, a, sz, peak: float) -> dict:
    """The official VAR-``depth`` against ours with its weights (``load_official``): the largest
    fp32 logit difference, both step times, MFU and the ratio. Ours is ``var`` where it has the
    official width (imagenet256); otherwise (tiny: head_dim 8) a VAR of the same preset at
    ``OFFICIAL_HEAD_DIM``, timed here, since the official code builds no other width."""
    import torch

    from varscale.models import build_var, load_official
    from varscale.models.flops import var_train_flops

    ours = var if var.cfg.head_dim == OFFICIAL_HEAD_DIM else \
        build_var(preset, depth, device=a.device, head_dim=OFFICIAL_HEAD_DIM).train()
    label, x, _ = batch
    B, V = x.shape[0], ours.cfg.vocab_size
    fl = var_train_flops(ours.cfg) * B
    ovar = build_official(off, preset, depth, a.device)
    load_official(None, ours, None, {k: v.detach().clone() for k, v in ovar.state_dict().items()})
    ours.eval(), ovar.eval()
    # the official forward drops labels in eval mode too; ours does not (docs/models.md)
    ocd, ovar.cond_drop_rate = ovar.cond_drop_rate, 0.0
    with torch.no_grad():
        diff = (ours(label, x).float() - ovar(label, x).float()).abs().max().item()
    ovar.cond_drop_rate = ocd
    ours.train(), ovar.train()
    t_off = _best_time(_train_step_fn(ovar, V, batch, a.device, sz["precision"] == "bf16"), sz["step_reps"], a.device)
    res = {"official_step_s": t_off, "official_mfu": fl / t_off / peak, "max_abs_logit_diff_fp32": diff,
           "official_head_dim": OFFICIAL_HEAD_DIM, "official_vae_ch": official_vae_ch(preset.ch)}
    if not math.isfinite(diff):
        res["official"] = f"failed: the largest logit difference is {diff}"
    if ours is not var:  # ours at the official width, timed alike
        t = _best_time(_train_step_fn(ours, V, batch, a.device, sz["precision"] == "bf16"), sz["step_reps"], a.device)
        res.update(compared_n_params=ours.param_counts()["n_params"], compared_step_s=t,
                   ratio_vs_official=t_off / t)
    return res


def _official_failure(e: BaseException) -> str:
    """One line for the official code failing: a missing module is one of its requirements
    (its requirements.txt) not installed here."""
    if isinstance(e, ModuleNotFoundError) and e.name:
        return (f"failed: the official code needs '{e.name}' (its requirements.txt), not installed "
                f"here: pip install {e.name}")
    return f"failed: {_one_line(e)}"


# --------------------------------------------------------------------------- sections


def section_tests(a, sz) -> dict:
    if a.device != "cuda":
        return {"status": "skipped: --device cpu (CI runs the suite on CPU)"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"]
    t0 = time.time()
    try:
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=a.tests_timeout,
                           env=_child_env())
    except subprocess.TimeoutExpired as e:
        tail = (e.stdout or b"")[-2000:]
        tail = tail.decode(errors="replace") if isinstance(tail, bytes) else tail
        return {"status": f"failed: the suite ran past {a.tests_timeout} s", "tail": tail}
    out = r.stdout + r.stderr
    counts = {k: int(m.group(1)) for k in ("passed", "failed", "skipped", "error", "deselected")
              for m in [re.search(rf"(\d+) {k}", out.splitlines()[-1] if out.strip() else "")] if m}
    res = {"returncode": r.returncode, "wall_s": time.time() - t0, **counts,
           "summary": out.strip().splitlines()[-1] if out.strip() else ""}
    res["status"] = "ok" if r.returncode == 0 else f"failed: {res['summary']}"
    if r.returncode:
        res["tail"] = out[-3000:]
    return res


def _train_step_fn(var, V: int, batch, device: str, bf16: bool):
    import torch
    import torch.nn.functional as F

    label, x, tgt = batch
    opt = torch.optim.AdamW(var.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05)

    def step():
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            logits = var(label, x)
        loss = F.cross_entropy(logits.float().reshape(-1, V), tgt)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(var.parameters(), 2.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def section_train_step(a, sz) -> dict:
    import torch

    from varscale.models import build_var, build_vqvae, get_preset
    from varscale.models.flops import var_train_flops
    from varscale.train.peak import peak_flops

    preset = get_preset(sz["preset"])
    bf16 = sz["precision"] == "bf16"
    peak = peak_flops(a.device, sz["precision"])
    off = official_path(a.official)
    rows = []
    for depth in sz["step_depths"]:
        torch.manual_seed(0)
        vae = build_vqvae(preset, device=a.device)
        var = build_var(preset, depth, device=a.device).train()
        B, cfg = sz["step_batch"], var.cfg
        idx = [torch.randint(0, cfg.vocab_size, (B, pn * pn), device=a.device) for pn in cfg.patch_nums]
        with torch.no_grad():
            x = vae.idx_to_var_input(idx)
        batch = (torch.randint(0, cfg.num_classes, (B,), device=a.device), x, torch.cat(idx, 1).reshape(-1))
        fl = var_train_flops(cfg) * B
        row: dict[str, Any] = {"depth": depth, "batch": B, "precision": sz["precision"],
                               "n_params": var.param_counts()["n_params"], "flops_per_step": fl}
        if off is not None:
            try:  # the official model first, so ours gets its weights
                row.update(compare_official(off, preset, depth, var, batch, a, sz, peak))
            except Exception as e:  # noqa: BLE001 - the official code's own imports and versions
                row["official"] = _official_failure(e)
        else:
            row["official"] = "skipped: official code not found (--official or VAR_OFFICIAL=/path/to/VAR)"
        t = _best_time(_train_step_fn(var, cfg.vocab_size, batch, a.device, bf16), sz["step_reps"], a.device)
        row.update(step_s=t, images_per_s=B / t, mfu=fl / t / peak)
        if "official_step_s" in row and "ratio_vs_official" not in row:
            row["ratio_vs_official"] = row["official_step_s"] / t  # > 1: ours is faster
        rows.append(row)
        del var, vae
        if a.device == "cuda":
            torch.cuda.empty_cache()
    failed = [r["official"] for r in rows if str(r.get("official", "")).startswith("failed")]
    return {"status": failed[0] if failed else "ok", "peak_flops": peak, "rows": rows,
            "official": str(off) if off else None}


def planner_estimate(cfg, cell) -> Optional[float]:
    """The planner's per-rank peak bytes for ``cell`` of study ``cfg``: what ``varscale plan``'s
    memory column shows (``varscale.grid.plan.cell_memory``, from the model's shapes)."""
    from varscale.grid import plan as P

    out = P.cell_memory(cfg, cell)
    return float(out["total"])


def _memory_cell(tmp: Path, sz, stage: int):
    """A one-rank study and its cell of the memory section's size at ZeRO ``stage`` (planned,
    not written)."""
    from varscale.config import from_dict
    from varscale.grid.cells import plan_cells
    from varscale.models import get_preset

    p = get_preset(sz["preset"])
    raw = {"name": "gpu-check-memory", "data": {"resolution": p.resolution, "num_classes": p.num_classes},
           "model": {"preset": sz["preset"], "depths": [sz["mem_depth"]]},
           "budgets": {"unit": "tokens", "values": [sz["mem_batch"] * p.seq_len * 20]},
           "training": {"batch_size": sz["mem_batch"], "zero_stage": stage, "precision": sz["precision"]},
           "evaluation": {"min_step": 1, "num_evals": 1}}
    cfg = from_dict(raw)
    return cfg, plan_cells(cfg, tmp)[0]


def section_memory(a, sz) -> dict:
    import gc

    import torch

    from varscale.train import engine as E
    from varscale.train.model import build_model

    E.ensure_dist_env()
    dev = torch.device(a.device)
    E.init_distributed(dev)
    rows, any_estimate = [], False
    for stage in (1, 2, 3):
        study, cell = _memory_cell(Path(a.out) / "memory-cell", sz, stage)
        row: dict[str, Any] = {"zero_stage": stage, "depth": cell.depth, "batch": cell.batch_size}
        try:
            est = planner_estimate(study, cell)
        except Exception as e:  # noqa: BLE001
            est, row["estimate"] = None, f"failed: {_one_line(e)}"
        row["estimate_bytes"] = est
        any_estimate |= est is not None
        torch.manual_seed(0)
        model = build_model(cell, dev)
        tr = cell.training
        ds_cfg = E.ds_config(batch_size=cell.batch_size, world_size=1, zero_stage=stage, lr=1e-4,
                             betas=tuple(tr.betas), weight_decay=tr.weight_decay, grad_clip=tr.grad_clip,
                             precision=tr.precision, device=dev.type)
        if a.device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        engine = E.initialize(model, ds_cfg, tr.weight_decay)
        cfg = engine.module.cfg
        B = cell.batch_size
        label = torch.randint(0, cfg.num_classes, (B,), device=dev)
        x = torch.randn(B, cfg.seq_len - 1, cfg.cvae, device=dev)
        tgt = torch.randint(0, cfg.vocab_size, (B * cfg.seq_len,), device=dev)
        t0 = time.perf_counter()
        for _ in range(3):
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=tr.precision == "bf16"):
                logits = engine(label, x)
            loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, cfg.vocab_size), tgt)
            engine.backward(loss)
            engine.step()
        _sync(a.device)
        row["step_s"] = (time.perf_counter() - t0) / 3
        if a.device == "cuda":
            row["peak_bytes"] = float(torch.cuda.max_memory_allocated())
            if est:
                row["measured_over_estimate"] = row["peak_bytes"] / est
        else:
            row["peak_bytes"] = None  # torch keeps no allocator peak on CPU
        rows.append(row)
        del engine, model, logits, loss
        gc.collect()
    status = "ok" if any_estimate else \
        "skipped: the planner has no estimate yet (varscale.grid.plan.cell_memory); measured peaks are reported"
    if a.device != "cuda":
        status = "ok (estimate only: no allocator peak on CPU)" if any_estimate else \
            "skipped: no planner estimate (varscale.grid.plan.cell_memory) and no allocator peak on CPU"
    return {"status": status, "rows": rows}


def section_e2e(a, sz) -> dict:
    import yaml

    study = Path(a.out) / "ci-tiny"
    shutil.rmtree(study, ignore_errors=True)
    study.mkdir(parents=True)
    raw = yaml.safe_load((ROOT / "runs" / "ci-tiny" / "study.yaml").read_text())
    raw["execution"]["device"] = a.device
    (study / "study.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    cmd = [sys.executable, "-m", "varscale.cli", "run", str(study)]
    if a.device != "cuda":  # one cell and no analysis: the chain, in seconds
        cmd += ["--cells", "d1-c6e7-*", "--no-analysis"]
    t0 = time.time()
    try:
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=a.e2e_timeout,
                           env=_child_env())
    except subprocess.TimeoutExpired:
        return {"status": f"failed: varscale run ran past {a.e2e_timeout} s", "study": str(study)}
    cells = sorted((study / "cells").glob("*/DONE")) if (study / "cells").is_dir() else []
    res = {"returncode": r.returncode, "wall_s": time.time() - t0, "cells_done": len(cells),
           "fits_json": (study / "report" / "fits.json").exists(), "study": str(study),
           "last_lines": (r.stdout + r.stderr).strip().splitlines()[-5:]}
    res["status"] = "ok" if r.returncode == 0 and cells else f"failed: varscale run exited {r.returncode}"
    return res


def section_sampling(a, sz) -> dict:
    import torch

    from bench_sampling import raster, var_transformer
    from varscale.models import build

    torch.manual_seed(0)
    vae, var = build(sz["preset"], sz["sample_depth"], device=a.device)
    vae.eval(), var.eval()
    pn = var.cfg.patch_nums
    hw = pn[-1] ** 2
    ctx = torch.autocast(a.device, dtype=torch.bfloat16) if a.device == "cuda" else contextlib.nullcontext()
    with ctx:
        t_var = _best_time(lambda: var_transformer(vae, var, 1), sz["sample_reps"], a.device)
        t_hw = _best_time(lambda: raster(var, 1, hw), sz["sample_reps"], a.device)
    return {"status": "ok", "preset": sz["preset"], "depth": sz["sample_depth"], "batch": 1,
            "steps_var": len(pn), "steps_raster": hw, "var_s": t_var, "raster_s": t_hw,
            "speedup": t_hw / t_var, "paper_speedup": "~20x (VAR-d30 vs VQGAN, 256x256)"}


RUNNERS = {"tests": section_tests, "train_step": section_train_step, "memory": section_memory,
           "e2e": section_e2e, "sampling": section_sampling}


# --------------------------------------------------------------------------- report


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def markdown(report: dict) -> str:
    s = report["sections"]
    out = [f"# gpu_check ({report['device']})", "",
           f"{report['machine']}; torch {report['torch']}; {report['wall_s']:.0f} s; "
           f"command: `{report['command']}`", "", "| section | status | wall s |", "| --- | --- | --- |"]
    out += [f"| {k} | {v.get('status')} | {v.get('section_wall_s', 0):.1f} |" for k, v in s.items()]
    ts = s.get("train_step", {})
    if ts.get("rows"):
        out += ["", "## training step", "", "| depth | batch | precision | step s | img/s | MFU | official step s | "
                "official MFU | official / ours | max logit diff |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in ts["rows"]:
            out.append(f"| {r['depth']} | {r['batch']} | {r['precision']} | {_fmt(r.get('step_s'))} | "
                       f"{_fmt(r.get('images_per_s'))} | {_fmt(r.get('mfu'))} | {_fmt(r.get('official_step_s'))} | "
                       f"{_fmt(r.get('official_mfu'))} | {_fmt(r.get('ratio_vs_official'))} | "
                       f"{_fmt(r.get('max_abs_logit_diff_fp32'))} |")
        r0 = ts["rows"][0]
        if str(r0.get("official", "")).startswith(("skipped", "failed")):
            out.append(f"\nofficial: {r0['official']}")
        elif "compared_step_s" in r0:
            out.append(f"\nofficial: compared at the official width (head_dim {r0['official_head_dim']}, "
                       f"ours at it: " + ", ".join(f"d{r['depth']} {_fmt(r.get('compared_step_s'))} s"
                                                   for r in ts["rows"]) + "); the official VQVAE built "
                       f"at ch {r0['official_vae_ch']} (its GroupNorm(32))")
    mem = s.get("memory", {})
    if mem.get("rows"):
        out += ["", "## memory (one rank)", "", "| ZeRO | depth | batch | peak GB | planner GB | peak / planner |",
                "| --- | --- | --- | --- | --- | --- |"]
        for r in mem["rows"]:
            gb = lambda b: None if b is None else b / 1e9  # noqa: E731
            out.append(f"| {r['zero_stage']} | {r['depth']} | {r['batch']} | {_fmt(gb(r.get('peak_bytes')))} | "
                       f"{_fmt(gb(r.get('estimate_bytes')))} | {_fmt(r.get('measured_over_estimate'))} |")
    e = s.get("e2e", {})
    if "cells_done" in e:
        out += ["", f"## ci-tiny end to end: {e['cells_done']} cell(s) done, fits.json "
                    f"{'written' if e.get('fits_json') else 'not written'}, {e.get('wall_s', 0):.0f} s"]
    sp = s.get("sampling", {})
    if "speedup" in sp:
        out += ["", f"## sampling at batch 1 ({sp['preset']} d{sp['depth']}): VAR {sp['steps_var']} steps "
                    f"{sp['var_s'] * 1e3:.1f} ms, raster {sp['steps_raster']} steps {sp['raster_s'] * 1e3:.1f} ms: "
                    f"{sp['speedup']:.1f}x (paper: {sp['paper_speedup']})"]
    t = s.get("tests", {})
    if "summary" in t:
        out += ["", f"## tests with CUDA visible: {t['summary']}"]
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="gpu_check", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--out", default="gpu_check", help="output folder (gpu_check.json, gpu_check.md)")
    ap.add_argument("--official", default=None, help="official VAR checkout (default: $VAR_OFFICIAL)")
    ap.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="sections to run")
    ap.add_argument("--tests-timeout", type=float, default=240.0, help="seconds for the test suite")
    ap.add_argument("--e2e-timeout", type=float, default=240.0, help="seconds for the ci-tiny study")
    a = ap.parse_args(argv)
    import torch

    if a.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; run with --device cpu for the tiny sizes", file=sys.stderr)
        return 2
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    a.out = str(out.resolve())
    sz = SIZES[a.device]
    machine = torch.cuda.get_device_name() if a.device == "cuda" else f"CPU, {os.cpu_count()} cores"
    report = {"device": a.device, "machine": machine, "torch": torch.__version__, "sizes": sz,
              "command": " ".join(["benchmarks/gpu_check.sh", *(argv if argv is not None else sys.argv[1:])]),
              "sections": {}}
    t0 = time.time()
    for name in SECTIONS:
        if name not in a.only:
            report["sections"][name] = {"status": "skipped: not in --only"}
            continue
        print(f"gpu_check: {name} ...", flush=True)
        ts = time.time()
        try:
            res = RUNNERS[name](a, sz)
        except Exception as e:  # noqa: BLE001 - one section's failure is reported, the rest run
            res = {"status": f"failed: {_one_line(e)}", "traceback": traceback.format_exc()[-3000:]}
        res["section_wall_s"] = time.time() - ts
        report["sections"][name] = res
        print(f"gpu_check: {name}: {res['status']} ({res['section_wall_s']:.1f} s)", flush=True)
    report["wall_s"] = time.time() - t0
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    (out / "gpu_check.md").write_text(markdown(report))
    print(f"gpu_check: wrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'} in {report['wall_s']:.0f} s")
    return 1 if any(str(v["status"]).startswith("failed") for v in report["sections"].values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
