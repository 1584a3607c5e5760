"""Cell planning: budgets -> steps, evaluation steps, stable run ids, config files."""
import dataclasses
import json
import math
import shutil
from pathlib import Path

import pytest

from varscale.cell import CellConfig
from varscale.config import ArchConfig, ConfigError, DataConfig, TrainingConfig, from_dict, load_study
from varscale.grid.cells import PlanError, budget_tag, eval_steps, plan_cells, same_cell, write_cell

ROOT = Path(__file__).resolve().parents[1]
OLD_CELLS = sorted((ROOT / "tests" / "data" / "old_cells").glob("*.json"))


def _cfg(**sections):
    raw = {"name": "t", "model": {"preset": "cpu32", "depths": [1, 2, 4]},
           "budgets": {"values": [1e12, 1e13]}, "seeds": [0, 1]}
    for k, v in sections.items():
        raw.setdefault(k, {}).update(v) if isinstance(v, dict) else raw.__setitem__(k, v)
    return from_dict(raw)


def test_grid_and_flop_budget_steps(tmp_path):
    cfg = _cfg()
    cells = plan_cells(cfg, tmp_path)
    assert len(cells) == 3 * 2 * 2
    assert len({c.run_id for c in cells}) == len(cells)
    for c in cells:
        assert c.flops_per_step == c.flops_per_image * cfg.training.batch_size
        assert c.total_steps == math.floor(c.budget_value / c.flops_per_step)
        assert c.budget_flops == c.budget_value
        assert c.eval_steps[-1] == c.total_steps and c.eval_steps[0] >= cfg.evaluation.min_step
        assert len(c.eval_steps) <= cfg.evaluation.num_evals
        assert c.eval_steps == sorted(set(c.eval_steps))
        assert c.checkpoint_steps[-1] == c.total_steps
        assert c.run_id.startswith(f"d{c.depth}-{budget_tag('flops', c.budget_value)}-s{c.seed}-")
    deeper = {c.depth: c.flops_per_image for c in cells}
    assert deeper[1] < deeper[2] < deeper[4]


def test_flops_per_image_matches_model_counter():
    from varscale.models import flops, var_config

    c = plan_cells(_cfg(), "/x")[0]
    assert c.flops_per_image == flops.var_train_flops(var_config("cpu32", c.depth, num_classes=10))


def test_run_ids_are_stable_and_ignore_paths_and_execution(tmp_path):
    a = plan_cells(_cfg(), tmp_path / "a")
    b = plan_cells(_cfg(execution={"threads": 2}), tmp_path / "b")
    assert [c.run_id for c in a] == [c.run_id for c in b]
    c = plan_cells(_cfg(training={"base_lr": 2e-4}), tmp_path)
    assert not {x.run_id for x in a} & {x.run_id for x in c}


def test_token_budget_rounds_up():
    cfg = _cfg(budgets={"unit": "tokens", "values": [1e6]})
    for c in plan_cells(cfg, "/x"):
        assert c.total_steps == math.ceil(1e6 / (64 * 30))
        assert c.budget_tokens == 1e6 and c.run_id.startswith(f"d{c.depth}-t1e6-")
        assert c.budget_flops == pytest.approx(1e6 / 30 * c.flops_per_image)


def test_budget_too_small_is_an_error_naming_depth_and_budget():
    cfg = _cfg(budgets={"values": [1e9, 1e13]})
    with pytest.raises(PlanError) as e:
        plan_cells(cfg, "/x")
    msg = str(e.value)
    assert "depth 4" in msg and "1e+09" in msg and "min_step" in msg


def test_depths_per_budget():
    cfg = _cfg(budgets={"values": [1e12, 1e13], "depths_per_budget": {"1e13": [4]}})
    cells = plan_cells(cfg, "/x")
    assert sorted({c.depth for c in cells if c.budget_value == 1e13}) == [4]
    assert sorted({c.depth for c in cells if c.budget_value == 1e12}) == [1, 2, 4]


def test_eval_steps_log_spaced():
    assert eval_steps(1000, 10, 3) == [10, 100, 1000]
    assert eval_steps(12, 10, 8) == [10, 11, 12]
    assert eval_steps(5, 10, 8) == [5]
    assert eval_steps(50, 10, 1) == [50]


def test_json_round_trip_and_write_cell(tmp_path):
    cells = plan_cells(_cfg(), tmp_path)
    c = cells[0]
    again = CellConfig.from_dict(json.loads(json.dumps(c.to_dict())))
    assert again == c
    p = write_cell(tmp_path, c)
    assert p == tmp_path / "cells" / c.run_id / "config.json"
    assert CellConfig.load(p.parent) == c
    write_cell(tmp_path, c)  # same config: fine
    other = CellConfig.from_dict({**c.to_dict(), "total_steps": c.total_steps + 1})
    with pytest.raises(PlanError, match="different config"):
        write_cell(tmp_path, other)
    assert CellConfig.load(p.parent) == c


