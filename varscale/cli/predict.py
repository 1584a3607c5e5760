"""``varscale predict <study> (--depth D | --params N)... (--tokens T | --flops C)...``:
predicted final metrics of runs the study has not trained (``analysis.predict``).

Targets: the sizes and the budgets given, in order, paired one to one; one size with several
budgets (or the reverse) gives one target per budget. ``--targets FILE`` reads a CSV with a
``depth`` or ``n_params`` column and a ``tokens`` or ``flops`` column (one target per row;
an optional ``label``). A depth is sized from the study's own preset and options (its
parameters and FLOPs per token from the model's shapes); ``--params`` with ``--flops``
converts with the study's FLOPs per parameter-token. Prints, per target and metric, the
Approach-3 prediction with the 95% interval of the law and of one new run, the reducible
loss over the study's floor, and the frontier law at the target's compute; ``--json`` prints
the same as JSON. Reads the study's metrics; the fitted laws are kept in
``report/predictor-<key>.npz``, so a second call on an unchanged study does not fit again.

``--law curve`` predicts from the loss-curve law instead (``analysis.curve``: every evaluation
of every run, with its learning-rate schedule's areas), fitted on each call: each target's
final L_last and L_avg trained from scratch under ``--schedule`` (wsd, cosine or lin0; default
the study's) with ``--decay-frac`` (wsd; default the study's), with the law's 95% interval.
"""
from __future__ import annotations

import argparse
import json
import math
import sys

from varscale.cli import common as C

PROG = "varscale predict"


class _Pair(argparse.Action):
    """Keep --depth/--params (and --tokens/--flops) in the order given, with their kind."""

    def __call__(self, parser, ns, value, option_string=None):
        items = list(getattr(ns, self.dest) or [])
        items.append((self.metavar.lower(), value))
        setattr(ns, self.dest, items)


def add_prediction_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples of the study's runs")
    ap.add_argument("--seed", type=int, default=0, help="seed of the resamples")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")


def build_parser():
    ap = C.parser(PROG, description=__doc__)
    C.add_study_arg(ap, "the fitted study (runs/<study>) whose laws predict")
    ap.add_argument("--depth", dest="sizes", type=int, action=_Pair, metavar="DEPTH",
                    help="a target's VAR depth (repeatable; default: none)")
    ap.add_argument("--params", dest="sizes", type=float, action=_Pair, metavar="PARAMS",
                    help="a target's parameter count N (repeatable; default: none)")
    ap.add_argument("--tokens", dest="budgets", type=float, action=_Pair, metavar="TOKENS",
                    help="a target's training tokens D (repeatable; default: none)")
    ap.add_argument("--flops", dest="budgets", type=float, action=_Pair, metavar="FLOPS",
                    help="a target's training FLOPs C (repeatable; default: none)")
    ap.add_argument("--targets", metavar="CSV", help="a CSV of targets: depth|n_params, tokens|flops[, label] (default: none)")
    ap.add_argument("--law", choices=("approach3", "curve"), default="approach3",
                    help="approach3: the final evaluations' law (default); curve: the loss-curve law over every "
                         "evaluation, for a target under any learning-rate schedule")
    ap.add_argument("--schedule", choices=("wsd", "cosine", "lin0"),
                    help="--law curve: the target's learning-rate schedule (default: the study's)")
    ap.add_argument("--decay-frac", type=float, metavar="F",
                    help="--law curve with --schedule wsd: the decay's share of the steps (default: the study's)")
    add_prediction_args(ap)
    return ap


def study_and_predictor(study: str, n_boot: int, seed: int, cfg=None):
    """The study's config and its :class:`analysis.predict.Predictor`: the study read once
    (``Study.load``), the predictor from its report folder when fitted before on the same
    runs and settings, else fitted and kept there (``analysis.predictor_cache``); one
    sentence (UsageError) when the study cannot predict."""
    from analysis.load import SayDamagedParts
    from analysis.predict import PredictError
    from analysis.predictor_cache import cached_predictor
    from analysis.study import Study

    cfg = C.load_study(study) if cfg is None else cfg
    C.positive("--n-boot", n_boot)
    lay = C.study_dir(study)
    with SayDamagedParts(PROG):
        st = Study.load(lay.root)
    try:
        return cfg, cached_predictor(st, n_boot=n_boot, seed=seed)
    except PredictError as e:
        raise C.UsageError(str(e)) from None


