"""The report's headline: one study-wide floor E per loss (token entropy, else Approach 3),
laws of L - E with intervals that carry E's uncertainty, the leave-largest-out error, the
best law per loss, and the fallbacks of a study too small for Approach 3."""
import copy
import json
import warnings

import numpy as np
import pytest

from analysis import synthetic
from analysis.fitting import fit_study
from analysis.render import format_headline, format_markdown, format_terminal
from analysis.results import write_report
from varscale.cli import fit as fit_cli

CONTRACT_ROW = {"metric", "short", "slice", "kind", "quantity", "fit", "fit_raw", "alpha", "alpha_ci",
                "r", "r_ci", "r_raw", "lolo"}


@pytest.fixture(scope="module")
def known(tmp_path_factory):
    """A study whose token entropies lie above every loss (as a real cache's unigram entropy
    does), so the floor must come from Approach 3; the law in N at each budget is a pure power
    law above the floor (B small), so L - E is a straight line in log-log."""
    law = synthetic.SyntheticLaw(B=1.0, run_noise=0.002, eval_noise=0.001)
    root = tmp_path_factory.mktemp("known") / "known"
    study = synthetic.make_study(root, depths=(1, 2, 3, 4, 6, 8), budgets=(1e7, 1e8, 1e9), law=law,
                                 entropy_shift=3.0)
    rep = fit_study(study, n_boot=40)
    write_report(rep, study, format_markdown(rep))
    return study, law, rep


def test_floor_recovers_the_known_E_within_its_interval(known):
    study, law, rep = known
    true = {"test_loss_last": law.floors()[-1], "test_loss_avg": law.true_avg(1e300, 1e300)}
    for m, E in true.items():
        fl = rep.floor[m]
        assert fl.source == "chinchilla" and fl.resolved
        assert fl.ci[0] <= E <= fl.ci[1]
        assert fl.E == pytest.approx(E, abs=0.05)
        assert rep.to_json()["floors"][m] == fl.E  # the old key holds the same number


def test_headline_rows_follow_the_contract(known):
    _, _, rep = known
    js = rep.to_json()
    rows = js["headline"]
    assert {(r.metric, r.slice) for r in rep.headline} == {(r["metric"], r["slice"]) for r in rows}
    for h in rep.headline:  # the typed rows point at their fits
        f, fraw = rep.fit_of(h), rep.fit_of(h, raw=True)
        assert f.metric == fraw.metric == h.metric and fraw.quantity == "raw" and f.quantity == h.quantity
        assert f.floor == (h.metric if h.quantity == "reducible" else None)
    assert {(r["metric"], r["slice"]) for r in rows} >= {("test_loss_last", "budget_tokens=1e+07"),
                                                          ("test_err_avg", "frontier (all evaluations)")}
    for r in rows:
        assert CONTRACT_ROW <= set(r)
        f, fraw = js["fits"][r["fit"]], js["fits"][r["fit_raw"]]
        assert f["form"] == fraw["form"] == "power" and fraw["metric"] == r["metric"]
        assert f["params"]["alpha"] == r["alpha"] and f["r"] == r["r"] and fraw["r"] == r["r_raw"]
        if r["metric"].startswith("test_loss"):
            assert r["quantity"] == "reducible"
            assert f["metric"] == f"{r['metric']} - {js['floor'][r['metric']]['E']:.4g}"  # version-1 readers
            assert f["of"] == r["metric"] and f["quantity"] == "reducible" and f["floor"] == r["metric"]
        else:
            assert r["quantity"] == "raw" and r["fit"] == r["fit_raw"]
        assert r["alpha_ci"][0] <= r["alpha"] <= r["alpha_ci"][1]
        assert set(r["lolo"]) == {"err", "held_out", "observed", "predicted", "E"}
    for r in rows:
        if r["kind"] == "N" and r["quantity"] == "reducible":
            assert r["r"] <= -0.999 and abs(r["lolo"]["err"]) < 0.01
            assert r["lolo"]["held_out"].startswith("d8-")


