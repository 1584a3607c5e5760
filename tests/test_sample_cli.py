"""The sample / edit / quality commands on a study folder with (untrained) checkpoints."""
from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]


def _save(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(obj, buf)
    path.write_bytes(buf.getvalue())


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """ci-tiny with a tokenizer and one cell holding checkpoints at 20%, 60% and 100% of its steps."""
    from varscale.grid.cells import plan_cells, write_cell
    from varscale.config import load_study
    from varscale.models import build

    d = tmp_path_factory.mktemp("study") / "ci-tiny"
    d.mkdir()
    shutil.copy(ROOT / "runs" / "ci-tiny" / "study.yaml", d / "study.yaml")
    cfg = load_study(d)
    cell = plan_cells(cfg, d)[0]
    write_cell(d, cell)
    torch.manual_seed(0)
    vae, var = build(cfg.model.preset, cell.depth, num_classes=cell.num_classes)
    _save(d / "tokenizer" / "vqvae.pt", {"state_dict": vae.state_dict()})
    ck = d / "cells" / cell.run_id / "checkpoints"
    T = cell.total_steps
    steps = sorted({max(1, round(T * f)) for f in (0.2, 0.6, 1.0)})
    for s in steps:
        with torch.no_grad():
            var.head.weight.normal_(0, 0.3)  # each checkpoint differs
        _save(ck / f"step{s:08d}" / "weights.pt", var.state_dict())
    (ck / "LATEST.json").write_text(json.dumps({"step": steps[-1], "tag": f"step{steps[-1]:08d}"}))
    return d, cell, steps


def test_sample_cli_writes_grid_npy_and_is_reproducible(study):
    from varscale.cli.sample import main as main_sample

    d, cell, steps = study
    out = d / "samples" / cell.run_id
    assert main_sample([str(d), "--cell", cell.run_id, "--classes", "0", "2", "--n", "3", "--seed", "4",
                        "--top-k", "10"]) == 0
    stem = out / f"samples-step{steps[-1]:08d}-seed4"
    arr = np.load(stem.with_suffix(".npy"))
    assert arr.shape == (6, 16, 16, 3) and arr.dtype == np.uint8
    assert stem.with_suffix(".png").exists()
    meta = json.loads(stem.with_suffix(".json").read_text())
    assert meta["labels"] == [0, 0, 0, 2, 2, 2] and meta["step"] == steps[-1]
    main_sample([str(d), "--cell", cell.run_id, "--classes", "0", "2", "--n", "3", "--seed", "4", "--top-k", "10",
                 "--out", str(d / "again")])
    assert np.array_equal(np.load(d / "again" / stem.with_suffix(".npy").name), arr)


def test_sample_cli_fig7_writes_one_png_per_checkpoint(study):
    from varscale.cli.sample import main as main_sample

    d, cell, steps = study
    assert main_sample([str(d), "--cell", cell.run_id, "--fig7", "--seed", "1"]) == 0
    out = d / "samples" / cell.run_id
    for s in steps:
        assert (out / f"step-{s:08d}.png").exists()
    fig7 = json.loads((out / "fig7.json").read_text())
    assert sorted(fig7["fractions"].values()) == steps


def test_edit_cli_writes_source_mask_result(study):
    from PIL import Image

    from varscale.cli.edit import main as main_edit

    d, cell, steps = study
    out = d / "edit.png"
    assert main_edit([str(d), "--cell", cell.run_id, "--val-index", "0", "1", "--box", "0", "0", "0.5", "1",
                      "--out", str(out)]) == 0
    im = Image.open(out)
    assert im.size[0] > im.size[1]  # 3 columns (source | mask | result), 2 rows


def test_quality_cli_writes_rows(study):
    from varscale.cli.quality import main as main_quality
    from varscale.quality import read_quality

    d, cell, steps = study
    assert main_quality([str(d), "--cell", cell.run_id, "--all-steps", "--per-class", "4",
                         "--classifier-steps", "5"]) == 0
    assert (d / "quality" / "classifier.pt").exists()
    t = read_quality(d).to_pandas().sort_values("step")
    assert list(t["step"]) == steps
    assert (t["run_id"] == cell.run_id).all() and (t["depth"] == cell.depth).all()
    assert t["class_accuracy"].between(0, 1).all() and np.isfinite(t["frechet_distance"]).all()
    assert t["fid"].isna().all() and (t["n_params"] > 0).all()
    # a second run reuses the cached classifier and overwrites the same rows
    mtime = (d / "quality" / "classifier.pt").stat().st_mtime_ns
    main_quality([str(d), "--cell", cell.run_id, "--per-class", "4"])
    assert (d / "quality" / "classifier.pt").stat().st_mtime_ns == mtime
    assert len(read_quality(d)) == len(steps)
