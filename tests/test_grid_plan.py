"""``varscale plan``: every committed study plans; infeasible budgets are clear errors."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from varscale.cli import plan as plan_cli
from varscale.grid import plan as P

ROOT = Path(__file__).resolve().parents[1]
STUDIES = sorted(p.parent for p in (ROOT / "runs").glob("*/study.yaml"))


@pytest.mark.parametrize("study", STUDIES, ids=[p.name for p in STUDIES])
def test_plan_each_committed_study(study, tmp_path, capsys):
    # plan a copy: the committed folder stays clean, and nothing it names (ImageNet,
    # the official tokenizer checkpoint) needs to exist
    d = tmp_path / study.name
    d.mkdir()
    shutil.copy(study / "study.yaml", d / "study.yaml")
    assert plan_cli.main([str(d), "--flops-per-s", "1e12"]) == 0
    out = capsys.readouterr().out
    plan = json.loads((d / "plan.json").read_text())
    assert plan["cells"] and plan["totals"]["cells"] == len(plan["cells"])
    for c in plan["cells"]:
        assert c["run_id"] in out
        assert c["total_steps"] >= 1 and c["n_params"] > 0 and c["est_seconds"] > 0
    assert "designs: independent runs" in out and "warmup-stable-decay" in out


def test_paper_grid_sizes(tmp_path, capsys):
    d = tmp_path / "p"
    d.mkdir()
    shutil.copy(ROOT / "runs" / "imagenet256-paper" / "study.yaml", d / "study.yaml")
    assert plan_cli.main([str(d), "--json", "--no-write"]) == 0
    plan = json.loads(capsys.readouterr().out)
    by_depth = {c["depth"]: c for c in plan["cells"]}
    assert sorted(by_depth) == [6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 30]
    assert by_depth[16]["n_params"] == 310_283_520  # the official VAR-d16 count
    assert by_depth[30]["n_params"] == 2_010_020_356  # the official VAR-d30 count
    tokens_per_epoch = 1_281_167 * 680
    assert by_depth[16]["tokens"] == pytest.approx(200 * tokens_per_epoch, rel=1e-3)
    assert by_depth[30]["tokens"] == pytest.approx(350 * tokens_per_epoch, rel=1e-3)
    assert not (d / "plan.json").exists()


def _study(tmp_path: Path, **over) -> Path:
    raw = yaml.safe_load((ROOT / "runs" / "ci-tiny" / "study.yaml").read_text())
    for k, v in over.items():
        sec, key = k.split("__")
        raw[sec][key] = v
    d = tmp_path / "s"
    d.mkdir(exist_ok=True)
    (d / "study.yaml").write_text(yaml.safe_dump(raw))
    return d


def test_infeasible_budget_is_a_clear_error(tmp_path, capsys):
    d = _study(tmp_path, budgets__values=[1.0e6, 1.0e8])
    assert plan_cli.main([str(d)]) == 2
    err = capsys.readouterr().err
    assert "budget 1e+06 flops" in err and "min_step" in err
    assert "depth 1" in err and "depth 2" in err  # every infeasible cell, at once
    assert not (d / "plan.json").exists()


def test_invalid_study_is_reported(tmp_path, capsys):
    d = _study(tmp_path, model__depthz=[1])
    assert plan_cli.main([str(d)]) == 2
    assert "model.depthz" in capsys.readouterr().err


def test_log_range_seeds_and_wsd_costs(tmp_path, capsys):
    d = _study(tmp_path, budgets__values={"from": 1.0e8, "to": 1.0e9, "per_decade": 2},
               budgets__design="wsd", budgets__wsd_decay_frac=0.2)
    raw = yaml.safe_load((d / "study.yaml").read_text())
    raw["seeds"] = [0, 1]
    (d / "study.yaml").write_text(yaml.safe_dump(raw))
    assert plan_cli.main([str(d), "--flops-per-s", "1e9"]) == 0
    plan = json.loads((d / "plan.json").read_text())
    assert plan["budgets"] == [1e8, 3.162e8, 1e9]
    costs = plan["design_costs"]
    # three budgets: WSD costs about 1.2x the largest, the independent design the sum
    ind, wsd = costs["independent"], costs["wsd"]
    largest = sum(c["budget_flops"] for c in plan["cells"] if c["budget_value"] == 1e9 and c["branch_from"])
    assert wsd < ind
    assert largest < wsd <= 1.4 * largest
    assert plan["wsd_formula_flops"] == pytest.approx(largest * 1.4, rel=0.01)
    stable = [c for c in plan["cells"] if c["schedule"] == "wsd" and not c["branch_from"]]
    assert len(stable) == 2 * 2  # one per (depth, seed)
    assert "[this study: wsd]" in capsys.readouterr().out


def test_depths_per_budget(tmp_path):
    d = _study(tmp_path, budgets__depths_per_budget={"6.0e+7": [1], "2.0e+8": [1, 2]})
    assert plan_cli.main([str(d), "--no-write", "--flops-per-s", "1e9"]) == 0


def test_measured_throughput_is_used(tmp_path, capsys):
    d = _study(tmp_path)
    assert plan_cli.main([str(d), "--flops-per-s", "1e9"]) == 0
    plan = json.loads((d / "plan.json").read_text())
    c = plan["cells"][0]
    cell = d / "cells" / c["run_id"]
    cell.mkdir(parents=True)
    (cell / "config.json").write_text(json.dumps({"depth": c["depth"], "seq_len": 5,
                                                  "flops_per_image": c["flops_per_step"] // 16}))
    (cell / "status.json").write_text(json.dumps({"tokens_per_s": 1000.0}))
    capsys.readouterr()
    assert plan_cli.main([str(d)]) == 0
    out = capsys.readouterr().out
    assert "measured by this study's cells" in out
    plan = json.loads((d / "plan.json").read_text())
    rate = 1000.0 * (c["flops_per_step"] // 16) / 5
    assert plan["cells"][0]["est_seconds"] == pytest.approx(c["cost_flops"] / rate)


def test_param_count_from_the_config_matches_official():
    from varscale.models.spec import param_counts, var_config

    assert param_counts(var_config("imagenet256", 16))["n_params"] == 310_283_520
    assert param_counts(var_config("imagenet256", 30))["n_params"] == 2_010_020_356
