"""Memory of one training rank, counted from the model's shapes (no torch needed).

``estimate(shape, setup)`` gives, per rank and in bytes, what a cell's training step holds
at its peak: the parameters, gradients and optimizer state at the study's ZeRO stage, the
buffers DeepSpeed allocates, the frozen tokenizer, and the activations of one micro-batch.
A model's shape is ``Shape.of(var_cfg, preset)``: its ``VARConfig``
(``varscale.models.spec``) and its tokenizer's preset. ``varscale plan`` prints the estimate
per cell and checks it against ``execution.gpu_mem_gb``; ``suggest`` finds the micro-batch
size, activation checkpointing or ZeRO stage that fits.

Model states (N parameters, w ranks). varscale's DeepSpeed engine keeps fp32 weights,
gradients and AdamW moments at every precision (bf16 is ``torch.autocast`` around the
forward; ``varscale.train.engine``), so per parameter:

    stage  params               grads               optimizer  DeepSpeed buffers
    0      4                    4                   8          -
    1      4 + 4/w (fp32 copy)  4                   8/w        reduce bucket
    2      4 + 4/w              4/w                 8/w        reduce bucket
    3      4/w + 4/w + largest  4/w                 8/w        reduce bucket

(``largest``: the biggest layer, gathered whole while it runs, 4 bytes x its parameters; the
reduce bucket: ``reduce_bucket_size`` elements of fp32, which varscale's engine sets to the
model's parameter count, at most DeepSpeed's default 5e8: ``bucket_elements``.) This is the accounting of DeepSpeed's own estimators
(``estimate_zero2_model_states_mem_needs``, ``estimate_zero3_model_states_mem_needs``, which
take parameter counts) with varscale's fp32 weights in place of their 16-bit ones:
``model_states(..., weights16=True)`` reproduces those functions exactly
(tests/test_memory_plan.py), and ``deepspeed_model_states`` calls them.

Activations of one micro-batch of b images, L tokens, width C, h heads, MLP ratio r, vocab V,
per token (the tensors autograd saves for the backward, counted from the forward of
``varscale.models.var`` with the fused kernels and l2-normalised attention):

    per block   matmul inputs and outputs (11 + 2r) C   [h1, qkv 3C, q/k 2C, q, attention
                out, proj out, h2, fc1 rC, gelu rC, fc2 out], in the compute dtype
                (fp32: 4 bytes, bf16: 2 + the bf16 copy of q), plus the residual stream and
                both layer norms' outputs, 4C at 4 bytes (under CUDA autocast the layer norms
                run in fp32 and save an fp32 copy of their input), plus the attention's
                log-sum-exp and the norms' statistics (~5h + 4 values)
    head        3C (final x, its layer norm, the head's input) + V (fp32 log-softmax),
                the targets and the teacher-forcing input; at the peak, the start of the
                backward, two more fp32 V (the gradients of the log-softmax and of the logits)
    weights     the fused AdaLN matmul's concatenated weights (6 C^2 d, compute dtype); in
                bf16 also autocast's bf16 copies of every matmul weight (~2 bytes x N)

With activation checkpointing a block keeps only its input (C per token); its activations
are recomputed one block at a time in the backward, so the peak holds every block's input,
one block's working set (and in bf16 that block's weight copies) and the head.

Measured against the peak of torch's CPU allocator during training steps of small cells
(fp32 and bf16, ZeRO 0-3, with and without micro-batches and checkpointing): docs/training.md,
"Memory", and tests/test_memory_plan.py, within 20%. Not modelled: the allocator's
fragmentation and cached blocks on GPU (``torch.cuda.max_memory_reserved`` above
``max_memory_allocated``), the CUDA context (~0.5 GB), NCCL's buffers; ``HEADROOM`` leaves
room for them when checking a fit.
"""
from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from typing import Optional, Union

from .presets import Preset
from .spec import VARConfig, param_counts, vqvae_param_count

