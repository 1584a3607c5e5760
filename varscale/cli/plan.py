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
    return ap


@C.command(PROG)
def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    from varscale.config import monitor_problems, study_file
    from varscale.grid.cells import PlanError, plan_cells
    from varscale.schema import StudyLayout

    C.positive("--flops-per-s", a.flops_per_s)
    C.positive("--threads", a.threads)
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
    if not a.no_write:
        P.write_plan(layout, cfg, cells, plan)
    if a.json:
        print(json.dumps(plan, indent=1, default=str))
        return 0
    print(f"study {cfg.name} ({layout.root}): preset {cfg.model.preset}, depths {list(cfg.model.depths)}, "
          f"{len(plan['budgets'])} budget(s) in {cfg.budgets.unit}, seeds {list(cfg.seeds)}, design {cfg.budgets.design}")
    print(P.format_plan(plan))
    if not a.no_write:
        print(f"wrote {layout.plan_json}")
    return 0
