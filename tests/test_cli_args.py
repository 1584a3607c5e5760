"""Bad arguments and damaged study files: every command says one sentence and exits 2 before
any work, never a traceback; ``--help`` shows each option's default; ``varscale --version``."""
from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import varscale
from varscale.cli import COMMANDS, main

ROOT = Path(__file__).resolve().parents[1]


def _study(root: Path, cells: int = 1) -> tuple[Path, str]:
    """ci-tiny with the config.json of its first ``cells`` cells (no tokenizer, no checkpoint)."""
    from varscale.config import load_study
    from varscale.grid.cells import plan_cells, write_cell

    d = root / "ci-tiny"
    d.mkdir(parents=True)
    shutil.copy(ROOT / "runs" / "ci-tiny" / "study.yaml", d / "study.yaml")
    planned = plan_cells(load_study(d), d)
    for c in planned[:cells]:
        write_cell(d, c)
    return d, planned[0].run_id


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return _study(tmp_path_factory.mktemp("args"))


def _cases(d: Path, rid: str, tmp: Path) -> dict[str, tuple[list[str], str]]:
    """id -> (argv, a phrase of the one-line error)."""
    nope, empty = tmp / "nope", tmp / "empty"  # empty: a folder that is no study (made by the test)
    return {
        "validate-no-folder": (["validate", str(nope)], "no study folder"),
        "validate-no-yaml": (["validate", str(empty)], "no study.yaml"),
        "plan-threads": (["plan", str(d), "--threads", "0", "--no-write"], "--threads must be > 0"),
        "run-no-folder": (["run", str(nope)], "no study folder"),
        "run-parallel": (["run", str(d), "--parallel", "0"], "--parallel must be > 0"),
        "status-no-folder": (["status", str(nope)], "no study folder"),
        "tokenizer-no-folder": (["tokenizer", "train", str(nope)], "no study folder"),
        "tokenize-batch": (["tokenize", str(d), "--batch-size", "0"], "--batch-size must be > 0"),
        "train-no-cell": (["train", str(nope)], "no config.json"),
        "fit-no-study": (["fit", str(empty)], "not a study folder"),
        "fit-n-boot": (["fit", str(d), "--n-boot", "-1"], "--n-boot must be >= 0"),
        "check-no-folder": (["check", str(nope)], "no study folder"),
        "check-no-predictions": (["check", str(d)], "--predict-from"),
        "check-pilot": (["check", str(d), "--pilot", str(nope)], "no study folder"),
        "figures-no-study": (["figures", str(empty)], "not a study folder"),
        "figures-format": (["figures", str(d), "--formats", "jpgx"], "unknown format jpgx"),
        "sample-classes": (["sample", str(d), "--cell", rid, "--classes", "42"], "the study has 4 classes"),
        "sample-cell": (["sample", str(d), "--cell", "nope"], f"the cells are: {rid}"),
        "sample-step": (["sample", str(d), "--cell", rid, "--step", "7"], "no checkpoint at that step"),
        "edit-val-index": (["edit", str(d), "--cell", rid, "--val-index", "99999"], "held-out split has 64 images"),
        "edit-cell": (["edit", str(d), "--cell", "nope"], f"the cells are: {rid}"),
        "edit-box": (["edit", str(d), "--cell", rid, "--box", "0.75", "0.75", "0.25", "0.25"], "the box is empty"),
        "edit-label": (["edit", str(d), "--cell", rid, "--label", "4"], "the study has 4 classes"),
        "quality-no-folder": (["quality", str(nope)], "no study folder"),
        "quality-cell": (["quality", str(d), "--cell", "nope"], "no cell nope"),
        "doctor-no-folder": (["doctor", str(nope)], "no study folder"),
        "predict-no-folder": (["predict", str(nope), "--depth", "2", "--tokens", "1e6"], "no study folder"),
        "predict-no-budget": (["predict", str(d), "--depth", "2"], "a size (--depth or --params) and a budget"),
        "allocate-metric": (["allocate", str(d), "--flops", "1e9", "--metric", "loss"], "valid: L_last"),
        "allocate-flops": (["allocate", str(d), "--flops", "-1"], "--flops must be > 0"),
        "import-no-source": (["import", str(nope), str(tmp / "new")], "no such file or folder"),
        "import-not-empty": (["import", str(d / "study.yaml"), str(d)], "exists and is not empty"),
    }


CASES = sorted(_cases(Path("."), "x", Path(".")))


def test_every_command_has_a_bad_argument_case():
    assert {c.split("-")[0] for c in CASES} == set(COMMANDS)


@pytest.mark.parametrize("case", CASES)
def test_bad_argument_is_one_sentence_and_exit_2(case, study, tmp_path):
    d, rid = study
    (tmp_path / "empty").mkdir()
    argv, phrase = _cases(d, rid, tmp_path)[case]
    r = subprocess.run([sys.executable, "-m", "varscale.cli", *argv], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"varscale {argv[0]}: "), r.stderr
    assert phrase in lines[0], lines[0]
    assert r.stdout == ""
    # checked before any work: nothing written
    assert not (d / "samples").exists() and not (d / "report").exists() and not (d / "tokenizer").exists()
    assert not (tmp_path / "empty" / "report").exists()