GB = 1e9
# zero_optimization.reduce_bucket_size, DeepSpeed's default (elements). Stages 1-3 allocate a
# bucket of this size whole for the gradients' reduction (2 GB of fp32 per rank, however small
# the model); varscale's engine.ds_config sizes it from the model instead (bucket_elements).
DS_REDUCE_BUCKET = 500_000_000


def bucket_elements(n_params: int, default: int = DS_REDUCE_BUCKET) -> int:
    """A ZeRO bucket sized from the model: its trainable parameters (rounded up to even, the
    alignment DeepSpeed asserts for the allgather bucket), at most DeepSpeed's ``default``. One
    bucket then holds every gradient, as the default does for any model below 5e8 parameters."""
    n = max(int(n_params), 1)
    return min(int(default), n + n % 2)
# of execution.gpu_mem_gb kept free for what is not counted (CUDA context, allocator
# fragmentation, NCCL buffers)
HEADROOM = 0.1


@dataclass(frozen=True)
class Shape:
    """What memory depends on: the VAR's shape, its parameter count, the tokenizer's.
    A model's is ``Shape.of(var_cfg, preset)``; constructing one by hand is for what-ifs."""

    depth: int
    width: int  # C
    heads: int
    seq_len: int  # L
    vocab_size: int  # V
    cvae: int
    mlp_ratio: float
    n_params: int
    tokenizer_params: int = 0
    attn_l2_norm: bool = True
    fused: bool = True
    shared_aln: bool = False

    @classmethod
    def of(cls, cfg: VARConfig, preset: Union[str, Preset, None] = None) -> "Shape":
        """The shape of ``VAR(cfg)`` (``varscale.models.spec``) with the frozen tokenizer of
        ``preset`` beside it (None: no tokenizer)."""
        return cls(depth=cfg.depth, width=cfg.width, heads=cfg.heads, seq_len=cfg.seq_len,
                   vocab_size=cfg.vocab_size, cvae=cfg.cvae, mlp_ratio=cfg.mlp_ratio,
                   n_params=param_counts(cfg)["n_params"],
                   tokenizer_params=vqvae_param_count(preset) if preset is not None else 0,
                   attn_l2_norm=cfg.attn_l2_norm, fused=cfg.fused, shared_aln=cfg.shared_aln)

    @property
    def largest_layer(self) -> int:
        """Parameters of the biggest single layer (what ZeRO-3 gathers at once)."""
        C, F = self.width, round(self.width * self.mlp_ratio)
        return max(6 * C * C + 6 * C, C * F + F, F * C + C, C * self.vocab_size + self.vocab_size)

    @property
    def matmul_weights(self) -> int:
        """Parameters of the matmuls autocast casts to bf16 (blocks, head, word embedding)."""
        C, F = self.width, round(self.width * self.mlp_ratio)
        return self.depth * (4 * C * C + 2 * C * F) + C * self.vocab_size + self.cvae * C


@dataclass(frozen=True)
class Setup:
    """How a rank trains: the study's training and execution choices that move memory."""

    zero_stage: int
    world: int  # ranks of one cell
    micro_batch: int  # images per forward on one rank
    accumulation: int = 1  # micro-batches per step
    precision: str = "fp32"  # "fp32" | "bf16"
    checkpointing: bool = False
    gpus_per_node: int = 1
    nodes: int = 1


