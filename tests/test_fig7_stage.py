"""The figures stage of ``varscale run`` samples Fig. 7 itself (``varscale.grid.stages``,
``varscale.fig7``): one cell per depth, resumable, a failed cell a warning.

A ci-tiny study folder with untrained checkpoints and DONE files (no training); the
sampling is the real ``sample_cell``, the figures command a stub module. The real chain's
figures (Fig. 5, 6 and 7 in ``report/``) are checked by tests/test_launch_e2e.py.
"""
from __future__ import annotations

import io
import shutil
import sys
import types
from pathlib import Path

import pytest
import torch

from varscale import fig7
from varscale.grid.stages import stage_analysis
from varscale.schema import StudyLayout

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]


def _save(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(obj, buf)
    path.write_bytes(buf.getvalue())


@pytest.fixture
def study(tmp_path):
    """ci-tiny's four finished cells: each keeps checkpoints at 20/60/100% of its steps, but
    d1's larger budget only its last two (as a WSD decay branch does)."""
    from varscale.config import load_study
    from varscale.grid.cells import plan_cells, write_cell
    from varscale.models import build

    d = tmp_path / "ci-tiny"
    d.mkdir()
    shutil.copy(ROOT / "runs" / "ci-tiny" / "study.yaml", d / "study.yaml")
    cfg = load_study(d)
    cells = plan_cells(cfg, d)
    torch.manual_seed(0)
    for c in cells:
        write_cell(d, c)
        vae, var = build(cfg.model.preset, c.depth, num_classes=c.num_classes)
        T = c.total_steps
        late = c.depth == 1 and c.budget_flops == max(x.budget_flops for x in cells if x.depth == 1)
        steps = [T - 1, T] if late else sorted({max(1, round(T * f)) for f in (0.2, 0.6, 1.0)})
        for s in steps:
            _save(d / "cells" / c.run_id / "checkpoints" / f"step{s:08d}" / "weights.pt", var.state_dict())
        (d / "cells" / c.run_id / "DONE").write_text("done\n")
    _save(d / "tokenizer" / "vqvae.pt", {"state_dict": vae.state_dict()})
    by = {(c.depth, c.budget_flops): c.run_id for c in cells}
    small, large = min(b for _, b in by), max(b for _, b in by)
    return d, {"d1": by[(1, small)], "d2": by[(2, large)]}, [c.run_id for c in cells]


@pytest.fixture
def stub_figures(monkeypatch):
    """A figures module that records its calls (what `varscale figures` would draw)."""
    calls = []
    mod = types.ModuleType("stub_figures")
    mod.main = lambda argv: calls.append(list(argv)) or 0
    monkeypatch.setitem(sys.modules, "stub_figures", mod)
    return calls


def test_one_cell_per_depth_the_best_covered_then_the_largest_budget(study):
    d, chosen, ids = study
    cells = fig7.fig7_cells(StudyLayout.of(d), ids)
    # d1's larger budget keeps no snapshot at 20% / 60%: its smaller budget is shown
    assert [(c.depth, c.run_id) for c in cells] == [(1, chosen["d1"]), (2, chosen["d2"])]
    assert all(c.stale == "no samples yet" and c.classes is None for c in cells)
    assert all(fig7.covered(c.steps, c.total_steps) == 3 for c in cells)
    assert fig7.fig7_classes(4) is None and fig7.fig7_classes(1000) == [0, 111, 222, 333, 444, 555, 666, 777, 888, 999]


def test_figures_stage_samples_each_depth_once_then_skips(study, stub_figures, capsys):
    d, chosen, ids = study
    lay = StudyLayout.of(d)
    assert stage_analysis(lay, "figures", "stub_figures", ids) == (True, True)
    out = capsys.readouterr().out
    assert "sampling Fig. 7 (20/60/100% of training) for 2 run(s)" in out
    assert "Fig. 7 [1/2] d1" in out and "Fig. 7 [2/2] d2" in out and "2 of 2 run(s) sampled" in out
    assert len(stub_figures) == 1
    imgs = {p.parent.name for p in lay.fig7_pngs()}
    assert imgs == set(chosen.values()) and len(lay.fig7_pngs()) == 6
    assert "4 samples in" in lay.stage_log("figures").read_text()  # sample_cell's own lines
    assert fig7.pending(lay, ids) == []

    # nothing new: skipped, nothing sampled or drawn again
    assert stage_analysis(lay, "figures", "stub_figures", ids) == (True, False)
    out = capsys.readouterr().out
    assert "figures: up to date" in out and "sampling" not in out and len(stub_figures) == 1

    # one depth's samples gone: only that depth is sampled again, and the figures redrawn
    shutil.rmtree(lay.samples(chosen["d2"]))
    assert stage_analysis(lay, "figures", "stub_figures", ids) == (True, True)
    out = capsys.readouterr().out
    assert "for 1 run(s)" in out and f"d2 {chosen['d2']} (no samples yet)" in out and len(stub_figures) == 2


def test_a_failed_cell_is_a_warning_and_is_retried(study, stub_figures, capsys, monkeypatch):
    import varscale.sample as S

    d, chosen, ids = study
    lay = StudyLayout.of(d)
    real = S.sample_cell

    def flaky(study_dir, run_id, **kw):
        if run_id == chosen["d1"]:
            raise RuntimeError("out of memory")
        return real(study_dir, run_id, **kw)

    monkeypatch.setattr(S, "sample_cell", flaky)
    assert stage_analysis(lay, "figures", "stub_figures", ids) == (True, True)
    out = capsys.readouterr().out
    assert f"WARNING: Fig. 7 samples of {chosen['d1']} failed (RuntimeError: out of memory)" in out
    assert "1 of 2 run(s) sampled" in out and "figures: done" in out and len(stub_figures) == 1
    assert {p.parent.name for p in lay.fig7_pngs()} == {chosen["d2"]}
    assert "RuntimeError: out of memory" in lay.stage_log("figures").read_text()

    monkeypatch.setattr(S, "sample_cell", real)
    assert [c.run_id for c in fig7.pending(lay, ids)] == [chosen["d1"]]
    assert stage_analysis(lay, "figures", "stub_figures", ids) == (True, True)
    out = capsys.readouterr().out
    assert "for 1 run(s)" in out and "1 of 1 run(s) sampled" in out
    assert {p.parent.name for p in lay.fig7_pngs()} == set(chosen.values())


def test_samples_of_other_checkpoints_or_older_than_done_are_stale(study):
    d, chosen, ids = study
    lay = StudyLayout.of(d)
    from varscale.sample import sample_cell

    rid = chosen["d2"]
    sample_cell(d, rid, fig7=True, log=lambda m: None)
    steps = {c.run_id: c.steps for c in fig7.fig7_cells(lay, ids)}[rid]
    assert fig7.sample_problem(lay, rid, steps) is None
    assert fig7.sample_problem(lay, rid, {**steps, 0.2: steps[0.2] + 1}) == "samples of other checkpoints"
    import os

    done = lay.cell(rid).done
    t = (lay.samples(rid) / "fig7.json").stat().st_mtime_ns
    os.utime(done, ns=(t + 10**9, t + 10**9))  # the cell finished again after its samples
    assert fig7.sample_problem(lay, rid, steps) == "samples older than the cell's DONE"
