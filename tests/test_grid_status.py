"""``varscale status``: the state of each cell, read from its folder alone."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from varscale.cli import status as status_cli
from varscale.grid import status as S
from varscale.grid.lock import FileLock


def _cell(root, rid, status=None, done=None, tb=None, total=100):
    d = root / "cells" / rid
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"run_id": rid, "depth": 2, "seed": 0, "total_steps": total,
                                               "budget_flops": 1e9}))
    if status is not None:
        (d / "status.json").write_text(json.dumps(status))
    if done is not None:
        (d / "DONE").write_text(done)
    if tb is not None:
        (d / "traceback.txt").write_text(tb)
    return d


def test_states(tmp_path, capsys):
    _cell(tmp_path, "a-done", {"state": "done", "step": 100, "last_test_loss_avg": 4.25, "tokens_per_s": 1.5e4}, "done\n")
    _cell(tmp_path, "b-div", {"state": "diverged", "step": 40}, "diverged\n")
    _cell(tmp_path, "c-fail", {"state": "failed", "step": 10}, tb="Traceback...\nRuntimeError: boom\n")
    d = _cell(tmp_path, "d-run", {"state": "running", "step": 55})
    lock = FileLock(d / "LOCK", heartbeat_s=0)  # a second opinion on the same lock file
    # held by another live process of this host: our parent will do
    (d / "LOCK").write_text(json.dumps({"pid": os.getppid(), "host": __import__("socket").gethostname(), "token": "x"}))
    _cell(tmp_path, "e-int", {"state": "running", "step": 30, "pid": 999999})  # killed: no live lock
    _cell(tmp_path, "f-new")
    cells = {c.run_id: c for c in S.study_cells(tmp_path)}
    assert {k: v.state for k, v in cells.items()} == {
        "a-done": "done", "b-div": "diverged", "c-fail": "failed", "d-run": "running",
        "e-int": "pending", "f-new": "pending"}
    assert cells["c-fail"].note == "RuntimeError: boom"
    assert "resumes" in cells["e-int"].note and cells["e-int"].step == 30
    assert f"pid {os.getppid()}" in cells["d-run"].note
    assert lock.held_by_other() is not None
    assert status_cli.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("a-done"))
    assert "100/100" in line and "4.2500" in line and "1.5e+04" in line
    assert out.strip().splitlines()[-1].startswith("6 cells: 2 pending, 1 running, 1 done, 1 failed, 1 diverged")


def test_plan_order_and_cli(tmp_path):
    (tmp_path / "plan.json").write_text(json.dumps({"cells": [
        {"run_id": "z-first", "total_steps": 10, "budget_flops": 1e8},
        {"run_id": "a-second", "total_steps": 20, "budget_flops": 2e8}]}))
    _cell(tmp_path, "a-second", {"state": "done", "step": 20}, "done\n", total=20)
    r = subprocess.run([sys.executable, "-m", "varscale.cli", "status", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[1].startswith("z-first") and " pending " in lines[1] and "0/10" in lines[1]
    assert lines[2].startswith("a-second") and " done " in lines[2]
    assert "91% of planned FLOPs" in lines[-1]  # 1e9 of 1.1e9 (config.json wins over plan.json)
    r = subprocess.run([sys.executable, "-m", "varscale.cli", "status", str(tmp_path), "--json"],
                       capture_output=True, text=True)
    assert json.loads(r.stdout)["totals"]["done"] == 1


# --------------------------------------------------------------------------- --watch


def test_watch_ends_at_once_when_every_cell_has_ended(tmp_path, capsys):
    _cell(tmp_path, "a-done", {"state": "done", "step": 100}, "done\n")
    _cell(tmp_path, "b-fail", {"state": "failed", "step": 10}, tb="Traceback...\nRuntimeError: boom\n")
    assert status_cli.main([str(tmp_path), "--watch", "--interval", "0.01"]) == 0
    out = capsys.readouterr().out
    assert out.count("every cell has ended") == 1 and "a-done" in out and "2 cells:" in out


def test_watch_redraws_until_told_to_stop(tmp_path, capsys):
    _cell(tmp_path, "a-done", {"state": "done", "step": 100}, "done\n")
    _cell(tmp_path, "b-new")
    assert status_cli.main([str(tmp_path), "--watch", "--interval", "0.01", "--max-refreshes", "3"]) == 0
    out = capsys.readouterr().out
    assert out.count("Ctrl-C stops") == 3 and out.count("b-new") == 3


def test_watch_follows_a_cell_to_its_end(tmp_path):
    import io

    _cell(tmp_path, "a-done", {"state": "done", "step": 100}, "done\n")
    d = _cell(tmp_path, "b-run", {"state": "running", "step": 10})
    steps = iter([40, 100])

    def sleep(_):  # the trainer moves on between two frames
        s = next(steps)
        (d / "status.json").write_text(json.dumps({"state": "done" if s == 100 else "running", "step": s}))
        if s == 100:
            (d / "DONE").write_text("done\n")

    def frame():
        cells = S.study_cells(tmp_path)
        return S.format_table(cells), S.all_ended(cells)

    out = io.StringIO()
    assert S.watch(frame, 1.0, out=out, sleep=sleep) == 3
    frames = out.getvalue().split("every 1 s")
    assert "10/100" in frames[1] and "40/100" in frames[2] and "100/100" in frames[3]


def test_watch_stops_on_ctrl_c_without_a_traceback(tmp_path):
    import signal
    import time

    _cell(tmp_path, "a-new")
    p = subprocess.Popen([sys.executable, "-m", "varscale.cli", "status", str(tmp_path), "--watch",
                          "--interval", "0.05"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "Ctrl-C stops" in p.stdout.readline() + p.stdout.readline()
        time.sleep(0.2)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0 and "Traceback" not in err, err


def test_watch_argument_checks(tmp_path, capsys):
    _cell(tmp_path, "a-new")
    assert status_cli.main([str(tmp_path), "--watch", "--json"]) == 2
    assert status_cli.main([str(tmp_path), "--watch", "--interval", "0"]) == 2
    assert "--interval must be > 0" in capsys.readouterr().err