def targets_from_args(cfg, sizes, budgets, csv_path):
    """Rows (depth, n_params, tokens, flops, label) from the arguments or the CSV."""
    import pandas as pd

    from varscale.models.family import model_family

    rows = []
    if csv_path:
        C.existing_file("--targets", csv_path)
        try:
            t = pd.read_csv(csv_path)
        except Exception as e:  # noqa: BLE001 - any parse failure is the file's fault
            raise C.UsageError(f"--targets {csv_path}: not a CSV file ({type(e).__name__})") from None
        cols = set(t.columns)
        C.require(bool(cols & {"depth", "n_params"}) and bool(cols & {"tokens", "flops"}),
                  f"--targets {csv_path}: needs a depth or n_params column and a tokens or flops column, "
                  f"has {', '.join(map(str, t.columns)) or 'none'}")
        for i, r in t.iterrows():
            size = ("depth", r["depth"]) if "depth" in cols and pd.notna(r.get("depth")) else ("params", r.get("n_params"))
            bud = ("tokens", r["tokens"]) if "tokens" in cols and pd.notna(r.get("tokens")) else ("flops", r.get("flops"))
            C.require(pd.notna(size[1]) and pd.notna(bud[1]), f"--targets {csv_path}: row {i + 1} lacks a size or a budget")
            rows.append((size, bud, r.get("label") if "label" in cols and pd.notna(r.get("label")) else None))
    sizes, budgets = list(sizes or []), list(budgets or [])
    if sizes or budgets:
        C.require(bool(sizes) and bool(budgets), "give a size (--depth or --params) and a budget (--tokens or --flops) per target")
        if len(sizes) != len(budgets):
            C.require(len(sizes) == 1 or len(budgets) == 1,
                      f"{len(sizes)} sizes and {len(budgets)} budgets: give as many of each, or one size or one budget for all")
            if len(sizes) == 1:
                sizes = sizes * len(budgets)
            else:
                budgets = budgets * len(sizes)
        rows += [(s, b, None) for s, b in zip(sizes, budgets)]
    C.require(bool(rows), "no target: give --depth/--params with --tokens/--flops, or --targets FILE")
    depths = []
    for (kind, v), (bk, bv), _ in rows:
        C.positive(f"--{kind}", float(v))
        C.positive(f"--{bk}", float(bv))
        if kind == "depth":
            C.require(float(v) == int(v), f"--depth {v}: a depth is a whole number")
            depths.append(int(v))
    fam = model_family(cfg, depths).set_index("depth") if depths else None
    out = []
    for (kind, v), (bk, bv), label in rows:
        t = {"label": label}
        if kind == "depth":
            f = fam.loc[int(v)]
            t.update(depth=int(v), n_params=float(f["n_params"]))
            t["tokens"] = float(bv) if bk == "tokens" else float(bv) / float(f["flops_per_token"])
            t["flops"] = float(bv) if bk == "flops" else float(bv) * float(f["flops_per_token"])
        else:
            t.update(n_params=float(v), **{bk: float(bv)})
        out.append(t)
    return out


def fmt(v, digits: int = 4) -> str:
    return "nan" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{digits}g}"


def header_lines(df) -> list[str]:
    from analysis.headline import floor_line

    a = df.attrs
    lines = [f"laws of {a['study']} (fit {a['fit_hash']}: Approach 3 over N and D per metric, "
             f"{a['n_boot']} resamples of its runs; fitted N {a['range_N'][0]:.3g}..{a['range_N'][1]:.3g}, "
             f"C {a['range_C'][0]:.3g}..{a['range_C'][1]:.3g})"]
    fitted = set(df["metric"]) if "metric" in df else set()
    lines += ["  " + floor_line(m, a["floor"].get(m)) for m in ("test_loss_last", "test_loss_avg") if m in fitted]
    lines += [f"  note: {n}" for n in a.get("notes", [])]
    return lines


def table(df) -> str:
    head = ["target", "N", "tokens", "FLOPs", "metric", "predicted", "95% law", "95% new run", "reducible",
            "frontier at C"]
    rows = []
    for _, r in df.iterrows():
        red = "" if not math.isfinite(r["reducible"]) else (
            f"{fmt(r['reducible'])} [{fmt(r['reducible_lo'], 3)}, {fmt(r['reducible_hi'], 3)}]")
        fr = "" if not math.isfinite(r["frontier"]) else f"{fmt(r['frontier'])} [{fmt(r['frontier_lo'], 4)}, {fmt(r['frontier_hi'], 4)}]"
        rows.append([r["target"], f"{r['n_params']:.3g}", f"{r['tokens']:.3g}", f"{r['flops']:.3g}", r["short"],
                     fmt(r["predicted"]), f"[{fmt(r['ci_lo'])}, {fmt(r['ci_hi'])}]",
                     f"[{fmt(r['pi_lo'])}, {fmt(r['pi_hi'])}]", red, fr])
    w = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    out = ["  ".join(str(h).ljust(n) for h, n in zip(head, w))]
    out += ["  ".join(str(c).ljust(n) for c, n in zip(row, w)) for row in rows]
    warn = sorted({(r["target"], r["warning"]) for _, r in df.iterrows() if r["warning"]})
    out += [f"warning: {t}: {w_}" for t, w_ in warn]
    return "\n".join(out)


