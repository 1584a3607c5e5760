"""``varscale check <study>``: the predictions written before the study trained
(``predictions.json``, from ``varscale plan <study> --predict-from <pilot>``) against its
finished runs (``analysis.check``).

First, per target run, whether it was pre-registered: its first evaluation came after the
predictions were written (the time in its metrics rows, or an earlier part file time), the
pilot (the record's, or ``--pilot``: where it lives now) still gives the recorded fit and
rows hashes, and study.yaml still hashes to the recorded config hash and plans the run (with
its config.json, when written, giving the same run id). Any failure, or a check that cannot
be made here, makes the run "not pre-registered" in the table and the summary line.

Then per target run and metric: the prediction, its 95% new-run interval, the observed final
value, the signed relative error and whether it lies inside; per metric the mean and
largest error, the coverage of both intervals and which term of the law the errors point
to (a fixed rule: docs/prediction.md), with the targets more than 10x beyond the pilot's range
apart. Writes ``report/predictions-check.{json,md}``; ``varscale fit <study>
--check-predictions`` is this command. Fits nothing. Exits 1 when a trained target is not
pre-registered (the table and files are written first), 2 on bad input, else 0.
"""
from __future__ import annotations

import sys

from varscale.cli import common as C

PROG = "varscale check"


def build_parser():
    ap = C.parser(PROG, description=__doc__)
    C.add_study_arg(ap, "the study (runs/<study>) whose predictions.json is checked")
    ap.add_argument("--pilot", metavar="PILOT",
                    help="the pilot study's folder, when it is no longer where predictions.json says "
                         "(default: the record's pilot)")
    ap.add_argument("--quiet", action="store_true", help="no table on the terminal")
    return ap


def load_pilot(rec: dict, study_dir: str, given: str | None):
    """(the pilot's Study or None, a phrase why not). The pilot may live elsewhere: the
    check does not need it, it only re-checks the pilot's fit hash."""
    from analysis.check import pilot_location
    from analysis.load import SayDamagedParts
    from analysis.study import Study

    where = pilot_location(rec, study_dir, given)
    if where is None:
        return None, None
    try:
        with SayDamagedParts(PROG):
            return Study.load(where), None
    except Exception as e:  # noqa: BLE001 - any failure to read the pilot only skips its re-check
        return None, type(e).__name__


def target_config(study_dir: str, rec: dict):
    """(the target study's config now as ``analysis.check.TargetConfig``, None) or (None, a
    phrase why study.yaml could not be planned)."""
    from analysis.check import TargetConfig
    from varscale.cell import CellConfig
    from varscale.config import ConfigError, load_study
    from varscale.grid.cells import PlanError, make_run_id, plan_cells

    lay = C.study_dir(study_dir, need_yaml=False)
    try:
        cfg = load_study(study_dir)
        cells = plan_cells(cfg, lay.root)
    except (ConfigError, PlanError, OSError, ValueError) as e:
        return None, f"study.yaml does not plan: {str(e).strip().splitlines()[0]}"
    cell_ids: dict = {}
    for t in rec["targets"]:
        cl = lay.cell(t["run_id"])
        if cl.config_json.exists():
            try:
                cell_ids[t["run_id"]] = make_run_id(CellConfig.load(cl.root))
            except Exception:  # noqa: BLE001 - an unreadable config.json is a failed check, said as such
                cell_ids[t["run_id"]] = None
    parents = {c.run_id: c.branch_from for c in cells if c.branch_from}
    return TargetConfig(study_hash=cfg.hash(), planned=frozenset(c.run_id for c in cells), cell_ids=cell_ids,
                        parents=parents), None


@C.command(PROG)
def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    C.check_study_dir(PROG, a.study_dir)
    if a.pilot:
        C.study_dir(a.pilot, need_yaml=False)
    from analysis.check import CheckError, check_predictions, read_predictions
    from analysis.check_report import format_check, preregistration_line, write_check
    from analysis.load import SayDamagedParts
    from analysis.study import Study

    try:
        rec = read_predictions(a.study_dir)  # before reading any metrics: no file, one line
    except CheckError as e:
        raise C.UsageError(str(e)) from None
    with SayDamagedParts(PROG):
        study = Study.load(a.study_dir)
    pilot, problem = load_pilot(rec, a.study_dir, a.pilot)
    config, config_problem = target_config(a.study_dir, rec)
    try:
        c = check_predictions(study, pilot, pilot_problem=problem, config=config, config_problem=config_problem)
    except CheckError as e:
        raise C.UsageError(str(e)) from None
    write_check(a.study_dir, c)
    if not a.quiet:
        print(format_check(c))
    lay = C.study_dir(a.study_dir, need_yaml=False)
    print(f"wrote {lay.check_json} and {lay.check_md}")
    if a.quiet:
        print(preregistration_line(c))
    # a target trained without its pre-registration holding fails the check, as a failing
    # test does: a script or CI step running `varscale check` stops there
    return 1 if any(t["pre_registered"] is False for t in c["preregistration"]["targets"]) else 0


if __name__ == "__main__":
    sys.exit(main())
