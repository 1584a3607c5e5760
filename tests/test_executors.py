"""Executors: one registry by name, the same names in the study config and on the command
line, every registered class follows the protocol, and no import runs back to the launcher."""
from __future__ import annotations

import ast
import typing
from pathlib import Path

from varscale.grid.executors import EXECUTORS, Executor, Options, make_executor

ROOT = Path(__file__).resolve().parents[1]


def test_registry_names_equal_the_config_literal_and_the_cli_choices():
    from varscale.config import ExecutionConfig
    from varscale.cli.run import build_parser

    literal = typing.get_args(typing.get_type_hints(ExecutionConfig)["executor"])
    assert sorted(literal) == sorted(EXECUTORS)
    choices = build_parser()._option_string_actions["--executor"].choices
    assert list(choices) == list(EXECUTORS)
    assert all(cls.name == name for name, cls in EXECUTORS.items())


def test_every_executor_provides_the_protocol():
    members = [m for m in dir(Executor) if not m.startswith("_")] + ["name"]
    assert {"from_study", "slots", "describe", "prepare", "submit", "shutdown"} <= set(members)
    for name, cls in EXECUTORS.items():
        missing = [m for m in members if not hasattr(cls, m)]
        assert not missing, f"{name}: {missing}"


def test_make_executor_builds_local_from_the_study_and_names_unknown_ones(tmp_path):
    import pytest

    from varscale.config import load_study
    from varscale.schema import StudyLayout

    cfg = load_study(ROOT / "runs" / "ci-tiny")
    ex = make_executor("torchrun", cfg, StudyLayout.of(tmp_path), Options(parallel=2, threads=3, nproc=2))
    assert isinstance(ex, Executor) and ex.slots == 2 and "torchrun" in ex.describe()
    with pytest.raises(ValueError, match="unknown executor 'nope'.*local"):
        make_executor("nope", cfg, StudyLayout.of(tmp_path), Options())


def _imports(path: Path) -> set[str]:
    mods = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            mods.add(node.module)
            mods.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            mods.update(a.name for a in node.names)
    return mods


def test_no_import_runs_back_to_the_launcher():
    lower = [*(ROOT / "varscale" / "grid" / "executors").glob("*.py"),
             *(ROOT / "varscale" / "grid" / p for p in ("stages.py", "status.py", "progress.py", "lock.py"))]
    back = {str(p.relative_to(ROOT)): sorted(m for m in _imports(p) if m.startswith("varscale.grid.launch"))
            for p in lower}
    assert not any(back.values()), back


def test_an_executor_from_the_docs_runs_a_study(tmp_path, monkeypatch):
    """docs/extending.md's worked example, as written there, registered and run on a stub trainer."""
    import os
    import re
    import shutil
    import types

    from varscale.grid.cells import plan_cells, write_cell
    from varscale.config import load_study
    from varscale.grid import executors as X
    from varscale.grid.launch import run_cells
    from varscale.grid.progress import Progress
    from varscale.schema import StudyLayout

    text = (ROOT / "docs" / "extending.md").read_text()
    code = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "class NiceExecutor" in b)
    mod = types.ModuleType("nice_example")
    exec(compile(code, "docs/extending.md", "exec"), mod.__dict__)
    monkeypatch.setitem(X.EXECUTORS, "nice", mod.NiceExecutor)
    monkeypatch.setenv("VARSCALE_CELL_FN", "test_grid_stubcell:train_cell")
    monkeypatch.setenv("STUB_SLEEP", "0")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT / "tests"), str(ROOT), os.environ.get("PYTHONPATH", "")]))

    study = tmp_path / "s"
    study.mkdir()
    shutil.copy(ROOT / "runs" / "ci-tiny" / "study.yaml", study / "study.yaml")
    cfg, layout = load_study(study), StudyLayout.of(study)
    cells = plan_cells(cfg, study)
    for c in cells:
        write_cell(study, c)
    ex = make_executor("nice", cfg, layout, Options(threads=1))
    assert isinstance(ex, Executor)
    res = run_cells(layout, cells, ex, Progress("off"), poll_s=0.05)
    assert sorted(res.done) == sorted(c.run_id for c in cells) and not res.failed
    assert all(layout.cell(c.run_id).done.exists() for c in cells)