def records(df) -> dict:
    import numpy as np

    def clean(v):
        if isinstance(v, (float, np.floating)):
            return None if not math.isfinite(float(v)) else float(v)
        if isinstance(v, np.integer):
            return int(v)
        return v

    a = dict(df.attrs)
    if "floor" in a:  # the loss-curve law's predictions have none
        a["floor"] = {m: {k: clean(v) if not isinstance(v, list) else v for k, v in fe.to_json().items()}
                      for m, fe in a["floor"].items()}
    return {**{k: (list(v) if isinstance(v, tuple) else v) for k, v in a.items()},
            "predictions": [{k: clean(v) for k, v in r.items()} for r in df.to_dict("records")]}


def curve_table(df) -> str:
    head = ["target", "N", "tokens", "schedule", "metric", "S1", "S2", "predicted", "95% law"]
    short = {"test_loss_last": "L_last", "test_loss_avg": "L_avg"}
    rows = [[r["target"], f"{r['n_params']:.3g}", f"{r['tokens']:.3g}", r["schedule"], short.get(r["metric"], r["metric"]),
             f"{r['S1']:.4g}", f"{r['S2']:.4g}", fmt(r["predicted"]), f"[{fmt(r['ci_lo'])}, {fmt(r['ci_hi'])}]"]
            for _, r in df.iterrows()]
    w = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    return "\n".join("  ".join(str(c).ljust(n) for c, n in zip(row, w)) for row in [head, *rows])


def predict_curve_law(a, targets) -> int:
    """``--law curve``: the loss-curve law fitted on the study's every evaluation predicts each target."""
    from analysis.curve import predict_curve
    from analysis.load import SayDamagedParts
    from analysis.study import Study

    C.positive("--n-boot", a.n_boot)
    if a.decay_frac is not None:
        C.require(0 < a.decay_frac < 1, f"--decay-frac {a.decay_frac}: must be in (0, 1)")
    with SayDamagedParts(PROG):
        st = Study.load(C.study_dir(a.study_dir).root)
    try:
        df = predict_curve(st, targets, kind=a.schedule, decay_frac=a.decay_frac, n_boot=a.n_boot, seed=a.seed)
    except ValueError as e:
        raise C.UsageError(f"{a.study_dir}: {e}") from None
    if a.json:
        print(json.dumps(records(df), indent=1))
        return 0
    at = df.attrs
    sc = at["schedule"]
    print(f"loss-curve law of {at['study']} (every evaluation, {at['n_boot']} resamples of its runs; fitted N "
          f"{at['range_N'][0]:.3g}..{at['range_N'][1]:.3g}; {at['tokens_per_step']:.4g} tokens per step; warmup "
          f"{sc['warmup_frac']:g}, final lr ratio {sc['final_ratio']:g})")
    print(curve_table(df))
    for t, w in sorted({(r["target"], r["warning"]) for _, r in df.iterrows() if r["warning"]}):
        print(f"warning: {t}: {w}")
    return 0


@C.command(PROG)
def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    cfg = C.load_study(a.study_dir)
    targets = targets_from_args(cfg, a.sizes, a.budgets, a.targets)  # before any fit
    if a.law == "curve":
        return predict_curve_law(a, targets)
    C.require(a.schedule is None and a.decay_frac is None, "--schedule and --decay-frac go with --law curve")
    _, P = study_and_predictor(a.study_dir, a.n_boot, a.seed, cfg=cfg)
    from analysis.predict import PredictError, predict

    try:
        df = predict(P, targets)
    except PredictError as e:
        raise C.UsageError(str(e)) from None
    if a.json:
        print(json.dumps(records(df), indent=1))
        return 0
    print("\n".join(header_lines(df)))
    print(table(df))
    return 0


if __name__ == "__main__":
    sys.exit(main())
