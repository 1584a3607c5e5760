"""The ``varscale`` dispatcher: every registered command resolves, unknown names get a hint,
and a torch-free command loads no torch."""
from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from varscale.cli import COMMANDS, main

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_a_main(name):
    module, help_line = COMMANDS[name]
    assert callable(importlib.import_module(module).main) and help_line


def test_unknown_command_suggests_the_nearest(capsys):
    assert main(["stauts"]) == 2
    assert "did you mean 'status'?" in capsys.readouterr().err


def test_no_command_prints_usage(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)


def test_validate_loads_no_torch():
    code = ("import sys\n"
            "from varscale.cli import main\n"
            f"assert main(['validate', {str(ROOT / 'runs' / 'ci-tiny')!r}]) == 0\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'deepspeed')]\n"
            "assert not bad, bad[:5]\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr


def test_python_m_varscale_cli_runs_the_dispatcher():
    r = subprocess.run([sys.executable, "-m", "varscale.cli", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and "usage: varscale <command>" in r.stdout


def test_only_the_cli_layer_parses_a_command_line():
    """Library modules do their work through functions; argparse lives in varscale/cli/ (and in
    the cell worker, an internal entry point the executors start)."""
    from pathlib import Path

    pkg = Path(__file__).resolve().parents[1] / "varscale"
    allowed = {pkg / "grid" / "executors" / "worker.py"}
    offenders = [str(p.relative_to(pkg)) for p in pkg.rglob("*.py")
                 if "import argparse" in p.read_text() and p not in allowed and "cli" not in p.relative_to(pkg).parts]
    assert offenders == []
