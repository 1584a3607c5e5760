"""``varscale status <study-dir>``: one line per cell, then totals (``varscale.grid.status``).

A damaged ``plan.json`` is ignored with a warning (the cells are listed from their folders);
a cell whose ``config.json`` or ``status.json`` is damaged is left out of the table with a
warning naming the file; a damaged ``study.yaml`` stops the command (exit 2).
``--watch`` redraws the table every ``--interval`` seconds until every cell has ended, or
until Ctrl-C (exit 0 either way).
"""
from __future__ import annotations

import argparse
import json

from varscale.cli import common as C
from varscale.grid import status as S
from varscale.schema import read_json

PROG = "varscale status"


def build_parser():
    ap = C.parser(PROG, description=S.__doc__)
    C.add_study_arg(ap, "study folder (runs/<study>)")
    ap.add_argument("--json", action="store_true", help="machine-readable output")
    ap.add_argument("--watch", action="store_true",
                    help="redraw the table every --interval seconds until every cell has ended "
                         "(done, diverged or failed); Ctrl-C stops it")
    ap.add_argument("--interval", type=float, default=5.0, metavar="S", help="seconds between redraws (--watch)")
    ap.add_argument("--max-refreshes", type=int, default=None, help=argparse.SUPPRESS)  # tests
    return ap


def _view(study_dir: str, lay) -> tuple[str, bool]:
    """The table and totals, and whether every cell has ended."""
    cells = _cells(lay)
    if not cells:
        return f"{study_dir}: no cells planned yet (run 'varscale plan {study_dir}')", False
    return S.format_table(cells) + "\n" + S.format_totals(S.totals(cells)), S.all_ended(cells)


def _cells(lay) -> list[S.CellState]:
    """``S.study_cells``, leaving out (with a warning) the cells whose files are damaged."""
    bad = dict(C.damaged_files(lay))
    for sentence in bad.values():
        C.warn(PROG, sentence + ("" if sentence.startswith(str(lay.plan_json)) else "; the cell is left out"))
    plan = {} if lay.plan_json in bad else (read_json(lay.plan_json, {}) or {})
    planned = {c["run_id"]: c for c in plan.get("cells", []) if isinstance(c, dict) and "run_id" in c}
    ids = list(planned) + [p.name for p in lay.cell_dirs() if p.name not in planned]
    damaged = {p.parent.name for p in bad if p != lay.plan_json}
    return [S.cell_state(lay.cell(r), planned.get(r)) for r in ids if r not in damaged]


@C.command(PROG)
def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    C.require(not (a.watch and a.json), "--watch redraws a table; --json prints one snapshot (pick one)")
    C.positive("--interval", a.interval)
    lay = C.study_dir(a.study_dir, need_yaml=False)  # status reads the cells' folders alone
    C.study_yaml_damage(lay)  # said here rather than found later by 'run'
    if a.watch:
        try:
            S.watch(lambda: _view(a.study_dir, lay), a.interval, a.max_refreshes)
        except KeyboardInterrupt:  # the way to stop watching: not an error
            print()
        return 0
    cells = _cells(lay)
    t = S.totals(cells)
    if a.json:
        print(json.dumps({"cells": [{k: v for k, v in c.__dict__.items() if k != "status"} for c in cells],
                          "totals": t}, indent=1, default=str))
        return 0
    if not cells:
        print(f"{a.study_dir}: no cells planned yet (run 'varscale plan {a.study_dir}')")
        return 0
    print(S.format_table(cells))
    print(S.format_totals(t))
    return 0
