"""``varscale plan <study-dir>``: the cells of a study and their cost (``varscale.grid.plan``)."""
from __future__ import annotations

import json
import sys

from varscale.cli import common as C
from varscale.grid import plan as P

PROG = "varscale plan"


def build_parser():
    ap = C.parser(PROG, description=P.__doc__)
    C.add_study_arg(ap, "study folder (runs/<study>, holding study.yaml) or a yaml file")
    ap.add_argument("--flops-per-s", type=float,
                    help="FLOP/s of one cell, for the time estimate (default: measured by the study's cells, else guessed)")
    ap.add_argument("--threads", type=int,
                    help="threads per cell for the CPU estimate (default: execution.threads or cores / parallel)")
    ap.add_argument("--no-write", action="store_true", help="do not write plan.json")
    ap.add_argument("--json", action="store_true", help="print the plan as JSON")
    ap.add_argument("--predict-from", metavar="PILOT",
                    help="a finished study whose laws predict every planned run's metrics; written to "
                         "<study>/predictions.json (committed to git: the pre-registration 'varscale check' "
                         "verifies) unless a run has trained since (default: no predictions)")
    ap.add_argument("--n-boot", type=int, default=1000, help="resamples of the pilot's runs (--predict-from)")
    g = ap.add_argument_group("design precision (docs/design.md)")
    g.add_argument("--precision", action="store_true",
                   help="simulate the planned design: the 95%% interval widths its fits will report, and how "
                        "often its floor will be resolved")
    g.add_argument("--prior", metavar="STUDY_OR_FITS",
                   help="laws and noise to simulate from: a trained study or a fits.json (default: the built-in "
                        "prior, the default study's laws)")
    g.add_argument("--target", action="append", metavar="depth=D,tokens=T",
                   help="a run to predict (repeatable): its new-run interval width goes in the table (default: none)")
    g.add_argument("--sims", type=int, default=100, help="simulated studies (default 100)")
    g.add_argument("--sim-boot", type=int, default=100, help="resamples per simulated study (default 100)")
    g.add_argument("--at-flops", type=float, help="the compute N_opt is stated at (default 10x the design's largest)")
    g.add_argument("--seed", type=int, default=0, help="seed of the simulation")
    g.add_argument("--suggest", type=int, metavar="K",
                   help="rank candidate cells by how much each narrows the --for widths per FLOP; add the K best (default: no suggestions)")
    g.add_argument("--for", dest="goal", default="E", metavar="E|alpha|beta|a_opt|target",
                   help="what --suggest narrows (comma-separated for several; default E)")
    g.add_argument("--flops-budget", type=float, metavar="C",
                   help="--suggest keeps the design's total FLOPs within C (when the study already spends it: "
                        "a design built from nothing within C; default: no limit)")
    g.add_argument("--grid", metavar="depths=..;budgets=..",
                   help="the candidate cells of --suggest (default: the study's depths and two more, times its "
                        "budgets and three doublings of the largest; cells below the prior's smallest N or D are left out)")
    return ap


def predicted_plan(cfg, layout, plan: dict, pilot: str, n_boot: int, write: bool) -> tuple[dict, list[str]]:
    """The pilot's predictions for every planned run whose final evaluation is a result (not
    a WSD stable run); written to predictions.json when ``write`` (see analysis/check.py)."""
    from analysis.check import prediction_record, write_predictions
    from analysis.predict import PredictError, predict
    from varscale.cli.predict import study_and_predictor

    _, P = study_and_predictor(pilot, n_boot, 0)
    targets = [{"run_id": r["run_id"], "label": r["run_id"], "depth": r["depth"], "n_params": float(r["n_params"]),
                "tokens": float(r["tokens"]), "flops": float(r["total_steps"] * r["flops_per_step"])}
               for r in plan["cells"] if not r["stable"]]
    try:
        pred = predict(P, targets)
    except PredictError as e:
        raise C.UsageError(str(e)) from None
    rec = prediction_record(pred, [{k: v for k, v in t.items() if k != "label"} for t in targets], pilot,
                            cfg.hash())
    msgs = []
    if write:
        msgs.append(write_predictions(layout.root, rec)[1])
    return rec, msgs


