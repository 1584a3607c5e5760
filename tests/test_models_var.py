"""VAR transformer: exact parameter counts, official keys, block-causality, KV cache, switches."""
import json
from pathlib import Path

import pytest
import torch

from varscale.models import build, build_var, build_vqvae, load_official
from varscale.models.presets import PRESETS

from conftest import SHARED

KEYS = SHARED / "data" / "official_state_dict_keys.json"
torch.set_num_threads(1)


@pytest.mark.parametrize("depth,expected", [(16, 310_283_520), (30, 2_010_020_356)])
def test_official_param_counts_on_meta(depth, expected):
    var = build_var("imagenet256", depth, device="meta")
    counts = var.param_counts()
    assert counts["n_params"] == expected
    C = 64 * depth
    assert counts["n_params_blocks"] == depth * (18 * C * C + 14 * C + depth)


def test_build_meta_both():
    vae, var = build("imagenet256", 16, device="meta")
    assert next(var.parameters()).is_meta and next(vae.parameters()).is_meta


def _random_sd(shapes):
    g = torch.Generator().manual_seed(0)
    return {k: torch.randn(*s, generator=g) for k, s in shapes.items()}


def test_load_official_every_key_and_errors_name_keys():
    ref = json.loads(KEYS.read_text())
    vae_sd = _random_sd(ref["vqvae"])
    var_sd = _random_sd(ref["var_depth2"])
    vae, var = build("imagenet256", 2, device="meta")
    load_official(vae, var, vae_sd, var_sd)
    assert torch.equal(var.state_dict()["blocks.1.attn.mat_qkv.weight"], var_sd["blocks.1.attn.mat_qkv.weight"])
    assert torch.equal(vae.state_dict()["quantize.embedding.weight"], vae_sd["quantize.embedding.weight"])
    # missing key
    bad = dict(var_sd)
    bad.pop("blocks.0.ffn.fc1.bias")
    vae, var = build("imagenet256", 2, device="meta")
    with pytest.raises(ValueError, match="blocks.0.ffn.fc1.bias"):
        load_official(vae, var, None, bad)
    # misshapen key
    bad = dict(vae_sd)
    bad["quantize.quant_resi.qresi_ls.2.weight"] = torch.zeros(32, 32, 1, 1)
    with pytest.raises(ValueError, match=r"quantize\.quant_resi\.qresi_ls\.2\.weight"):
        load_official(vae, var, bad, None)
    # unexpected key
    bad = dict(var_sd, extra_thing=torch.zeros(1))
    with pytest.raises(ValueError, match="extra_thing"):
        load_official(vae, var, None, bad)


def _model(preset="cpu32", depth=3, **kw):
    torch.manual_seed(0)
    vae, var = build(preset, depth, **kw)
    # lift the near-zero AdaLN gamma init so the blocks matter in the checks below
    for blk in var.blocks:
        torch.nn.init.normal_(blk.ada_lin[-1].weight, std=0.2)
    return vae.eval(), var.eval()


def _tokens(cfg, B, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, cfg.vocab_size, (B, pn * pn), generator=g) for pn in cfg.patch_nums]


def test_block_causal():
    vae, var = _model()
    cfg = var.cfg
    B = 2
    label = torch.tensor([1, 7])
    x = vae.idx_to_var_input(_tokens(cfg, B))
    with torch.no_grad():
        base = var(label, x)
        assert base.shape == (B, cfg.seq_len, cfg.vocab_size)
        for j in range(1, len(cfg.patch_nums)):
            bg, ed = var.begin_ends[j]
            x2 = x.clone()
            x2[:, bg - cfg.first_l:ed - cfg.first_l] += torch.randn_like(x2[:, bg - cfg.first_l:ed - cfg.first_l])
            out = var(label, x2)
            assert torch.equal(out[:, :bg], base[:, :bg]), f"scale {j} leaked into earlier scales"
            assert not torch.allclose(out[:, bg:ed], base[:, bg:ed])  # and it does act within its scale


@pytest.mark.parametrize("kw", [dict(), dict(fused=False), dict(shared_aln=True), dict(attn_l2_norm=False)])
def test_kv_cached_inference_equals_teacher_forcing(kw):
    torch.set_default_dtype(torch.float32)
    vae, var = _model("cpu32", 3, **kw) if not kw.get("shared_aln") else build("cpu32", 3, **kw)
    var.eval()
    cfg = var.cfg
    B = 3
    idx = _tokens(cfg, B, seed=1)
    label = torch.tensor([0, 3, cfg.num_classes])  # includes the null class
    with torch.no_grad():
        full = var(label, vae.idx_to_var_input(idx))
        var.kv_cache(True)
        cond = var.class_cond(label)
        f_hat, nxt, outs = vae.empty_fhat(B), None, []
        for si, pn in enumerate(cfg.patch_nums):
            outs.append(var.infer_scale(si, cond, nxt))
            f_hat, nxt = vae.next_var_input(si, f_hat, vae.quantize.embed_map(idx[si], pn))
        var.kv_cache(False)
    inc = torch.cat(outs, 1)
    assert (full - inc).abs().max().item() < 1e-4
    assert all(blk.attn.cached_k is None for blk in var.blocks)


