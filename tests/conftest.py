"""Shared test fixtures.

Reference data lives in ``shared/data`` beside the repository (``../shared`` from the repo
root, as in CI's clean clone); tests may read it, the product never does.
"""
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VARSCALE_SHARED", ROOT.parent / "shared"))

# two cores are shared by the test process and the subprocesses it starts
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    d = SHARED / "data"
    if not d.is_dir():
        pytest.fail(f"reference data not found at {d} (set VARSCALE_SHARED)")
    return d
