"""``varscale doctor``: every file of a study checked, damage named with what to do, nothing changed."""
from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from analysis import synthetic
from varscale.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _tree(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture
def study(tmp_path):
    """Synthetic parquet cells (analysis.synthetic, no torch) in a ci-tiny study folder, with one
    planned cell's config.json and LATEST.json, a token cache and a complete tokenizer file."""
    import torch

    from varscale.config import load_study, tokenizer_config_hash
    from varscale.grid.cells import plan_cells, write_cell
    from varscale.tokenizer.cache import write_token_cache

    d = synthetic.make_study(tmp_path / "s", depths=(2, 3), budgets=(1e7,), n_evals=3)
    shutil.copy(ROOT / "runs" / "ci-tiny" / "study.yaml", d / "study.yaml")
    shutil.rmtree(d / "tokens")
    cfg = load_study(d)
    cell = plan_cells(cfg, d)[0]
    write_cell(d, cell)
    ck = d / "cells" / cell.run_id / "checkpoints"
    (ck / "step00000010").mkdir(parents=True)
    (ck / "LATEST.json").write_text(json.dumps({"step": 10, "tag": "step00000010", "tags": ["step00000010"]}))
    rng = np.random.default_rng(0)
    write_token_cache(d / "tokens", train=(rng.integers(0, 64, (8, 5)), np.zeros(8)),
                      val=(rng.integers(0, 64, (4, 5)), np.zeros(4)), patch_nums=[1, 2], vocab_size=64,
                      tokenizer_hash="t", data_hash=cfg.hash("data"))
    buf = io.BytesIO()
    torch.save({"state_dict": {"w": torch.zeros(2)}, "complete": True, "config_hash": tokenizer_config_hash(cfg)}, buf)
    (d / "tokenizer").mkdir()
    (d / "tokenizer" / "vqvae.pt").write_bytes(buf.getvalue())
    return d, cell.run_id


def test_a_healthy_study_exits_0_and_says_what_a_rerun_would_do(study, capsys):
    d, rid = study
    assert main(["doctor", str(d)]) == 0
    out = capsys.readouterr().out
    assert "damaged" not in out.replace("0 damaged", "")
    assert "all files readable" in out.splitlines()[-1] and "nothing was changed" in out
    assert f"cell {rid}: pending; a rerun resumes from its checkpoint at step 10" in out
    assert "planned cell(s) not started" in out  # ci-tiny plans 4 cells, one folder exists
    assert "stale" in out and "d2-t1e07-s0: no config.json" in out  # the synthetic cells have none


def test_a_truncated_part_and_a_bad_json_are_damage_and_nothing_changes(study, capsys):
    d, rid = study
    part = sorted((d / "cells" / "d2-t1e07-s0" / "metrics").glob("part-*.parquet"))[-1]
    part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])
    status = d / "cells" / "d3-t1e07-s0" / "status.json"
    status.write_text('{"state": "done", "step":')
    before = _tree(d)
    assert main(["doctor", str(d)]) == 1
    out = capsys.readouterr().out
    damaged = [ln for ln in out.splitlines() if ln.startswith("damaged")]
    assert len(damaged) == 2, out
    assert any(str(part) in ln and "unreadable by pyarrow" in ln for ln in damaged)
    assert any(str(status) in ln and "not JSON" in ln and "delete it" in ln for ln in damaged)
    assert "2 damaged" in out.splitlines()[-1]
    assert _tree(d) == before


def test_tokens_tokenizer_and_checkpoints_are_checked(study, capsys):
    d, rid = study
    val = d / "tokens" / "val_idx.npy"
    val.write_bytes(val.read_bytes()[:-6])  # fewer bytes than the header's shape: unreadable
    (d / "tokenizer" / "vqvae.pt").write_bytes(b"not a checkpoint")
    shutil.rmtree(d / "cells" / rid / "checkpoints" / "step00000010")
    cfg = d / "cells" / rid / "config.json"
    cfg.write_bytes(b"\xff\xfe")
    assert main(["doctor", str(d)]) == 1
    damaged = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("damaged")]
    text = "\n".join(damaged)
    assert str(val) in text and "vqvae.pt: torch.load fails" in text
    assert "LATEST.json: names checkpoint(s) step00000010" in text
    assert str(cfg) in text and "not a text file" in text


def test_stale_token_cache_and_plan(study, capsys):
    d, rid = study
    meta = json.loads((d / "tokens" / "meta.json").read_text())
    (d / "tokens" / "meta.json").write_text(json.dumps({**meta, "data_hash": "other"}))
    (d / "plan.json").write_text(json.dumps({"config_hash": "other", "cells": []}))
    assert main(["doctor", str(d)]) == 0
    stale = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("stale")]
    assert any("tokens: encoded from another data section" in ln or "another data section" in ln for ln in stale)
    assert any("plan.json: made from another study.yaml" in ln for ln in stale)


def test_a_flipped_byte_in_a_token_array_is_damage_and_an_old_cache_is_unverified(study, capsys):
    """The cache's checksums (meta.json) catch a changed value that header and shape checks pass;
    a cache written before checksums existed is a note ("no checksums"), not damage."""
    from varscale.tokenizer.cache import TokenCache, file_checksum

    d, _ = study
    meta_p, idx = d / "tokens" / "meta.json", d / "tokens" / "train_idx.npy"
    meta = json.loads(meta_p.read_text())
    assert meta["checksums"]["train_idx.npy"] == file_checksum(idx) == \
        "sha256:" + hashlib.sha256(idx.read_bytes()).hexdigest()
    assert sorted(meta["checksums"]) == ["train_idx.npy", "train_labels.npy", "val_idx.npy", "val_labels.npy"]
    assert main(["doctor", str(d)]) == 0
    out = capsys.readouterr().out
    assert "train_idx.npy" not in out and "checksum" not in out
    b = bytearray(idx.read_bytes())
    b[-3] ^= 0x01  # one token's value, inside the vocabulary still: the header and shape are intact
    idx.write_bytes(b)
    assert TokenCache(d / "tokens", "train").idx_NL.shape == (8, 5)  # the cheap checks pass it
    before = _tree(d)
    assert main(["doctor", str(d)]) == 1
    damaged = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("damaged")]
    assert len(damaged) == 1 and str(idx) in damaged[0] and "bytes changed since the cache was written" in damaged[0]
    assert _tree(d) == before
    meta_p.write_text(json.dumps({k: v for k, v in meta.items() if k != "checksums"}))  # an old cache
    assert main(["doctor", str(d)]) == 0
    out = capsys.readouterr().out
    assert "damaged" not in out.replace("0 damaged", "")
    notes = [ln for ln in out.splitlines() if ln.startswith("note")]
    assert len(notes) == 1 and "has no checksums" in notes[0] and "not verified" in notes[0]
