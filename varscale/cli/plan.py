"""``varscale plan <study-dir>``: the cells of a study and their cost (``varscale.grid.plan``)."""
from __future__ import annotations

import argparse
import json
import sys

from varscale.grid import plan as P


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="varscale plan", description=P.__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("study", help="study folder (with study.yaml) or a yaml file")
    ap.add_argument("--flops-per-s", type=float, help="FLOP/s of one cell, for the time estimate")
    ap.add_argument("--threads", type=int, help="threads per cell for the CPU estimate")
    ap.add_argument("--no-write", action="store_true", help="do not write plan.json")
    ap.add_argument("--json", action="store_true", help="print the plan as JSON")
    a = ap.parse_args(argv)
    from varscale.config import load_study_for_cli, study_file
    from varscale.grid.cells import PlanError, plan_cells
    from varscale.schema import StudyLayout

    cfg = load_study_for_cli(a.study)
    if cfg is None:
        return 2
    layout = StudyLayout.of(study_file(a.study).parent)
    try:
        cells = plan_cells(cfg, layout.root)
    except PlanError as e:
        print(f"varscale plan: {e}", file=sys.stderr)
        return 2
    plan = P.build_plan(cfg, layout, cells, a.flops_per_s, a.threads)
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
