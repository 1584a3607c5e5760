"""``varscale validate <study-dir>``: print the fully resolved study config, or its errors.

Also reads every existing cell's ``config.json`` (and ``plan.json``, ``status.json``) far
enough to say whether it is damaged; writes nothing.
"""
from __future__ import annotations

from varscale.cli import common as C
from varscale.config import dump_yaml, monitor_problems, study_file

PROG = "varscale validate"


def build_parser():
    ap = C.parser(PROG, description=__doc__)
    C.add_study_arg(ap, "study folder (runs/<study>, holding study.yaml) or a yaml file")
    return ap


@C.command(PROG)
def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    cfg = C.load_study(a.study_dir)
    f = study_file(a.study_dir)
    if f == C.StudyLayout(f.parent).study_yaml:
        C.refuse_damaged(C.StudyLayout(f.parent))
    for sentence in monitor_problems(cfg):  # a warning: the training nodes may have it
        C.warn(PROG, sentence)
    print(f"# {a.study_dir}: valid (config hash {cfg.hash()})")
    print(dump_yaml(cfg), end="")
    return 0
