"""FLOPs of VAR (from its ``VARConfig``) and of the VQVAE encoder (from its ``Preset``); no torch.

Convention: a multiply-accumulate is 2 FLOPs; only matrix products are counted (linear
layers, convolutions, attention). Bias adds, norms, activations, softmax, residual adds and
embedding lookups are left out: together they are a few percent of a VAR forward (see
docs/models.md for the measured comparison with DeepSpeed's flops profiler, whose MAC count
equals this one exactly and whose FLOP total adds those elementwise estimates).

VAR forward, per image, L = sum(pn^2) tokens, width C, AdaLN condition width D = C:

- word_embed: 2 (L - pn0^2) Cvae C (the first scale's token is the class/start embedding)
- per block: 2 L (3C^2 + C^2 + 2 C F) for qkv, proj, fc1, fc2 (F = round(mlp_ratio C));
  attention scores and values over the whole sequence, 2 * 2 L^2 C: the full L x L as
  ``scaled_dot_product_attention`` computes it with the block-causal mask (the masked
  entries are computed and discarded; a block-sparse kernel would do ~half);
  AdaLN 2 D 6C per image (it acts on the per-image condition vector, not per token).
  With shared AdaLN the 2 D 6C is paid once, not per block.
- head: AdaLN 2 D 2C per image + 2 L C V.

Training = 3 x forward (backward = 2 x forward for matmuls). ``flops_6nd`` is the usual
6 N D approximation, kept beside the exact count since fitted exponents depend on the choice.
"""
from __future__ import annotations

from .spec import VARConfig


def var_forward_flops_breakdown(cfg: VARConfig) -> dict:
    """Forward FLOPs per image by part: word_embed, blocks_linear, attention, adaln, head."""
    C, F, L, d = cfg.width, cfg.mlp_hidden, cfg.seq_len, cfg.depth
    D = C
    out = dict(
        word_embed=2 * (L - cfg.first_l) * cfg.cvae * C,
        blocks_linear=d * 2 * L * (4 * C * C + 2 * C * F),
        attention=d * 2 * 2 * L * L * C,
        adaln=(1 if cfg.shared_aln else d) * 2 * D * 6 * C + 2 * D * 2 * C,
        head=2 * L * C * cfg.vocab_size,
    )
    out["total"] = sum(out.values())
    return out


def var_forward_flops(cfg: VARConfig) -> int:
    """Forward FLOPs of one image through ``VAR(cfg)``."""
    return var_forward_flops_breakdown(cfg)["total"]


def var_train_flops(cfg: VARConfig) -> int:
    """Training FLOPs (forward + backward) per image: 3 x forward."""
    return 3 * var_forward_flops(cfg)


def flops_6nd(n_params: int, tokens: int) -> int:
    """The 6 N D approximation (N parameters, D tokens)."""
    return 6 * int(n_params) * int(tokens)


def _conv(cin, cout, k, hw):
    return 2 * cin * cout * k * k * hw * hw


def _resblock(cin, cout, hw):
    f = _conv(cin, cout, 3, hw) + _conv(cout, cout, 3, hw)
    if cin != cout:
        f += _conv(cin, cout, 1, hw)
    return f


def _attn(C, hw):
    N = hw * hw
    return _conv(C, 3 * C, 1, hw) + 2 * 2 * N * N * C + _conv(C, C, 1, hw)


def vqvae_encoder_flops(preset, include_quantizer: bool = True) -> int:
    """FLOPs per image of tokenising: encoder + quant_conv (+ the multi-scale quantizer:
    code distances 2 pn^2 V Cvae and one phi conv at full latent size per scale)."""
    ch, mult, R = preset.ch, tuple(preset.ch_mult), preset.resolution
    nres = preset.enc_res_blocks
    f = _conv(3, ch, 3, R)
    hw, cin = R, ch
    in_mult = (1,) + mult
    for lvl, m in enumerate(mult):
        cin, cout = ch * in_mult[lvl], ch * m
        for _ in range(nres):
            f += _resblock(cin, cout, hw)
            cin = cout
            if lvl == len(mult) - 1:
                f += _attn(cout, hw)
        if lvl != len(mult) - 1:
            hw //= 2
            f += _conv(cout, cout, 3, hw)  # stride-2 downsample: output positions
    C = ch * mult[-1]
    f += 2 * _resblock(C, C, hw) + _attn(C, hw)
    f += _conv(C, preset.cvae, 3, hw) + _conv(preset.cvae, preset.cvae, 3, hw)  # conv_out, quant_conv
    if include_quantizer:
        for pn in preset.patch_nums:
            f += 2 * pn * pn * preset.vocab_size * preset.cvae
            if abs(preset.quant_resi) > 1e-6:
                f += _conv(preset.cvae, preset.cvae, 3, hw)
    return f
