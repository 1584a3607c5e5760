"""The spread of a study's headline numbers over repeats of it (kernel paths, seeds).

    python benchmarks/study_spread.py NAME=runs/default NAME=<copy> ... [--n-boot 1000] [--json F]

Each argument is a finished, fitted study (``varscale run``): the same study file trained
again under another CPU kernel path (``ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2
ONEDNN_MAX_CPU_ISA=AVX2`` on an AVX-512 machine, ``ATEN_CPU_CAPABILITY=default`` on an AVX2
one) or with another ``seeds:`` value. Prints one column per study and the spread (max - min)
of every number the default study reports as its result: the tokenizer's val PSNR, each
loss's floor E with its interval and share of resamples at 0, every headline exponent and r
with its leave-largest-out error, the allocation exponent a_opt with its interval, and N_opt
at 10x the study's largest compute with its interval (the fitted Approach-3 law,
``analysis.allocate.optimal_allocation``). Then, for every pair of studies, whether the L_avg
exponent of the largest budget of each lies inside the other's 95% interval. Reads the
studies' reports and metrics; writes nothing but ``--json``.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis.allocate import optimal_allocation  # noqa: E402
from analysis.load import load  # noqa: E402
from analysis.predict import fit_predictor  # noqa: E402
from analysis.results import read_report  # noqa: E402

LOSSES = {"test_loss_last": "L_last", "test_loss_avg": "L_avg"}


def numbers(study: Path, n_boot: int) -> dict:
    """Every headline number of one fitted study, flat: name -> value (intervals as [lo, hi])."""
    rep = read_report(study)
    out: dict = {}
    tok = json.loads((study / "tokenizer" / "metrics.json").read_text())
    out["tokenizer hash"] = tok.get("tokenizer_hash")
    out["tokenizer val PSNR (dB)"] = tok.get("val_psnr")
    out["tokenizer mean-image plateau"] = tok.get("mean_image_plateau")
    for m, f in rep.floor.items():
        s = LOSSES.get(m, m)
        out[f"E {s}"] = f.E
        out[f"E {s} 95%"] = f.ci
        out[f"E {s} resamples at 0"] = f.share_at_zero
        out[f"E {s} resolved"] = f.resolved
    for h in rep.headline:
        key = f"{h.short} {h.slice}"
        out[f"alpha {key}"] = h.alpha
        out[f"alpha {key} 95%"] = h.alpha_ci
        out[f"r {key}"] = h.r
        out[f"lolo {key}"] = h.lolo.err if h.lolo is not None else None
    df = load(study)
    c_max = float(df.loc[df["is_final"], "flops"].max())
    out["largest run's compute C (FLOPs)"] = c_max
    P = fit_predictor(study, n_boot=n_boot)
    for m, s in LOSSES.items():
        al = rep.allocation.get(m)
        if al is not None and al.approach3 is not None:
            out[f"a_opt {s}"] = al.approach3.a
            out[f"a_opt {s} 95%"] = al.approach3.a_ci
        if m in P.chin:
            o = optimal_allocation(P, 10 * c_max, m)
            out[f"N_opt {s} at 10x C"] = o["N_opt"]
            out[f"N_opt {s} at 10x C 95%"] = o["N_opt_ci"]
            lo, hi = o["N_opt_ci"]
            out[f"N_opt {s} at 10x C upper/lower"] = hi / lo if lo > 0 else float("inf")
    return out


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("studies", nargs="+", help="NAME=path of a fitted study")
    ap.add_argument("--n-boot", type=int, default=1000, help="resamples of the allocation's fit (default 1000)")
    ap.add_argument("--json", help="also write every number here")
    a = ap.parse_args(argv)
    named = [s.split("=", 1) if "=" in s else (Path(s).name, s) for s in a.studies]
    cols = {name: numbers(Path(p), a.n_boot) for name, p in named}
    keys = list(dict.fromkeys(k for c in cols.values() for k in c))
    w = max(len(k) for k in keys)
    print(f"{'quantity':<{w}}  " + "  ".join(f"{n:>24}" for n in cols) + "  spread (max - min)")
    for k in keys:
        vals = [c.get(k) for c in cols.values()]
        nums = [v for v in vals if isinstance(v, float) and np.isfinite(v)]
        spread = _fmt(max(nums) - min(nums)) if len(nums) == len(vals) and len(nums) > 1 else ""
        print(f"{k:<{w}}  " + "  ".join(f"{_fmt(v):>24}" for v in vals) + f"  {spread}")
    print()
    for (n1, c1), (n2, c2) in itertools.combinations(cols.items(), 2):
        for m in ("L_avg", "L_last"):
            k = max((k for k in c1 if k.startswith(f"alpha {m} budget") and not k.endswith("95%")),
                    key=lambda k: float(k.rsplit("=", 1)[1]), default=None)
            if k is None or k not in c2 or not c1.get(k + " 95%") or not c2.get(k + " 95%"):
                continue
            in12 = c2[k + " 95%"][0] <= c1[k] <= c2[k + " 95%"][1]
            in21 = c1[k + " 95%"][0] <= c2[k] <= c1[k + " 95%"][1]
            print(f"{k}: {n1} {c1[k]:.4f} inside {n2}'s interval: {'yes' if in12 else 'no'}; "
                  f"{n2} {c2[k]:.4f} inside {n1}'s: {'yes' if in21 else 'no'}")
    if a.json:
        Path(a.json).write_text(json.dumps(cols, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
