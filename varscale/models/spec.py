"""One model's description, without torch: ``VARConfig`` and what follows from it.

``VARConfig`` is the dataclass the torch model ``varscale.models.var.VAR`` is built from, and
the only description of a VAR that anything else reads: parameter counts (``param_counts``,
equal to the built model's ``VAR.param_counts()``, tests/test_models_spec.py), FLOPs
(``varscale.models.flops``), memory shapes (``varscale.models.memory.Shape.of``) and a study's
model family (``varscale.models.family``) all take it.

A study's or a cell's model section (``varscale.config.ArchConfig`` / ``ModelConfig``, which
names the preset) becomes a ``VARConfig`` in one place::

    cfg = var_config_for(model_section, depth, num_classes)
    param_counts(cfg)   # {n_params, n_params_blocks, n_params_nonembedding}

``var_config(preset, depth, num_classes, **fields)`` is the same on a preset with any
``VARConfig`` field set directly (tests, benchmarks). The tokenizer is described by its
``Preset``; ``vqvae_param_count(preset)`` equals the built ``VQVAE``'s parameter count.

Shape rule: width C = head_dim * depth, heads = depth, the AdaLN condition's width D = C,
MLP hidden F = round(mlp_ratio * C), sequence L = sum(pn^2) over the K scales.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

from .presets import Preset, get_preset

__all__ = ["VARConfig", "var_config", "var_config_for", "param_counts", "vqvae_param_count"]


@dataclass
class VARConfig:
    depth: int
    vocab_size: int = 4096
    cvae: int = 32
    patch_nums: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
    num_classes: int = 1000
    head_dim: int = 64  # width = head_dim * depth, heads = depth
    mlp_ratio: float = 4.0
    norm_eps: float = 1e-6
    drop_path_rate: Optional[float] = None  # None: the official 0.1 * depth / 24
    attn_l2_norm: bool = True
    shared_aln: bool = False
    class_dropout: float = 0.1
    class_dropout_in_eval: bool = False  # True: the official behaviour (labels also dropped at eval)
    # official init_weights(init_adaln=0.5, init_adaln_gamma=alng, init_head=0.02, init_std=-1)
    aln_init: float = 0.5
    aln_gamma_init: float = 1e-5  # official default; README recipes use 1e-3 (d16/20) .. 5e-6 (d36)
    head_init: float = 0.02
    init_std: Optional[float] = None  # None: sqrt(1 / (3 C)), as the official code
    # "trunc_normal": the official random pos_1LC; "sincos2d": a deviation, see var.pos_sincos_2d
    pos_init: str = "trunc_normal"
    # numerically equivalent faster paths (fewer kernel launches); False: the official op order
    fused: bool = True

    @property
    def width(self) -> int:
        return self.head_dim * self.depth

    @property
    def heads(self) -> int:
        return self.depth

    @property
    def mlp_hidden(self) -> int:
        return round(self.width * self.mlp_ratio)

    @property
    def seq_len(self) -> int:
        return sum(p * p for p in self.patch_nums)

    @property
    def first_l(self) -> int:
        return self.patch_nums[0] ** 2

    @property
    def max_drop_path(self) -> float:
        return 0.1 * self.depth / 24 if self.drop_path_rate is None else self.drop_path_rate

    @classmethod
    def from_preset(cls, preset: Preset, depth: int, num_classes: Optional[int] = None, **overrides) -> "VARConfig":
        """VAR-``depth`` on ``preset``'s shapes; ``overrides``: any field (None keeps the preset's,
        except for ``drop_path_rate`` and ``init_std``, where None is a value)."""
        kw = dict(depth=depth, vocab_size=preset.vocab_size, cvae=preset.cvae,
                  patch_nums=tuple(preset.patch_nums),
                  num_classes=preset.num_classes if num_classes is None else num_classes,
                  head_dim=preset.head_dim, mlp_ratio=preset.mlp_ratio, norm_eps=preset.norm_eps)
        kw.update({k: v for k, v in overrides.items() if v is not None or k in ("drop_path_rate", "init_std")})
        return cls(**kw)


def _preset(preset: Union[str, Preset]) -> Preset:
    return get_preset(preset) if isinstance(preset, str) else preset


def var_config(preset: Union[str, Preset], depth: int, num_classes: Optional[int] = None, **overrides) -> VARConfig:
    """The ``VARConfig`` of VAR-``depth`` on ``preset`` (overrides: any VARConfig field)."""
    return VARConfig.from_preset(_preset(preset), depth, num_classes=num_classes, **overrides)


def var_config_for(model_cfg, depth: int, num_classes: Optional[int] = None) -> VARConfig:
    """The ``VARConfig`` of VAR-``depth`` from a model section (``ArchConfig`` / ``ModelConfig``):
    its preset's shapes with its options (``head_dim`` None: the preset's; ``drop_path``
    False: no drop-path), ``num_classes`` None: the preset's. The one such mapping."""
    kw = dict(class_dropout=model_cfg.class_dropout, class_dropout_in_eval=model_cfg.class_dropout_in_eval,
              attn_l2_norm=model_cfg.attn_l2_norm, shared_aln=model_cfg.shared_aln,
              aln_gamma_init=model_cfg.aln_gamma_init, pos_init=model_cfg.pos_init,
              fused=model_cfg.fused)
    if model_cfg.head_dim is not None:
        kw["head_dim"] = model_cfg.head_dim
    if not model_cfg.drop_path:
        kw["drop_path_rate"] = 0.0
    return var_config(model_cfg.preset, depth, num_classes=num_classes, **kw)


