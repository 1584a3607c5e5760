"""``varscale status <study-dir>``: one line per cell, then totals (``varscale.grid.status``)."""
from __future__ import annotations

import argparse
import json
import sys

from varscale.grid import status as S


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="varscale status", description=S.__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("study", help="study folder")
    ap.add_argument("--json", action="store_true", help="machine-readable output")
    a = ap.parse_args(argv)
    from varscale.schema import StudyLayout

    if not StudyLayout.of(a.study).root.is_dir():
        print(f"varscale status: no study folder {a.study}", file=sys.stderr)
        return 2
    cells = S.study_cells(a.study)
    t = S.totals(cells)
    if a.json:
        print(json.dumps({"cells": [{k: v for k, v in c.__dict__.items() if k != "status"} for c in cells],
                          "totals": t}, indent=1, default=str))
        return 0
    if not cells:
        print(f"{a.study}: no cells planned yet (run 'varscale plan {a.study}')")
        return 0
    print(S.format_table(cells))
    print(S.format_totals(t))
    return 0
