"""Multi-scale VQVAE: official key names/shapes, phi selection, round trip, gradients."""
import json
from pathlib import Path

import pytest
import torch

from varscale.models.presets import PRESETS
from varscale.models.vqvae import VQVAE

from conftest import SHARED

KEYS = SHARED / "data" / "official_state_dict_keys.json"
torch.set_num_threads(1)


def test_official_vqvae_keys_and_shapes():
    ref = json.loads(KEYS.read_text())["vqvae"]
    with torch.device("meta"):
        vae = VQVAE.from_preset(PRESETS["imagenet256"])
    ours = {k: list(v.shape) for k, v in vae.state_dict().items()}
    assert set(ours) == set(ref), (set(ours) ^ set(ref))
    bad = {k: (ours[k], ref[k]) for k in ref if ours[k] != ref[k]}
    assert not bad


def test_phi_selection_matches_official_ticks():
    with torch.device("meta"):
        vae = VQVAE.from_preset(PRESETS["imagenet256"])
    q = vae.quantize
    picks = [q.quant_resi.index_for(si / 9) for si in range(10)]
    assert picks == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]


def _tiny(seed=0):
    torch.manual_seed(seed)
    vae = VQVAE.from_preset(PRESETS["tiny"])
    # spread the codebook so that different scales pick different codes
    torch.nn.init.normal_(vae.quantize.embedding.weight, std=0.5)
    return vae


def test_round_trip_equals_decoding_accumulated_fhat():
    vae = _tiny().eval()
    p = PRESETS["tiny"]
    x = torch.rand(3, 3, p.resolution, p.resolution) * 2 - 1
    idx = vae.img_to_idx(x)
    assert [tuple(i.shape) for i in idx] == [(3, pn * pn) for pn in p.patch_nums]
    assert all(i.dtype == torch.long for i in idx)
    fhats = vae.quantize.f_to_idx(vae.encode(x), to_fhat=True)
    with torch.no_grad():
        img = vae.idx_to_img(idx)
        ref = vae.fhat_to_img(fhats[-1])
    assert img.shape == x.shape
    assert torch.allclose(img, ref, atol=1e-5)
    assert img.min() >= -1 and img.max() <= 1
    # partial f_hat after k scales matches too
    assert torch.allclose(vae.idx_to_fhat(idx[:1]), fhats[0], atol=1e-6)


def test_var_input_is_area_down_of_accumulated_fhat():
    vae = _tiny().eval()
    p = PRESETS["cpu32"]
    torch.manual_seed(1)
    vae = VQVAE.from_preset(p).eval()
    B = 2
    idx = [torch.randint(0, p.vocab_size, (B, pn * pn)) for pn in p.patch_nums]
    with torch.no_grad():
        x = vae.idx_to_var_input(idx)
        assert x.shape == (B, p.seq_len - 1, p.cvae)
        # the incremental helper gives the same inputs
        f_hat = vae.empty_fhat(B)
        parts = []
        for si, pn in enumerate(p.patch_nums):
            f_hat, nxt = vae.next_var_input(si, f_hat, vae.quantize.embed_map(idx[si], pn))
            if nxt is not None:
                parts.append(nxt)
        assert torch.allclose(torch.cat(parts, 1), x, atol=1e-6)
        assert torch.allclose(f_hat, vae.idx_to_fhat(idx), atol=1e-6)


def test_forward_loss_usages_and_gradients_reach_encoder():
    vae = _tiny().train()
    p = PRESETS["tiny"]
    x = torch.rand(4, 3, p.resolution, p.resolution) * 2 - 1
    rec, vq_loss, usages = vae(x)
    assert rec.shape == x.shape and vq_loss.ndim == 0
    assert len(usages) == len(p.patch_nums) and all(0 < u <= 1 for u in usages)
    assert vae.quantize.last_hits_SV.shape == (len(p.patch_nums), p.vocab_size)
    # decoder-side loss only: gradient must reach the encoder via the straight-through path
    rec.pow(2).mean().backward()
    g = vae.encoder.conv_in.weight.grad
    assert g is not None and g.abs().sum() > 0
    assert vae.quantize.embedding.weight.grad is None or vae.quantize.embedding.weight.grad.abs().sum() == 0
    vae.zero_grad(set_to_none=True)
    # vq loss trains both the encoder (commitment) and the codebook
    _, vq_loss, _ = vae(x)
    vq_loss.backward()
    assert vae.encoder.conv_in.weight.grad.abs().sum() > 0
    assert vae.quantize.embedding.weight.grad.abs().sum() > 0
    assert vae.quantize.ema_vocab_hit_SV.sum() > 0


def test_plain_layout_preset_round_trip():
    # cpu32x8: the 'plain' encoder/decoder (a preset switch) around the same quantizer
    p = PRESETS["cpu32x8"]
    assert (p.vae_arch, p.vae_norm, p.seq_len, p.downsample) == ("plain", "none", 130, 4)
    torch.manual_seed(0)
    vae = VQVAE.from_preset(p).eval()
    assert sum(t.numel() for t in vae.parameters()) == 456_179
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        f = vae.encode(x)
        assert f.shape == (2, p.cvae, 8, 8)
        idx = vae.img_to_idx(x)
        assert [tuple(i.shape) for i in idx] == [(2, pn * pn) for pn in p.patch_nums]
        assert vae.idx_to_img(idx).shape == x.shape
    rec, vq, _ = vae.train()(x)
    assert rec.shape == x.shape and torch.isfinite(vq)
    with pytest.raises(ValueError, match="valid: ldm, plain"):
        VQVAE(vocab_size=16, cvae=4, ch=8, ch_mult=(1, 2), patch_nums=(1, 2), arch="unet")
