"""fits.json in every shape varscale has written: ``Report.from_json`` / ``read_report`` load the
version-1 files in tests/data/fits_json (each written by an old commit's own code, see the
README there) into typed fields that hold what the file says, ``to_json`` keeps the file's
values and round-trips, a current report keeps every key a version-1 file had, and a file
from a newer varscale or not a report at all stops with one sentence."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from analysis import synthetic
from analysis.fitting import fit_study
from analysis.results import SCHEMA_VERSION, Report, ReportError, read_report, write_report

DATA = Path(__file__).parent / "data" / "fits_json"
FIXTURES = sorted(DATA.glob("v1-*.json"))
LAST_V1 = DATA / "v1-d51f789-tokens.json"  # the last commit before schema_version
METRICS = {"test_loss_last", "test_loss_avg", "test_err_last", "test_err_avg"}
ISOFLOP_LAWS = {"N_opt", "D_opt = C/(6 N_opt)"}  # Approach 2's fits are laws of N_opt and D_opt in C
# fits.json's floor_source before the per-loss "floor" entries existed -> FloorEntry.source
OLD_SOURCE = {"tokens/meta.json": "token entropy", "hand": "hand",
              "Chinchilla E over the finished runs": "chinchilla"}


def load(p: Path) -> dict:
    return json.loads(p.read_text())


def split_label(label: str) -> tuple[str, str | None]:
    """A version-1 metric label: ``"<metric> - <E:.4g>"`` for a reducible law, else the metric."""
    m = re.fullmatch(r"(test_(?:loss|err)_(?:last|avg)) - (\S+)", label)
    return (m.group(1), m.group(2)) if m else (label, None)


def one_sentence(msg: str) -> None:
    assert msg and "\n" not in msg and not re.search(r"[.!?]\s+[A-Z]", msg), msg


@pytest.fixture(params=FIXTURES, ids=[p.stem for p in FIXTURES])
def v1(request):
    p = request.param
    d = load(p)
    return p, d, Report.from_json(d, str(p))


# --------------------------------------------------------------------------- the fixtures


def test_fixtures_cover_every_version_1_shape():
    shapes = {}
    for p in FIXTURES:
        d = load(p)
        assert "schema_version" not in d and isinstance(d["fits"], list) and d["fits"], p.name
        shapes[p.name] = d
    assert len(shapes) >= 10

    def some(cond):
        return [n for n, d in shapes.items() if cond(d)]

    # before floor / headline / best_law / floor_rule (floors and floor_source only)
    assert some(lambda d: not {"floor", "headline", "best_law", "floor_rule"} & set(d))
    # the headline keys without allocation or damaged_parts
    assert some(lambda d: "headline" in d and not {"allocation", "damaged_parts"} & set(d))
    assert some(lambda d: "allocation" in d and "damaged_parts" not in d)
    assert some(lambda d: "damaged_parts" in d and "allocation" not in d)
    assert some(lambda d: {"allocation", "damaged_parts"} <= set(d))
    # the oldest frontier fits had no slice name; WSD studies' annealed frontier; IsoFLOP laws
    assert some(lambda d: any(f["x"].endswith("(frontier)") and f["group"] == "" for f in d["fits"]))
    assert some(lambda d: any(f["group"] == "annealed runs" for f in d["fits"]))
    assert some(lambda d: any(f["form"] == "isoflop" for f in d["fits"]))
    # every floor source, an Approach-3 floor with share_at_zero, no floor at all, a damaged part
    assert {d["floor_source"] for d in shapes.values()} >= set(OLD_SOURCE) | {"none"}
    assert some(lambda d: any("share_at_zero" in v for v in (d.get("floor") or {}).values()))
    assert some(lambda d: d.get("damaged_parts"))


# --------------------------------------------------------------------------- version 1 read


def test_v1_loads_from_file_and_dict(v1):
    p, d, rep = v1
    assert rep.schema_version == SCHEMA_VERSION
    assert read_report(p).to_json() == rep.to_json()
    assert len(rep.fits) == len(d["fits"]) and len(rep.extrapolation) == len(d.get("extrapolation", []))
    for k in ("study", "cells", "states", "rows", "budget_axis", "x", "compute", "n_boot", "notes"):
        assert getattr(rep, k) == d[k], k
    assert rep.damaged_parts == d.get("damaged_parts", [])


def test_v1_fits_typed(v1):
    _, d, rep = v1
    for fj, f in zip(d["fits"], rep.fits):
        metric, E = split_label(fj["metric"])
        assert f.form == fj["form"] and f.metric == metric
        assert f.metric in (ISOFLOP_LAWS if f.form == "isoflop" else METRICS), fj["metric"]
        if E is None:
            assert (f.quantity, f.floor) == ("raw", None), fj["metric"]
        else:
            assert f.quantity == "reducible" and f.floor == metric and f.floor in rep.floor, fj["metric"]
            assert f"{rep.E(f.floor):.4g}" == E
        assert (f.x, f.group, f.params, f.n, f.n_runs, f.r, f.n_boot) == (
            fj["x"], fj["group"], fj["params"], fj["n"], fj["n_runs"], fj.get("r"), fj["n_boot"])
        assert {k: list(v) for k, v in f.ci.items()} == {k: v for k, v in fj.get("ci", {}).items() if v is not None}
        assert f.warnings == fj.get("warnings", []) and f.extra == fj.get("extra", {})
        assert f.frontier == fj["x"].endswith("(frontier)")
    assert any(f.quantity == "reducible" for f in rep.fits) == bool(d["floors"])


def test_v1_floors(v1):
    _, d, rep = v1
    assert set(rep.floor) == set(d["floors"])
    for m, E in d["floors"].items():
        fl = rep.floor[m]
        assert fl.metric == m and fl.E == E
        if "floor" in d:
            fj = d["floor"][m]
            assert (fl.E, fl.source, fl.ci, fl.resolved) == (fj["E"], fj["source"], fj.get("ci"), fj.get("resolved"))
            assert fl.has_share == ("share_at_zero" in fj) and fl.share_at_zero == fj.get("share_at_zero")
        else:  # the oldest reports named one source for every floor
            assert fl.source == OLD_SOURCE[d["floor_source"]]
    assert rep.floor_source == d["floor_source"]
    if "floor_rule" in d:
        fr = d["floor_rule"]
        rule = rep.floor_rule
        assert (rule.rule, rule.hand, rule.report) == (fr["rule"], fr["hand"], fr["report"])


def test_v1_headline_best_law_allocation(v1):
    _, d, rep = v1
    assert len(rep.headline) == len(d.get("headline", []))
    for hj, h in zip(d.get("headline", []), rep.headline):
        f, fraw = rep.fit_of(h), rep.fit_of(h, raw=True)
        assert (h.metric, h.short, h.slice, h.kind, h.quantity) == (
            hj["metric"], hj["short"], hj["slice"], hj["kind"], hj["quantity"])
        assert f.metric == fraw.metric == h.metric
        assert f.quantity == h.quantity and fraw.quantity == "raw" and f.form == fraw.form == "power"
        assert h.quantity == ("reducible" if h.metric in rep.floor else "raw")
        if h.quantity == "reducible":
            assert f.floor == h.metric
        if h.kind == "C":
            assert f.frontier and h.slice == f"frontier ({f.group})"
        else:
            assert not f.frontier and h.slice == f.group
        assert (h.alpha, h.alpha_ci, h.r, h.r_ci, h.r_raw) == (
            hj["alpha"], hj.get("alpha_ci"), hj.get("r"), hj.get("r_ci"), hj.get("r_raw"))
        assert h.alpha == f.params["alpha"] and h.r_raw == fraw.r
        assert (h.lolo is None) == (not hj.get("lolo"))
        if h.lolo is not None:
            assert (h.lolo.err, h.lolo.held_out) == (hj["lolo"]["err"], hj["lolo"]["held_out"])
    assert {m: b.to_json() for m, b in rep.best_law.items()} == d.get("best_law", {})
    assert {m: a.to_json() for m, a in rep.allocation.items()} == d.get("allocation", {})
    assert [(i.metric, i.parabolas, i.warning) for i in rep.isoflop] == [
        (i["metric"], i["parabolas"], i.get("warning")) for i in d["isoflop"]]


def test_v1_extrapolation_typed(v1):
    _, d, rep = v1
    for ej, e in zip(d.get("extrapolation", []), rep.extrapolation):
        metric, E = split_label(ej["metric"])
        assert (e.form, e.metric, e.x, e.group) == (ej["form"], metric, ej["x"], ej["group"])
        assert e.quantity == ("raw" if E is None else "reducible")
        assert e.floor == (None if E is None else metric)
        assert e.rel_error == ej.get("rel_error") and e.run_id == ej.get("run_id")


def _diff(a, b, path=""):
    """Where ``b`` lacks a key of ``a`` or holds another value (a's keys only)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [x for k in a for x in (_diff(a[k], b[k], f"{path}/{k}") if k in b else [f"{path}/{k}: missing"])]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [x for i, (u, v) in enumerate(zip(a, b)) for x in _diff(u, v, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def test_v1_to_json_keeps_the_files_values(v1):
    _, d, rep = v1
    j = json.loads(json.dumps(rep.to_json()))
    # an IsoFLOP law's equation lists its params in dict order, and fits.json is written with
    # sorted keys, so a law read back from a file lists them alphabetically: same terms
    for fj, f in zip(d["fits"], j["fits"]):
        if fj["form"] == "isoflop":
            assert sorted(fj["equation"].split(", ")) == sorted(f["equation"].split(", "))
            f["equation"] = fj["equation"]
    assert _diff(d, j) == []


def test_v1_round_trip(v1):
    _, d, rep = v1
    j = rep.to_json()
    assert j["schema_version"] == SCHEMA_VERSION
    assert Report.from_json(j).to_json() == j
    assert Report.from_json(json.loads(json.dumps(j))).to_json() == j


# --------------------------------------------------------------------------- the current report


@pytest.fixture(scope="module")
def current(tmp_path_factory):
    study = synthetic.make_study(tmp_path_factory.mktemp("formats") / "s")
    return study, fit_study(study, n_boot=50)


def test_current_report_round_trips(current):
    study, rep = current
    j = rep.to_json()
    assert j["schema_version"] == SCHEMA_VERSION and j["headline"] and j["floor"]
    assert Report.from_json(j).to_json() == j
    assert Report.from_json(json.loads(json.dumps(j))).to_json() == j
    write_report(rep, study)
    assert read_report(study).to_json() == j


def test_current_report_keeps_every_version_1_key(current):
    _, rep = current
    j, old = rep.to_json(), load(LAST_V1)
    assert set(old) <= set(j)
    assert set(old["floor"]) == set(j["floor"])
    for m in old["floor"]:
        assert set(old["floor"][m]) <= set(j["floor"][m])
    assert set(old["headline"][0]) <= set(j["headline"][0])
    assert set(old["best_law"]) == set(j["best_law"])
    assert set(old["best_law"]["test_loss_last"]) <= set(j["best_law"]["test_loss_last"])
    assert set(old["allocation"]["test_loss_last"]) <= set(j["allocation"]["test_loss_last"])
    # the same study design: the same fit entries, each with every key it had
    by_key = {(f["form"], f["metric"], f["x"], f["group"]): f for f in j["fits"]}
    assert {(f["form"], f["metric"], f["x"], f["group"]) for f in old["fits"]} <= set(by_key)
    for f in old["fits"]:
        assert set(f) <= set(by_key[(f["form"], f["metric"], f["x"], f["group"])]), f["metric"]
    new_extra_keys = set().union(*(set(e) for e in j["extrapolation"]))
    assert set().union(*(set(e) for e in old["extrapolation"])) <= new_extra_keys


# --------------------------------------------------------------------------- not readable


@pytest.mark.parametrize("d", [{"schema_version": SCHEMA_VERSION + 1, "fits": []},
                               {"schema_version": SCHEMA_VERSION + 1, "study": "s"}])
def test_newer_schema_version_is_one_sentence(d, tmp_path):
    p = tmp_path / "fits.json"
    p.write_text(json.dumps(d))
    for call in (lambda: Report.from_json(d, str(p)), lambda: read_report(p)):
        with pytest.raises(ReportError) as e:
            call()
        one_sentence(str(e.value))
        assert str(p) in str(e.value)
        if "fits" in d:
            assert f"schema_version {SCHEMA_VERSION + 1}" in str(e.value)


@pytest.mark.parametrize("d", [{"study": "s", "floors": {}, "notes": []}, [], "fits"])
def test_not_a_report_is_one_sentence(d, tmp_path):
    p = tmp_path / "fits.json"
    p.write_text(json.dumps(d))
    for call in (lambda: Report.from_json(d, str(p)), lambda: read_report(p)):
        with pytest.raises(ReportError) as e:
            call()
        one_sentence(str(e.value))
        assert str(p) in str(e.value) and "fits" in str(e.value)