def model_states(n_params: int, zero_stage: int, world: int, largest_layer: int = 0,
                 weights16: bool = False) -> dict[str, float]:
    """Per-rank bytes of parameters, gradients and optimizer state (and DeepSpeed's buffers).

    ``weights16``: DeepSpeed's mixed-precision accounting (16-bit weights and gradients
    beside fp32 master weights and gradients), what its estimators assume; varscale trains
    with fp32 weights (False).
    """
    N, w = float(n_params), float(max(world, 1))
    if weights16:  # 2 16-bit params; 2 16-bit grads + 4 fp32 grads; 4 fp32 master; 8 Adam
        replicated, master, grads = 2.0, 4.0, 6.0
    else:  # the module's fp32 weights; an fp32 copy of the partition; fp32 grads
        replicated, master, grads = 4.0, 4.0, 4.0
    # the reduce bucket as varscale's engine sizes it (DeepSpeed's estimators count none)
    bucket = 0.0 if zero_stage == 0 or weights16 else 4.0 * bucket_elements(int(N))
    if zero_stage == 0:
        out = dict(params=replicated * N, grads=grads * N, optimizer=8 * N)
    elif zero_stage == 1:
        out = dict(params=replicated * N + master * N / w, grads=grads * N, optimizer=8 * N / w)
    elif zero_stage == 2:
        out = dict(params=replicated * N + master * N / w, grads=grads * N / w, optimizer=8 * N / w)
    elif zero_stage == 3:
        # the partitioned module weights plus the fp32 copy; DeepSpeed's ZeRO-3 estimator
        # counts 18 bytes per partitioned parameter, leaving its 16-bit partition out
        part = master if weights16 else replicated + master
        out = dict(params=part * N / w + 4.0 * largest_layer, grads=grads * N / w, optimizer=8 * N / w)
    else:
        raise ValueError(f"zero_stage must be 0, 1, 2 or 3, got {zero_stage}")
    out["buffers"] = bucket
    return out


def deepspeed_model_states(n_params: int, largest_layer: int, zero_stage: int, gpus_per_node: int,
                           nodes: int) -> Optional[float]:
    """DeepSpeed's own per-GPU estimate of the model states (no offload), stages 2 and 3.

    Its estimators assume 16-bit weights; varscale keeps fp32 ones, so this sits below
    ``model_states`` by 2 bytes per replicated parameter (see the module docstring).
    None at stages 0 and 1 (DeepSpeed has no estimator for them) or without DeepSpeed.
    """
    if zero_stage not in (2, 3):
        return None
    try:
        # DeepSpeed's import logs its accelerator choice to stdout, where `plan --json` prints
        with contextlib.redirect_stdout(sys.stderr):
            from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
            from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs
    except ImportError:
        return None
    if zero_stage == 2:
        _, gpu = estimate_zero2_model_states_mem_needs(
            total_params=n_params, num_gpus_per_node=gpus_per_node, num_nodes=nodes, cpu_offload=False)
        return float(gpu)
    _, gpu, _ = estimate_zero3_model_states_mem_needs(
        total_params=n_params, largest_layer_params=largest_layer, num_gpus_per_node=gpus_per_node,
        num_nodes=nodes, cpu_offload=False, cpu_offload_params=False)
    return float(gpu)


def block_bytes_per_token(s: Shape, precision: str) -> float:
    """Bytes one block saves for the backward, per token (module docstring)."""
    C, h, r = s.width, s.heads, s.mlp_ratio
    mm = (11 + 2 * r) * C if s.attn_l2_norm else (8 + 2 * r) * C
    small = 4 * h + 16 + 4 * (4 * h if s.attn_l2_norm else 0)  # log-sum-exp, LN stats, q/k norms
    if precision == "bf16":
        return 2 * (mm + C) + 4 * 4 * C + small
    return 4 * (mm + 4 * C) + small


def head_bytes_per_token(s: Shape, precision: str, peak: bool = True) -> float:
    """The head's saved tensors per token, with the backward's first gradients when ``peak``."""
    C, V = s.width, s.vocab_size
    saved = (4 * 3 * C if precision != "bf16" else 4 * 2 * C + 2 * C) + 4 * V + 8 + 4 * s.cvae
    return saved + (2 * 4 * V if peak else 0)


