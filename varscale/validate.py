"""``varscale validate <study-dir>``: print the fully resolved study config, or its errors."""
from __future__ import annotations

import argparse
import sys

from varscale.config import ConfigError, dump_yaml, load_study


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="varscale validate", description=__doc__)
    ap.add_argument("study", help="study folder (with study.yaml) or a yaml file")
    a = ap.parse_args(argv)
    try:
        cfg = load_study(a.study)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 2
    print(f"# {a.study}: valid (config hash {cfg.hash()})")
    print(dump_yaml(cfg), end="")
    return 0
