"""``varscale validate <study-dir>``: print the fully resolved study config, or its errors."""
from __future__ import annotations

import argparse

from varscale.config import dump_yaml, load_study_for_cli


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="varscale validate", description=__doc__)
    ap.add_argument("study", help="study folder (with study.yaml) or a yaml file")
    a = ap.parse_args(argv)
    cfg = load_study_for_cli(a.study)
    if cfg is None:
        return 2
    print(f"# {a.study}: valid (config hash {cfg.hash()})")
    print(dump_yaml(cfg), end="")
    return 0
