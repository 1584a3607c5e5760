"""One model description: ``VARConfig`` (varscale.models.spec) against the built torch models.

Parameter counts, the tokenizer's count, memory shapes and a study's model family are all
computed from the config without torch; here they are compared with what the torch modules
hold, over presets, depths and options, and the torch-free modules are imported in a fresh
process that must not load torch.
"""
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from varscale.config import ArchConfig, load_study
from varscale.models import build_var, build_vqvae
from varscale.models.presets import PRESETS
from varscale.models.spec import VARConfig, param_counts, var_config, var_config_for, vqvae_param_count

ROOT = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)


def _built_counts(cfg: VARConfig) -> dict:
    return build_var(cfg, device="meta").param_counts()


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("depth", [1, 2, 5])
def test_param_counts_equal_the_built_model_per_preset(preset, depth):
    cfg = var_config(preset, depth)
    assert param_counts(cfg) == _built_counts(cfg)


@pytest.mark.parametrize("preset,depth,fields", [
    ("cpu32", 3, dict(shared_aln=True)),
    ("cpu32", 1, dict(shared_aln=True)),
    ("cpu32", 4, dict(attn_l2_norm=False)),
    ("cpu32", 4, dict(attn_l2_norm=False, shared_aln=True)),
    ("cpu64", 3, dict(head_dim=24, num_classes=7)),
    ("cpu64", 2, dict(mlp_ratio=3.3)),  # hidden = round(C * mlp_ratio), not a multiple of C
    ("tiny", 2, dict(patch_nums=(2, 3, 4), vocab_size=37, cvae=5)),  # a first scale of 4 tokens
    ("imagenet256", 16, dict(fused=False, class_dropout=0.0, drop_path_rate=0.0)),
    ("imagenet512", 2, dict(pos_init="sincos2d")),
])
def test_param_counts_equal_the_built_model_with_options(preset, depth, fields):
    cfg = var_config(preset, depth, **fields)
    assert param_counts(cfg) == _built_counts(cfg)


@pytest.mark.parametrize("arch", [
    ArchConfig(), ArchConfig(preset="cpu64", head_dim=8, shared_aln=True, drop_path=False),
    ArchConfig(preset="tiny", attn_l2_norm=False, fused=False, class_dropout_in_eval=True),
])
def test_var_config_for_a_model_section(arch):
    cfg = var_config_for(arch, 3, 5)
    p = PRESETS[arch.preset]
    assert (cfg.head_dim, cfg.num_classes, cfg.patch_nums, cfg.vocab_size) == \
        (arch.head_dim or p.head_dim, 5, p.patch_nums, p.vocab_size)
    assert (cfg.shared_aln, cfg.attn_l2_norm, cfg.fused, cfg.class_dropout_in_eval) == \
        (arch.shared_aln, arch.attn_l2_norm, arch.fused, arch.class_dropout_in_eval)
    assert (cfg.max_drop_path == 0.0) == (not arch.drop_path)
    assert var_config_for(arch, 3).num_classes == p.num_classes
    var = build_var(cfg, device="meta")
    assert var.cfg is cfg and param_counts(cfg) == var.param_counts()


def test_build_var_from_a_config_takes_nothing_else():
    cfg = var_config("tiny", 2)
    with pytest.raises(TypeError):
        build_var(cfg, 3)
    with pytest.raises(TypeError):
        build_var(cfg, head_dim=4)
    with pytest.raises(TypeError):
        build_var("tiny")


def _preset_variants():
    for p in PRESETS.values():
        yield p
    c = PRESETS["cpu32"]
    yield dataclasses.replace(c, name="c-group", vae_norm="group")
    yield dataclasses.replace(c, name="c-noshare", share_quant_resi=0)
    yield dataclasses.replace(c, name="c-noresi", quant_resi=0.0)
    yield dataclasses.replace(c, name="c-3res", enc_res_blocks=3)
    yield dataclasses.replace(PRESETS["cpu32x8"], name="plain-share2", share_quant_resi=2)


@pytest.mark.parametrize("preset", list(_preset_variants()), ids=lambda p: p.name)
def test_vqvae_param_count_equals_the_built_tokenizer(preset):
    vae = build_vqvae(preset, device="meta")
    assert vqvae_param_count(preset) == sum(p.numel() for p in vae.parameters())


@pytest.mark.parametrize("preset,depth,fields", [("cpu32", 3, {}), ("cpu64", 2, dict(shared_aln=True)),
                                                 ("imagenet256", 16, dict(attn_l2_norm=False, fused=False))])
def test_memory_shape_of_a_config(preset, depth, fields):
    from varscale.models.memory import Shape

    cfg = var_config(preset, depth, **fields)
    s = Shape.of(cfg, preset)
    var, vae = build_var(cfg, device="meta"), build_vqvae(preset, device="meta")
    p = PRESETS[preset]
    assert s == Shape(depth=depth, width=depth * p.head_dim, heads=depth, seq_len=p.seq_len,
                      vocab_size=p.vocab_size, cvae=p.cvae, mlp_ratio=p.mlp_ratio,
                      n_params=var.param_counts()["n_params"],
                      tokenizer_params=sum(t.numel() for t in vae.parameters()),
                      attn_l2_norm=cfg.attn_l2_norm, fused=cfg.fused, shared_aln=cfg.shared_aln)
    assert Shape.of(cfg).tokenizer_params == 0


@pytest.mark.parametrize("study", ["default", "imagenet256-paper"])
def test_model_family_is_the_built_models(study):
    from varscale.grid.cells import flops_per_image
    from varscale.models.family import model_family

    cfg = load_study(ROOT / "runs" / study)
    fam = model_family(cfg, [3, 1, 2, 3])
    assert list(fam.columns) == ["depth", "n_params", "flops_per_token", "tokens_per_step"]
    assert list(fam["depth"]) == [1, 2, 3]
    L = PRESETS[cfg.model.preset].seq_len
    for r in fam.itertuples():
        var = build_var(var_config_for(cfg.model, r.depth, cfg.data.num_classes), device="meta")
        assert r.n_params == var.param_counts()["n_params"]
        assert r.flops_per_token == flops_per_image(cfg.model.arch(), r.depth, cfg.data.num_classes) / L
        assert r.tokens_per_step == cfg.training.batch_size * L
    assert model_family(cfg, []).empty


def test_model_descriptions_import_without_torch():
    code = ("import sys\n"
            "import varscale.models, varscale.models.spec, varscale.models.flops, varscale.models.memory\n"
            "import varscale.models.family, varscale.models.presets\n"
            "bad = [m for m in sys.modules if m.split('.')[0] == 'torch']\n"
            "assert not bad, bad\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