def test_best_law_and_each_held_out_run(known):
    _, _, rep = known
    for m in ("test_loss_last", "test_loss_avg"):
        b = rep.to_json()["best_law"][m]
        assert b["law"] in ("chinchilla", "saturating", "power (reducible)", "power (raw)")
        assert b["within_3pct"] and abs(b["err"]) <= 0.03
        assert abs(b["err"]) == min(abs(v["err"]) for v in b["laws"].values())
        ex = [e for e in rep.extrapolation if e.form == "chinchilla" and e.metric == m]
        assert len(ex) == 3 and len({e.run_id for e in ex}) == 3  # d8 at each budget, on its own
        assert len({e.values["observed"] for e in ex}) == 3


def test_reports_name_the_floor_and_fit_100_columns(known):
    study, _, rep = known
    md = (study / "report" / "fits.md").read_text()
    head = md.split("## Every fit")[0]
    assert "## Floor" in head and "## Headline" in head and "chinchilla" in head
    assert md.count("floor: L_last E = ") >= 3  # beside the headline, every-fit and extrapolation tables
    assert all(len(x) <= 100 for x in format_headline(rep).splitlines())
    js = json.loads((study / "report" / "fits.json").read_text())
    assert js["floor_rule"]["report"] == "fits" and "samples" not in js["floor"]["test_loss_last"]


def test_unresolved_floor_is_said(known):
    _, _, rep = known
    rep = copy.deepcopy(rep)
    rep.floor["test_loss_avg"].ci, rep.floor["test_loss_avg"].resolved = [1e-5, 4.3], False
    assert "floor not resolved" in format_headline(rep)
    assert "no: floor not resolved" in format_markdown(rep)


def test_too_small_for_approach3_falls_back(tmp_path):
    small = synthetic.make_study(tmp_path / "small", depths=(2, 3, 4), budgets=(1e7,), n_evals=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every warning becomes a note, none escapes
        rep = fit_study(small, n_boot=20)
    assert {d.source for d in rep.floor.values()} == {"token entropy"}
    assert "Approach 3 needs >= 6 finished runs with both N and D varying" in rep.notes
    assert "from token entropy" in format_terminal(rep)
    high = synthetic.make_study(tmp_path / "high", depths=(2, 3, 4), budgets=(1e7,), n_evals=3,
                                entropy_shift=3.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rep = fit_study(high, n_boot=20)
    assert rep.floor == {} and rep.floors() == {} and rep.floor_source == "none"
    assert all(r.quantity == "raw" for r in rep.headline) and rep.headline
    why = [n for n in rep.notes if n.startswith("L_last: no floor")]
    assert why and "not below every loss (a unigram entropy, not a floor)" in why[0] and "Approach 3 needs" in why[0]
    # the token entropy's warnings are said once, in the floor's description: no other note, no file:line tag
    assert not [n for n in rep.notes if "unigram entropy" in n and not n.startswith(("L_last", "L_avg"))]
    assert not any("Warning (" in n for n in rep.notes)
    assert "L_last: no floor (reported raw)" in format_headline(rep)


def test_alternative_floors_go_to_their_own_files(tmp_path):
    s = synthetic.make_study(tmp_path / "alt", depths=(2, 3, 4), budgets=(1e7,), n_evals=3)
    rd = s / "report"
    assert fit_cli.main([str(s), "--n-boot", "0", "--quiet"]) == 0
    default = (rd / "fits.json").read_bytes()
    assert fit_cli.main([str(s), "--n-boot", "0", "--quiet", "--floor-from", "chinchilla"]) == 0
    assert fit_cli.main([str(s), "--n-boot", "0", "--quiet", "--floor-last", "4.0"]) == 0
    assert fit_cli.main([str(s), "--n-boot", "0", "--quiet", "--no-floor"]) == 0
    assert (rd / "fits.json").read_bytes() == default
    for name, rule in (("chinchilla", "chinchilla"), ("hand", "auto"), ("none", "none")):
        js = json.loads((rd / f"fits-floor-{name}.json").read_text())
        assert js["floor_rule"]["report"] == f"fits-floor-{name}" and js["floor_rule"]["rule"] == rule
        assert (rd / f"fits-floor-{name}.md").exists()
    hand = json.loads((rd / "fits-floor-hand.json").read_text())
    assert hand["floor"]["test_loss_last"] == {"E": 4.0, "ci": None, "source": "hand", "detail": "given by hand",
                                               "resolved": True}
    assert hand["floor"]["test_loss_avg"]["source"] == "token entropy"
    assert np.isfinite(hand["headline"][0]["alpha"])