def format_predictions(rec: dict, plan: dict) -> str:
    from varscale.grid.plan import _fmt_time

    est = {r["run_id"]: r["est_seconds"] for r in plan["cells"]}
    head = ["run_id", "N", "tokens", "FLOPs", "est.time", "L_last", "L_avg", "Err_last", "Err_avg  (95% new-run interval)"]
    rows = []
    for t in rec["targets"]:
        m = t["metrics"]
        cell = lambda k: f"{m[k]['predicted']:.4f} [{m[k]['pi'][0]:.3f}, {m[k]['pi'][1]:.3f}]"
        rows.append([t["run_id"], f"{t['n_params']:.3g}", f"{t['tokens']:.3g}", f"{t['flops']:.3g}",
                     _fmt_time(est.get(t["run_id"])), cell("test_loss_last"), cell("test_loss_avg"),
                     cell("test_err_last"), cell("test_err_avg")])
    w = [max(len(x) for x in col) for col in zip(head, *rows)]
    out = [f"predicted by {rec['pilot']} (fit {rec['fit_hash']}, rows {rec.get('rows_hash')}, Approach 3 over N and D, "
           f"{rec['n_boot']} resamples; written {rec['written']}):"]
    out += ["  ".join(h.ljust(n) for h, n in zip(head, w))]
    out += ["  ".join(c.ljust(n) for c, n in zip(r, w)) for r in rows]
    out += [f"warning: {t['run_id']}: {t['warning']}" for t in rec["targets"] if t.get("warning")]
    return "\n".join(out)


@C.command(PROG)
def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    from varscale.config import monitor_problems, study_file
    from varscale.grid.cells import PlanError, plan_cells
    from varscale.schema import StudyLayout

    C.positive("--flops-per-s", a.flops_per_s)
    C.positive("--threads", a.threads)
    C.positive("--n-boot", a.n_boot)
    C.refuse_imported(a.study_dir)
    for flag, v in (("--sims", a.sims), ("--sim-boot", a.sim_boot), ("--suggest", a.suggest),
                    ("--flops-budget", a.flops_budget), ("--at-flops", a.at_flops)):
        C.positive(flag, v)
    if a.sim_boot < 20:
        raise C.UsageError(f"--sim-boot {a.sim_boot}: intervals need at least 20 resamples")
    if a.predict_from:
        C.study_dir(a.predict_from)
    cfg = C.load_study(a.study_dir)
    layout = StudyLayout.of(study_file(a.study_dir).parent)
    C.refuse_damaged(layout)
    try:
        cells = plan_cells(cfg, layout.root)
    except PlanError as e:
        print(f"varscale plan: {e}", file=sys.stderr)
        return 2
    plan = P.build_plan(cfg, layout, cells, a.flops_per_s, a.threads)
    for sentence in monitor_problems(cfg):  # a warning: the training nodes may have it
        C.warn(PROG, sentence)
    if a.precision or a.suggest:  # a question about the design: nothing is written
        from varscale.cli.design import run_design

        if a.predict_from:
            raise C.UsageError("--predict-from writes predictions; ask --precision / --suggest in another call")
        return run_design(a, cfg, layout, plan)
    if not a.no_write:
        P.write_plan(layout, cfg, cells, plan)
    pred, msgs = (predicted_plan(cfg, layout, plan, a.predict_from, a.n_boot, not a.no_write)
                  if a.predict_from else (None, []))
    if a.json:
        print(json.dumps(plan if pred is None else {**plan, "predictions": pred}, indent=1, default=str))
        return 0
    print(f"study {cfg.name} ({layout.root}): preset {cfg.model.preset}, depths {list(cfg.model.depths)}, "
          f"{len(plan['budgets'])} budget(s) in {cfg.budgets.unit}, seeds {list(cfg.seeds)}, design {cfg.budgets.design}")
    print(P.format_plan(plan))
    if not a.no_write:
        print(f"wrote {layout.plan_json}")
    if pred is not None:
        print()
        print(format_predictions(pred, plan))
        for m in msgs:
            print(m)
    return 0