def test_unknown_cell_lists_the_first_few_and_a_count(tmp_path, capsys):
    d, rid = _study(tmp_path, cells=4)
    extra = [f"d9-x-s{i}" for i in range(8)]
    for r in extra:  # config.json is all an id needs to be a cell here
        (d / "cells" / r).mkdir()
        (d / "cells" / r / "config.json").write_text("{}")
    assert main(["sample", str(d), "--cell", "d1-nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert "... (and 4 more)" in err and len(err.splitlines()) == 1


def test_typo_in_a_cell_id_suggests_the_nearest(study, capsys):
    d, rid = study
    assert main(["edit", str(d), "--cell", rid[:-1] + "z"]) == 2
    assert f"did you mean {rid}?" in capsys.readouterr().err


# --------------------------------------------------------------------------- damaged files

DAMAGE = {
    "binary": b"\x89PNG\r\n\x1a\n\x00\xff\xfe",
    "empty": b"",
    "list": b"- 1\n- 2\n",
    "syntax": b"data: {kind: procedural\nmodel: [\n",
}
JSON_DAMAGE = {"binary": b"\x00\xff\xfe", "empty": b"", "list": b"[1, 2]", "truncated": b'{"run_id": "d1'}
STOPS = ["validate", "plan", "run", "status", "fit"]


def _one_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("kind", sorted(DAMAGE))
@pytest.mark.parametrize("cmd", STOPS)
def test_damaged_study_yaml_is_one_sentence_naming_it(cmd, kind, tmp_path, capsys):
    d, _ = _study(tmp_path)
    (d / "study.yaml").write_bytes(DAMAGE[kind])
    extra = ["--no-write"] if cmd == "plan" else ["--quiet", "--n-boot", "0"] if cmd == "fit" else []
    assert main([cmd, str(d), *extra]) == 2
    line = _one_line(capsys.readouterr().err)
    assert str(d / "study.yaml") in line and ("restore it" in line or "rewrite it" in line), line
    assert not (d / "report").exists() and not (d / "plan.json").exists()


@pytest.mark.parametrize("kind", sorted(JSON_DAMAGE))
@pytest.mark.parametrize("cmd", ["validate", "plan", "run"])
def test_damaged_cell_config_stops_the_commands_that_would_use_it(cmd, kind, tmp_path, capsys):
    d, rid = _study(tmp_path)
    cfg = d / "cells" / rid / "config.json"
    cfg.write_bytes(JSON_DAMAGE[kind])
    assert main([cmd, str(d), *(["--no-write"] if cmd == "plan" else [])]) == 2
    line = _one_line(capsys.readouterr().err)
    assert str(cfg) in line and "delete it" in line, line
    assert cfg.read_bytes() == JSON_DAMAGE[kind]  # nothing was changed
    assert not (d / "tokenizer").exists()


@pytest.mark.parametrize("kind", sorted(JSON_DAMAGE))
def test_status_leaves_out_a_cell_with_a_damaged_config_with_a_warning(kind, tmp_path, capsys):
    d, rid = _study(tmp_path, cells=2)
    cfg = d / "cells" / rid / "config.json"
    cfg.write_bytes(JSON_DAMAGE[kind])
    assert main(["status", str(d)]) == 0
    out, err = capsys.readouterr()
    line = _one_line(err)
    assert str(cfg) in line and "left out" in line
    assert rid not in out and "1 cells" in out.strip().splitlines()[-1]


@pytest.mark.parametrize("kind", sorted(JSON_DAMAGE))
def test_fit_warns_about_a_damaged_cell_config_and_uses_the_metrics(kind, tmp_path, capsys):
    from analysis import synthetic

    s = synthetic.make_study(tmp_path / "syn", depths=(2, 3, 4), budgets=(1e7,), n_evals=3)
    cfg = sorted((s / "cells").iterdir())[0] / "config.json"
    cfg.write_bytes(JSON_DAMAGE[kind])
    assert main(["fit", str(s), "--n-boot", "0", "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert str(cfg) in _one_line(err) and "warning" in err
    assert json.loads((s / "report" / "fits.json").read_text())["fits"]


def test_fit_stops_on_a_damaged_status_json(tmp_path, capsys):
    from analysis import synthetic

    s = synthetic.make_study(tmp_path / "syn", depths=(2, 3), budgets=(1e7,), n_evals=3)
    st = sorted((s / "cells").iterdir())[0] / "status.json"
    st.write_bytes(b"\x00\x01")
    assert main(["fit", str(s), "--quiet"]) == 2
    assert str(st) in _one_line(capsys.readouterr().err)
    assert not (s / "report").exists()


def test_run_stops_on_a_damaged_status_json_and_plan_json(tmp_path, capsys):
    d, rid = _study(tmp_path)
    (d / "plan.json").write_text("{")
    (d / "cells" / rid / "status.json").write_text("[]")
    assert main(["run", str(d)]) == 2
    line = _one_line(capsys.readouterr().err)
    assert str(d / "plan.json") in line and "1 more damaged file" in line


def test_train_says_a_damaged_cell_config_in_one_line(tmp_path, capsys):
    d, rid = _study(tmp_path)
    cfg = d / "cells" / rid / "config.json"
    cfg.write_text("[]")
    assert main(["train", str(cfg.parent)]) == 2
    assert str(cfg) in _one_line(capsys.readouterr().err)


def test_cell_config_load_names_the_damaged_file(tmp_path):
    from varscale.cell import CellConfig
    from varscale.config import ConfigError

    (tmp_path / "config.json").write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="not a text file") as e:
        CellConfig.load(tmp_path)
    assert str(tmp_path / "config.json") in str(e.value)
    (tmp_path / "config.json").unlink()
    with pytest.raises(FileNotFoundError):  # unchanged: a missing file is the callers' "no cell"
        CellConfig.load(tmp_path)


# --------------------------------------------------------------------------- --help, --version


def _parsers():
    """(name, parser) of every command, a subcommand's parsers too."""
    import argparse

    out = []
    for name, (module, _) in sorted(COMMANDS.items()):
        ap = importlib.import_module(module).build_parser()
        out.append((name, ap))
        for a in ap._actions:
            if isinstance(a, argparse._SubParsersAction):
                out += [(f"{name} {k}", p) for k, p in a.choices.items()]
    return out


@pytest.mark.parametrize("name,ap", _parsers(), ids=lambda x: x if isinstance(x, str) else "")
def test_every_option_has_a_help_line_and_its_default(name, ap):
    import argparse

    for a in ap._actions:
        if isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)) or a.help == argparse.SUPPRESS:
            continue
        assert a.help, f"{name}: {a.dest} has no help line"
        flag = isinstance(a, (argparse._StoreTrueAction, argparse._StoreFalseAction))
        if a.option_strings and not flag and not a.required and a.default is None:
            assert "default" in a.help, f"{name}: {a.option_strings[0]} does not say its default"
    positionals = [a for a in ap._actions if not a.option_strings and not isinstance(a, argparse._SubParsersAction)]
    for a in positionals:
        if a.dest == "study_dir":
            assert a.metavar == "STUDY"
    if name in ("train",):
        assert [a.metavar for a in positionals] == ["CELL"]
    elif name == "import":  # what to import, and the new study folder
        assert [a.dest for a in positionals] == ["source", "study_dir"]
    elif not any(isinstance(a, argparse._SubParsersAction) for a in ap._actions):
        assert [a.dest for a in positionals] == ["study_dir"], name


def test_help_shows_the_defaults():
    r = subprocess.run([sys.executable, "-m", "varscale.cli", "sample", "--help"], capture_output=True,
                       text=True, cwd=ROOT)
    text = " ".join(r.stdout.split())  # argparse wraps lines anywhere between words
    assert r.returncode == 0 and "STUDY" in text
    assert "samples per class (default: 4)" in text and "(default: 1.5)" in text
    from varscale.cli.fit import build_parser

    assert "(default: n_params)" in " ".join(build_parser().format_help().split())


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"varscale {varscale.__version__}"
    r = subprocess.run([sys.executable, "-m", "varscale.cli", "--version"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.strip() == f"varscale {varscale.__version__}"


# --------------------------------------------------------------------------- argparse's own errors

TYPE_ERRORS = {
    "fit": (["fit", "runs/ci-tiny", "--n-boot", "abc"], "argument --n-boot: invalid int value: 'abc'"),
    "figures": (["figures"], "the following arguments are required: STUDY"),
    "sample": (["sample", "runs/ci-tiny", "--cell", "x", "--n", "abc"], "argument --n: invalid int value"),
    "plan": (["plan", "runs/ci-tiny", "--threads", "x"], "argument --threads: invalid int value"),
    "tokenizer": (["tokenizer", "train"], "the following arguments are required: STUDY"),
    "quality": (["quality", "runs/ci-tiny", "--cfg", "high"], "argument --cfg: invalid float value"),
}


@pytest.mark.parametrize("cmd", sorted(COMMANDS))
def test_an_unknown_option_is_one_line_and_exit_2(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--no-such-option"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"varscale {cmd}"), err
    assert "-h' lists the options" in lines[0]


@pytest.mark.parametrize("case", sorted(TYPE_ERRORS))
def test_a_value_of_the_wrong_type_is_one_line_and_exit_2(case):
    argv, phrase = TYPE_ERRORS[case]
    r = subprocess.run([sys.executable, "-m", "varscale.cli", *argv], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    prog = "varscale tokenizer train" if case == "tokenizer" else f"varscale {case}"
    assert lines[0].startswith(prog + ": ") and phrase in lines[0], lines[0]