def activations(s: Shape, micro_batch: int, precision: str = "fp32", checkpointing: bool = False) -> dict[str, float]:
    """Activation bytes of one micro-batch: ``peak`` (at the start of the backward) and
    ``after_head`` (once the head's backward freed its fp32 log-softmax and its gradients)."""
    tokens = float(micro_batch) * s.seq_len
    cbytes = 2 if precision == "bf16" else 4
    fused_w = 6 * s.width * s.width * s.depth * cbytes if (s.fused and not s.shared_aln and s.depth > 1) else 0
    casts = 2 * s.matmul_weights if precision == "bf16" else 0  # autocast's bf16 weight copies
    blk = block_bytes_per_token(s, precision)
    head = head_bytes_per_token(s, precision)
    head_v = tokens * 3 * 4 * s.vocab_size  # log-softmax output + the two gradients of the logits
    if not checkpointing:
        peak = tokens * (s.depth * blk + head) + fused_w + casts
        return {"peak": peak, "after_head": peak - head_v}
    x = s.depth * s.width * cbytes  # every block's input
    per_block_casts = casts / max(s.depth, 1)
    backward = tokens * (x + blk + head) + fused_w + per_block_casts
    forward_end = tokens * (x + head_bytes_per_token(s, precision, peak=False)) + fused_w + casts
    return {"peak": max(backward, forward_end), "after_head": backward - head_v}


def estimate(s: Shape, t: Setup) -> dict[str, float]:
    """Per-rank bytes: params, grads, optimizer, buffers, tokenizer, activations (the peak of
    one micro-batch), and the step's peak ``total``.

    What is alive together, as measured on CPU (docs/training.md, "Memory"):
    - the gradients fill as the backward frees the activations, so with one micro-batch per
      step at ZeRO 0-2 (gradients allocated as they are produced) the peak holds the larger
      of the two, not both (the sum overshoots by the gradients' size); with accumulation
      the earlier micro-batches' gradients are there while the last one's activations are,
      and ZeRO-3 allocates its gradient partitions up front, so then both;
    - at ZeRO 1-2 the reduce bucket is allocated at the first gradient, after the head's
      backward freed its vocabulary-sized tensors; at ZeRO-3 it is allocated at set-up;
    - the optimizer step holds the states plus one fp32 temporary of the rank's partition.
    """
    out = model_states(s.n_params, t.zero_stage, t.world, s.largest_layer)
    out["tokenizer"] = 4.0 * s.tokenizer_params  # frozen fp32, on every rank
    act = activations(s, t.micro_batch, t.precision, t.checkpointing)
    out["activations"] = act["peak"]
    lazy = out["buffers"] if t.zero_stage in (1, 2) else 0.0
    held = out["params"] + out["optimizer"] + out["tokenizer"] + out["buffers"] - lazy
    g = out["grads"]
    both = g if (t.accumulation > 1 or t.zero_stage == 3) else 0.0
    passes = held + max(act["peak"] + both, lazy + max(act["after_head"] + both, g))
    step = held + lazy + g + 4.0 * s.n_params / (t.world if t.zero_stage else 1)
    out["total"] = max(passes, step)
    return out


def fits(total_bytes: float, gpu_mem_gb: Optional[float]) -> Optional[bool]:
    """Whether ``total_bytes`` fits ``gpu_mem_gb`` less ``HEADROOM``; None without a limit."""
    if gpu_mem_gb is None:
        return None
    return total_bytes <= gpu_mem_gb * GB * (1 - HEADROOM)


def divisors_desc(n: int) -> list[int]:
    return [m for m in range(n, 0, -1) if n % m == 0]


def suggest(s: Shape, t: Setup, share: int, gpu_mem_gb: float) -> Optional[dict]:
    """The cheapest change that fits: the largest micro-batch at the study's ZeRO stage,
    then with activation checkpointing, then at higher ZeRO stages; None when nothing does.

    ``share`` is the rank's part of the global batch (micro-batch sizes divide it). Larger
    micro-batches and no recomputation run faster, so they are tried first.
    """
    from dataclasses import replace

    for stage in range(t.zero_stage, 4):
        for ckpt in ([t.checkpointing] if t.checkpointing else [False, True]):
            for mb in divisors_desc(share):
                trial = replace(t, zero_stage=stage, checkpointing=ckpt, micro_batch=mb, accumulation=share // mb)
                e = estimate(s, trial)
                if fits(e["total"], gpu_mem_gb):
                    return {"zero_stage": stage, "activation_checkpointing": ckpt, "micro_batch_size": mb,
                            "total": e["total"]}
    return None
