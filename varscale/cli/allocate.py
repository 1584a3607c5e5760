"""``varscale allocate <study> --flops C``: the compute-optimal model size and token count
for a FLOP budget, from the study's Approach-3 law (``analysis.allocate.allocate``).

Prints, per budget, the continuous optimum (N_opt, D_opt and the loss there, each with its
95% interval over resamples of the study's runs; C = k N D with k the study's FLOPs per
parameter-token) and the best depth of the study's model family (the study's preset at
depths 1..``--max-depth``): its parameters, tokens, steps and predicted metric, beside its
neighbours', so the flatness of the optimum shows. ``--check-frontier`` checks the law
against the grid itself: for the compute of each annealed-frontier point (the final
evaluations on the compute frontier), the depth allocate recommends among the study's own
depths against the depth that point was trained at, apart in depth units (within one:
d +- 1). Reads the study's metrics; the fitted laws are kept in ``report/predictor-<key>.npz``
(as ``varscale predict``'s), so a second call on an unchanged study does not fit again.
"""
from __future__ import annotations

import json
import math
import sys

from varscale.cli import common as C
from varscale.cli.predict import add_prediction_args, fmt, study_and_predictor

PROG = "varscale allocate"
METRICS = {"L_last": "test_loss_last", "L_avg": "test_loss_avg", "Err_last": "test_err_last",
           "Err_avg": "test_err_avg"}


def build_parser():
    ap = C.parser(PROG, description=__doc__)
    C.add_study_arg(ap, "the fitted study (runs/<study>) whose laws allocate")
    ap.add_argument("--flops", type=float, action="append", help="a training FLOP budget C (repeatable; default: none, then --check-frontier alone)")
    ap.add_argument("--metric", default="L_avg", help=f"the metric to minimise: {', '.join(METRICS)}")
    ap.add_argument("--max-depth", type=int, help="deepest model of the family (default: twice the study's deepest)")
    ap.add_argument("--neighbours", type=int, default=1, help="depths shown on each side of the best")
    ap.add_argument("--check-frontier", action="store_true",
                    help="compare the recommended depth with the depth of each annealed-frontier point")
    add_prediction_args(ap)
    return ap


def frontier_check(P, metric: str, family) -> list[dict]:
    """``analysis.allocate.frontier_check``: each compute-frontier point's depth against the
    recommended one, apart in depth units."""
    from analysis.allocate import frontier_check as check

    return check(P, family, metric)


@C.command(PROG)
def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    C.require(a.metric in METRICS, f"--metric {a.metric}: not a metric; valid: {', '.join(METRICS)}")
    C.require(bool(a.flops) or a.check_frontier, "give a budget: --flops C (repeatable), or --check-frontier")
    for c in a.flops or []:
        C.positive("--flops", c)
    C.positive("--max-depth", a.max_depth)
    C.positive("--neighbours", a.neighbours, allow_zero=True)
    cfg, P = study_and_predictor(a.study_dir, a.n_boot, a.seed)
    has = [k for k, m in METRICS.items() if m in P.chin]
    C.require(METRICS[a.metric] in P.chin, f"--metric {a.metric}: {P.study} has no values of it; "
                                           f"its laws are of {', '.join(has)}")
    from analysis.allocate import allocate

    from varscale.models.family import model_family

    metric = METRICS[a.metric]
    top = a.max_depth or 2 * max(cfg.model.depths)
    family = model_family(cfg, range(1, top + 1))
    results = [allocate(P, c, family=family, metric=metric, neighbours=a.neighbours) for c in a.flops or []]
    check = frontier_check(P, metric, model_family(cfg, cfg.model.depths)) if a.check_frontier else None
    if a.json:
        print(json.dumps({"study": P.study, "fit_hash": P.fit_hash, "metric": metric, "allocations": results,
                          "frontier_check": check}, indent=1))
        return 0
    print(f"laws of {P.study} (fit {P.fit_hash}, Approach 3 on {a.metric}, {P.n_boot} resamples; "
          f"C = {P.k_flops:.3g} N D)")
    for r in results:
        c = r["continuous"]
        print(f"\nC = {r['continuous']['flops']:.3g} FLOPs: N_opt {c['N_opt']:.3g} [{c['N_opt_ci'][0]:.3g}, {c['N_opt_ci'][1]:.3g}], "
              f"D_opt {c['D_opt']:.3g} [{c['D_opt_ci'][0]:.3g}, {c['D_opt_ci'][1]:.3g}] tokens, "
              f"{a.metric} {fmt(c['loss_opt'])} [{fmt(c['loss_opt_ci'][0])}, {fmt(c['loss_opt_ci'][1])}]; "
              f"N_opt ~ C^{c['a']:.3f} [{c['a_ci'][0]:.3f}, {c['a_ci'][1]:.3f}], D_opt ~ C^{c['b']:.3f}")
        for d in r["depths"]:
            mark = "best" if d["best"] else ""
            print(f"  d{d['depth']:<3} N {d['n_params']:.3g}  tokens {d['tokens']:.3g}  steps {d['steps']:.0f}  "
                  f"{a.metric} {fmt(d['predicted'])} [{fmt(d['ci'][0])}, {fmt(d['ci'][1])}]  {mark}"
                  + (f"  warning: {d['warning']}" if d["warning"] else ""))
        if r["edge"]:
            print(f"  note: the best depth is at the edge of depths 1..{top}: raise --max-depth to see past it")
    if check is not None:
        ok = sum(c["within_one"] for c in check)
        print(f"\nannealed-frontier check ({a.metric}): {ok} of {len(check)} frontier points trained within one "
              "depth (d +- 1) of the depth recommended among the study's depths")
        for c in check:
            print(f"  {c['run_id']:<28} C {c['flops']:.3g}  trained d{c['depth']}, recommended d{c['recommended']}"
                  f"  {c['depth_apart']} apart  {'ok' if c['within_one'] else 'MISS'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
