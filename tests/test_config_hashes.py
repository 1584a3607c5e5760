"""Hash participation is declared on each field: an option added later, at its default,
leaves every hash of every committed study unchanged by construction; set to another value
it changes exactly the hashes of what it affects."""
import dataclasses
import json
from pathlib import Path

import pytest

import varscale.config as C
import varscale.data as D
import varscale.grid.cells as G
from varscale.config import load_study, opt, tokenizer_config_hash
from varscale.models import presets

ROOT = Path(__file__).resolve().parents[1]
PINS = json.loads((ROOT / "tests" / "data" / "pinned_hashes.json").read_text())

# how a later option is declared: plainly, or with opt() and no hash= (both mean "when_set")
DECLARATIONS = {"plain": lambda d: d, "opt": lambda d: opt(d)}


def _sub(cls, decl, frozen=False, name="extra_option"):
    """``cls`` with one more field, ``extra_option: int = 0``, declared the default way."""
    return dataclasses.make_dataclass(cls.__name__, [(name, int, DECLARATIONS[decl](0))],
                                      bases=(cls,), frozen=frozen)


def _extended(obj, decl, value=0):
    Sub = _sub(type(obj), decl, frozen=type(obj).__dataclass_params__.frozen)
    vals = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.init}
    return Sub(**vals, extra_option=value)


def _hashes(cfg, study):
    return {"study": cfg.hash(), "data": cfg.hash("data"), "tokenizer": tokenizer_config_hash(cfg),
            "run_ids": [c.run_id for c in G.plan_cells(cfg, ROOT / "runs" / study)]}


def _pinned(study):
    p = PINS[study]
    return {"study": p["study_hash"], "data": p["data_hash"], "tokenizer": p["tokenizer_config_hash"],
            "run_ids": p["run_ids"]}


def _with_section(cfg, where, decl, value, monkeypatch):
    """``cfg`` with an extra field in the section at ``where`` (set to ``value``)."""
    r = dataclasses.replace
    if where == "study":
        return _extended(cfg, decl, value)
    if where == "model":  # a cell's model section is ArchConfig: the field goes there too
        ArchX = _sub(C.ArchConfig, decl)
        ModelX = dataclasses.make_dataclass("ModelConfig", [], bases=(C.ModelConfig, ArchX))
        monkeypatch.setattr(C, "ArchConfig", ArchX)
        vals = {f.name: getattr(cfg.model, f.name) for f in dataclasses.fields(cfg.model)}
        return r(cfg, model=ModelX(**vals, extra_option=value))
    if where == "execution.slurm":
        return r(cfg, execution=r(cfg.execution, slurm=_extended(cfg.execution.slurm, decl, value)))
    if where == "data.options":  # the active dataset kind's own keys
        return r(cfg, data=r(cfg.data, options=_extended(cfg.data.options, decl, value)))
    if where == "preset":
        p = presets.get_preset(cfg.model.preset)
        monkeypatch.setitem(presets.PRESETS, p.name, _extended(p, decl, value))
        return cfg
    return r(cfg, **{where: _extended(getattr(cfg, where), decl, value)})


# section -> the hashes a non-default value must change (the others must not move)
AFFECTS = {
    "study": {"study"},
    "data": {"study", "data", "tokenizer", "run_ids"},
    "data.options": {"study", "data", "tokenizer", "run_ids"},
    "tokenizer": {"study", "tokenizer", "run_ids"},
    "model": {"study", "run_ids"},
    "budgets": {"study"},
    "training": {"study", "run_ids"},
    "evaluation": {"study", "run_ids"},
    "execution": {"study"},
    "execution.slurm": {"study"},
    "preset": {"tokenizer"},
}


@pytest.mark.parametrize("decl", sorted(DECLARATIONS))
@pytest.mark.parametrize("where", sorted(AFFECTS))
def test_new_field_at_default_keeps_every_hash_and_set_changes_its_own(where, decl, monkeypatch):
    study = "v1/default"
    base = load_study(ROOT / "runs" / study)
    with monkeypatch.context() as m:
        assert _hashes(_with_section(base, where, decl, 0, m), study) == _pinned(study)
    with monkeypatch.context() as m:
        changed = _hashes(_with_section(base, where, decl, 1, m), study)
    moved = {k for k, v in changed.items() if v != _pinned(study)[k]}
    assert moved == AFFECTS[where]


@pytest.mark.parametrize("decl", sorted(DECLARATIONS))
def test_new_field_of_an_inactive_dataset_kind_keeps_every_hash(decl, monkeypatch):
    # the default study is procedural: a field added to the folder kind's keys, and a whole
    # new kind, change nothing; the ImageNet study (folder) is checked for the procedural kind
    FolderX = type("ImageFolder", (D.ImageFolder,), {"Config": _sub(D.ImageFolder.Config, decl, name="extra_f")})
    ProcX = type("ProceduralImages", (D.ProceduralImages,), {"Config": _sub(D.ProceduralImages.Config, decl, name="extra_p")})

    @dataclasses.dataclass
    class WebData:
        urls: str = ""
        shards: int = 8

    monkeypatch.setitem(D.DATASETS, "folder", FolderX)
    monkeypatch.setitem(D.DATASETS, "procedural", ProcX)
    monkeypatch.setitem(D.DATASETS, "web", type("Web", (), {"Config": WebData}))
    for study in ("v1/default", "imagenet256-paper"):
        assert _hashes(load_study(ROOT / "runs" / study), study) == _pinned(study)
    # kinds share one flat namespace: a key declared by two kinds is an error at load
    monkeypatch.setitem(D.DATASETS, "web2", type("Web2", (), {"Config": WebData}))
    with pytest.raises(C.ConfigError, match="data.urls: declared by data kind 'web2' and by 'web'"):
        load_study(ROOT / "runs" / "v1" / "default")


@pytest.mark.parametrize("decl", sorted(DECLARATIONS))
def test_new_cell_field_at_default_keeps_run_ids(decl, monkeypatch):
    monkeypatch.setattr(G, "CellConfig", _sub(G.CellConfig, decl))
    cells = G.plan_cells(load_study(ROOT / "runs" / "v1" / "default"), ROOT / "runs" / "v1" / "default")
    assert [c.run_id for c in cells] == PINS["v1/default"]["run_ids"]
    c = cells[0]
    c.extra_option = 1
    assert c.hash() != c.run_id.rsplit("-", 1)[1]


def test_hash_rules_are_declared_on_the_fields():
    f = {x.name: x for x in dataclasses.fields(C.TokenizerConfig)}
    assert C.field_rule(f["threads"], "id") == "always" and C.field_rule(f["threads"], "tokenizer") == "never"
    assert C.field_rule(f["ae_warmup_steps"], "id") == "when_set"
    plain = dataclasses.make_dataclass("X", [("b", int), ("a", int, 0)])
    fb, fa = dataclasses.fields(plain)
    assert C.field_rule(fb, "id") == "always"  # no default: nothing to compare with
    assert C.field_rule(fa, "id") == "when_set"
    with pytest.raises(ValueError, match="hash must be"):
        opt(0, hash="sometimes")


def test_removed_option_keeps_entering_the_hash_with_its_old_value():
    view = C.hash_view(C.TrainingConfig())
    assert view["compile"] is False and view["stream_fresh"] is False
    assert C.hash_view(C.TokenizerConfig(), "tokenizer")["perceptual_weight"] == 0.0
    assert "factor_levels" not in C.hash_view(C.DataConfig())  # it entered only when set