def param_counts(cfg: VARConfig) -> dict:
    """What ``VAR(cfg).param_counts()`` gives, from the shapes: ``n_params`` all parameters;
    ``n_params_blocks`` the transformer blocks plus the shared AdaLN linear when
    ``shared_aln`` (the paper's N ~ 18 d C^2); ``n_params_nonembedding`` all but the lookup
    tables class_emb, pos_start, pos_1LC, lvl_embed."""
    C = D = cfg.width
    F = cfg.mlp_hidden
    attn = 3 * C * C + 2 * C + (C * C + C) + (cfg.heads if cfg.attn_l2_norm else 0)  # qkv, q/v bias, proj, scale
    ffn = (C * F + F) + (F * C + C)
    ada_lin = D * 6 * C + 6 * C
    per_block = attn + ffn + (6 * C if cfg.shared_aln else ada_lin)  # shared: each block's (6, C) table
    blocks = cfg.depth * per_block + (ada_lin if cfg.shared_aln else 0)
    emb = (cfg.num_classes + 1) * C + cfg.first_l * C + cfg.seq_len * C + len(cfg.patch_nums) * C
    rest = (cfg.cvae * C + C) + (D * 2 * C + 2 * C) + (C * cfg.vocab_size + cfg.vocab_size)  # word_embed, head_nm, head
    n = blocks + emb + rest
    return dict(n_params=n, n_params_blocks=blocks, n_params_nonembedding=n - emb)


# --------------------------------------------------------------------------- the tokenizer


def _conv(cin: int, cout: int, k: int) -> int:
    return cin * cout * k * k + cout


def _norm(C: int, kind: str) -> int:
    return 2 * C if kind == "group" else 0


def _resblock(cin: int, cout: int, norm: str) -> int:
    n = _norm(cin, norm) + _conv(cin, cout, 3) + _norm(cout, norm) + _conv(cout, cout, 3)
    return n + (_conv(cin, cout, 1) if cin != cout else 0)


def _attnblock(C: int, norm: str) -> int:
    return _norm(C, norm) + _conv(C, 3 * C, 1) + _conv(C, C, 1)


def vqvae_param_count(preset: Union[str, Preset]) -> int:
    """Parameters of ``VQVAE.from_preset(preset)`` (encoder, decoder, quantizer, the two 3x3
    convs around it), from the preset's shapes; buffers are not parameters."""
    p = _preset(preset)
    ch, mult, z, norm = p.ch, tuple(p.ch_mult), p.cvae, p.vae_norm
    if p.vae_arch == "plain":
        chans = [ch * m for m in mult]
        pairs = list(zip(chans[:-1], chans[1:]))
        enc = _conv(3, chans[0], 3) + sum(_conv(a, b, 4) for a, b in pairs) + _conv(chans[-1], z, 3)
        dec = _conv(z, chans[-1], 3) + sum(_conv(b, a, 4) for a, b in pairs) + _conv(chans[0], 3, 3)
    elif p.vae_arch == "ldm":
        nres, last, in_mult = p.enc_res_blocks, len(mult) - 1, (1,) + mult
        enc = _conv(3, ch, 3)
        for lvl, m in enumerate(mult):
            cin = ch * in_mult[lvl]
            for _ in range(nres):
                enc += _resblock(cin, ch * m, norm) + (_attnblock(ch * m, norm) if lvl == last else 0)
                cin = ch * m
            enc += _conv(cin, cin, 3) if lvl != last else 0  # stride-2 downsample
        enc += 2 * _resblock(cin, cin, norm) + _attnblock(cin, norm) + _norm(cin, norm) + _conv(cin, z, 3)
        cin = ch * mult[-1]
        dec = _conv(z, cin, 3) + 2 * _resblock(cin, cin, norm) + _attnblock(cin, norm)
        for lvl in reversed(range(len(mult))):
            for _ in range(nres + 1):
                dec += _resblock(cin, ch * mult[lvl], norm) + (_attnblock(ch * mult[lvl], norm) if lvl == last else 0)
                cin = ch * mult[lvl]
            dec += _conv(cin, cin, 3) if lvl != 0 else 0  # upsample
        dec += _norm(cin, norm) + _conv(cin, 3, 3)
    else:
        raise ValueError(f"unknown VQVAE layout '{p.vae_arch}'; valid: ldm, plain")
    n_phi = p.share_quant_resi if p.share_quant_resi > 0 else len(p.patch_nums)
    quant = p.vocab_size * z + (n_phi * _conv(z, z, 3) if abs(p.quant_resi) > 1e-6 else 0)
    return enc + dec + quant + 2 * _conv(z, z, 3)  # quant_conv, post_quant_conv
