"""Old studies keep working: every committed study's hashes and cell ids are pinned.

The values in ``tests/data/pinned_hashes.json`` were computed from the code that ran these
studies. A refactor or a new option that changes any of them would make an upgraded varscale
retrain a finished study's tokenizer, rebuild its token cache or re-run its cells; if a change
is meant to do that, it needs a migration, not a new pin.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PINS = json.loads((ROOT / "tests" / "data" / "pinned_hashes.json").read_text())


def test_every_committed_study_is_pinned():
    assert sorted(PINS) == sorted(p.parent.relative_to(ROOT / "runs").as_posix() for p in (ROOT / "runs").glob("**/study.yaml"))


@pytest.mark.parametrize("study", sorted(PINS))
def test_hashes_and_cell_ids_unchanged(study):
    from varscale.config import load_study
    from varscale.grid.cells import plan_cells
    from varscale.tokenizer.checkpoint import config_hash

    cfg = load_study(ROOT / "runs" / study)
    pin = PINS[study]
    assert cfg.hash() == pin["study_hash"]
    assert cfg.hash("data") == pin["data_hash"]  # half of the token cache's key
    assert config_hash(cfg) == pin["tokenizer_config_hash"]
    from varscale.quality import data_key  # a cached quality classifier's key

    assert data_key(cfg.data) == pin["quality_data_key"]
    assert [c.run_id for c in plan_cells(cfg, ROOT / "runs" / study)] == pin["run_ids"]
