"""``varscale fit <study>``: every scaling law of a study, as a table and as files.

Loads the study once (``analysis.study.Study``), fits every law (``analysis.fitting.fit_study``:
the headline of reducible loss with one study-wide floor, every fit form, extrapolation
checks, allocation exponents) and writes the typed report: ``report/fits.json`` (its
serialization, ``analysis.results``) and ``report/fits.md`` (``analysis.render``), each by an
atomic rename, so a crash leaves the previous report. A floor other than the default rule
(``--floor-from``, ``--floor-last``, ``--no-floor``) writes ``report/fits-floor-<source>.{json,md}``
instead, so the default report, which ``varscale run`` keeps while the finished cells are
unchanged, is always the default rule's. ``--check-predictions`` is ``varscale check``.
"""
from __future__ import annotations

import math
import sys

from varscale.cli import common as C

PROG = "varscale fit"


def build_parser():
    from analysis.bootstrap import DEFAULT_BOOT
    from analysis.fitting import FLOOR_RULES

    ap = C.parser(PROG, description=__doc__.split("\n")[0])
    C.add_study_arg(ap, "study folder (runs/<study>)")
    ap.add_argument("--n-boot", type=int, default=DEFAULT_BOOT, help="bootstrap resamples (0: none)")
    ap.add_argument("--seed", type=int, default=0, help="random seed of the bootstrap")
    ap.add_argument("--floor-last", type=float,
                    help="irreducible last-scale loss by hand (nats); writes report/fits-floor-hand.* "
                         "(default: the --floor-from rule)")
    ap.add_argument("--floor-avg", type=float,
                    help="irreducible all-scale loss by hand (nats); writes report/fits-floor-hand.* "
                         "(default: the --floor-from rule)")
    ap.add_argument("--no-floor", action="store_true",
                    help="no floor: every loss raw; writes report/fits-floor-none.*")
    ap.add_argument("--floor-from", choices=list(FLOOR_RULES), default="auto",
                    help="the floor's source: auto (token entropy where it lies below every loss, "
                         "else the Approach-3 E), entropy, chinchilla; other than auto writes "
                         "report/fits-floor-<source>.*")
    ap.add_argument("--x", default="n_params",
                    choices=["n_params", "n_params_blocks", "n_params_nonembedding"],
                    help="the size axis N: all parameters, transformer blocks only, or non-embedding")
    ap.add_argument("--compute", default="flops", choices=["flops", "flops_6nd"],
                    help="the compute axis C: exact training FLOPs or 6 N D")
    ap.add_argument("--quiet", action="store_true", help="no table on the terminal")
    ap.add_argument("--check-predictions", action="store_true",
                    help="the same as 'varscale check STUDY': the predictions written before training "
                         "against the observed runs (the fits are not redone)")
    return ap


@C.command(PROG)
def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    if a.check_predictions:
        from varscale.cli import check

        return check.main([a.study_dir] + (["--quiet"] if a.quiet else []))
    C.check_study_dir(PROG, a.study_dir)
    C.positive("--n-boot", a.n_boot, allow_zero=True)
    for name, v in (("--floor-last", a.floor_last), ("--floor-avg", a.floor_avg)):
        if v is not None:
            C.require(math.isfinite(v) and v >= 0, f"{name} must be a loss in nats (>= 0), got {v:g}")
    from analysis.fitting import fit_study
    from analysis.load import SayDamagedParts
    from analysis.render import format_markdown, format_terminal
    from analysis.results import write_report
    from analysis.study import Study

    with SayDamagedParts(PROG):
        study = Study.load(a.study_dir)
    rep = fit_study(study, n_boot=a.n_boot, seed=a.seed, floor_last=a.floor_last, floor_avg=a.floor_avg,
                    use_floor=not a.no_floor, x_col=a.x, c_col=a.compute, floor_from=a.floor_from)
    js, md = write_report(rep, a.study_dir, format_markdown(rep))
    if not a.quiet:
        print(format_terminal(rep))
    print(f"wrote {js} and {md}")
    if not rep.fits:  # not an error: a study with too few finished cells has no law yet
        print(f"{PROG}: no law could be fitted yet (see the notes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