def test_fused_equals_official_op_order():
    vae, var = _model("cpu32", 4)
    _, ref = _model("cpu32", 4, fused=False)
    ref.load_state_dict(var.state_dict())
    cfg = var.cfg
    label = torch.tensor([2, 5])
    x = vae.idx_to_var_input(_tokens(cfg, 2))
    with torch.no_grad():
        assert torch.allclose(var(label, x), ref(label, x), atol=1e-5)


def test_class_dropout_train_only_by_default():
    _, var = _model("tiny", 2, class_dropout=0.5)
    label = torch.zeros(4000, dtype=torch.long)
    var.eval()
    assert torch.equal(var.drop_labels(label), label)
    var.train()
    frac = (var.drop_labels(label) == var.num_classes).float().mean().item()
    assert 0.4 < frac < 0.6
    _, var = _model("tiny", 2, class_dropout=0.5, class_dropout_in_eval=True)
    var.eval()
    assert (var.drop_labels(label) == var.num_classes).any()


def test_official_init_properties():
    torch.manual_seed(0)
    var = build_var("cpu32", 4, aln_gamma_init=1e-3)
    C = var.C
    w = var.blocks[0].ada_lin[1].weight
    std = (1 / 3 / C) ** 0.5
    assert w[:2 * C].std().item() == pytest.approx(std * 1e-3, rel=0.2)
    assert w[2 * C:].std().item() == pytest.approx(std * 0.5, rel=0.2)
    assert var.head.weight.std().item() == pytest.approx(std * 0.02, rel=0.2)
    assert var.blocks[0].attn.proj.weight.std().item() == pytest.approx(std / (2 * 4) ** 0.5, rel=0.2)
    assert torch.allclose(var.blocks[0].attn.scale_mul_1H11.exp(), torch.full((1, 4, 1, 1), 4.0))
    assert float(var.blocks[0].ada_lin[1].bias.detach().abs().sum()) == 0


def test_training_step_and_bf16_autocast():
    vae, var = _model("tiny", 2)
    var.train()
    cfg = var.cfg
    idx = _tokens(cfg, 4)
    x = vae.idx_to_var_input(idx)
    tgt = torch.cat(idx, 1)
    label = torch.randint(0, cfg.num_classes, (4,))
    for dtype in (None, torch.bfloat16):
        var.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
            logits = var(label, x)
        assert logits.dtype == torch.float32
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, cfg.vocab_size), tgt.reshape(-1))
        loss.backward()
        assert torch.isfinite(loss)
        assert var.blocks[0].attn.mat_qkv.weight.grad.abs().sum() > 0
        assert var.word_embed.weight.grad.abs().sum() > 0


def test_var_config_for_model_config():
    from varscale.config import ModelConfig
    from varscale.models import var_config, var_config_for

    mc = ModelConfig(head_dim=8, drop_path=False, class_dropout_in_eval=True, aln_gamma_init=1e-4, fused=False)
    cfg = var_config_for(mc, 3)
    assert (cfg.head_dim, cfg.width, cfg.heads) == (8, 24, 3)
    assert cfg.max_drop_path == 0.0 and cfg.class_dropout_in_eval and not cfg.fused
    assert cfg.aln_gamma_init == 1e-4
    assert var_config_for(ModelConfig(), 3).head_dim == PRESETS["cpu32"].head_dim
    assert var_config("imagenet256", 24).max_drop_path == pytest.approx(0.1)


@pytest.mark.slow
def test_torch_compile_matches_eager():
    vae, var = _model("tiny", 2)
    cfg = var.cfg
    label = torch.tensor([0, 1])
    x = vae.idx_to_var_input(_tokens(cfg, 2))
    with torch.no_grad():
        ref = var(label, x)
        out = torch.compile(var)(label, x)
    assert torch.allclose(ref, out, atol=1e-5)


def test_pos_init_sincos2d_aligns_scales():
    """pos_init="sincos2d": a fine token starts closest to the coarse token covering it."""
    from varscale.models.var import pos_sincos_2d

    pn = (1, 2, 3, 4, 6, 8)
    table = pos_sincos_2d(pn, 64, 0.07)[0]
    assert table.shape == (130, 64) and table.std().item() == pytest.approx(0.07, rel=1e-4)
    unit = torch.nn.functional.normalize(table, dim=-1)
    nearest_4x4 = (unit[-64:] @ unit[14:30].T).argmax(1).view(8, 8)
    covering = torch.tensor([[(i // 2) * 4 + j // 2 for j in range(8)] for i in range(8)])
    assert torch.equal(nearest_4x4, covering)
    assert pos_sincos_2d(pn, 18, 0.1).shape == (1, 130, 18)  # C not a multiple of 4

    a = build_var("cpu32x8", 2, pos_init="sincos2d")
    b = build_var("cpu32x8", 2, pos_init="sincos2d")
    assert torch.equal(a.pos_1LC, b.pos_1LC)  # deterministic, unlike the official random init
    with pytest.raises(ValueError, match="pos_init"):
        build_var("cpu32x8", 1, pos_init="rope")
