"""FLOP counter vs DeepSpeed's flops profiler on the same models."""
import os

import pytest
import torch
import torch.nn as nn

from varscale.models import build, build_vqvae, var_config
from varscale.models.flops import (flops_6nd, var_forward_flops, var_forward_flops_breakdown, var_train_flops,
                                   vqvae_encoder_flops)
from varscale.models.presets import PRESETS

torch.set_num_threads(1)
profiler = pytest.importorskip("deepspeed.profiling.flops_profiler")


def _profile(model, args):
    flops, macs, _ = profiler.get_model_profile(model, args=args, print_profile=False, as_string=False, warm_up=0)
    return flops, macs


@pytest.mark.parametrize("preset,depth,kw", [
    ("cpu32", 1, {}), ("cpu32", 6, {}), ("cpu64", 2, {}),
    ("cpu32", 3, dict(fused=False)), ("cpu32", 3, dict(shared_aln=True)), ("tiny", 2, {})])
def test_var_flops_match_deepspeed_profiler(preset, depth, kw):
    vae, var = build(preset, depth, **kw)
    cfg = var.cfg
    B = 2
    idx = [torch.randint(0, cfg.vocab_size, (B, pn * pn)) for pn in cfg.patch_nums]
    x = vae.idx_to_var_input(idx)
    flops, macs = _profile(var, [torch.zeros(B, dtype=torch.long), x])
    mine = var_forward_flops(cfg)
    # the profiler's MACs cover exactly the matmuls we count (linear, SDPA): equal
    assert 2 * macs == B * mine
    # its FLOP total adds estimates for norms, activations, bias/elementwise ops: within 5%
    assert abs(flops / B / mine - 1) < 0.05


@pytest.mark.parametrize("name", ["tiny", "cpu32"])
def test_vqvae_encoder_flops_match_profiler(name):
    class Tokenise(nn.Module):
        def __init__(self, vae):
            super().__init__()
            self.vae = vae

        def forward(self, x):
            return self.vae.quantize.f_to_idx(self.vae.encode(x))

    p = PRESETS[name]
    vae = build_vqvae(p)
    B = 2
    flops, macs = _profile(Tokenise(vae), [torch.randn(B, 3, p.resolution, p.resolution)])
    assert 2 * macs == B * vqvae_encoder_flops(p)
    assert abs(flops / B / vqvae_encoder_flops(p) - 1) < 0.05


def test_breakdown_and_train_and_6nd():
    cfg = var_config("imagenet256", 16)
    b = var_forward_flops_breakdown(cfg)
    assert b["total"] == var_forward_flops(cfg) == sum(v for k, v in b.items() if k != "total")
    assert var_train_flops(cfg) == 3 * b["total"]
    assert flops_6nd(10, 7) == 420
    # the blocks' per-token matmuls are 2 * 12 C^2 per token: 6 N D for the blocks' N (~18 d C^2
    # minus the per-image AdaLN) is within the attention term of 3 x forward
    C, L = cfg.width, cfg.seq_len
    assert b["blocks_linear"] == cfg.depth * 2 * L * 12 * C * C
    # full-mask attention is counted over the whole L x L
    assert b["attention"] == cfg.depth * 4 * L * L * C