def test_a_cell_reads_the_study_folder_it_sits_in(tmp_path):
    """study_dir comes from <study>/cells/<run_id>/, not from config.json; the run id and hash stay.
    A cell folder laid out otherwise keeps the written path."""
    from varscale.cell import names_other_study

    c = plan_cells(_cfg(), tmp_path / "a")[0]
    write_cell(tmp_path / "a", c)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    moved = CellConfig.load(tmp_path / "b" / "cells" / c.run_id)
    assert moved.study_dir == str(tmp_path / "b") and CellConfig.load(tmp_path / "a" / "cells" / c.run_id) == c
    assert moved.run_id == c.run_id and moved.hash() == c.hash() == c.run_id.rsplit("-", 1)[1]
    assert json.loads((tmp_path / "b" / "cells" / c.run_id / "config.json").read_text())["study_dir"] == str(tmp_path / "a")
    shutil.copytree(tmp_path / "a" / "cells" / c.run_id, tmp_path / "elsewhere")  # not <study>/cells/<run_id>
    assert CellConfig.load(tmp_path / "elsewhere").study_dir == str(tmp_path / "a")
    shutil.copytree(tmp_path / "a" / "cells" / c.run_id, tmp_path / "b" / "cells" / "renamed")
    assert CellConfig.load(tmp_path / "b" / "cells" / "renamed").study_dir == str(tmp_path / "a")
    # relative to the working directory the study was planned from: its trailing folders
    assert not names_other_study(str(tmp_path / "a"), tmp_path / "a")
    assert names_other_study(str(tmp_path / "a"), tmp_path / "b")
    assert not names_other_study("runs/x", "/somewhere/runs/x") and names_other_study("runs/x", "/somewhere/runs/y")


def test_study_config_of_a_cell_is_loadable():
    c = plan_cells(_cfg(), "/x")[0]
    s = c.study_config()
    assert s.model.preset == "cpu32" and s.training.batch_size == c.batch_size


def test_wsd_design_branches_off_one_stable_run_per_depth():
    cfg = _cfg(budgets={"values": [1e12, 1e13], "design": "wsd", "wsd_decay_frac": 0.2}, seeds=[0])
    cells = plan_cells(cfg, "/x")
    stable = [c for c in cells if c.branch_from is None]
    branches = [c for c in cells if c.branch_from is not None]
    assert len(stable) == 3 and len(branches) == 6
    by_id = {c.run_id: c for c in stable}
    for b in branches:
        s = by_id[b.branch_from]
        assert s.depth == b.depth and b.schedule == "wsd"
        assert b.branch_step + b.decay_steps == b.total_steps
        assert b.branch_step in s.keep_steps and b.branch_step in s.checkpoint_steps
        assert s.total_steps == max(x.branch_step for x in branches if x.branch_from == s.run_id)


def test_cell_config_round_trips_into_typed_sections(tmp_path):
    c = plan_cells(_cfg(training={"log_every": 7}), tmp_path)[0]
    write_cell(tmp_path, c)
    again = CellConfig.load(tmp_path / "cells" / c.run_id)
    assert again == c and again.hash() == c.hash()
    assert isinstance(again.model, ArchConfig) and isinstance(again.training, TrainingConfig)
    assert isinstance(again.data, DataConfig) and again.data.options.train_images == 60000
    assert again.training.log_every == 7 and again.training.betas == (0.9, 0.95)
    assert "depths" not in again.to_dict()["model"]


@pytest.mark.parametrize("key, path", [
    (("training", "log_evry"), "training.log_evry: unknown key 'log_evry' (did you mean 'log_every'?)"),
    (("execution", "slurm", "nodez"), "execution.slurm.nodez: unknown key"),
    (("data", "train_imgs"), "data.train_imgs: unknown key"),
    (("total_step",), "total_step: unknown key 'total_step' (did you mean 'total_steps'?)"),
])
def test_unknown_key_in_cell_config_names_its_path(tmp_path, key, path):
    c = plan_cells(_cfg(), tmp_path)[0]
    d = c.to_dict()
    node = d
    for k in key[:-1]:
        node = node[k]
    node[key[-1]] = 1
    cell_dir = tmp_path / "cells" / c.run_id
    cell_dir.mkdir(parents=True)
    (cell_dir / "config.json").write_text(json.dumps(d))
    with pytest.raises(ConfigError) as e:
        CellConfig.load(cell_dir)
    assert any(x.startswith(path) for x in e.value.errors), e.value.errors
    assert "invalid cell config" in str(e.value) and "config.json" in str(e.value)
    with pytest.raises(PlanError, match="cannot read"):  # write_cell will not overwrite it either
        write_cell(tmp_path, c)


def test_wrong_type_in_cell_config_names_its_path():
    d = plan_cells(_cfg(), "/x")[0].to_dict()
    d["training"]["batch_size"] = "big"
    with pytest.raises(ConfigError, match="training.batch_size: expected int"):
        CellConfig.from_dict(d)


@pytest.mark.parametrize("old", OLD_CELLS, ids=[p.stem for p in OLD_CELLS])
def test_old_cell_config_files_load_and_match_a_replan(old, tmp_path):
    """config.json files written before the sections were typed (they carry the removed
    options and the other dataset kind's keys) load, and a re-plan finds them the same."""
    study, run_id = old.stem.split("--")
    study = study.replace("+", "/")  # v1+default: runs/v1/default
    raw = json.loads(old.read_text())
    cell = CellConfig.from_dict(raw)
    assert cell.run_id == run_id and cell.hash() == run_id.rsplit("-", 1)[1]
    planned = {c.run_id: c for c in plan_cells(load_study(ROOT / "runs" / study), raw["study_dir"])}
    # equal up to where and how it runs (the paper grid has since set a monitor section,
    # micro-batches and gpu_mem_gb)
    assert same_cell(cell, planned[run_id])
    cell_dir = tmp_path / "cells" / run_id
    cell_dir.mkdir(parents=True)
    (cell_dir / "config.json").write_text(old.read_text())
    write_cell(tmp_path, planned[run_id])  # the same cell: no PlanError
    # loaded from where it sits (its study_dir: tmp_path, not the path it was planned with)
    assert CellConfig.load(cell_dir) == dataclasses.replace(planned[run_id], study_dir=str(tmp_path))


def test_old_cell_config_with_a_removed_option_set_is_an_error():
    raw = json.loads(OLD_CELLS[0].read_text())
    raw["training"]["compile"] = True
    with pytest.raises(ConfigError, match="training.compile: option removed"):
        CellConfig.from_dict(raw)
