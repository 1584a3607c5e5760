"""``varscale figures <study-dir>``: the paper's scaling figures for a study, PNG and PDF.

Loads the study once (``analysis.study.Study``) and its report (``analysis.results.read_report``:
``report/fits.json``, or ``report/fits-floor-<source>.json`` for ``--floor entropy|chinchilla|hand``),
and draws every figure the study allows with the report's laws into ``report/``
(``analysis.figures.make_figures``; the figures are listed in analysis/figures/__init__.py).
The laws are not refitted: a figure draws the fits its report's headline rows point at. A
study without a report (or with a damaged one, or one written before fits.json had a
headline) is fitted first, in memory, by ``analysis.fitting.fit_study`` without bootstrap,
and the command says so; a report fitted on fewer evaluations than the study has now is
drawn, with a note. Fig. 7 is drawn from the sample grids under ``samples/`` (each depth's
snapshots, which the figures stage of ``varscale run`` samples, or ``varscale sample --fig7``);
this command samples nothing and needs no torch.
"""
from __future__ import annotations

import argparse
import sys

from varscale.cli import common as C

PROG = "varscale figures"


def build_parser():
    from analysis.figures import FLOOR_CHOICES, FORMATS

    ap = C.parser(PROG, description=__doc__.split("\n")[0])
    C.add_study_arg(ap, "study folder (runs/<study>)")
    ap.add_argument("--floor", default="auto", choices=FLOOR_CHOICES,
                    help="auto: reducible losses with the floor of report/fits.json (raw ones in *_raw "
                         "files); none: raw losses only; entropy, chinchilla, hand: the laws of "
                         "report/fits-floor-<source>.json (`varscale fit --floor-from ...`) into "
                         "fig5_vs_N-floor-<source>.* and fig6_vs_C-floor-<source>.*")
    ap.add_argument("--no-floor", action="store_true", help=argparse.SUPPRESS)  # = --floor none
    ap.add_argument("--x", default=None, choices=["n_params", "n_params_blocks", "n_params_nonembedding"],
                    help="must match the fit's (default: what report/fits.json was fitted with)")
    ap.add_argument("--compute", default=None, choices=["flops", "flops_6nd"],
                    help="must match the fit's (default: what report/fits.json was fitted with)")
    ap.add_argument("--floor-last", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--floor-avg", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--formats", default="png,pdf", help=f"comma-separated file formats, of {', '.join(FORMATS)}")
    return ap


def study_report(a, study, floor: str):
    """The report to draw for the parsed arguments ``a``, and a sentence for stdout (None:
    nothing to say): the one on disk, else one fitted now. A UsageError when the report
    asked for cannot be drawn (an alternative floor's missing, fitted on other axes)."""
    from analysis.figures import ALT_FLOORS, FIT_OPTION, floor_report, stale
    from analysis.fitting import fit_study
    from analysis.results import ReportError, read_report

    d = a.study_dir
    name = floor_report(floor)
    path = study.layout.report_dir / f"{name}.json"
    rep, why = None, f"no report/{name}.json in {d}"
    if path.exists():
        try:
            rep = read_report(path)
        except ReportError as e:
            if floor in ALT_FLOORS:
                raise C.UsageError(f"{e}: run `varscale fit {d} {FIT_OPTION[floor]}` again") from None
            C.warn(PROG, f"report/{name}.json is damaged, the laws are fitted again now "
                         f"('varscale fit {d}' writes it again): {e}")
            why = f"report/{name}.json in {d} is damaged"
    if rep is None and floor in ALT_FLOORS:
        raise C.UsageError(f"no report/{name}.json in {d}: run `varscale fit {d} {FIT_OPTION[floor]}` first")
    if rep is not None:
        for opt, have, want in (("--x", rep.x, a.x), ("--compute", rep.compute, a.compute)):
            C.require(want is None or have == want,
                      f"report/{name}.json was fitted with {opt} {have}; run `varscale fit {d} {opt} {want}` first")
        problem = stale(study, rep)
        if problem is None:
            return rep, None
        if rep.headline or not rep.fits:  # fitted on other evaluations: drawn as it is, said
            return rep, (f"{PROG}: note: report/{name}.json {problem}; run `varscale fit {d}` for laws "
                         "through every point")
        C.require(floor not in ALT_FLOORS, f"report/{name}.json {problem}: run `varscale fit {d} "
                                           f"{FIT_OPTION.get(floor, '')}` again")
        why = f"report/{name}.json in {d} {problem}"
    kw = {k: v for k, v in (("x_col", a.x), ("c_col", a.compute)) if v is not None}
    rep = fit_study(study, n_boot=0, **kw)
    return rep, (f"{PROG}: {why}: the laws were fitted now, without bootstrap, by the code of "
                 f"`varscale fit` (run `varscale fit {d}` for the table)")


@C.command(PROG)
def main(argv: list[str] | None = None) -> int:
    from analysis.figures import FORMATS

    a = build_parser().parse_args(argv)
    C.check_study_dir(PROG, a.study_dir)
    formats = tuple(f.strip() for f in a.formats.split(",") if f.strip())
    bad = [f for f in formats if f not in FORMATS] or ([] if formats else ["(none)"])
    C.require(not bad, f"--formats {a.formats}: unknown format {bad[0] if bad else ''}; give some of "
                       f"{', '.join(FORMATS)}")
    C.require(a.floor_last is None and a.floor_avg is None,
              f"a floor by hand is the fit's: run `varscale fit {a.study_dir} --floor-last ... --floor-avg ...`, "
              f"then `varscale figures {a.study_dir} --floor hand`")
    from analysis.figures import NoHeadline, make_figures
    from analysis.load import SayDamagedParts
    from analysis.study import Study

    with SayDamagedParts(PROG):  # a damaged part: one warning line
        study = Study.load(a.study_dir)
    if not len(study):  # not an error: nothing has been evaluated yet
        print(f"{PROG}: no evaluations yet, no figures")
        return 0
    floor = "none" if a.no_floor else a.floor
    rep, said = study_report(a, study, floor)
    if said:
        print(said)
    try:
        files = make_figures(study, rep, floor, formats)
    except NoHeadline as e:  # a report whose laws have no headline rows to draw them by
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1
    for p in files:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
