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
    from varscale.grid.launch import build_parser

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
