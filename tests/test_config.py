"""Strict study-file loading: every bad input names its key path."""
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from varscale.config import ConfigError, from_dict, load_study

ROOT = Path(__file__).resolve().parents[1]


def _errors(raw):
    with pytest.raises(ConfigError) as ei:
        from_dict(raw)
    return ei.value.errors


def test_defaults_are_valid():
    cfg = from_dict({})
    assert cfg.model.preset == "cpu32"
    assert cfg.training.precision == "fp32"


def test_misspelt_key_names_key_path_and_valid_keys():
    (e,) = _errors({"training": {"batch_sise": 64}})
    assert "training.batch_sise" in e
    assert "did you mean 'batch_size'" in e
    assert "base_lr" in e and "zero_stage" in e  # the valid keys are listed


def test_misspelt_top_level_section():
    (e,) = _errors({"trainig": {}})
    assert "trainig" in e and "did you mean 'training'" in e


def test_wrong_type_names_path_and_expected_type():
    (e,) = _errors({"training": {"batch_size": "lots"}})
    assert e.startswith("training.batch_size: expected int")
    (e,) = _errors({"model": {"depths": [1, "two"]}})
    assert "model.depths[1]" in e and "expected int" in e
    (e,) = _errors({"training": {"precision": "fp16"}})
    assert "training.precision" in e and "'fp32'" in e


@pytest.mark.parametrize(
    "raw, needle",
    [
        ({"model": {"depths": [0, 2]}}, "model.depths[0]: depth must be >= 1"),
        ({"budgets": {"values": [1e12, -1.0]}}, "budgets.values[1]: budget must be > 0"),
        ({"budgets": {"values": {"from": 1e14, "to": 1e12}}}, "below 'from'"),
        ({"training": {"batch_size": 63}, "execution": {"nproc_per_node": 2}}, "not divisible by the world size 2"),
        ({"model": {"preset": "cpu33"}}, "did you mean 'cpu32'"),
        ({"data": {"resolution": 64}}, "does not match preset"),
        ({"data": {"factor_levels": 4}}, "data.factor_levels: option removed"),
        ({"training": {"compile": True}}, "training.compile: option removed"),
        ({"training": {"stream_fresh": True}}, "training.stream_fresh: option removed"),
        ({"data": {"root": "/x"}}, "data.root: used by data kind 'folder', not by 'procedural'"),
        ({"data": {"kind": "folder", "root": "/x", "train_images": 5}}, "data.train_images: used by data kind 'procedural'"),
        ({"data": {"kind": "folder"}}, "data.root: required when data.kind is 'folder'"),
        ({"data": {"kind": "folders"}}, "did you mean 'folder'"),
        ({"data": {"train_imgs": 5}}, "data.train_imgs: unknown key 'train_imgs' (did you mean 'train_images'?)"),
    ],
)
def test_impossible_values(raw, needle):
    errs = _errors(raw)
    assert any(needle in e for e in errs), errs


def test_non_increasing_patch_nums(monkeypatch):
    from varscale.models import presets

    bad = presets.Preset("bad", 32, (1, 3, 2), 64, 8, 16, (1, 2))
    monkeypatch.setitem(presets.PRESETS, "bad", bad)
    errs = _errors({"model": {"preset": "bad"}})
    assert any("strictly increasing" in e for e in errs)


def test_budget_range_expands_log_spaced():
    cfg = from_dict({"budgets": {"values": {"from": "1e12", "to": 1e14, "per_decade": 2}}})
    assert cfg.budget_values() == [1e12, 3.162e12, 1e13, 3.162e13, 1e14]


def test_yaml_scientific_notation_without_dot_is_a_float(tmp_path):
    # PyYAML's safe loader reads "1e12" as a string; the loader must accept it as float
    (tmp_path / "study.yaml").write_text("budgets:\n  values: [1e12, 3e12]\n")
    cfg = load_study(tmp_path)
    assert cfg.budget_values() == [1e12, 3e12]
    assert cfg.name == tmp_path.name


def test_safe_loader_rejects_python_tags(tmp_path):
    (tmp_path / "study.yaml").write_text("name: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ConfigError, match="YAML"):
        load_study(tmp_path)


def test_round_trip_to_dict():
    cfg = from_dict({"budgets": {"values": {"from": 1e12, "to": 1e13}}, "seeds": [0, 1]})
    again = from_dict(yaml.safe_load(yaml.safe_dump(cfg.to_dict())))
    assert again == cfg and again.hash() == cfg.hash()


def test_validate_cli_prints_errors_and_exit_code(tmp_path):
    (tmp_path / "study.yaml").write_text("training:\n  batch_sise: 3\n")
    p = subprocess.run([sys.executable, "-m", "varscale.cli", "validate", str(tmp_path)],
                       capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 2
    assert "training.batch_sise" in p.stderr


@pytest.mark.parametrize("study", sorted(p.parent.name for p in (ROOT / "runs").glob("*/study.yaml")))
def test_committed_studies_validate(study):
    load_study(ROOT / "runs" / study)


def test_removed_options_at_their_old_value_load_and_keep_the_hash():
    base = from_dict({})
    old = from_dict({"training": {"compile": False, "stream_fresh": False},
                     "tokenizer": {"perceptual_weight": 0.0, "adversarial_weight": 0.0},
                     "data": {"factor_levels": 0, "root": None, "resize_ratio": 1.125}})
    assert old == base and old.hash() == base.hash()
    assert "compile" not in old.to_dict()["training"]  # gone from the file format


def test_validate_piped_into_head_exits_quietly():
    # the reader is gone before varscale writes a byte, so its first write hits a closed pipe
    # (what `| head` does to a longer output); without the handling that ends in a traceback
    p = subprocess.Popen([sys.executable, "-m", "varscale.cli", "validate", str(ROOT / "runs" / "v1" / "default")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    p.stdout.close()
    err = p.stderr.read()
    assert p.wait() == 0
    assert "Traceback" not in err and "BrokenPipe" not in err


def test_each_section_checks_its_own_values_under_its_path():
    from varscale.config import BudgetRange, EvaluationConfig, ModelConfig, TrainingConfig

    assert TrainingConfig(batch_size=0).check("training") == ["training.batch_size: must be >= 1, got 0"]
    assert ModelConfig(depths=[]).check("m") == ["m.depths: needs at least one depth"]
    assert BudgetRange(2.0, 1.0).check("budgets.values") == ["budgets.values: 'to' (1.0) is below 'from' (2.0)"]
    assert EvaluationConfig().check("evaluation") == []


def test_value_errors_come_section_by_section_then_across_sections():
    errs = _errors({"monitor": {"backends": ["csv", "csv"]}, "seeds": [], "data": {"num_classes": 0},
                    "training": {"batch_size": 63, "base_lr": 0}, "execution": {"nproc_per_node": 2}})
    assert [e.split(":")[0] for e in errs] == ["data.num_classes", "training.base_lr", "monitor.backends",
                                               "seeds", "training.batch_size"]


def test_a_dataset_kind_without_a_check_loads(monkeypatch):
    import dataclasses

    import varscale.data as D

    @dataclasses.dataclass
    class WebData:
        urls: str = ""

    monkeypatch.setitem(D.DATASETS, "web", type("Web", (), {"Config": WebData}))
    assert from_dict({"data": {"kind": "web", "urls": "x"}}).data.options == WebData("x")
